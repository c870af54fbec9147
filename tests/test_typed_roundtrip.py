"""Property tests: every valid event goes publisher → QUIC → subscriber unchanged, and
subscribers of an older schema read a newer publisher's events."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generated import rides
from qsse_core import Client, ReconnectPolicy

from .codegen._load import CASES, load_file, load_source
from .test_typed_loopback import subscribed

# JSON carries text as UTF-8, which cannot hold lone surrogates.
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
zones = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
aware = st.datetimes(timezones=zones)
ids = st.integers(1, 2**63 - 1)


def floats(lo: float, hi: float, *, exclude_max: bool = False) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, exclude_max=exclude_max)


locations = st.builds(rides.Location, lat=floats(-90, 90), lng=floats(-180, 180))
places = st.builds(
    rides.Place, location=locations, label=st.none() | text.filter(lambda s: len(s) <= 120)
)
fares = st.builds(
    rides.Fare,
    amount=st.decimals(allow_nan=False, allow_infinity=False, places=2),
    currency=st.from_regex(r"\A[A-Z]{3}\Z"),
)
adjustments = st.recursive(
    st.builds(rides.Adjustment, amount=fares, reason=text.filter(bool)),
    lambda inner: st.builds(
        rides.Adjustment, amount=fares, reason=text.filter(bool), superseded_by=inner
    ),
    max_leaves=3,
)

# (publish, event); publish also carries the topic parameters.
Publish = Callable[[rides.RidesPublisher, Any], int]
events: st.SearchStrategy[tuple[Publish, Any]] = st.one_of(
    st.tuples(
        st.just(lambda p, e: p.passenger_start(e)),
        st.builds(
            rides.PassengerStart,
            ride_id=ids,
            passenger_id=st.uuids(),
            pickup=places,
            stops=st.lists(places, min_size=1, max_size=5),
            vehicle=st.sampled_from(rides.VehicleClass),
            quote=st.none() | fares,
            requested_at=aware,
            notes=text,
            tags=st.dictionaries(text, text, max_size=3),
        ),
    ),
    st.tuples(
        st.just(lambda p, e: p.passenger_cancel(e)),
        st.builds(rides.PassengerCancel, ride_id=ids, reason=st.none() | text, cancelled_at=aware),
    ),
    st.tuples(
        st.just(lambda p, e: p.driver_location(e)),
        st.builds(
            rides.DriverLocation,
            driver_id=st.uuids(),
            location=locations,
            heading=st.none() | floats(0, 360, exclude_max=True),
            speed_kmh=floats(0, 1e6),
            online=st.booleans(),
        ),
    ),
    st.tuples(
        ids.map(lambda ride_id: lambda p, e: p.ride_status(e, ride_id=ride_id)),
        st.builds(
            rides.RideStatus,
            state=st.sampled_from(rides.RideState),
            driver_id=st.none() | st.uuids(),
            eta_seconds=st.none() | st.integers(0, 2**31),
            route=st.lists(locations, max_size=4),
            changed_at=aware,
        ),
    ),
    st.tuples(
        st.just(lambda p, e: p.ride_receipt(e)),
        st.builds(
            rides.Receipt,
            ride_id=ids,
            service_date=st.dates(),
            total=fares,
            breakdown=st.dictionaries(text, fares, max_size=3),
            signature=st.binary(max_size=64),
            adjustment=st.none() | adjustments,
        ),
    ),
)


class Loopback:
    """One server and one subscribed client for all examples, on a loop kept between them."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self.errors: list[Any] = []

    async def start(self) -> None:
        self.server = rides.RidesPublisher.create_server()
        await self.server.__aenter__()
        self.publisher = rides.RidesPublisher(self.server)
        topics = tuple(t for t in rides.TOPICS if t != "driver.position")
        self.client = Client(
            self.server.address, topics, insecure=True, reconnect=ReconnectPolicy(retry=False)
        )
        subscriber = rides.RidesSubscriber(self.client)
        self.client.on_error(lambda code, data: self.errors.append((code, dict(data))))
        put = self.received.put_nowait
        subscriber.on_passenger_start(put)
        subscriber.on_passenger_cancel(put)
        subscriber.on_driver_location(put)
        subscriber.on_ride_status(put)
        subscriber.on_ride_receipt(put)
        await self.client.__aenter__()
        deadline = asyncio.get_running_loop().time() + 10
        while not subscribed(self.server, topics):
            assert asyncio.get_running_loop().time() < deadline, "client never subscribed"
            await asyncio.sleep(0.01)

    async def roundtrip(self, publish: Publish, event: Any) -> Any:
        assert publish(self.publisher, event) == 1
        return await asyncio.wait_for(self.received.get(), 5)

    async def stop(self) -> None:
        await self.client.__aexit__(None, None, None)
        await self.server.__aexit__(None, None, None)


@pytest.fixture(scope="module")
def loopback() -> Iterator[Loopback]:
    rig = Loopback()
    rig.runner.run(rig.start())
    try:
        yield rig
    finally:
        rig.runner.run(rig.stop())
        rig.runner.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=events)
def test_every_valid_event_arrives_unchanged(loopback: Loopback, case: tuple[Publish, Any]) -> None:
    publish, event = case
    received = loopback.runner.run(loopback.roundtrip(publish, event))
    assert received == event
    assert type(received) is type(event)
    assert loopback.errors == []


OLD_SCHEMA = """
[schema]
package = "scalars_v1"
version = "0.1.0"
doc = "The samples topic before 0.2.0."

[records.Sample]
doc = "A sample."
fields.text = { type = "str", doc = "Some text." }

[topics.samples]
topic = "samples"
event = "Sample"
doc = "Samples."
"""


@given(text=text, added=st.none() | st.integers(-(2**63), 2**63 - 1))
def test_older_subscriber_reads_newer_events_and_vice_versa(text: str, added: int | None) -> None:
    old = load_source(OLD_SCHEMA, "evolution_v1")
    new = load_file(CASES / "evolution_v2" / "expected" / "scalars_v2.py", "evolution_v2")

    newer = new.SAMPLES.encode(new.Sample(text=text, added=added), "samples")
    assert old.SAMPLES.decode(newer) == old.Sample(text=text)

    older = old.SAMPLES.encode(old.Sample(text=text), "samples")
    assert new.SAMPLES.decode(older) == new.Sample(text=text, added=None)


def test_decimal_keeps_its_exact_digits(loopback: Loopback) -> None:
    fare = rides.Fare(amount=Decimal("0.10"), currency="EUR")
    receipt = rides.Receipt(ride_id=1, service_date=dt.date(2024, 1, 1), total=fare, signature=b"")
    received = loopback.runner.run(loopback.roundtrip(lambda p, e: p.ride_receipt(e), receipt))
    assert str(received.total.amount) == "0.10"
