"""The opt-in lossy link: two network namespaces joined by ``netem-tun.py`` (needs root)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import TracebackType

__all__ = ["NetemLink", "default_tool"]


def default_tool() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "shared", "tools", "netem-tun.py"))


class NetemLink:
    """``with NetemLink(...):`` creates the namespaces, starts the relay and removes both.

    :param max_time: seconds after which the relay stops by itself, whatever happens here.
    """

    def __init__(
        self,
        tool: str,
        namespaces: tuple[str, str] = ("qlsrv", "qlcli"),
        delay_ms: float = 20.0,
        loss: float = 0.02,
        max_time: float = 600.0,
    ) -> None:
        self.tool = tool
        self.namespaces = namespaces
        self.delay_ms = delay_ms
        self.loss = loss
        self.max_time = max_time
        self._relay: subprocess.Popen[str] | None = None
        self.counters = ""

    def __enter__(self) -> NetemLink:
        if os.geteuid() != 0:
            raise RuntimeError("the netem link needs root (network namespaces and TUN devices)")
        if not os.path.exists(self.tool):
            raise RuntimeError(f"netem tool not found at {self.tool}")
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "add", ns], check=True)
        srv, cli = self.namespaces
        self._relay = subprocess.Popen(
            [
                sys.executable,
                self.tool,
                "--ns-srv",
                srv,
                "--ns-cli",
                cli,
                "--delay-ms",
                str(self.delay_ms),
                "--loss",
                str(self.loss),
                "--max-time",
                str(int(self.max_time)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self._relay.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self._relay.stdout.readline()
            if not line:
                break
            if "READY" in line:
                return self
        self.__exit__(None, None, None)
        raise RuntimeError("netem-tun.py did not report READY within 30 s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._relay is not None and self._relay.poll() is None:
            self._relay.send_signal(signal.SIGTERM)
            try:
                out, _ = self._relay.communicate(timeout=10)
                self.counters = out.strip()[-2000:]
            except subprocess.TimeoutExpired:
                self._relay.kill()
                self._relay.wait()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
