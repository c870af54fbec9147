"""Is memory given back? Server RSS while subscribers are served, after they leave, after
``Server.close()``; and around 10,000 half-open connections until their offer timeout.

``python -m bench.memory_release [--backends aioquic,qh3] [--subscribers 200] [--events 12000]
[--half-open 10000]`` runs one server process per backend (this module with ``--serve``) and
prints a markdown table. Subscribers are bare qsse/2 receivers in another process
(``bench._subscriber --client light``); half-open peers are bare QUIC clients in a third that
complete the handshake, send nothing, and vanish without a close. Every wait is bounded.

Besides RSS it counts the objects the server still holds per connection (QUIC connections,
protocols, sessions, outboxes) after the peers are gone: zero is the promise; RSS above the
start is what the allocator keeps for reuse (also shown after ``malloc_trim``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

_TIMEOUT = 300.0  # per phase


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def settle(trim: bool = False) -> float:
    gc.collect()
    if trim:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
    return round(rss_mb(), 1)


def held_objects() -> dict[str, int]:
    """Live objects of the kinds one connection costs, by class name."""
    names = {"QuicConnection", "QsseProtocol", "_Session", "_Outbox", "QuicStream"}
    counts: dict[str, int] = dict.fromkeys(sorted(names), 0)
    buffered = 0
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in names:
            counts[name] += 1
        if name == "QuicStream":  # aioquic: bytes its send buffer still holds
            buffered += len(getattr(getattr(obj, "sender", None), "_buffer", b""))
        elif name == "_Outbox":
            buffered += obj.size
    counts["buffered_bytes"] = buffered
    return counts


async def _spawn(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _event(proc: asyncio.subprocess.Process, name: str) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(_TIMEOUT):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"child exited before {name!r}")
            with contextlib.suppress(ValueError):
                event: dict[str, Any] = json.loads(line)
                if event.get("event") == name:
                    return event


async def _until(predicate: Any, what: str) -> None:
    async with asyncio.timeout(_TIMEOUT):
        while not predicate():
            await asyncio.sleep(0.05)


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    from qsse_core import Limits, Server

    out: dict[str, Any] = {"backend": os.environ.get("QSSE_QUIC_BACKEND", "auto")}
    out["start"] = settle()
    # -- subscribers ------------------------------------------------------------------------
    server = Server(["bench"], limits=Limits(offer_timeout=args.offer_timeout))
    await server.start()
    sub = await _spawn(
        "-m", "bench._subscriber", "--target", "qsse/2", "--client", "light",
        "--port", str(server.port), "--n", str(args.subscribers), "--topics", "bench",
        "--sample-interval", "1", "--max-time", str(_TIMEOUT),
    )  # fmt: skip
    ready = await _event(sub, "ready")
    await _until(lambda: server.subscription_count() >= args.subscribers, "subscribers")
    payload = b"x" * 200
    sent = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    while sent < args.events:
        # Publish as fast as the slowest subscriber's queue allows, as bench.fanout does.
        if max(_queued(server), default=0) < 256 * 1024:
            for _ in range(min(32, args.events - sent)):
                server.publish("bench", payload)
                sent += 1
        await asyncio.sleep(0)
        if loop.time() - started > _TIMEOUT:
            raise TimeoutError("publishing took too long")
    await _until(lambda: max(_queued(server), default=0) == 0, "delivery")
    await asyncio.sleep(1)  # qh3 counts unsent bytes only: let the last ones be acknowledged
    out["served"] = settle()
    out["connected"] = ready["connected"]
    assert sub.stdin is not None
    sub.stdin.write(b"stop\n")
    await sub.stdin.drain()
    result = await _event(sub, "result")
    out["received"] = result["count"]
    await _until(lambda: server.connection_count == 0, "subscribers leaving")
    await asyncio.wait_for(sub.wait(), _TIMEOUT)
    out["drained_s"] = await _drained(min(30, args.drain_limit))
    out["left"] = settle()
    out["held_left"] = held_objects()
    if os.environ.get("QSSE_MEMORY_DEBUG"):
        _referrers("_Session")
    await server.close()
    await asyncio.sleep(0.5)
    out["closed"] = settle()
    out["closed_trim"] = settle(trim=True)
    out["held_closed"] = held_objects()
    del server
    # -- half-open connections --------------------------------------------------------------
    if args.half_open:
        server = Server(["bench"], limits=Limits(offer_timeout=args.offer_timeout))
        await server.start()
        before = settle()
        dialer = await _spawn(
            "-m", "bench.memory_release", "--dial", str(args.half_open),
            "--port", str(server.port),
        )  # fmt: skip
        peak = before
        async with asyncio.timeout(_TIMEOUT):
            ready_task = asyncio.ensure_future(_event(dialer, "ready"))
            while not ready_task.done():
                peak = max(peak, rss_mb())
                await asyncio.sleep(0.2)
            dialed = ready_task.result()
        assert dialer.stdin is not None
        dialer.stdin.write(b"vanish\n")  # exits without closing anything
        await dialer.stdin.drain()
        await asyncio.wait_for(dialer.wait(), _TIMEOUT)
        await _until(lambda: server.connection_count == 0, "offer timeouts")
        drained = await _drained(args.drain_limit)
        out["half_open"] = {
            "drained_s": drained,
            "dialed": dialed["connected"],
            "before": before,
            "peak": round(peak, 1),
            "timed_out": settle(),
            "timed_out_trim": settle(trim=True),
            "held": held_objects(),
        }
        await server.close()
    return out


async def _drained(limit: float) -> float:
    """Seconds until QUIC has forgotten every connection (draining periods over; handshakes
    never finished end at the idle timeout), or ``limit``."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        gc.collect()  # connections sit in reference cycles: count only what is reachable
        if held_objects()["QuicConnection"] == 0:
            break
        await asyncio.sleep(1)
    return round(time.monotonic() - started, 1)


def _referrers(name: str) -> None:
    objs = [o for o in gc.get_objects() if type(o).__name__ == name]
    for obj in objs[:1]:
        for ref in gc.get_referrers(obj):
            if ref is objs:
                continue
            print("ref", type(ref).__name__, str(ref)[:300], file=sys.stderr)
            for ref2 in gc.get_referrers(ref):
                if ref2 is objs:
                    continue
                print("   ref2", type(ref2).__name__, str(ref2)[:300], file=sys.stderr)


def _queued(server: Any) -> list[int]:
    # Bytes each session still holds: qsse's queues plus what QUIC has not had acknowledged.
    totals = []
    for session in list(server._sessions):
        outboxes = {sub.outbox for sub in session.subscriptions.values()}
        totals.append(sum(o.size + session.backlog(o) for o in outboxes))
    return totals


async def dial(n: int, port: int) -> None:
    """Complete ``n`` handshakes, send nothing, then vanish when told."""
    import importlib

    from qsse_core._quic import client_backend

    quic = client_backend()  # qh3 when installed: it dials a qh3 server quickly, as aioquic not
    connect = importlib.import_module(f"{quic.name}.asyncio").connect
    config = quic.configuration(is_client=True, alpn_protocols=["qsse/2"], idle_timeout=600)
    quic.skip_verification(config)
    stack = contextlib.AsyncExitStack()
    connected = 0
    limit = asyncio.Semaphore(64)

    async def one() -> None:
        nonlocal connected
        async with limit:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    stack.enter_async_context(connect("127.0.0.1", port, configuration=config)),
                    30,
                )
                connected += 1

    await asyncio.gather(*(one() for _ in range(n)))
    print(json.dumps({"event": "ready", "connected": connected}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    os._exit(0)


def _held(counts: dict[str, int]) -> str:
    objects = sum(v for k, v in counts.items() if k != "buffered_bytes")
    return f"{objects} ({counts['buffered_bytes'] / 1e6:.1f} MB buffered)"


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | start | 200 subscribers served | after they leave | after close "
        "| after close + malloc_trim | objects held after leave / close | QUIC forgot them |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        held = " / ".join(_held(r[k]) for k in ("held_left", "held_closed"))
        lines.append(
            f"| {r['backend']} | {r['start']} | {r['served']} | {r['left']} | {r['closed']} "
            f"| {r['closed_trim']} | {held} | {r['drained_s']} s |"
        )
    if any("half_open" in r for r in rows):
        lines += [
            "",
            "| backend | half-open dialed | before | peak | after offer timeout "
            "| + malloc_trim | objects held | QUIC forgot them |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            h = r.get("half_open")
            if h:
                lines.append(
                    f"| {r['backend']} | {h['dialed']} | {h['before']} | {h['peak']} "
                    f"| {h['timed_out']} | {h['timed_out_trim']} | {_held(h['held'])} "
                    f"| {h['drained_s']} s |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="aioquic,qh3")
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--events", type=int, default=12_000)
    parser.add_argument("--half-open", type=int, default=10_000)
    parser.add_argument("--offer-timeout", type=float, default=10.0)
    # Handshakes never finished end at the server's idle timeout (60 s).
    parser.add_argument("--drain-limit", type=float, default=70.0)
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--dial", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.dial:
        asyncio.run(dial(args.dial, args.port))
        return
    if args.serve:
        print(json.dumps({"event": "result", **asyncio.run(serve(args))}), flush=True)
        return
    rows = []
    for backend in args.backends.split(","):
        argv = [sys.executable, "-m", "bench.memory_release", "--serve"]
        argv += ["--subscribers", str(args.subscribers), "--events", str(args.events)]
        argv += ["--half-open", str(args.half_open), "--offer-timeout", str(args.offer_timeout)]
        argv += ["--drain-limit", str(args.drain_limit)]
        env = {**os.environ, "QSSE_QUIC_BACKEND": backend}
        started = time.monotonic()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=4 * _TIMEOUT)
        results = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        if proc.returncode or not results:
            sys.exit(f"{backend}: server process failed:\n{proc.stderr[-3000:]}")
        row = results[-1]
        row["seconds"] = round(time.monotonic() - started)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print(_table(rows))


if __name__ == "__main__":
    main()
