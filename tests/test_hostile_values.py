"""Values no server can serve (ids past what the wire carries, nesting past the depth bound)
close only the peer that sent them, with the protocol's code; everyone else loses nothing."""

import asyncio

import pytest
from prometheus_client import generate_latest

from qsse_core import ErrorCode, MemoryHistory, Server
from qsse_core._framing2 import Hello, Subscribe, encode_control, encode_frame

from .helpers import eventually, raw_connect
from .test_bad_input import Ticker

pytestmark = pytest.mark.usefixtures("protocol")


async def test_subscribe_with_last_id_past_what_the_wire_carries_closes_only_that_peer():
    # last_id + 1 (the gap notice's first id) cannot be encoded: before the bound it made every
    # flush raise and starved every subscriber.
    async with Server(["good"]) as server, Ticker(server):
        async with raw_connect(server.port, alpn="qsse/2") as raw:
            request = Subscribe(request_id=1, topic="good", last_id=2**64 - 1)
            raw.send(0, encode_control(Hello()) + encode_control(request))
            await eventually(lambda: raw.terminated is not None)
            assert raw.terminated.error_code == ErrorCode.MALFORMED_FRAME
            assert raw.terminated.reason_phrase.startswith(
                "malformed SUBSCRIBE frame: Expected `int` <= 4611686018427387903"
            )
            assert "$.last_id" in raw.terminated.reason_phrase


@pytest.mark.parametrize(
    "fields",
    [
        {"request_id": -1, "topic": "good"},
        {"request_id": 2**62, "topic": "good"},
        {"request_id": 1, "topic": "good", "last_id": 5, "epoch": 2**63},
        {"request_id": 1, "topic": "good", "last_id": -3, "epoch": 1},
    ],
)
async def test_out_of_range_integers_are_malformed(fields):
    import msgspec

    async with Server(["good"]) as server, Ticker(server):
        async with raw_connect(server.port, alpn="qsse/2") as raw:
            payload = encode_frame(0x02, msgspec.msgpack.encode(fields))
            raw.send(0, encode_control(Hello()) + payload)
            await eventually(lambda: raw.terminated is not None)
            assert raw.terminated.error_code == ErrorCode.MALFORMED_FRAME
            assert raw.terminated.reason_phrase.startswith("malformed SUBSCRIBE frame: Expected")


class UnservableHistory(MemoryHistory):
    """A store that claims an eviction id no frame can carry for one topic: serving a resume
    of that topic fails while the gap notice is written, in the shared flush."""

    def since(self, label, after, now):
        events, evicted = super().since(label, after, now)
        return events, (2**64 if label == "bad" else evicted)


async def test_a_fault_while_serving_one_session_never_reaches_the_others():
    async with Server(["good", "bad"], history=UnservableHistory()) as server, Ticker(server):
        async with raw_connect(server.port, alpn="qsse/2") as raw:
            request = Subscribe(request_id=1, topic="bad", last_id=0, epoch=server.history.epoch)
            raw.send(0, encode_control(Hello()) + encode_control(request))
            await eventually(lambda: raw.terminated is not None)
            assert raw.terminated.error_code == ErrorCode.UNKNOWN
            assert raw.terminated.reason_phrase == "internal server error"
            # The flush goes on for the good subscriber while events keep coming.
            await asyncio.sleep(0.1)
        out = generate_latest(server.metrics.registry).decode()
        assert 'qsse_protocol_errors_total{reason="unknown"} 1.0' in out


def _nested_json(depth: int) -> bytes:
    return b'{"token":"t","topics":["good"],"x":' + b"[" * depth + b"]" * depth + b"}\n"


def _nested_msgpack(depth: int) -> bytes:
    # HELLO {"token": "t", "x": [[[...]]]}
    import msgspec

    body = b"\x82" + msgspec.msgpack.encode("token") + msgspec.msgpack.encode("t")
    body += msgspec.msgpack.encode("x") + b"\x91" * depth + b"\x90"
    return encode_frame(0x01, body)


async def test_deeply_nested_offer_closes_the_connection_with_malformed_offer():
    async with Server(["good"]) as server, Ticker(server):
        async with raw_connect(server.port) as raw:
            raw.send(2, _nested_json(1000), end_stream=True)
            await eventually(lambda: raw.terminated is not None)
            assert raw.terminated.error_code == ErrorCode.MALFORMED_OFFER
            assert raw.terminated.reason_phrase == (
                "malformed offer: JSON nested deeper than 64 levels"
            )
        await eventually(lambda: server.connection_count == 1)


async def test_offer_at_the_depth_bound_is_accepted():
    async with Server(["good"]) as server, Ticker(server):
        async with raw_connect(server.port) as raw:
            # The offer object is level 1: 63 more levels reach the bound exactly.
            raw.send(2, _nested_json(63), end_stream=True)
            await eventually(lambda: server.connection_count == 2)
            await server.wait_subscribed("good", 2)
            assert raw.terminated is None


async def test_deeply_nested_hello_closes_the_connection_with_malformed_frame():
    async with Server(["good"]) as server, Ticker(server):
        async with raw_connect(server.port, alpn="qsse/2") as raw:
            raw.send(0, _nested_msgpack(1000))
            await eventually(lambda: raw.terminated is not None)
            assert raw.terminated.error_code == ErrorCode.MALFORMED_FRAME
            assert raw.terminated.reason_phrase == (
                "malformed HELLO frame: nested deeper than 64 levels"
            )
        await eventually(lambda: server.connection_count == 1)
