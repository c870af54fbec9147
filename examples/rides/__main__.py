"""End-to-end demo over QUIC on loopback: ``python -m examples.rides``.

Starts a server declaring the rides schema's topics, connects a subscriber that follows ride 42,
publishes one scripted ride, and exits 0 once the subscriber has received every event (1 on
any problem, or if that takes longer than ten seconds).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from generated import rides
from qsse_core import Client, ReconnectPolicy, Server

from .publisher import EVENT_COUNT, RIDE_ID, script
from .subscriber import RideTracker

TIMEOUT = 10.0


async def _subscribed(server: Server, topics: tuple[str, ...]) -> bool:
    try:
        async with asyncio.timeout(TIMEOUT):
            while server.subscription_count() < len(topics):
                await asyncio.sleep(0.01)
    except TimeoutError:
        return False
    return True


async def main() -> int:
    """Run the demo; return the process exit status."""
    async with rides.RidesPublisher.create_server(host="127.0.0.1", port=0) as server:
        publisher = rides.RidesPublisher(server)
        # The server's certificate is self-signed and made in memory, hence insecure=True;
        # pass certfile/keyfile to the server and cafile to the client outside a demo.
        client = Client(
            server.address,
            RideTracker.topics(RIDE_ID),
            insecure=True,
            reconnect=ReconnectPolicy(retry=False),
        )
        tracker = RideTracker(client, RIDE_ID, EVENT_COUNT)
        async with client:
            # Subscriptions are set up asynchronously; publish once all four are in place.
            if not await _subscribed(server, client.topics):
                print("the subscriber never subscribed", file=sys.stderr)
                return 1
            sent = list(script(publisher))
            try:
                await asyncio.wait_for(tracker.done.wait(), TIMEOUT)
            except TimeoutError:
                print(f"received {len(tracker.log)} of {EVENT_COUNT} events", file=sys.stderr)
                return 1
    if tracker.problems or sent != [1] * EVENT_COUNT:
        print("\n".join(tracker.problems) or f"publish results {sent}", file=sys.stderr)
        return 1
    print(f"subscriber received all {EVENT_COUNT} events")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    sys.exit(asyncio.run(main()))
