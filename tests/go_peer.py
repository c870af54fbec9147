"""The Go-flavoured qsse peer (``tests/go/qssepeer``): built once, driven as a subprocess.

It is built with Debian's ``golang-go`` and ``golang-github-lucas-clemente-quic-go-dev``
(quic-go 0.29, the version Go qsse used) in GOPATH mode, with no module download.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).parent / "go" / "qssepeer"
GOPATH_SYSTEM = Path("/usr/share/gocode")
QUIC_GO = GOPATH_SYSTEM / "src" / "github.com" / "lucas-clemente" / "quic-go"


def missing() -> str | None:
    """Why the Go peer cannot be built here, or None."""
    if shutil.which("go") is None:
        return "no go toolchain (apt-get install golang-go)"
    if not QUIC_GO.is_dir():
        return f"no quic-go source at {QUIC_GO} (apt-get install golang-github-lucas-clemente-quic-go-dev)"
    return None


def build() -> Path:
    """Build the peer (cached by source hash) and return its executable."""
    digest = hashlib.sha256()
    for path in sorted(SOURCE.glob("*.go")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qsse-tests"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = Path(tempfile.gettempdir()) / "qsse-tests"
        cache.mkdir(parents=True, exist_ok=True)
    binary = cache / f"qssepeer-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{cache / 'gopath'}:{GOPATH_SYSTEM}",
        "GOCACHE": str(cache / "gocache"),
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    partial = binary.with_suffix(f".{os.getpid()}.tmp")
    result = subprocess.run(
        ["go", "build", "-o", str(partial), "."],
        cwd=SOURCE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"building the Go peer failed:\n{result.stderr}")
    partial.replace(binary)
    return binary


class GoPeer:
    """A running ``qssepeer``: its stdout lines as dicts, its stdin for commands."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._seen = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, binary: Path, *args: str) -> GoPeer:
        process = await asyncio.create_subprocess_exec(
            str(binary),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=16 * 1024 * 1024,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(json.loads(line))
            self._seen.set()
        self._seen.set()

    @property
    def exited(self) -> bool:
        return self._reader.done()

    async def expect(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first line (seen or to come) matching ``predicate``; AssertionError after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for line in self.lines:
                        if predicate(line):
                            return line
                    if self.exited:
                        raise AssertionError(f"the Go peer exited; it said {self.lines[-5:]}")
                    self._seen.clear()
                    await self._seen.wait()
        except TimeoutError:
            raise AssertionError(
                f"the Go peer did not say it within {timeout} s: {self.lines[-5:]}"
            ) from None

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("kind") == kind]

    async def command(self, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(fields).encode() + b"\n")
        await self.process.stdin.drain()

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await asyncio.wait_for(self._reader, 5)
