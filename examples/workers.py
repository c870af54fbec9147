"""One server process per core on one UDP port and one Redis: ``python -m examples.workers``.

What ``qsse serve --workers N --redis URL`` does, from Python: each process runs its own event
loop with its own :class:`~qsse_core.RedisBroker` and a :class:`~qsse_core.Server` listening
with ``reuse_port=True``; the kernel spreads clients over them (docs/scaling.md). Ctrl-C stops
them all.

    QSSE_REDIS_URL=redis://127.0.0.1:6379 QSSE_PORT=4242 python -m examples.workers
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal

from qsse_core import RedisBroker, Server

TOPICS = ["ride.*"]
PORT = int(os.environ.get("QSSE_PORT", "4242"))


async def serve(url: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = Server(TOPICS, host="127.0.0.1", port=PORT, reuse_port=True, broker=RedisBroker(url))
    async with server:
        print(f"worker {os.getpid()} listening on {server.address}", flush=True)
        await stop.wait()


def worker(url: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers
    asyncio.run(serve(url))


def main() -> None:
    url = os.environ.get("QSSE_REDIS_URL", "redis://127.0.0.1:6379")
    # spawn: each worker starts a fresh interpreter, no event loop state is inherited.
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=worker, args=(url,)) for _ in range(os.cpu_count() or 1)]
    for process in workers:
        process.start()
    try:
        for process in workers:
            process.join()
    except KeyboardInterrupt:
        for process in workers:
            process.terminate()  # SIGTERM: each server closes its connections with GOING_AWAY
        for process in workers:
            process.join(20)


if __name__ == "__main__":
    main()
