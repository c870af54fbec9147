"""Server memory while it holds N concurrent subscribers, on the default QUIC backend.

``python -m bench.hold [--n 5000] [--protocol qsse/1|qsse/2]``: one protocol per process, so
that neither run's freed memory is reused by the other.

A ``qsse_core.Server`` in this process, with the library each role picks by default (no
``QSSE_QUIC_*`` variable: aioquic for servers), admits N bare subscribers from one
subprocess (``bench._subscriber``, qh3 receivers, 16 handshakes in flight, 120 s each, no CPU
pinning so a shared machine can balance). Once all N subscriptions are held, one event is published
to all of them and counted on arrival: held means reachable. Reported: the server's RSS
growth per subscriber (after ``gc.collect()``), its RSS, and the time to admit them. Every
wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from typing import Any

from ._common import raise_fd_limit, rss_bytes, write_certificate

ADMIT_TIMEOUT = 600.0  # seconds for N subscribers to connect and subscribe
DELIVER_TIMEOUT = 60.0  # seconds for one event to reach all of them


async def one_run(protocol: str, n: int) -> dict[str, Any]:
    for name in ("QSSE_QUIC_BACKEND", "QSSE_QUIC_SERVER_BACKEND", "QSSE_QUIC_CLIENT_BACKEND"):
        os.environ.pop(name, None)
    from qsse_core import Limits, Server

    cert = write_certificate()
    server = Server(
        ["bench"],
        certfile=cert.certfile,
        keyfile=cert.keyfile,
        # Idle subscribers stay for the whole run; offers may wait behind thousands of
        # handshakes on a loaded machine.
        limits=Limits(max_connections=100_000, idle_timeout=600.0, offer_timeout=120.0),
    )
    async with server:
        gc.collect()
        rss_before = rss_bytes()
        started = time.monotonic()
        subscribers = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench._subscriber",
            f"--target={protocol}",
            "--client=light",
            f"--port={server.port}",
            f"--n={n}",
            "--concurrency=16",
            "--timeout=120",
            f"--max-time={ADMIT_TIMEOUT + DELIVER_TIMEOUT + 60}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=64 * 1024 * 1024,
        )
        try:
            assert subscribers.stdout is not None and subscribers.stdin is not None
            line = await asyncio.wait_for(subscribers.stdout.readline(), ADMIT_TIMEOUT)
            ready = json.loads(line)
            # A handshake that times out on a loaded machine is reported, not hidden: the
            # figures below are per subscriber actually held.
            connected = int(ready.get("connected", 0))
            if connected < n * 0.99:
                return {"failed": f"{connected} of {n} connected: {ready.get('errors')}"}
            try:
                await server.wait_subscribed("bench", connected, timeout=ADMIT_TIMEOUT)
            except TimeoutError:
                return {"failed": f"{server.subscription_count('bench')} of {n} subscribed"}
            admitted_in = time.monotonic() - started
            await asyncio.sleep(2.0)  # let acknowledgements settle
            gc.collect()
            rss_after = rss_bytes()
            held = server.subscription_count("bench")
            queued = server.publish("bench", b'{"hello":"subscribers"}')
            # Give the event time to arrive (bounded), then ask for the count.
            await asyncio.sleep(5.0)
            subscribers.stdin.write(b"stop\n")
            await subscribers.stdin.drain()
            result: dict[str, Any] = {}
            async with asyncio.timeout(DELIVER_TIMEOUT):
                while not result:
                    line = await subscribers.stdout.readline()
                    if not line:
                        break
                    message = json.loads(line)
                    if message.get("event") == "result":
                        result = message
            return {
                "held": held,
                "queued": queued,
                "delivered": result.get("count"),
                "connected": connected,
                "kib_per_subscriber": (rss_after - rss_before) / held / 1024,
                "rss_mib": rss_after / 2**20,
                "admitted_in_s": admitted_in,
                "backend": server.quic_backend,
            }
        except TimeoutError:
            return {"failed": f"timed out with {server.subscription_count('bench')} subscribed"}
        finally:
            if subscribers.returncode is None:
                try:
                    await asyncio.wait_for(subscribers.wait(), 15)
                except TimeoutError:
                    subscribers.kill()
                    await subscribers.wait()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--protocol", choices=["qsse/1", "qsse/2"], default="qsse/2")
    args = parser.parse_args()
    raise_fd_limit()
    print(
        "| protocol | N | server | connected | held | got the event | KiB per subscriber "
        "| RSS MiB | admitted in s |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for protocol in [args.protocol]:
        # One run: memory is near deterministic, admitting N is slow.
        r = asyncio.run(one_run(protocol, args.n))
        print(json.dumps({"protocol": protocol, **r}), file=sys.stderr, flush=True)
        if "failed" in r:
            print(f"| {protocol} | {args.n:,} | | failed: {r['failed']} | | | | | |")
            continue
        print(
            f"| {protocol} | {args.n:,} | {r['backend']} | {r['connected']:,} | {r['held']:,} "
            f"| {r['delivered']:,} "
            f"| {r['kib_per_subscriber']:.1f} | {r['rss_mib']:.0f} | {r['admitted_in_s']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    cli()
