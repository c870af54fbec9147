"""The newcomer's path in one file: ``python -m examples.quickstart``.

A server with the development certificate, a client that trusts it, a subscription to one
concrete parametrised topic, a wait until the subscription is in, one typed event each way.
docs/schema.md ("Getting started") walks through it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from pathlib import Path

from generated import rides
from qsse_core import Client, ReconnectPolicy


async def main() -> rides.RideStatus:
    # port=0 picks a free port; server.address then says which ("127.0.0.1:40123").
    async with rides.RidesPublisher.create_server(host="127.0.0.1", port=0) as server:
        # Without certfile= the server makes a self-signed development certificate; trust it
        # by handing its PEM to the client as a CA file (never insecure=True in production).
        assert server.certificate_pem is not None
        with tempfile.TemporaryDirectory() as tmp:
            cafile = Path(tmp) / "qsse-dev-ca.pem"
            cafile.write_bytes(server.certificate_pem)
            # One ride's status: the concrete topic of ride_status for ride_id=42.
            topic = rides.RIDE_STATUS.topic(rides.RideStatusParams(ride_id=42))  # "ride.42.status"
            client = Client(
                server.address, [topic], cafile=str(cafile), reconnect=ReconnectPolicy(retry=False)
            )
            subscriber = rides.RidesSubscriber(client)
            received: asyncio.Queue[rides.RideStatus] = asyncio.Queue()
            subscriber.on_ride_status(received.put_nowait)
            async with client:
                # Publishing before the subscription is in would reach nobody: wait for it.
                await server.wait_subscribed(topic)
                publisher = rides.RidesPublisher(server)
                status = rides.RideStatus(
                    state=rides.RideState.ARRIVING,
                    changed_at=dt.datetime.now(dt.UTC),
                )
                publisher.ride_status(status, ride_id=42)  # sent on ride.42.status
                publisher.ride_status(status, ride_id=7)  # not subscribed: not received
                return await asyncio.wait_for(received.get(), 10)


if __name__ == "__main__":
    event = asyncio.run(main())
    print(f"ride 42 is {event.state.value}")
