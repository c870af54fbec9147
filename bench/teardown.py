"""Loop stall while N QUIC connections end at once: the library's server vs qsse's endpoint.

``python -m bench.teardown [--n 1000 5000] [--runs 3]``

A server in this process holds N connections from bare idle subscribers (one subprocess,
``bench._subscriber``, qh3 receivers), then closes them all at once, as an offer timeout or a
limit does. aioquic ends each connection after its closing period (RFC 9000 section 10.2),
so the N terminations land together. A ticker measures the longest the event loop went
without running it (the stall) from the moment every close is sent until every connection
has ended; sending the closes costs both servers the same and is left out.

- ``library``: aioquic's ``QuicServer`` (``aioquic.asyncio.serve``), which scans its whole
  connection-ID table on every termination: quadratic in N.
- ``qsse``: ``qsse_core.asyncio._endpoint``, each connection keeping its own IDs: linear.

Both run aioquic connections (the servers' default library) on the asyncio loop. Every wait
is bounded; a run that cannot hold its N subscribers is reported as failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from aioquic.asyncio import QuicConnectionProtocol as LibraryProtocol
from aioquic.asyncio import serve as library_serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent

from qsse_core._quic import server_backend
from qsse_core.asyncio._endpoint import listen
from qsse_core.asyncio._protocol import QsseProtocol

from ._common import raise_fd_limit, write_certificate

TICK = 0.005  # seconds between ticker wake-ups
HOLD_TIMEOUT = 300.0  # seconds to admit N subscribers
END_TIMEOUT = 300.0  # seconds for N connections to end


class Tracker:
    """Connections held and ended, and a way to close them all."""

    def __init__(self) -> None:
        self.live: dict[int, Callable[[], None]] = {}
        self.ended = 0
        self.changed = asyncio.Event()

    def on_event(self, key: int, event: QuicEvent, close: Callable[[], None]) -> None:
        if isinstance(event, HandshakeCompleted):
            self.live[key] = close
            self.changed.set()
        elif isinstance(event, ConnectionTerminated):
            self.live.pop(key, None)
            self.ended += 1
            self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def start_server(kind: str, tracker: Tracker, config: QuicConfiguration) -> tuple[int, Any]:
    if kind == "library":

        class Protocol(LibraryProtocol):
            def quic_event_received(self, event: QuicEvent) -> None:
                tracker.on_event(id(self), event, self.close)

        server = await library_serve("127.0.0.1", 0, configuration=config, create_protocol=Protocol)
        assert server._transport is not None
        return server._transport.get_extra_info("sockname")[1], server

    def create(quic: QuicConnection) -> QsseProtocol:
        protocol = QsseProtocol(quic)
        protocol.on_quic_event = lambda event: tracker.on_event(id(protocol), event, protocol.close)
        return protocol

    endpoint = await listen("127.0.0.1", 0, server_backend("aioquic"), config, create)
    return endpoint.sockname[1], endpoint


async def one_run(kind: str, n: int, certfile: str, keyfile: str) -> dict[str, Any]:
    config = QuicConfiguration(is_client=False, alpn_protocols=["PROTOCOL_QUIC"], idle_timeout=600)
    config.load_cert_chain(certfile, keyfile)
    tracker = Tracker()
    port, server = await start_server(kind, tracker, config)
    subscribers = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._subscriber",
        "--target=qsse/1",
        "--client=light",
        f"--port={port}",
        f"--n={n}",
        "--concurrency=32",
        "--timeout=60",
        f"--max-time={HOLD_TIMEOUT + END_TIMEOUT}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert subscribers.stdout is not None and subscribers.stdin is not None
        ready = json.loads(await asyncio.wait_for(subscribers.stdout.readline(), HOLD_TIMEOUT))
        if ready.get("connected") != n:
            return {"failed": f"{ready.get('connected')} of {n} connected: {ready.get('errors')}"}
        await tracker.until(lambda: len(tracker.live) == n, 30)

        loop = asyncio.get_running_loop()
        stall = 0.0
        ticking = True

        async def ticker() -> None:
            nonlocal stall
            while ticking:
                before = loop.time()
                await asyncio.sleep(TICK)
                stall = max(stall, loop.time() - before - TICK)

        started = time.perf_counter()
        for close in list(tracker.live.values()):
            close()
        # From here on the connections only wait out their closing period and end.
        task = asyncio.create_task(ticker())
        await tracker.until(lambda: tracker.ended >= n, END_TIMEOUT)
        took = time.perf_counter() - started
        await asyncio.sleep(0.05)
        ticking = False
        await task
        subscribers.stdin.write(b"stop\n")
        return {"stall_s": stall, "ended_in_s": took}
    except TimeoutError:
        return {"failed": f"timed out ({len(tracker.live)} held, {tracker.ended} ended)"}
    finally:
        if subscribers.returncode is None:
            try:
                await asyncio.wait_for(subscribers.wait(), 10)
            except TimeoutError:
                subscribers.kill()
                await subscribers.wait()
        server.close()


async def main(args: argparse.Namespace) -> None:
    cert = write_certificate()
    rows = []
    for n in args.n:
        figures: dict[str, list[dict[str, Any]]] = {"library": [], "qsse": []}
        for _ in range(args.runs):  # runs are the outer loop: noise spreads over both
            for kind in figures:
                result = await one_run(kind, n, cert.certfile, cert.keyfile)
                print(f"n={n} {kind}: {result}", file=sys.stderr, flush=True)
                figures[kind].append(result)
        for kind, results in figures.items():
            good = [r for r in results if "failed" not in r]
            stalls = sorted(r["stall_s"] for r in good)
            ended = sorted(r["ended_in_s"] for r in good)
            rows.append(
                {
                    "n": n,
                    "server": kind,
                    "runs": len(good),
                    "failed": [r["failed"] for r in results if "failed" in r],
                    "stall_s": statistics.median(stalls) if stalls else None,
                    "stall_range": [stalls[0], stalls[-1]] if stalls else None,
                    "ended_in_s": statistics.median(ended) if ended else None,
                }
            )
    print("| N | server | longest loop stall, s (median [min-max]) | all ended in, s | runs |")
    print("|---:|---|---:|---:|---:|")
    for row in rows:
        if row["stall_s"] is None:
            print(f"| {row['n']:,} | {row['server']} | failed: {row['failed']} | | 0 |")
            continue
        low, high = row["stall_range"]
        print(
            f"| {row['n']:,} | {row['server']} | {row['stall_s']:.3g} [{low:.3g}-{high:.3g}] "
            f"| {row['ended_in_s']:.3g} | {row['runs']} |"
        )
    library = {r["n"]: r["stall_s"] for r in rows if r["server"] == "library" and r["stall_s"]}
    for row in rows:
        if row["server"] == "qsse" and row["stall_s"] and row["n"] in library:
            ratio = row["stall_s"] / library[row["n"]]
            print(f"\nN = {row['n']:,}: qsse's stall is {ratio:.3g}x the library's")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    raise_fd_limit()
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
