"""The generated SDK on qsse/2: schema-declared history, resume and gaps, typed."""

from __future__ import annotations

import asyncio
import datetime as dt

import msgspec

from generated import rides
from qsse_core import Client, ContentType, Gap, MemoryHistory, ReconnectPolicy

from .helpers import eventually

NOW = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)


def status(state: rides.RideState) -> rides.RideStatus:
    return rides.RideStatus(state=state, changed_at=NOW)


def test_create_server_keeps_history_as_the_schema_says():
    server = rides.RidesPublisher.create_server(port=0)
    assert isinstance(server.history, MemoryHistory)
    assert server.history.policies["ride.*.status"].max_events == 10000
    assert server.history.policies["ride.*.status"].max_age == 3600.0
    assert server.history.policies["driver.location"].max_events == 50
    assert "billing.receipt" not in server.history.policies  # the server's default applies
    custom = MemoryHistory()
    assert rides.RidesPublisher.create_server(port=0, history=custom).history is custom


async def test_typed_subscriber_resumes_and_reports_gaps():
    async with rides.RidesPublisher.create_server(port=0) as server:
        publisher = rides.RidesPublisher(server)
        client = Client(
            server.address,
            ["ride.42.status"],
            insecure=True,
            reconnect=ReconnectPolicy(retry=False),
        )
        subscriber = rides.RidesSubscriber(client)
        seen: list[tuple[int | None, rides.RideState]] = []

        async def collect() -> None:
            async for received in subscriber:
                if isinstance(received.event, rides.RideStatus):
                    seen.append((received.id, received.event.state))

        async with client:
            await server.wait_subscribed("ride.42.status")
            task = asyncio.create_task(collect())
            publisher.ride_status(status(rides.RideState.REQUESTED), ride_id=42)
            publisher.ride_status(status(rides.RideState.DRIVER_ASSIGNED), ride_id=42)
            await eventually(lambda: len(seen) == 2)
            task.cancel()
        saved, epoch = subscriber.last_event_ids, subscriber.epoch
        assert saved == {"ride.42.status": seen[-1][0]}

        # Away: the ride moves on (and other rides too).
        publisher.ride_status(status(rides.RideState.ARRIVING), ride_id=42)
        publisher.ride_status(status(rides.RideState.ARRIVING), ride_id=7)
        publisher.ride_status(status(rides.RideState.IN_PROGRESS), ride_id=42)

        again = Client(
            server.address,
            ["ride.42.status"],
            insecure=True,
            reconnect=ReconnectPolicy(retry=False),
            last_event_ids=saved,
            epoch=epoch,
        )
        resumed = rides.RidesSubscriber(again)
        states: list[rides.RideState] = []
        gaps: list[Gap] = []
        resumed.on_gap(gaps.append)
        resumed.on_ride_status(lambda event: states.append(event.state))
        async with again:
            await eventually(lambda: len(states) == 2)
        assert states == [rides.RideState.ARRIVING, rides.RideState.IN_PROGRESS]
        assert gaps == []


async def test_compact_publisher_sends_msgpack_on_qsse2_and_json_to_go_peers():
    async with rides.RidesPublisher.create_server(port=0) as server:
        publisher = rides.RidesPublisher(server, compact=True)
        new = Client(server.address, ["ride.*.status"], insecure=True, protocols=["qsse/2"])
        old = Client(server.address, ["ride.*.status"], insecure=True, protocols=["PROTOCOL_QUIC"])
        raw: dict[str, list[tuple[int | None, bytes]]] = {"new": [], "old": []}
        new.on("ride.*", lambda m: raw["new"].append((m.content_type, m.data)))
        old.on("ride.*", lambda m: raw["old"].append((m.content_type, m.data)))
        typed: dict[str, list[rides.RideStatus]] = {"new": [], "old": []}
        rides.RidesSubscriber(new).on_ride_status(typed["new"].append)
        rides.RidesSubscriber(old).on_ride_status(typed["old"].append)
        async with new, old:
            await server.wait_subscribed("ride.*.status", 2)
            event = status(rides.RideState.ARRIVING)
            publisher.ride_status(event, ride_id=3)
            await eventually(lambda: len(typed["new"]) == 1 and len(typed["old"]) == 1)
        assert typed["new"] == typed["old"] == [event]
        (ctype, packed), (old_type, json_data) = raw["new"][0], raw["old"][0]
        assert ctype == ContentType.MSGPACK and old_type is None
        assert msgspec.msgpack.decode(packed, type=rides.RideStatus) == event
        assert msgspec.json.decode(json_data, type=rides.RideStatus) == event
        assert len(packed) < len(json_data)
