"""Runs one measurement: a server process and its subscriber processes, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ._common import CertFiles

__all__ = ["RunError", "RunSpec", "client_kind", "run_once"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RunError(Exception):
    """A run that did not complete: a process failed, fell silent or missed subscribers."""


def split_target(target: str) -> tuple[str, str | None]:
    """``qsse/1:sdk`` is qsse/1 measured with a forced client kind."""
    base, _, kind = target.partition(":")
    return base, kind or None


def quic_backend(target: str) -> str:
    """The QUIC library qsse runs on for ``target``: ``qsse/2@qh3`` is qsse/2 on qh3."""
    base = split_target(target)[0]
    return base.partition("@")[2] or "aioquic"


def client_kind(target: str, workload: str) -> str:
    """The subscriber client used for ``target``.

    qsse/1 at full speed (and idle) uses the bare QUIC receiver, as the raw ceiling does, so
    the server is what saturates; latency runs use the SDK client so the figure is
    publish-to-handler.
    A ``:kind`` suffix on the target forces the client.
    """
    target, forced = split_target(target)
    target = target.partition("@")[0]
    if forced is not None:
        return forced
    if workload == "idle" and (target == "qsse/1" or target.startswith("raw-")):
        # Thousands of qh3 clients per process time out handshakes; aioquic ones do not.
        return "light-aioquic"
    if target == "qsse/1":
        return "light" if workload == "fanout" else "sdk"
    if target.startswith("qsse/"):
        return "sdk"
    if target.startswith("raw-"):
        return "light"
    if target == "sse-starlette":
        return "sse"
    if target == "websockets":
        return "ws"
    raise ValueError(f"unknown target {target!r}")


def _subscriber_loop(kind: str, backend: str, loop: str) -> str:
    """Subscribers run on the servers' loop, except aioquic ones (bare receivers and the SDK
    ``Client`` on aioquic): several aioquic connections dialling from one process under uvloop
    time out their handshakes. qsse's ``Client`` on qh3 runs on uvloop."""
    if kind == "light-aioquic":
        return "asyncio"
    if kind == "sdk" and backend != "qh3":
        return "asyncio"
    if kind == "light":
        try:
            import qh3  # noqa: F401
        except ImportError:
            return "asyncio"
    return loop


@dataclass
class RunSpec:
    """Everything one run needs."""

    target: str
    workload: str
    n: int
    certs: CertFiles
    loop: str = "asyncio"
    processes: int = 1
    latency: bool = False
    topics: str = "bench"
    host: str = "127.0.0.1"
    pin: bool = True
    server_ns: str | None = None
    client_ns: str | None = None
    server_args: dict[str, Any] = field(default_factory=dict)
    timeout: float = 120.0
    #: run the server under py-spy, writing collapsed stacks to this path.
    profile: str | None = None


class _Proc:
    def __init__(self, proc: asyncio.subprocess.Process, name: str, log: str) -> None:
        self.proc = proc
        self.name = name
        self.log = log

    async def read_event(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for _ in range(100):  # skip stray non-JSON lines, bounded
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise RunError(f"{self.name} exited: {self.tail()}")
            try:
                event: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "error":
                raise RunError(f"{self.name}: {event.get('message')}")
            return event
        raise RunError(f"{self.name} printed no event")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        if self.proc.returncode is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.proc.stdin.write(command.encode() + b"\n")

    def tail(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    async def finish(self, timeout: float) -> None:
        if self.proc.returncode is not None:
            return
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _spawn(argv: list[str], name: str, netns: str | None, logdir: str, backend: str) -> _Proc:
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    log = os.path.join(logdir, name.replace("/", "_") + ".log")
    env = dict(os.environ)
    env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
    # qsse picks qh3 when it is installed unless told otherwise; the target says which.
    env["QSSE_QUIC_BACKEND"] = backend
    with open(log, "wb") as errors:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
            cwd=_ROOT,
            env=env,
            limit=64 * 1024 * 1024,
        )
    return _Proc(proc, name, log)


def _split(n: int, parts: int) -> list[int]:
    parts = max(1, min(parts, n))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


async def run_once(spec: RunSpec) -> dict[str, Any]:
    """Run ``spec`` and return the server's result and every subscriber's result."""
    logdir = tempfile.mkdtemp(prefix="qsse-bench-run-")
    server_cpu, client_cpus = ([0], [1]) if spec.pin and (os.cpu_count() or 1) >= 2 else ([], [])
    target = split_target(spec.target)[0].partition("@")[0]
    argv = [
        sys.executable,
        "-m",
        "bench._server",
        "--target",
        target,
        "--workload",
        spec.workload,
        "--host",
        spec.host,
        "--certfile",
        spec.certs.certfile,
        "--keyfile",
        spec.certs.keyfile,
        "--loop",
        spec.loop,
        "--n",
        str(spec.n),
    ]
    if server_cpu:
        argv += ["--cpu", str(server_cpu[0])]
    for key, value in spec.server_args.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    if spec.profile is not None:
        from ._profile import py_spy_argv

        argv = py_spy_argv(spec.profile) + argv
    procs: list[_Proc] = []
    try:
        backend = quic_backend(spec.target)
        server = await _spawn(argv, "server", spec.server_ns, logdir, backend)
        procs.append(server)
        ready = await server.read_event(30)
        port = int(ready["port"])
        kind = client_kind(spec.target, spec.workload)
        # Idle subscribers only hold connections open: they dial on aioquic whatever the
        # server runs on, as thousands of qh3 clients in one process time out handshakes.
        sub_backend = "aioquic" if spec.workload == "idle" else backend
        subscribers: list[_Proc] = []
        for i, count in enumerate(_split(spec.n, spec.processes)):
            sub_argv = [
                sys.executable,
                "-m",
                "bench._subscriber",
                "--target",
                target,
                "--client",
                kind,
                "--host",
                spec.host,
                "--port",
                str(port),
                "--n",
                str(count),
                "--topics",
                spec.topics,
                "--loop",
                _subscriber_loop(kind, sub_backend, spec.loop),
                "--max-time",
                str(spec.timeout),
            ]
            if client_cpus:
                sub_argv += ["--cpu", str(client_cpus[0])]
            if spec.latency:
                sub_argv.append("--latency")
            if spec.workload == "idle":
                # Fewer handshakes in flight: thousands at once time out on a one-core server.
                sub_argv += ["--concurrency", "16", "--timeout", "60"]
            sub = await _spawn(sub_argv, f"subscriber{i}", spec.client_ns, logdir, sub_backend)
            procs.append(sub)
            subscribers.append(sub)
        connect_timeout = 30 + spec.n * 0.05
        for sub in subscribers:
            event = await sub.read_event(connect_timeout)
            if event.get("errors"):
                raise RunError(f"{sub.name} failed to connect: {event['errors']}")
        server.send("run")
        await _drain(server)
        result = await server.read_event(spec.timeout)
        for sub in subscribers:
            sub.send("stop")
            await _drain(sub)
        sub_results = [await sub.read_event(60) for sub in subscribers]
        server.send("stop")
        await _drain(server)
        return {"server": result, "subscribers": sub_results, "client": kind}
    except TimeoutError:
        raise RunError(
            "timed out; logs: " + " | ".join(f"{p.name}: {p.tail()[-300:]}" for p in procs)
        ) from None
    finally:
        for proc in procs:
            proc.send("stop")
        await asyncio.gather(*(p.finish(10) for p in procs), return_exceptions=True)


async def _drain(proc: _Proc) -> None:
    assert proc.proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
        await asyncio.wait_for(proc.proc.stdin.drain(), 5)
