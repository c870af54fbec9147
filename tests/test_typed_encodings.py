"""One validation whatever the encoding: the same event is accepted or refused for JSON and
MessagePack, decodes equal (UTC offsets included) at qsse/1 and qsse/2 subscribers, and a
publish never raises anything but ``ValidationError`` naming the topic and path.

The fast check publishing runs is compared with a decode-based reference on random valid and
invalid events, nested ones included.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generated import rides
from qsse_core import Client, ContentType, ReconnectPolicy, ValidationError
from qsse_core._validate import INT64_MAX, INT64_MIN, explain

from .codegen._load import CASES, load_file
from .helpers import eventually
from .test_typed_loopback import NOW, location, start
from .test_typed_roundtrip import events

KATHMANDU = dt.timezone(dt.timedelta(hours=5, minutes=45))
TOPIC_OF = {t.event: t for t in rides.RidesPublisher.topics if not t.deprecated}


class _Sink:
    """An EventSink that keeps what it was given, for in-memory publisher tests."""

    topics = rides.TOPICS

    class metrics:
        @staticmethod
        def validation_rejected(topic: str) -> None:
            pass

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, tuple[int, bytes] | None]] = []

    def publish(self, topic: str, data: bytes, *, compact: tuple[int, bytes] | None = None) -> int:
        self.published.append((topic, data, compact))
        return 1


def publishers() -> list[rides.RidesPublisher]:
    return [rides.RidesPublisher(_Sink()), rides.RidesPublisher(_Sink(), compact=True)]


def refused(call: Any) -> tuple[str, str, str]:
    with pytest.raises(ValidationError) as caught:
        call()
    return caught.value.topic, caught.value.path, caught.value.reason


def cancel(**overrides: Any) -> rides.PassengerCancel:
    values: dict[str, Any] = {"ride_id": 7, "cancelled_at": NOW}
    values.update(overrides)
    return rides.PassengerCancel(**values)


def fare(amount: Decimal) -> rides.Fare:
    return rides.Fare(amount=amount, currency="EUR")


def receipt(**overrides: Any) -> rides.Receipt:
    values: dict[str, Any] = {
        "ride_id": 1,
        "service_date": dt.date(2024, 1, 1),
        "total": fare(Decimal("1.00")),
        "signature": b"",
    }
    values.update(overrides)
    return rides.Receipt(**values)


# --- each fault, on both encodings --------------------------------------------------------


@pytest.mark.parametrize("compact", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param(INT64_MAX, True, id="int64-max"),
        pytest.param(INT64_MAX + 1, False, id="past-int64-max"),
        pytest.param(2**64, False, id="2**64"),
        pytest.param(10**30, False, id="10**30"),
    ],
)
def test_integers_are_bounded_to_int64(compact: bool, value: int, ok: bool) -> None:
    publisher = rides.RidesPublisher(_Sink(), compact=compact)
    if ok:
        assert publisher.passenger_cancel(cancel(ride_id=value)) == 1
        return
    assert refused(lambda: publisher.passenger_cancel(cancel(ride_id=value))) == (
        "ride.passenger.cancel",
        "$.ride_id",
        f"Expected `int` within int64 ({INT64_MIN} to {INT64_MAX}), what every peer can read, "
        f"got `{value}`",
    )


@pytest.mark.parametrize("compact", [False, True], ids=["json", "msgpack"])
def test_negative_integers_are_bounded_too(compact: bool) -> None:
    publisher = rides.RidesPublisher(_Sink(), compact=compact)
    status = rides.RideStatus(state=rides.RideState.REQUESTED, changed_at=NOW, eta_seconds=-1)
    assert refused(lambda: publisher.ride_status(status, ride_id=INT64_MIN - 1))[1] == "{ride_id}"


@pytest.mark.parametrize("publisher", publishers(), ids=["json", "msgpack"])
@pytest.mark.parametrize("adjustment", [None, "set"], ids=["null-field", "no-null"])
@pytest.mark.parametrize("amount", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_nan_and_infinite_decimals_are_refused_whatever_else_the_event_holds(
    publisher: rides.RidesPublisher, adjustment: str | None, amount: str
) -> None:
    adjust = rides.Adjustment(amount=fare(Decimal(1)), reason="x") if adjustment else None
    event = receipt(total=fare(Decimal(amount)), adjustment=adjust)
    assert refused(lambda: publisher.ride_receipt(event)) == (
        "billing.receipt",
        "$.total.amount",
        f"Expected a finite `Decimal`, got `{Decimal(amount)!r}`",
    )


@pytest.mark.parametrize("publisher", publishers(), ids=["json", "msgpack"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinite_floats_are_refused_with_or_without_bounds(
    publisher: rides.RidesPublisher, value: float
) -> None:
    event = rides.DriverLocation(driver_id=uuid.UUID(int=1), location=location(), heading=value)
    assert refused(lambda: publisher.driver_location(event))[1:] == (
        "$.heading",
        f"Expected a finite `float`, got `{value!r}`",
    )


@pytest.mark.parametrize("publisher", publishers(), ids=["json", "msgpack"])
def test_lone_surrogates_are_refused_with_their_path(publisher: rides.RidesPublisher) -> None:
    assert refused(lambda: publisher.passenger_start(start(notes="ok \ud800"))) == (
        "ride.passenger.start",
        "$.notes",
        "Expected a string of valid Unicode (UTF-8 encodable), got a lone surrogate '\\ud800' "
        "at index 3",
    )
    assert refused(lambda: publisher.passenger_start(start(tags={"\udfff": "x"})))[1] == (
        "$.tags['\\udfff']"
    )


@pytest.mark.parametrize("publisher", publishers(), ids=["json", "msgpack"])
def test_map_keys_are_shown_in_paths(publisher: rides.RidesPublisher) -> None:
    event = receipt(breakdown={"base": fare(Decimal(1)), 'tip "extra"': fare(Decimal("NaN"))})
    assert (
        refused(lambda: publisher.ride_receipt(event))[1] == '$.breakdown["tip \\"extra\\""].amount'
    )


def test_wrong_python_type_names_the_expected_type() -> None:
    publisher = rides.RidesPublisher(_Sink())
    event = rides.DriverLocation(driver_id=str(uuid.UUID(int=1)), location=location())  # type: ignore[arg-type]
    assert refused(lambda: publisher.driver_location(event))[1:] == (
        "$.driver_id",
        "Expected `UUID`, got `str`",
    )


def test_bool_parameter_is_refused_every_time_not_only_before_a_cache_fills() -> None:
    publisher = rides.RidesPublisher(_Sink())
    status = rides.RideStatus(state=rides.RideState.REQUESTED, changed_at=NOW)
    expected = ("ride.{ride_id}.status", "{ride_id}", "Expected `int`, got `bool`")
    assert refused(lambda: publisher.ride_status(status, ride_id=True)) == expected
    assert publisher.ride_status(status, ride_id=1) == 1
    assert refused(lambda: publisher.ride_status(status, ride_id=True)) == expected


def test_parameters_are_checked_exactly_as_fields() -> None:
    fleet = load_file(CASES / "params" / "expected" / "fleet.py", "fleet_for_encodings")
    sink = _Sink()
    sink.topics = fleet.TOPICS
    publisher = fleet.FleetPublisher(sink)
    ping = fleet.Ping(seq=1)
    vehicle = uuid.UUID(int=5)
    assert refused(lambda: publisher.vehicle_ping(ping, region="eu", vehicle_id=str(vehicle))) == (
        "fleet.{region}.vehicle.{vehicle_id}.ping",
        "{vehicle_id}",
        "Expected `UUID`, got `str`",
    )
    publisher.vehicle_ping(ping, region="eu", vehicle_id=vehicle)
    assert sink.published[-1][0] == f"fleet.eu.vehicle.{vehicle}.ping"
    assert refused(lambda: publisher.depot_ping(ping, depot=True))[1:] == (
        "{depot}",
        "Expected `int`, got `bool`",
    )
    assert refused(lambda: publisher.vehicle_ping(ping, region="e.u", vehicle_id=vehicle))[1] == (
        "{region}"
    )


@pytest.mark.parametrize("compact", [False, True], ids=["json", "msgpack"])
def test_utc_offsets_survive_both_encodings(compact: bool) -> None:
    sink = _Sink()
    publisher = rides.RidesPublisher(sink, compact=compact)  # type: ignore[arg-type]
    when = dt.datetime(2024, 5, 1, 23, 30, tzinfo=KATHMANDU)
    publisher.passenger_cancel(cancel(cancelled_at=when))
    _, data, packed = sink.published[0]
    decoded = [rides.PASSENGER_CANCEL.decode(data)]
    if packed is not None:
        decoded.append(rides.PASSENGER_CANCEL.decode(packed[1], ContentType.MSGPACK))
    for event in decoded:
        assert event.cancelled_at == when
        assert event.cancelled_at.utcoffset() == when.utcoffset()
        assert event.cancelled_at.date() == dt.date(2024, 5, 1)


async def test_qsse1_and_qsse2_subscribers_decode_the_same_datetime() -> None:
    when = dt.datetime(2024, 5, 1, 23, 30, tzinfo=KATHMANDU)
    got: dict[str, rides.PassengerCancel] = {}
    async with rides.RidesPublisher.create_server(host="127.0.0.1", port=0) as server:
        clients = {
            name: Client(
                server.address,
                ["ride.passenger.cancel"],
                insecure=True,
                protocols=(alpn,),
                reconnect=ReconnectPolicy(retry=False),
            )
            for name, alpn in (("qsse/1", "PROTOCOL_QUIC"), ("qsse/2", "qsse/2"))
        }
        for name, client in clients.items():
            rides.RidesSubscriber(client).on_passenger_cancel(
                lambda e, name=name: got.__setitem__(name, e)
            )
        async with clients["qsse/1"], clients["qsse/2"]:
            await server.wait_subscribed("ride.passenger.cancel", count=2)
            publisher = rides.RidesPublisher(server, compact=True)
            assert publisher.passenger_cancel(cancel(cancelled_at=when)) == 2
            await eventually(lambda: len(got) == 2)
    assert got["qsse/1"] == got["qsse/2"] == cancel(cancelled_at=when)
    assert got["qsse/1"].cancelled_at.utcoffset() == got["qsse/2"].cancelled_at.utcoffset()
    assert got["qsse/1"].cancelled_at.date() == got["qsse/2"].cancelled_at.date()
    await asyncio.sleep(0)


# --- properties ---------------------------------------------------------------------------


def _same(sent: object, received: object) -> bool:
    """Equal, of the same types, with the same UTC offsets: what "decodes equal" means."""
    if isinstance(sent, msgspec.Struct):
        return type(sent) is type(received) and all(
            _same(getattr(sent, f), getattr(received, f)) for f in sent.__struct_fields__
        )
    if type(sent) is list:
        return (
            type(received) is list
            and len(sent) == len(received)
            and all(_same(a, b) for a, b in zip(sent, received, strict=True))
        )
    if type(sent) is dict:
        return (
            type(received) is dict
            and sent.keys() == received.keys()
            and all(type(k) is str and _same(v, received[k]) for k, v in sent.items())
        )
    if type(sent) is int and type(received) is float:
        return sent == received  # an int given for a float field
    if type(sent) is not type(received):
        return False
    if isinstance(sent, dt.datetime):
        assert isinstance(received, dt.datetime)
        return sent == received and sent.utcoffset() == received.utcoffset()
    if isinstance(sent, Decimal):
        return sent.is_finite() and sent == received
    return sent == received


def _within_limits(value: object) -> bool:
    """Integers within int64 and Decimals finite, anywhere in a decoded value."""
    if isinstance(value, msgspec.Struct):
        return all(_within_limits(getattr(value, f)) for f in value.__struct_fields__)
    if isinstance(value, list):
        return all(map(_within_limits, value))
    if isinstance(value, dict):
        return all(map(_within_limits, value.values()))
    if type(value) is int:
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, Decimal):
        return value.is_finite()
    return True


def decode_reference(event: msgspec.Struct) -> bool:
    """Accept ``event`` when a typed JSON decode of its encoding gives it back unchanged and
    within the limits every peer reads: the slow, obviously-right statement of the rules."""
    topic = TOPIC_OF[type(event)]
    try:
        data = msgspec.json.encode(event)
        decoded = topic.decode(data)
    except (ValueError, TypeError, msgspec.EncodeError, decimal.InvalidOperation, OverflowError):
        return False
    try:
        return _same(event, decoded) and _within_limits(event)
    except decimal.InvalidOperation:  # a signalling NaN refuses to be compared
        return False


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.sampled_from(["\ud800", "a\udfff"]),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal("sNaN"), Decimal("-NaN")]),
    st.binary(max_size=70),
    st.uuids(),
    st.uuids().map(str),
    st.datetimes(),
    st.datetimes(timezones=st.just(KATHMANDU)),
    st.dates(),
    st.sampled_from(list(rides.RideState) + list(rides.VehicleClass)),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.just(location()),
)


def near_miss(value: object) -> st.SearchStrategy[object]:
    """Values of (about) the same type as ``value`` that break or barely keep a rule."""
    if isinstance(value, bool):
        return st.sampled_from([0, 1, not value])
    if isinstance(value, int):
        return st.sampled_from([True, 0, -1, float(value), INT64_MAX, INT64_MAX + 1, INT64_MIN - 1])
    if isinstance(value, float):
        edges = [float("nan"), float("inf"), -float("inf"), -0.0, 90.0, 90.5, -180.5, 360.0, 1]
        return st.sampled_from([*edges, 2**64, True])
    if isinstance(value, str):
        return st.sampled_from(["", "\ud800", "x" * 121, "EURO", "eur", "x" * 501])
    if isinstance(value, Decimal):
        return st.sampled_from([Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity"), 1.5, "1"])
    if isinstance(value, dt.datetime):
        return st.sampled_from([value.replace(tzinfo=None), value.astimezone(KATHMANDU)])
    if isinstance(value, bytes):
        return st.sampled_from([b"x" * 65, bytearray(value), value.decode("latin-1")])
    if isinstance(value, uuid.UUID):
        return st.just(str(value))
    return JUNK


@st.composite
def mutated(draw: st.DrawFn) -> msgspec.Struct:
    """A valid event with one value somewhere inside (nested records, list items, map values)
    replaced by junk; often still valid, often not."""
    _, event = draw(events)

    def junk(value: object) -> object:
        return draw(near_miss(value) if draw(st.booleans()) else JUNK)

    def replace(value: Any) -> Any:
        if isinstance(value, msgspec.Struct):
            name = draw(st.sampled_from(value.__struct_fields__))
            inner = getattr(value, name)
            deeper = draw(st.booleans()) and isinstance(inner, msgspec.Struct | list | dict)
            new = replace(inner) if deeper else junk(inner)
            return msgspec.structs.replace(value, **{name: new})
        if isinstance(value, list) and value:
            index = draw(st.integers(0, len(value) - 1))
            return [*value[:index], replace(value[index]), *value[index + 1 :]]
        if isinstance(value, dict) and value:
            key = draw(st.sampled_from(sorted(value)))
            return {**value, key: replace(value[key])}
        return junk(value)

    return replace(event)  # type: ignore[no-any-return]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=st.one_of(events.map(lambda case: case[1]), mutated()))
def test_fast_check_agrees_with_the_decode_reference(event: msgspec.Struct) -> None:
    topic = TOPIC_OF[type(event)]
    fast = topic._check(event)
    assert fast == decode_reference(event)
    # The explanation is found exactly when the fast check refuses.
    assert (explain(topic.event, event) is None) == fast
    # The fused check-and-encode publishing runs (a float-only fast path, then the full
    # check) accepts exactly the same events.
    try:
        topic.encode(event, topic.template)
    except ValidationError:
        assert not fast
    else:
        assert fast


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=st.one_of(events.map(lambda case: case[1]), mutated()))
def test_json_and_msgpack_accept_the_same_events_and_decode_them_equal(
    event: msgspec.Struct,
) -> None:
    topic = TOPIC_OF[type(event)]
    outcomes = []
    for publisher in publishers():
        sink = publisher.server
        assert isinstance(sink, _Sink)
        publish = getattr(publisher, topic.name)
        try:
            if topic.template == "ride.{ride_id}.status":
                publish(event, ride_id=1)
            else:
                publish(event)
        except ValidationError as exc:  # nothing else may escape
            outcomes.append(("refused", exc.topic, exc.path, exc.reason))
            continue
        _, data, packed = sink.published[-1]
        from_json = topic.decode(data)
        assert _same(event, from_json)
        if packed is not None:
            assert packed[0] == ContentType.MSGPACK
            assert _same(event, topic.decode(packed[1], ContentType.MSGPACK))
        outcomes.append(("sent",))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("publisher", publishers(), ids=["json", "msgpack"])
def test_a_record_made_to_contain_itself_is_refused_not_crashed(
    publisher: rides.RidesPublisher,
) -> None:
    adjustment = rides.Adjustment(amount=fare(Decimal(1)), reason="loop")
    msgspec.structs.force_setattr(adjustment, "superseded_by", adjustment)
    topic, path, reason = refused(lambda: publisher.ride_receipt(receipt(adjustment=adjustment)))
    assert (topic, path) == ("billing.receipt", "$")
    assert reason.startswith("Cannot encode event: maximum recursion depth exceeded")


@pytest.mark.parametrize("publisher", publishers(), ids=["json", "msgpack"])
def test_an_integer_too_long_to_print_is_refused_cleanly(publisher: rides.RidesPublisher) -> None:
    huge = 10**5000  # str() of it raises ValueError: past Python's 4300-digit limit
    assert refused(lambda: publisher.passenger_cancel(cancel(ride_id=huge)))[1:] == (
        "$.ride_id",
        f"Expected `int` within int64 ({INT64_MIN} to {INT64_MAX}), what every peer can read, "
        f"got `an integer of {huge.bit_length()} bits`",
    )
    status = rides.RideStatus(state=rides.RideState.REQUESTED, changed_at=NOW)
    assert refused(lambda: publisher.ride_status(status, ride_id=huge))[1] == "{ride_id}"
