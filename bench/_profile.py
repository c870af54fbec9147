"""Summaries of py-spy's collapsed stacks (``py-spy record --format raw``).

``python -m bench --profile DIR`` runs every server under py-spy; this turns each profile
into the functions that take the most samples, by self time and including callees.
"""

from __future__ import annotations

import collections
import re

__all__ = ["py_spy_argv", "summarize_profile"]

# "name (path/to/file.py:123)" -> "name (file.py)"
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<path>[^:()]*)(?::\d+)?\)$")


def py_spy_argv(output: str, rate: int = 200) -> list[str]:
    """The prefix that runs a command under py-spy, sampling ``rate`` times a second."""
    return ["py-spy", "record", "--format", "raw", "--rate", str(rate), "-o", output, "--"]


def _short(frame: str) -> str:
    found = _FRAME.match(frame.strip())
    if found is None:
        return frame.strip()
    path = found.group("path")
    parts = path.split("/")
    where = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{found.group('name')} ({where})"


def summarize_profile(path: str, top: int = 25) -> str:
    """The ``top`` functions by self and by inclusive share of samples, as text."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_short(fr) for fr in stack.split(";")]
            # py-spy puts the thread first; the stdin reader thread is not the server's work.
            if frames and "read" in frames[-1] and "_stdin_lines" in stack:
                continue
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} samples", "", "self %   function"]
    lines += [f"{100 * c / total:6.1f}   {name}" for name, c in own.most_common(top)]
    lines += ["", "total %  function (including callees)"]
    lines += [f"{100 * c / total:6.1f}   {name}" for name, c in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"
