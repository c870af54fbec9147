"""Events that the publisher's check once let through although subscribers could not decode
them as sent (or refused although valid), each on JSON and MessagePack, and one over QUIC.

Every one of these was sent and then refused or changed at the subscriber: the promise is
that what a publish accepts decodes to an equal value everywhere (docs/schema.md, "What
publishing checks").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import zoneinfo
from typing import Any

import pytest

from generated import rides
from qsse_core import Client, ContentType, ErrorCode, ReconnectPolicy, ValidationError

from .codegen._load import load_source
from .helpers import eventually
from .test_typed_encodings import _Sink, cancel, refused

# A record whose field "a_b" and whose field "a"'s field "b" are both lists.
NESTED = """
[schema]
package = "nested_names"
version = "1"
doc = "Names that concatenate alike."

[records.Inner]
doc = "Inner."
fields.b = { type = "list[int]", doc = "B." }

[records.Outer]
doc = "Outer."
fields.a = { type = "Inner", doc = "A." }
fields.a_b = { type = "list[int]", max_length = 1, doc = "AB." }
fields.w = { type = "float", lt = 1152921504606846976.0, optional = true, doc = "Below 2**60." }

[topics.outer]
topic = "outer.{kind}"
event = "Outer"
doc = "O."
params.kind = { type = "str", doc = "Kind." }
"""
nested: Any = load_source(NESTED, "nested_names")


class _Sink2(_Sink):
    topics = nested.TOPICS


def _publishers() -> list[Any]:
    return [
        nested.NestedNamesPublisher(_Sink2()),
        nested.NestedNamesPublisher(_Sink2(), compact=True),
    ]


def _decodes_back(publisher: Any, event: Any) -> None:
    _, data, packed = publisher.server.published[-1]
    assert nested.OUTER.decode(data) == event
    if packed is not None:
        assert nested.OUTER.decode(packed[1], ContentType.MSGPACK) == event


@pytest.mark.parametrize("index", [0, 1], ids=["json", "msgpack"])
def test_fields_whose_names_concatenate_alike_are_each_checked(index: int) -> None:
    publisher = _publishers()[index]
    good = nested.Outer(a=nested.Inner(b=[1, 2, 3]), a_b=[1])
    assert publisher.outer(good, kind="k") == 1  # was refused: a.b checked as a_b
    _decodes_back(publisher, good)
    bad = nested.Outer(a=nested.Inner(b=[1]), a_b=[1, 2, 3])
    assert refused(lambda: publisher.outer(bad, kind="k")) == (
        "outer.k",
        "$.a_b",
        "Expected `list` of length <= 1, got length 3",
    )  # was sent, and refused by every subscriber


@pytest.mark.parametrize("index", [0, 1], ids=["json", "msgpack"])
def test_an_int_for_a_float_is_bounded_as_the_float_it_arrives_as(index: int) -> None:
    publisher = _publishers()[index]
    inner = nested.Inner(b=[])
    # 2**60 - 1 < 2.0**60, but subscribers decode it to 2.0**60, which is not below.
    assert refused(
        lambda: publisher.outer(nested.Outer(a=inner, a_b=[], w=2**60 - 1), kind="k")
    ) == (
        "outer.k",
        "$.w",
        "Expected `float` < 1.152921504606847e+18, got `1152921504606846975`",
    )
    fits = nested.Outer(a=inner, a_b=[], w=2**59)
    assert publisher.outer(fits, kind="k") == 1
    _decodes_back(publisher, fits)


@pytest.mark.parametrize("index", [0, 1], ids=["json", "msgpack"])
@pytest.mark.parametrize("kind", ["abc\n", "\n", "a.b", "a*"])
def test_a_str_parameter_is_one_segment_without_a_trailing_newline(index: int, kind: str) -> None:
    publisher = _publishers()[index]
    event = nested.Outer(a=nested.Inner(b=[]), a_b=[])
    topic, path, reason = refused(lambda: publisher.outer(event, kind=kind))
    assert (topic, path) == ("outer.{kind}", "{kind}")
    assert reason.startswith("Expected `str` matching regex")
    with pytest.raises(ValueError):
        nested.OUTER.parse(f"outer.{kind}")
    assert publisher.server.published == []


class _NoOffset(dt.tzinfo):
    """A tzinfo that knows no offset: Python calls such a datetime naive."""

    def utcoffset(self, _: dt.datetime | None) -> None:
        return None


class _Broken(dt.tzinfo):
    def utcoffset(self, _: dt.datetime | None) -> dt.timedelta:
        raise RuntimeError("no tz database")


SECONDS = dt.timezone(dt.timedelta(seconds=30))


@pytest.mark.parametrize("compact", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize(
    ("when", "reason"),
    [
        pytest.param(
            # Local mean time: +05:41:16, written as +05:41, 16 seconds off.
            dt.datetime(1900, 1, 1, tzinfo=zoneinfo.ZoneInfo("Asia/Kathmandu")),
            "Expected a `datetime` whose UTC offset is whole minutes (RFC 3339 cannot carry "
            "seconds), got offset 5:41:16",
            id="lmt",
        ),
        pytest.param(
            dt.datetime(2024, 1, 1, tzinfo=SECONDS),  # was sent as "Z", 30 seconds off
            "Expected a `datetime` whose UTC offset is whole minutes (RFC 3339 cannot carry "
            "seconds), got offset 0:00:30",
            id="seconds",
        ),
        pytest.param(
            dt.datetime(2024, 1, 1, tzinfo=_NoOffset()),  # was sent naive despite tz = true
            "Expected `datetime` with a timezone, got a naive `datetime`",
            id="no-offset",
        ),
        pytest.param(
            dt.datetime(2024, 1, 1, tzinfo=_Broken()),  # was refused with path "$"
            "Expected a `datetime` whose tzinfo gives its UTC offset, got RuntimeError from "
            "utcoffset(): no tz database",
            id="raising",
        ),
    ],
)
def test_datetimes_whose_offset_cannot_travel_are_refused(
    compact: bool, when: dt.datetime, reason: str
) -> None:
    sink = _Sink()
    publisher = rides.RidesPublisher(sink, compact=compact)  # type: ignore[arg-type]
    assert refused(lambda: publisher.passenger_cancel(cancel(cancelled_at=when))) == (
        "ride.passenger.cancel",
        "$.cancelled_at",
        reason,
    )
    assert sink.published == []


@pytest.mark.parametrize("compact", [False, True], ids=["json", "msgpack"])
def test_offsets_of_whole_minutes_still_travel_exactly(compact: bool) -> None:
    sink = _Sink()
    publisher = rides.RidesPublisher(sink, compact=compact)  # type: ignore[arg-type]
    for when in (
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2024, 7, 1, tzinfo=zoneinfo.ZoneInfo("America/St_Johns")),  # -02:30
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(-dt.timedelta(hours=23, minutes=59))),
    ):
        publisher.passenger_cancel(cancel(cancelled_at=when))
        _, data, packed = sink.published[-1]
        for got in [
            rides.PASSENGER_CANCEL.decode(data),
            *([rides.PASSENGER_CANCEL.decode(packed[1], packed[0])] if packed else []),
        ]:
            assert got.cancelled_at == when
            assert got.cancelled_at.utcoffset() == when.utcoffset()


async def test_over_quic_a_subscriber_receives_exactly_what_publishing_accepted() -> None:
    """The subscriber is never handed an event it must refuse: each publish is either
    refused with ValidationError or delivered and decoded equal."""
    got: list[Any] = []
    errors: list[object] = []
    async with nested.NestedNamesPublisher.create_server(host="127.0.0.1", port=0) as server:
        client = Client(
            server.address, nested.TOPICS, insecure=True, reconnect=ReconnectPolicy(retry=False)
        )
        client.on_error(lambda code, data: errors.append((code, data)))
        nested.NestedNamesSubscriber(client).on_outer(got.append)
        async with client:
            await server.wait_subscribed(nested.TOPICS[0], timeout=10)
            publisher = nested.NestedNamesPublisher(server, compact=True)
            inner = nested.Inner(b=[1, 2])
            sent = [nested.Outer(a=inner, a_b=[1]), nested.Outer(a=inner, a_b=[], w=2**59)]
            for bad in (
                nested.Outer(a=inner, a_b=[1, 2]),
                nested.Outer(a=inner, a_b=[], w=2**60 - 1),
            ):
                with pytest.raises(ValidationError):
                    publisher.outer(bad, kind="k")
            for event in sent:
                assert publisher.outer(event, kind="k") == 1
            await eventually(lambda: len(got) == len(sent))
    assert got == sent
    assert errors == []
    await asyncio.sleep(0)


NODES = """
[schema]
package = "deep_nodes"
version = "1"
doc = "A record that refers to itself."

[records.Node]
doc = "A node of a chain."
fields.name = { type = "str", doc = "Name." }
fields.next = { type = "Node", optional = true, doc = "The next node." }

[topics.chain]
topic = "chain"
event = "Node"
doc = "Chains."
"""
nodes: Any = load_source(NODES, "deep_nodes")


def _deep_chain(depth: int) -> bytes:
    """Valid JSON of the schema, nested ``depth`` times: past Python's recursion limit."""
    return b'{"name":"n","next":' * depth + b"null" + b"}" * depth


@pytest.mark.parametrize("how", ["handler", "iteration"])
async def test_a_payload_nested_too_deeply_is_an_invalid_payload_and_receiving_goes_on(
    how: str,
) -> None:
    """A peer publishing raw bytes on a typed topic (another service, a Go publisher) sends
    a chain nested 20,000 deep: the subscriber reports it and receives the next event;
    before, RecursionError escaped the handler (reported nowhere) or ended the iteration."""
    got: list[Any] = []
    errors: list[tuple[int, dict[str, Any]]] = []
    async with nodes.DeepNodesPublisher.create_server(host="127.0.0.1", port=0) as server:
        client = Client(
            server.address, ["chain"], insecure=True, reconnect=ReconnectPolicy(retry=False)
        )
        client.on_error(lambda code, data: errors.append((code, dict(data))))
        subscriber = nodes.DeepNodesSubscriber(client)
        if how == "handler":
            subscriber.on_chain(got.append)
        async with client:
            await server.wait_subscribed("chain", timeout=10)
            deep = _deep_chain(20_000)
            server.publish("chain", deep)
            after = nodes.CHAIN.decode(_deep_chain(3))
            nodes.DeepNodesPublisher(server).chain(after)
            if how == "iteration":

                async def first() -> None:
                    async for received in subscriber:
                        got.append(received.event)
                        return

                await asyncio.wait_for(first(), 10)
            await eventually(lambda: len(got) == 1 and len(errors) == 1)
    assert got == [after]
    ((code, data),) = errors
    assert code == ErrorCode.INVALID_PAYLOAD
    assert data == {
        "topic": "chain",
        "data": deep,
        "reason": "payload nested deeper than 64 levels",
    }


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("ride.5e2.status", "Expected topic 'ride.500.status', as publishers write it"),
        ("ride.-0.status", "Expected topic 'ride.0.status', as publishers write it"),
        ("ride.9223372036854775808.status", "Expected `int` within int64"),
    ],
)
def test_parse_reads_only_the_topics_publishers_write(topic: str, reason: str) -> None:
    """Lax parsing read these as rides 500, 0 and one past int64: one event with two topics,
    which subscribers to ride.500.status never saw."""
    with pytest.raises(ValueError, match="^" + re.escape(reason)):
        rides.RIDE_STATUS.parse(topic)
    assert rides.RIDE_STATUS.parse("ride.-7.status") == rides.RideStatusParams(ride_id=-7)


async def test_a_topic_publishers_would_not_write_is_an_invalid_payload() -> None:
    got: list[tuple[int, rides.RideStatus]] = []
    errors: list[tuple[int, dict[str, Any]]] = []
    status = rides.RideStatus(
        state=rides.RideState.ARRIVING, changed_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    )
    async with rides.RidesPublisher.create_server(host="127.0.0.1", port=0) as server:
        client = Client(
            server.address, ["ride.*.status"], insecure=True, reconnect=ReconnectPolicy(retry=False)
        )
        client.on_error(lambda code, data: errors.append((code, dict(data))))
        rides.RidesSubscriber(client).on_ride_status_with_params(
            lambda params, event: got.append((params.ride_id, event))
        )
        async with client:
            await server.wait_subscribed("ride.*.status", timeout=10)
            raw = rides.RIDE_STATUS.encode(status, "ride.5e2.status")
            server.publish("ride.5e2.status", raw)  # a peer formatting ids its own way
            rides.RidesPublisher(server).ride_status(status, ride_id=500)
            await eventually(lambda: len(got) == 1 and len(errors) == 1)
    assert got == [(500, status)]
    assert errors == [
        (
            ErrorCode.INVALID_PAYLOAD,
            {
                "topic": "ride.5e2.status",
                "data": raw,
                "reason": "Expected topic 'ride.500.status', as publishers write it, got "
                "'ride.5e2.status'",
            },
        )
    ]


@pytest.mark.parametrize(
    "template",
    ["ride.{ride_id}.status", "{a}.{b}", "x.{{literal}}.{a}", "plain", "{a}{b}.{a}"],
)
def test_the_generated_topic_formatter_writes_what_format_map_writes(template: str) -> None:
    """Topic.topic builds the concrete topic by one generated concatenation; it must write
    exactly what ``str.format_map`` with each parameter's ``str()`` writes."""
    from qsse_core.typed import _compile_format, _ParamValues

    class Params:
        ride_id = -7
        a = rides.RideState.ARRIVING
        b = "x y"

    params = Params()
    assert _compile_format(template)(params) == template.format_map(_ParamValues(params))
