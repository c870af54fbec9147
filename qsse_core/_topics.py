"""Topic patterns and routing, with no I/O.

Patterns follow Go's ``path/filepath.Match`` on Unix, which Go qsse uses; every one of these
characters makes a topic a pattern (:func:`is_pattern`):

* ``*`` matches any run of characters except ``/``, dots included (``ride.*`` matches
  ``ride.1`` and ``ride.1.status``);
* ``?`` matches exactly one character except ``/``;
* ``[...]`` matches one character of a class: ``[abc]``, ranges ``[a-z]``, negated
  ``[^a-z]``; inside a class ``\\`` escapes the next character;
* ``\\`` makes the next character literal (``ride\\*`` matches only ``ride*``).

Topics are Unicode strings sent as UTF-8; a string that cannot be encoded (lone surrogates such
as ``"\\udc80"``) is refused in declarations and by ``Server.publish``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

__all__ = [
    "TopicTable",
    "is_pattern",
    "pattern_matcher",
    "topic_matches",
    "validate_pattern",
    "validate_topic",
]

_META = frozenset("*?[\\")


def is_pattern(topic: str) -> bool:
    """Whether ``topic`` holds any pattern syntax (``*``, ``?``, ``[`` or ``\\``), i.e. may
    match other strings than itself.

    An authorizer uses it to tell a subscription to one topic from a subscription to many
    (``is_pattern("ride.*") is True``, ``is_pattern("ride.1") is False``).
    """
    return not _META.isdisjoint(topic)


def validate_topic(topic: str) -> None:
    """Raise :class:`ValueError` naming the problem when ``topic`` cannot be sent as UTF-8."""
    try:
        topic.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"topic {topic!r} is not valid UTF-8: {exc.reason} at index {exc.start}"
        ) from None


def _translate(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i == n:
                raise ValueError(f"bad pattern {pattern!r}: trailing '\\'")
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "[":
            j = i
            negate = j < n and pattern[j] == "^"
            if negate:
                j += 1
            parts: list[str] = []
            first = True
            while True:
                if j >= n:
                    raise ValueError(f"bad pattern {pattern!r}: unterminated '['")
                if pattern[j] == "]" and not first:
                    j += 1
                    break
                first = False
                lo, j = _class_char(pattern, j)
                if j < n and pattern[j] == "-":
                    hi, j = _class_char(pattern, j + 1)
                    if hi < lo:
                        raise ValueError(f"bad pattern {pattern!r}: range {lo}-{hi} is empty")
                    parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
                else:
                    parts.append(re.escape(lo))
            i = j
            out.append(("[^" if negate else "[") + "".join(parts) + "]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def _class_char(pattern: str, j: int) -> tuple[str, int]:
    n = len(pattern)
    if j >= n:
        raise ValueError(f"bad pattern {pattern!r}: unterminated '['")
    c = pattern[j]
    if c in "-]":
        raise ValueError(f"bad pattern {pattern!r}: unexpected {c!r} in class")
    if c == "\\":
        if j + 1 >= n:
            raise ValueError(f"bad pattern {pattern!r}: trailing '\\'")
        return pattern[j + 1], j + 2
    return c, j + 1


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(_translate(pattern), re.DOTALL)


def validate_pattern(pattern: str) -> None:
    """Raise :class:`ValueError` naming the problem when ``pattern`` is malformed."""
    _compile(pattern)


def pattern_matcher(pattern: str) -> Callable[[str], bool]:
    """``topic -> bool``: whether ``topic`` matches ``pattern``, compiled once.

    For a server's live subscriptions: held as long as the subscription, not in the bounded
    caches of :func:`topic_matches`, which thousands of distinct patterns (several peers'
    subscriptions) would evict on every new concrete topic, recompiling each pattern per
    publish. A malformed pattern matches only itself, as with :func:`topic_matches`.
    """
    try:
        fullmatch = re.compile(_translate(pattern), re.DOTALL).fullmatch
    except ValueError:
        return lambda topic: topic == pattern
    return lambda topic: topic == pattern or fullmatch(topic) is not None


@lru_cache(maxsize=65536)
def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches ``pattern`` (Go's ``filepath.Match``; the syntax is in this
    module's docstring); a malformed pattern matches nothing, as in Go.

    ``topic_matches("ride.*", "ride.1") is True``; a string without pattern syntax matches
    only itself. Authorizers may use it to check a concrete topic against their own rules.
    """
    if pattern == topic:
        return True
    if not is_pattern(pattern):
        return False
    try:
        return _compile(pattern).fullmatch(topic) is not None
    except ValueError:
        return False


class TopicTable:
    """A server's declared topics and the rules that admit subscriptions and publishes.

    Go qsse admits a subscription only to a declared topic string and treats a published topic
    as a pattern over the declared ones. qsse keeps both rules and adds one: a declared pattern
    (``ride.*.status``) also admits every concrete topic it matches (``ride.42.status``), so
    topics can carry ids.

    :param topics: the declared topics, exact names or patterns.
    """

    def __init__(self, topics: Iterable[str]) -> None:
        declared: list[str] = []
        for topic in topics:
            if not topic:
                raise ValueError("topic names must not be empty")
            if topic == "error":
                raise ValueError("'error' is reserved: qsse/1 sends error events on that topic")
            validate_topic(topic)
            validate_pattern(topic)
            if topic not in declared:
                declared.append(topic)
        self.declared: tuple[str, ...] = tuple(declared)
        self._patterns = tuple(t for t in declared if is_pattern(t))
        self._set = frozenset(declared)
        self._publish_cache: dict[str, tuple[tuple[str, str], ...]] = {}

    def admit(self, topic: str) -> str | None:
        """The declared topic that admits a subscription to ``topic``, or None.

        An exact declaration wins over a pattern, so metrics are labelled by the most specific
        declared name and never by unbounded concrete topics.
        """
        if topic in self._set:
            return topic
        for pattern in self._patterns:
            if topic_matches(pattern, topic):
                return pattern
        return None

    def publish_targets(self, topic: str) -> tuple[tuple[str, str], ...]:
        """The ``(concrete topic, declared label)`` pairs a publish to ``topic`` becomes.

        As in Go, ``topic`` is a pattern over the declared topics; if it matches none of them
        but a declared pattern admits it, the event goes out on ``topic`` itself.

        :raises ValueError: if ``topic`` cannot be encoded as UTF-8.
        """
        cached = self._publish_cache.get(topic)
        if cached is not None:
            return cached
        validate_topic(topic)
        targets = tuple((d, d) for d in self.declared if topic_matches(topic, d))
        if not targets:
            label = self.admit(topic)
            if label is not None:
                targets = ((topic, label),)
        if len(self._publish_cache) >= 4096:
            # Concrete topics are unbounded (ids); a full reset keeps memory flat.
            self._publish_cache.clear()
        self._publish_cache[topic] = targets
        return targets
