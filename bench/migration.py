"""Connection migration: the pause per address change and the events lost, on loopback.

A server publishes numbered events at a steady rate to one subscriber that reaches it through
the UDP relay of ``tests/relay.py``; the relay moves the connection to a new source port a few
times per run (each way of ``Move``), optionally with delay added in each direction. One more
run without moves is the baseline: its longest gap between two events is what the machine and
the delay cost by themselves. A client-initiated run calls ``Client.rebind()`` instead (and
the relay gives the new socket a new port, as a NAT maps each socket to its own). A pause is
the longest wait for the next event that began between a change and the next one.

    python -m bench.migration                    # 3 runs per row, ~10 min
    python -m bench.migration --runs 1 --seconds 4 --delays 0   # a quick look

Every run is bounded: ``--seconds`` of publishing, then at most 5 s for the last events.
Prints a markdown table of medians over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
from dataclasses import dataclass, field

from qsse_core import Client, ConnectionState, Message, ReconnectPolicy, Server
from qsse_core._quic import client_backend, server_backend
from tests.relay import Move, UdpRelay

WAYS = ("none", *(m.value for m in Move), "rebind")


@dataclass
class Run:
    published: int = 0
    arrivals: dict[int, float] = field(default_factory=dict)
    changes: list[float] = field(default_factory=list)
    reconnects: int = 0
    end: float = 0.0

    def lost(self) -> int:
        return self.published - len(self.arrivals)

    def pauses(self, until: float) -> list[float]:
        """Per change: the longest wait for the next event that began between the change and
        the next one (or ``until``), however long it lasted."""
        times = sorted(self.arrivals.values())
        ends = [*self.changes[1:], until]
        return [
            max((b - a for a, b in itertools.pairwise(times) if at - 0.1 <= a < end), default=0.0)
            for at, end in zip(self.changes, ends, strict=True)
        ]


async def one_run(
    way: str,
    *,
    delay: float,
    seconds: float,
    rate: float,
    changes: int,
    probe: float | None,
    server_backend: str | None,
) -> Run:
    loop = asyncio.get_running_loop()
    run = Run()
    async with (
        Server(["feed"], quic_backend=server_backend) as server,
        UdpRelay(("127.0.0.1", server.port), delay=delay) as relay,
    ):
        client = Client(
            relay.address,
            ["feed"],
            insecure=True,
            protocols=("qsse/2",),
            reconnect=ReconnectPolicy(interval=0.05, max_attempts=None),
            probe_interval=probe,
        )

        def on_message(message: Message) -> None:
            run.arrivals.setdefault(int(message.data), loop.time())

        def on_state(change: object) -> None:
            if getattr(change, "state", None) is ConnectionState.LOST:
                run.reconnects += 1

        client.on_message(on_message)
        client.on_state(on_state)
        async with client:
            await server.wait_subscribed("feed")
            start = loop.time()
            every = seconds / (changes + 1)
            next_change = start + every
            moves: set[asyncio.Future[bool]] = set()
            while (now := loop.time()) < start + seconds:
                # Paced by the clock, so that a slow loop catches up instead of drifting.
                due = int((now - start) * rate) + 1
                while run.published < due:
                    server.publish("feed", b"%d" % run.published)
                    run.published += 1
                if now >= next_change and len(run.changes) < changes:
                    run.changes.append(loop.time())
                    if way == "none":
                        pass  # the baseline: the same instants, nothing moves
                    elif way == "rebind":
                        # The client's new socket gets a new mapping at the NAT as well,
                        # and the old network is gone once it speaks.
                        await relay.move(Move.DROP_AT_NEXT)
                        moves.add(asyncio.ensure_future(client.rebind()))
                    else:
                        await relay.move(Move(way))
                    next_change += every
                await asyncio.sleep(1 / rate)
            deadline = loop.time() + 5
            while len(run.arrivals) < run.published and loop.time() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.gather(*moves, return_exceptions=True)
            run.end = loop.time()
    return run


async def bench(args: argparse.Namespace) -> list[dict[str, float | str]]:
    rows: list[dict[str, float | str]] = []
    print(
        f"server on {server_backend(args.server_backend).name}, client on {client_backend().name}, "
        f"{args.rate:g} events/s for {args.seconds:g} s"
    )
    print(f"{args.changes} changes per run, medians of {args.runs} runs,")
    print(f"client probe_interval {args.probe_interval} s\n")
    print(
        "| added RTT | how the address changes | pause per change, median (max), ms "
        "| same, no change (baseline), ms | events lost | reconnects |"
    )
    print("|---|---|---|---|---|---|")
    for delay in args.delays:
        baselines: list[float] = []
        common = {
            "delay": delay,
            "seconds": args.seconds,
            "rate": args.rate,
            "probe": args.probe_interval,
            "server_backend": args.server_backend,
        }
        for _ in range(args.runs):
            base = await one_run("none", changes=args.changes, **common)
            baselines.extend(p * 1000 for p in base.pauses(base.end))
        baseline = f"{statistics.median(baselines):.0f} ({max(baselines):.0f})"
        for way in args.ways:
            pauses: list[float] = []
            lost: list[int] = []
            reconnects: list[int] = []
            for _ in range(args.runs):
                run = await one_run(way, changes=args.changes, **common)
                pauses.extend(p * 1000 for p in run.pauses(run.end))
                lost.append(run.lost())
                reconnects.append(run.reconnects)
            row: dict[str, float | str] = {
                "rtt_added": 2 * delay,
                "way": way,
                "pause_median_ms": statistics.median(pauses),
                "pause_max_ms": max(pauses),
                "lost": statistics.median(lost),
                "reconnects": statistics.median(reconnects),
            }
            rows.append(row)
            print(
                f"| {2 * delay * 1000:g} ms | {way} "
                f"| {statistics.median(pauses):.0f} ({max(pauses):.0f}) "
                f"| {baseline} | {statistics.median(lost):g} "
                f"| {statistics.median(reconnects):g} |",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, float | str]]:
    """Run the benchmark; returns the table's rows (pauses in ms, others per run)."""
    parser = argparse.ArgumentParser(prog="python -m bench.migration", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--changes", type=int, default=5, help="address changes per run")
    parser.add_argument(
        "--delays", type=float, nargs="+", default=[0.0, 0.025], help="one-way delay, s"
    )
    parser.add_argument(
        "--probe-interval", type=float, default=1.0, help="the client's, in s (its default)"
    )
    parser.add_argument("--server-backend", choices=("aioquic", "qh3"), default=None)
    parser.add_argument("--ways", nargs="+", default=list(WAYS[1:]), choices=WAYS[1:])
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 20 or not 0 < args.seconds <= 120 or not 0 < args.rate <= 5000:
        sys.exit("runs must be 1-20, seconds 0-120, rate 0-5000")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    main()
