"""The generated rides SDK over real QUIC on loopback: validation, decoding, routing."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from generated import rides
from qsse_core import Client, ErrorCode, ReconnectPolicy, Server, ValidationError

from .helpers import eventually

UTC = dt.UTC
NOW = dt.datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
DRIVER = uuid.UUID("00000000-0000-4000-8000-000000000001")
PASSENGER = uuid.UUID("00000000-0000-4000-8000-000000000002")


def location(lat: float = 52.52, lng: float = 13.40) -> rides.Location:
    return rides.Location(lat=lat, lng=lng)


def start(ride_id: int = 7, **overrides: Any) -> rides.PassengerStart:
    values: dict[str, Any] = {
        "ride_id": ride_id,
        "passenger_id": PASSENGER,
        "pickup": rides.Place(location=location(), label="home"),
        "stops": [rides.Place(location=location(52.5, 13.3))],
        "requested_at": NOW,
    }
    values.update(overrides)
    return rides.PassengerStart(**values)


def status(state: rides.RideState = rides.RideState.REQUESTED) -> rides.RideStatus:
    return rides.RideStatus(state=state, changed_at=NOW)


@dataclass
class Inbox:
    """What a typed subscriber's handlers saw."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    params: list[rides.RideStatusParams] = field(default_factory=list)
    errors: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Rig:
    server: Server
    publisher: rides.RidesPublisher
    client: Client
    subscriber: rides.RidesSubscriber
    inbox: Inbox


def subscribed(server: Server, topics: tuple[str, ...]) -> bool:
    gauge = server.metrics.subscribers
    return all(gauge.labels(topic=t)._value.get() >= 1 for t in topics)


def rejections(server: Server, pattern: str) -> float:
    return server.metrics.validation_rejections.labels(topic=pattern)._value.get()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    # Leave out the deprecated topic: registering for it warns, and warnings are errors here.
    topics = tuple(t for t in rides.TOPICS if t != "driver.position")
    async with rides.RidesPublisher.create_server() as server:
        client = Client(
            server.address, topics, insecure=True, reconnect=ReconnectPolicy(retry=False)
        )
        subscriber = rides.RidesSubscriber(client)
        inbox = Inbox()
        client.on_error(lambda code, data: inbox.errors.append((code, dict(data))))

        @subscriber.on_passenger_start
        def _start(event: rides.PassengerStart) -> None:
            inbox.events.append(("passenger_start", event))

        @subscriber.on_passenger_cancel
        async def _cancel(event: rides.PassengerCancel) -> None:
            await asyncio.sleep(0)
            inbox.events.append(("passenger_cancel", event))

        subscriber.on_driver_location(lambda event: inbox.events.append(("driver_location", event)))
        subscriber.on_ride_status(lambda event: inbox.events.append(("ride_status", event)))
        subscriber.on_ride_status_with_params(lambda params, _event: inbox.params.append(params))
        subscriber.on_ride_receipt(lambda event: inbox.events.append(("ride_receipt", event)))

        async with client:
            await eventually(lambda: subscribed(server, topics))
            yield Rig(server, rides.RidesPublisher(server), client, subscriber, inbox)


async def test_every_topic_delivers_typed_events_to_sync_and_async_handlers(rig: Rig) -> None:
    receipt = rides.Receipt(
        ride_id=7,
        service_date=dt.date(2024, 5, 1),
        total=rides.Fare(amount=Decimal("12.30"), currency="EUR"),
        breakdown={"base": rides.Fare(amount=Decimal("3.00"), currency="EUR")},
        signature=b"\x00\xff" * 32,
        adjustment=rides.Adjustment(
            amount=rides.Fare(amount=Decimal("-1.00"), currency="EUR"),
            reason="detour",
            superseded_by=rides.Adjustment(
                amount=rides.Fare(amount=Decimal("-2.00"), currency="EUR"), reason="refund"
            ),
        ),
    )
    sent = [
        ("passenger_start", start(quote=rides.Fare(amount=Decimal("9.99"), currency="EUR"))),
        ("passenger_cancel", rides.PassengerCancel(ride_id=7, cancelled_at=NOW)),
        ("driver_location", rides.DriverLocation(driver_id=DRIVER, location=location())),
        ("ride_status", status(rides.RideState.DRIVER_ASSIGNED)),
        ("ride_receipt", receipt),
    ]
    for name, event in sent:
        if name == "ride_status":
            assert rig.publisher.ride_status(event, ride_id=42) == 1
        else:
            assert getattr(rig.publisher, name)(event) == 1
    await eventually(lambda: len(rig.inbox.events) == len(sent))
    assert sorted(rig.inbox.events, key=lambda e: e[0]) == sorted(sent, key=lambda e: e[0])
    assert rig.inbox.params == [rides.RideStatusParams(ride_id=42)]
    assert rig.inbox.errors == []


async def test_one_ride_or_all_rides_by_topic_parameter() -> None:
    async with rides.RidesPublisher.create_server() as server:
        publisher = rides.RidesPublisher(server)
        one = Client(server.address, ["ride.42.status"], insecure=True)
        every = Client(server.address, [rides.RIDE_STATUS.pattern], insecure=True)
        got_one: list[rides.RideStatusParams] = []
        got_every: list[rides.RideStatusParams] = []
        rides.RidesSubscriber(one).on_ride_status_with_params(lambda p, _e: got_one.append(p))
        rides.RidesSubscriber(every).on_ride_status_with_params(lambda p, _e: got_every.append(p))
        async with one, every:
            await eventually(lambda: publisher.ride_status(status(), ride_id=1) == 1)
            await eventually(lambda: publisher.ride_status(status(), ride_id=42) == 2)
            await eventually(lambda: rides.RideStatusParams(ride_id=42) in got_one)
            await eventually(lambda: rides.RideStatusParams(ride_id=42) in got_every)
            assert set(got_one) == {rides.RideStatusParams(ride_id=42)}
            assert rides.RideStatusParams(ride_id=1) in got_every


def _nan_heading() -> rides.DriverLocation:
    return rides.DriverLocation(driver_id=DRIVER, location=location(), heading=float("nan"))


@pytest.mark.parametrize(
    ("publish", "topic", "pattern", "path", "reason"),
    [
        pytest.param(
            lambda p: p.passenger_start(start(ride_id="7")),
            "ride.passenger.start",
            "ride.passenger.start",
            "$.ride_id",
            "Expected `int`, got `str`",
            id="wrong-field-type",
        ),
        pytest.param(
            lambda p: p.passenger_start(start(ride_id=0)),
            "ride.passenger.start",
            "ride.passenger.start",
            "$.ride_id",
            "Expected `int` > 0, got `0`",
            id="constraint",
        ),
        pytest.param(
            lambda p: p.passenger_start(start(stops=[])),
            "ride.passenger.start",
            "ride.passenger.start",
            "$.stops",
            "Expected `list` of length >= 1, got length 0",
            id="length-constraint",
        ),
        pytest.param(
            lambda p: p.passenger_start(
                start(stops=[rides.Place(location=location()), rides.Place(location=location(91))])
            ),
            "ride.passenger.start",
            "ride.passenger.start",
            "$.stops[1].location.lat",
            "Expected `float` <= 90.0, got `91`",
            id="nested-constraint",
        ),
        pytest.param(
            lambda p: p.passenger_start(
                start(quote=rides.Fare(amount=Decimal("1.00"), currency="euro"))
            ),
            "ride.passenger.start",
            "ride.passenger.start",
            "$.quote.currency",
            "Expected `str` matching regex '^[A-Z]{3}$', got 'euro'",
            id="nested-pattern",
        ),
        pytest.param(
            lambda p: p.passenger_start(start(requested_at=dt.datetime(2024, 5, 1))),
            "ride.passenger.start",
            "ride.passenger.start",
            "$.requested_at",
            "Expected `datetime` with a timezone, got a naive `datetime`",
            id="naive-datetime",
        ),
        pytest.param(
            lambda p: p.driver_location(_nan_heading()),
            "driver.location",
            "driver.location",
            "$.heading",
            "Expected a finite `float`, got `nan`",
            id="nan-is-not-json",
        ),
        pytest.param(
            lambda p: p.passenger_start(rides.PassengerCancel(ride_id=7, cancelled_at=NOW)),
            "ride.passenger.start",
            "ride.passenger.start",
            "$",
            "Expected `PassengerStart`, got `PassengerCancel`",
            id="wrong-event-class",
        ),
        pytest.param(
            lambda p: p.ride_status(status(), ride_id="x.y"),
            "ride.{ride_id}.status",
            "ride.*.status",
            "{ride_id}",
            "Expected `int`, got `str`",
            id="wrong-parameter-type",
        ),
    ],
)
async def test_invalid_events_are_rejected_before_anything_is_sent(
    rig: Rig, publish, topic, pattern, path, reason
) -> None:
    with pytest.raises(ValidationError) as caught:
        publish(rig.publisher)
    error = caught.value
    assert (error.topic, error.path, error.reason) == (topic, path, reason)
    assert rejections(rig.server, pattern) == 1

    # A valid event on the same topic arrives alone: the rejected one never left.
    if pattern == "ride.*.status":
        rig.publisher.ride_status(status(), ride_id=5)
    elif pattern == "driver.location":
        rig.publisher.driver_location(rides.DriverLocation(driver_id=DRIVER, location=location()))
    else:
        rig.publisher.passenger_start(start(ride_id=99))
    await eventually(lambda: rig.inbox.events != [])
    await asyncio.sleep(0.05)
    assert len(rig.inbox.events) == 1
    assert rig.inbox.errors == []


async def test_undecodable_payloads_go_to_the_error_handler_and_receiving_goes_on(rig: Rig) -> None:
    wrong_shape = msgspec.json.encode({"ride_id": "seven", "passenger_id": str(PASSENGER)})
    bad = [
        ("ride.passenger.start", wrong_shape),
        ("ride.passenger.start", b"not json"),
        ("ride.abc.status", msgspec.json.encode(status())),
    ]
    for topic, data in bad:
        assert rig.server.publish(topic, data) == 1
    rig.publisher.passenger_start(start(ride_id=8))
    rig.publisher.ride_status(status(), ride_id=9)

    await eventually(lambda: len(rig.inbox.events) == 2)
    assert [name for name, _ in sorted(rig.inbox.events, key=lambda e: e[0])] == [
        "passenger_start",
        "ride_status",
    ]
    assert rig.inbox.params == [rides.RideStatusParams(ride_id=9)]
    assert sorted(rig.inbox.errors, key=lambda e: e[1]["topic"]) == [
        (
            ErrorCode.INVALID_PAYLOAD,
            {
                "topic": "ride.abc.status",
                "data": bad[2][1],
                "reason": "Expected `int`, got `str` - at `{ride_id}` of topic 'ride.abc.status'",
            },
        ),
        (
            ErrorCode.INVALID_PAYLOAD,
            {
                "topic": "ride.passenger.start",
                "data": wrong_shape,
                "reason": "Expected `int`, got `str` - at `$.ride_id`",
            },
        ),
        (
            ErrorCode.INVALID_PAYLOAD,
            {
                "topic": "ride.passenger.start",
                "data": b"not json",
                "reason": "JSON is malformed: invalid character (byte 4)",
            },
        ),
    ]


async def test_typed_iteration_yields_events_with_their_parameters() -> None:
    async with rides.RidesPublisher.create_server() as server:
        publisher = rides.RidesPublisher(server)
        topics = ("ride.*.status", "ride.passenger.start")
        client = Client(server.address, topics, insecure=True)
        subscriber = rides.RidesSubscriber(client)
        errors: list[tuple[int, dict[str, Any]]] = []
        client.on_error(lambda code, data: errors.append((code, dict(data))))
        received: list[rides.RidesReceived] = []

        async def consume() -> None:
            async for item in subscriber:
                received.append(item)
                if len(received) == 2:
                    return

        async with client:
            task = asyncio.create_task(consume())
            await eventually(lambda: subscribed(server, topics))
            server.publish("ride.passenger.start", b"[]")
            publisher.ride_status(status(rides.RideState.ARRIVING), ride_id=3)
            publisher.passenger_start(start())
            await asyncio.wait_for(task, 10)

        by_topic = {item.topic: item for item in received}
        assert by_topic["ride.3.status"].params == rides.RideStatusParams(ride_id=3)
        assert by_topic["ride.3.status"].event == status(rides.RideState.ARRIVING)
        assert by_topic["ride.passenger.start"].params is None
        assert by_topic["ride.passenger.start"].event == start()
        assert [(code, data["topic"]) for code, data in errors] == [
            (ErrorCode.INVALID_PAYLOAD, "ride.passenger.start")
        ]


async def test_deprecated_topic_warns_where_it_is_used(rig: Rig) -> None:
    event = rides.DriverLocation(driver_id=DRIVER, location=location())
    with pytest.warns(DeprecationWarning, match="driver.position goes away in 2.0") as caught:
        rig.publisher.driver_position(event)
    assert caught[0].filename == __file__
    with pytest.warns(DeprecationWarning, match="topic 'driver_position'") as caught:
        rig.subscriber.on_driver_position(lambda _event: None)
    assert caught[0].filename == __file__


async def test_publisher_refuses_a_server_missing_schema_topics() -> None:
    from qsse_core import ConfigurationError

    async with Server(["ride.passenger.start"]) as server:
        with pytest.raises(ConfigurationError) as caught:
            rides.RidesPublisher(server)
    assert str(caught.value) == (
        "RidesPublisher needs the server to declare ride.passenger.cancel, driver.location, "
        "ride.*.status, billing.receipt, driver.position; it declares ride.passenger.start"
    )
