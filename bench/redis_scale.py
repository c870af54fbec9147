"""``python -m bench.redis_scale``: qsse on Redis against qsse in memory, workers, failover.

Three measurements, each run ``--repeats`` times (medians reported), bounded in time:

- ``fanout``: N = 100 bare qsse/2 receivers, the server publishing as fast as its backlog
  allows (the harness's fan-out run), with the in-memory broker and through Redis: events/s
  delivered, server CPU seconds per 1,000 delivered events, and redis-server's CPU per 1,000.
- ``workers``: ``qsse serve --workers W --redis`` for W = 1 and 2 on one port, N = 100 bare
  receivers, a separate publisher pacing events through Redis at rising rates (``--rates``):
  the share of deliveries that arrived, events/s delivered and the workers' CPU (cores).
- ``failover``: a subscriber given two nodes' addresses, events at 1,000/s through Redis; its
  node is killed (SIGKILL, or SIGTERM for a graceful close): seconds from the kill to the
  first event from the other node, and whether every event arrived once and in order.

Needs ``redis-server`` on PATH; a private one is started on a unix socket in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from ._common import write_certificate
from ._harness import RunSpec, run_once
from ._scenarios import _interp, fanout_figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed (Debian package redis-server)")
        self.dir = tempfile.mkdtemp(prefix="qsse-bench-redis-")
        self.socket = os.path.join(self.dir, "redis.sock")
        self.proc = subprocess.Popen(
            [exe, "--port", "0", "--unixsocket", self.socket, "--save", "", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("redis-server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def cpu(self) -> float:
        return _cpu_of(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)


def _median(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


async def fanout(redis: Redis, repeats: int, n: int) -> dict[str, dict[str, float]]:
    certs = write_certificate()
    runs: dict[str, list[dict[str, float]]] = {"memory": [], "redis": []}
    for repeat in range(repeats):
        for mode in ("memory", "redis"):
            args: dict[str, Any] = {"duration": 3.0, "warmup": 1.0, "size": 200}
            if mode == "redis":
                args["redis"] = redis.url
            spec = RunSpec(
                target="qsse/2@qh3:light",
                workload="fanout",
                n=n,
                certs=certs,
                loop="uvloop",
                processes=4,
                server_args=args,
            )
            cpu0 = redis.cpu()
            result = await run_once(spec)
            figures = fanout_figures(result)
            delivered_k = figures["events_s"] * 3.0 / 1000
            # Redis works for the whole run (warm-up and drain too): an upper bound.
            figures["redis_cpu_s_per_1k"] = (redis.cpu() - cpu0) / max(delivered_k, 1e-9)
            runs[mode].append(figures)
            _log(f"fanout {mode} #{repeat + 1}: " + json.dumps(figures))
    return {
        mode: {k: _median([r[k] for r in rs]) for k in rs[0]} for mode, rs in runs.items() if rs
    }


async def _subscribers(port: int, n: int, processes: int) -> list[asyncio.subprocess.Process]:
    procs = []
    for i in range(processes):
        count = n // processes + (1 if i < n % processes else 0)
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench._subscriber",
                "--target",
                "qsse/2",
                "--client",
                "light",
                "--port",
                str(port),
                "--n",
                str(count),
                "--loop",
                "uvloop",
                "--max-time",
                "120",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                cwd=ROOT,
                env={**os.environ, "QSSE_QUIC_BACKEND": "qh3"},
            )
        )
    return procs


async def _event(proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    for _ in range(100):
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("subscriber exited")
        try:
            event: dict[str, Any] = json.loads(line)
            return event
        except ValueError:
            continue
    raise RuntimeError("no event")


async def _start_serve(
    topics: list[str], port: int, url: str, workers: int, history: int = 1000
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "qsse_core", "serve", *topics, "--port", str(port)),
            *("--workers", str(workers), "--history-events", str(history)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "QSSE_REDIS_URL": url, "QSSE_QUIC_BACKEND": "qh3"},
        cwd=ROOT,
    )
    assert proc.stdout is not None
    for _ in range(workers):
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        if not line.startswith(b"listening"):
            raise RuntimeError(f"qsse serve did not start: {line!r}")
    return proc


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


async def _publish_paced(url: str, rate: float, seconds: float) -> tuple[int, int, int]:
    """Publish through Redis at ``rate`` events/s for ``seconds``; return the count and the
    monotonic ns at which the measured window (after a 1 s warm-up) starts and ends."""
    from qsse_core import RedisBroker

    payload = b'"' + b"x" * 198 + b'"'
    count = 0
    async with RedisBroker(url, max_batch=1024) as broker:
        start = time.monotonic()
        t0 = t1 = 0
        for tick in range(int((seconds + 1.0) * 100)):  # 10 ms ticks, bounded
            if tick == 100:
                t0 = time.monotonic_ns()
            due = int(rate * (tick + 1) / 100)
            while count < due:
                broker.publish_nowait("bench", "bench", payload, 1)
                count += 1
            await asyncio.sleep(max(0.0, start + (tick + 1) / 100 - time.monotonic()))
        t1 = time.monotonic_ns()
        await broker.flush()
    return count, t0, t1


async def workers(
    redis: Redis, repeats: int, n: int, rates: list[float]
) -> dict[str, dict[str, dict[str, float]]]:
    """Paced fan-out at rising rates; the share of deliveries that arrived (a subscriber that
    falls too far behind is disconnected as a slow consumer, which the share shows)."""
    runs: dict[str, dict[str, list[dict[str, float]]]] = {"1": {}, "2": {}}
    duration = 3.0
    for repeat in range(repeats):
        for w in (1, 2):
            port = _free_udp_port()
            serve = await _start_serve(["bench"], port, redis.url, w)
            subs = await _subscribers(port, n, 4)
            windows = []
            try:
                for sub in subs:
                    ready = await _event(sub, 60)
                    if ready.get("errors"):
                        raise RuntimeError(f"subscribers failed: {ready['errors']}")
                pids = _children(serve.pid) if w > 1 else [serve.pid]
                for rate in rates:
                    cpu0 = sum(_cpu_of(p) for p in pids)
                    _, t0, t1 = await _publish_paced(redis.url, rate, duration)
                    cpu1 = sum(_cpu_of(p) for p in pids)
                    await asyncio.sleep(1.0)  # let the window's events arrive
                    windows.append((rate, t0, t1, time.monotonic_ns(), cpu1 - cpu0))
                for sub in subs:
                    assert sub.stdin is not None
                    sub.stdin.write(b"stop\n")
                results = [await _event(sub, 60) for sub in subs]
            finally:
                for sub in subs:
                    if sub.returncode is None:
                        sub.kill()
                    await sub.wait()
                _stop(serve)
            for rate, t0, t1, t_end, cpu in windows:
                # Events published in [t0, t1] arrive by t_end (1 s later) if they arrive.
                got = sum(_interp(r["samples"], t_end) - _interp(r["samples"], t0) for r in results)
                window = (t1 - t0) / 1e9
                figures = {
                    "delivered_share": got / (rate * window * n),
                    "events_s": got / window,
                    "server_cpu": cpu / (duration + 1.0),
                }
                runs[str(w)].setdefault(str(int(rate)), []).append(figures)
                _log(f"workers={w} rate={rate:g} #{repeat + 1}: " + json.dumps(figures))
    return {
        w: {rate: {k: _median([r[k] for r in rs]) for k in rs[0]} for rate, rs in by_rate.items()}
        for w, by_rate in runs.items()
    }


async def failover(redis: Redis, repeats: int, idle_timeout: float) -> dict[str, dict[str, float]]:
    from qsse_core import Client, ReconnectPolicy, RedisBroker

    out: dict[str, list[dict[str, float]]] = {"SIGKILL": [], "SIGTERM": []}
    for repeat in range(repeats):
        for how, sig in (("SIGKILL", signal.SIGKILL), ("SIGTERM", signal.SIGTERM)):
            ports = [_free_udp_port(), _free_udp_port()]
            nodes = [await _start_serve(["t"], p, redis.url, 1, 10_000) for p in ports]
            client = Client(
                [f"127.0.0.1:{p}" for p in ports],
                ["t"],
                insecure=True,
                protocols=["qsse/2"],
                idle_timeout=idle_timeout,
                reconnect=ReconnectPolicy(interval=0.05, max_interval=0.5, max_attempts=None),
            )
            got: list[tuple[float, int, int]] = []  # (arrival, id, port)

            def on_message(m: Any, got: list[Any] = got, client: Client = client) -> None:
                got.append((time.monotonic(), m.id or 0, client.port))

            client.on_message(on_message)
            try:
                async with client, RedisBroker(redis.url) as publisher:
                    async with asyncio.timeout(30):
                        while not got:
                            await publisher.publish("t", "t", b"0", 1)
                            await asyncio.sleep(0.05)
                    killed_at = 0.0
                    first_port = client.port
                    for i in range(3000):  # 3 s at 1,000/s; the kill at 1 s
                        publisher.publish_nowait("t", "t", b"%d" % i, 1)
                        if i == 1000:
                            victim = nodes[ports.index(first_port)]
                            victim.send_signal(sig)
                            killed_at = time.monotonic()
                        if i % 10 == 9:
                            await asyncio.sleep(0.01)
                    await publisher.flush()
                    last = await publisher.publish("t", "t", b"end", 1)
                    async with asyncio.timeout(60):
                        while not got or got[-1][1] < last:
                            await asyncio.sleep(0.02)
                moved = [t for t, _, port in got if port != first_port and t >= killed_at]
                ids = [i for _, i, _ in got]
                figures = {
                    "failover_s": (moved[0] - killed_at) if moved else float("nan"),
                    "exactly_once_in_order": float(ids == list(range(ids[0], ids[-1] + 1))),
                }
                out[how].append(figures)
                _log(f"failover {how} #{repeat + 1}: " + json.dumps(figures))
            finally:
                for node in nodes:
                    _stop(node)
    return {how: {k: _median([r[k] for r in rs]) for k in rs[0]} for how, rs in out.items() if rs}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    redis = Redis()
    results: dict[str, Any] = {"repeats": args.repeats, "n": args.n}
    try:
        if "fanout" in args.scenarios:
            results["fanout"] = await fanout(redis, args.repeats, args.n)
        if "workers" in args.scenarios:
            rates = [float(r) for r in args.rates.split(",")]
            results["workers"] = await workers(redis, args.repeats, args.n, rates)
        if "failover" in args.scenarios:
            results["failover"] = await failover(redis, args.repeats, args.idle_timeout)
            results["idle_timeout"] = args.idle_timeout
    finally:
        redis.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="fanout,workers,failover")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    parser.add_argument("--rates", default="500,1000,2000,3000")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    args.scenarios = args.scenarios.split(",")
    results = asyncio.run(_main(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
