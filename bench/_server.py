"""The server process: ``python -m bench._server --target ... --workload ...``.

It listens, prints ``ready``, waits for ``run`` on stdin, waits until the expected number of
subscribers is in, runs the workload, prints ``result`` and exits on ``stop``. Every wait and
loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import threading
import time

from ._common import (
    CertFiles,
    cpu_seconds,
    emit,
    make_payload,
    pin_to,
    raise_fd_limit,
    rss_bytes,
    run_loop,
)
from ._servers import BenchServer, make_server


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str]:
    queue: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.strip())
        loop.call_soon_threadsafe(queue.put_nowait, "stop")

    threading.Thread(target=read, daemon=True).start()
    return queue


async def _wait_subscribers(server: BenchServer, n: int, timeout: float) -> int:
    wait = getattr(server, "wait_subscribers", None)
    if wait is not None:  # qsse: Server.wait_subscribed() per topic
        return int(await wait(n, timeout))
    deadline = time.monotonic() + timeout
    while server.subscriber_count() < n and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return server.subscriber_count()


async def _fanout(server: BenchServer, args: argparse.Namespace) -> dict[str, object]:
    """Publish as fast as the slowest subscriber's backlog allows."""
    high = args.high_water
    batch = args.batch
    start = time.monotonic()
    warm_end = start + args.warmup
    end = warm_end + args.duration
    seq = 0
    t_start = cpu_start = published_start = 0
    measuring = False
    held_back = 0
    max_iterations = 50_000_000  # the time bound ends the loop long before this
    for _ in range(max_iterations):
        now = time.monotonic()
        if not measuring and now >= warm_end:
            measuring = True
            t_start, cpu_start, published_start = time.monotonic_ns(), cpu_seconds(), seq
        if now >= end:
            break
        if server.backlog() < high:
            payload = make_payload(seq, args.size)
            for _ in range(batch):
                server.publish("bench", payload)
            seq += batch
            await asyncio.sleep(0)
        else:
            held_back += 1
            # Back off long enough that polling the backlog stays a small share of the CPU.
            await asyncio.sleep(0.002)
    return {
        "t_start": t_start,
        "t_end": time.monotonic_ns(),
        "cpu": cpu_seconds() - cpu_start,
        "published": seq - published_start,
        "held_back": held_back,
    }


async def _paced(
    server: BenchServer, streams: list[tuple[str, float, int]], duration: float
) -> dict[str, object]:
    """Publish each ``(topic, rate, size)`` stream on its own schedule for ``duration`` s."""
    start = time.monotonic()
    end = start + duration
    nexts = [start for _ in streams]
    counts = [0 for _ in streams]
    cpu0 = cpu_seconds()
    max_iterations = int(duration * 20_000) + 1000
    for _ in range(max_iterations):
        now = time.monotonic()
        if now >= end:
            break
        for i, (topic, rate, size) in enumerate(streams):
            while nexts[i] <= now:
                server.publish(topic, make_payload(counts[i], size))
                counts[i] += 1
                nexts[i] += 1.0 / rate
        await asyncio.sleep(max(0.0, min(nexts) - time.monotonic()))
    elapsed = time.monotonic() - start
    return {
        "published": {topic: counts[i] for i, (topic, _, _) in enumerate(streams)},
        "cpu": cpu_seconds() - cpu0,
        "elapsed": elapsed,
    }


async def _idle(server: BenchServer, args: argparse.Namespace, rss0: int) -> dict[str, object]:
    await asyncio.sleep(args.settle)
    gc.collect()
    rss = rss_bytes()
    return {"rss_before": rss0, "rss_after": rss, "held": server.subscriber_count()}


async def _main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    certs = CertFiles(args.certfile, args.keyfile)
    topics = ["small", "big"] if args.workload == "hol" else ["bench"]
    server = make_server(args.target, certs, topics, args.cc or None, args.redis or None)
    port = await server.start(args.host, 0)
    gc.collect()
    rss0 = rss_bytes()
    emit("ready", port=port, rss=rss0)
    commands = _stdin_lines(asyncio.get_running_loop())
    command = await commands.get()
    if command == "run":
        held = await _wait_subscribers(server, args.n, args.subscribe_timeout)
        if held < args.n:
            emit("error", message=f"only {held} of {args.n} subscribers arrived")
        else:
            result: dict[str, object]
            if args.workload == "fanout":
                result = await _fanout(server, args)
            elif args.workload == "paced":
                result = await _paced(server, [("bench", args.rate, args.size)], args.duration)
            elif args.workload == "hol":
                streams = [("small", args.rate, args.size), ("big", args.big_rate, args.big_size)]
                result = await _paced(server, streams, args.duration)
            else:
                result = await _idle(server, args, rss0)
            # Let the last flush reach the subscribers before they are told to stop.
            await asyncio.sleep(args.drain)
            emit("result", **result)
        for _ in range(1000):  # bounded wait for "stop"
            try:
                command = await asyncio.wait_for(commands.get(), 1.0)
            except TimeoutError:
                continue
            if command == "stop":
                break
    await asyncio.wait_for(server.close(), 10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--workload", choices=["fanout", "paced", "hol", "idle"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--cpu", type=int, default=-1)
    # Empty: the QUIC library's own congestion controller (qh3 refuses any name).
    parser.add_argument("--cc", default="")
    parser.add_argument("--n", type=int, default=1)
    # A Redis URL: qsse publishes through a RedisBroker on it (bench.redis_scale).
    parser.add_argument("--redis", default="")
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--high-water", type=int, default=512 * 1024)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--big-rate", type=float, default=4.0)
    parser.add_argument("--big-size", type=int, default=64 * 1024)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--drain", type=float, default=0.3)
    parser.add_argument("--subscribe-timeout", type=float, default=60.0)
    args = parser.parse_args()
    if args.cpu >= 0:
        pin_to([args.cpu])
    raise_fd_limit()
    run_loop(lambda: _main(args), args.loop)


if __name__ == "__main__":
    main()
