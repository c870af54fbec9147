"""A real redis-server for tests: started on a unix socket in a temp dir, with an append-only
file so a restart keeps the data (as a production Redis with persistence would)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")


class RedisProcess:
    def __init__(self, directory: Path, extra: dict[str, str] | None = None) -> None:
        if REDIS_SERVER is None:
            reason = "redis-server is not installed (Debian package redis-server)"
            if os.environ.get("QSSE_REQUIRE_REDIS") == "1":
                pytest.fail(f"Redis is required here: {reason}")
            pytest.skip(reason)
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra = dict(extra or {})

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        options = {
            "port": "0",
            "unixsocket": str(self.socket),
            "unixsocketperm": "700",
            "dir": str(self.dir),
            "save": "",
            "appendonly": "yes",
            "appendfsync": "always",
            "logfile": str(self.dir / "redis.log"),
            **self.extra,
        }
        args = [REDIS_SERVER]
        for name, value in options.items():
            args += [f"--{name}", value]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.wait_ready()
        except BaseException:
            self.stop(signal.SIGKILL)  # never leave a server behind a failed start
            raise

    def wait_ready(self, timeout: float = 20.0) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                with self._client(redis) as client:
                    if client.ping():
                        return
            except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not start: {self.log()}")
            time.sleep(0.02)

    def command(self, *args: str | int | bytes) -> object:
        import redis

        with self._client(redis) as client:
            return client.execute_command(*args)

    def _client(self, redis):
        return redis.Redis(
            unix_socket_path=str(self.socket), password=self.extra.get("requirepass")
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text()[-2000:] if path.exists() else ""
