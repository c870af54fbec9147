"""The qsse/2 sans-I/O connections over in-memory QUIC: no sockets, no clock."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qsse_core import ErrorCode
from qsse_core._connection2 import Qsse2ClientConnection, Qsse2ServerConnection
from qsse_core._framing2 import (
    Hello,
    Subscribe,
    SubscribeStatus,
    encode_control,
    encode_event_frame,
    encode_frame,
)
from qsse_core.events import (
    ConnectionClosed,
    EventReceived,
    FrameDropped,
    HandshakeDone,
    HelloReceived,
    ProtocolViolation,
    SubscribeRequested,
    SubscriptionAnswered,
    SubscriptionStarted,
    Welcomed,
)
from qsse_core.testing import QuicPair


class Peers:
    def __init__(self, token="t", max_frame_size=1024):
        self.pair = QuicPair(alpn="qsse/2")
        self.server = Qsse2ServerConnection(self.pair.server, max_frame_size=max_frame_size)
        self.client = Qsse2ClientConnection(
            self.pair.client, token=token, max_frame_size=max_frame_size
        )

    def settle(self, rounds=4):
        server_events, client_events = [], []
        for _ in range(rounds):
            self.pair.advance(0.5)
            server_events += [
                e for q in QuicPair.events(self.pair.server) for e in self.server.handle_event(q)
            ]
            client_events += [
                e for q in QuicPair.events(self.pair.client) for e in self.client.handle_event(q)
            ]
        return server_events, client_events


def test_hello_subscribe_events_and_answers():
    peers = Peers(token="secret")
    server_events, client_events = peers.settle()
    assert HandshakeDone("qsse/2") in client_events
    assert server_events[-1] == HelloReceived(token="secret")
    request_id = peers.client.subscribe("ride.*", last_id=7, epoch=99)
    server_events, _ = peers.settle()
    assert server_events == [SubscribeRequested(request_id, "ride.*", 7, 99)]
    peers.server.accept(epoch=99, max_frame_size=1024)
    sid = peers.server.answer_subscribe(
        request_id, SubscribeStatus.OK, "ride.*", subscription_id=1, position=7, epoch=99
    )
    assert sid == 3  # the first server-initiated unidirectional stream
    peers.server.send(sid, encode_event_frame(8, 1, "ride.1", b"{}"))
    _, client_events = peers.settle()
    assert client_events == [
        Welcomed(epoch=99),
        SubscriptionAnswered(request_id, SubscribeStatus.OK, "ride.*", 1, 7, ""),
        SubscriptionStarted(subscription_id=1, topic="ride.*", epoch=99),
        EventReceived("ride.1", b"{}", id=8, content_type=1, subscription_id=1),
    ]


def raw_control(payload: bytes, *, stream_id=0, end_stream=False, max_frame_size=1024):
    pair = QuicPair(alpn="qsse/2")
    server = Qsse2ServerConnection(pair.server, max_frame_size=max_frame_size)
    pair.transfer()
    for q in QuicPair.events(pair.server):
        server.handle_event(q)
    pair.client.send_stream_data(stream_id, payload, end_stream=end_stream)
    events = []
    for _ in range(4):
        pair.advance(0.5)
        events += [e for q in QuicPair.events(pair.server) for e in server.handle_event(q)]
    return [e for e in events if not isinstance(e, ConnectionClosed)]


HELLO = encode_control(Hello(token="t"))


@pytest.mark.parametrize(
    ("payload", "kwargs", "code", "reason"),
    [
        (
            encode_control(Subscribe(request_id=1, topic="a")),
            {},
            ErrorCode.MALFORMED_FRAME,
            "SUBSCRIBE before HELLO",
        ),
        (HELLO + HELLO, {}, ErrorCode.MALFORMED_FRAME, "second HELLO frame"),
        (
            HELLO + encode_event_frame(1, 0, "a", b""),
            {},
            ErrorCode.MALFORMED_FRAME,
            "EVENT frames only go from server to client",
        ),
        (
            encode_frame(0x01, b"\xc1"),
            {},
            ErrorCode.MALFORMED_FRAME,
            "malformed HELLO frame: MessagePack data is malformed: invalid opcode '\\xc1' (byte 0)",
        ),
        (
            encode_frame(0x01, b"\x80" * 2000),
            {},
            ErrorCode.FRAME_TOO_LARGE,
            "control frame of 2000 bytes exceeds the limit of 1024 bytes",
        ),
        (HELLO, {"end_stream": True}, ErrorCode.UNEXPECTED_STREAM, "control stream was closed"),
        (
            HELLO,
            {"stream_id": 2},
            ErrorCode.UNEXPECTED_STREAM,
            "unexpected data on stream 2: qsse/2 clients only use one bidirectional control stream",
        ),
    ],
)
def test_bad_control_input_closes_with_code_and_reason(payload, kwargs, code, reason):
    events = raw_control(payload, **kwargs)
    assert events[-1] == ProtocolViolation(error_code=code, reason=reason)


def test_unknown_frame_types_are_ignored_so_the_protocol_can_grow():
    events = raw_control(encode_frame(0x3F, b"future") + HELLO)
    assert events == [HelloReceived(token="t")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_control_bytes_end_in_events_or_a_coded_close(raw):
    # Whatever arrives, the server either understands it or closes with a protocol code.
    events = raw_control(HELLO + raw)
    assert events[0] == HelloReceived(token="t")
    for event in events[1:]:
        assert (
            isinstance(event, SubscribeRequested | ProtocolViolation)
            or type(event).__name__ == "UnsubscribeRequested"
        )
    violations = [e for e in events if isinstance(e, ProtocolViolation)]
    assert len(violations) <= 1


def test_client_reports_bad_subscription_frames_and_keeps_going():
    peers = Peers()
    peers.settle()
    peers.server.accept(epoch=1, max_frame_size=1024)
    sid = peers.server.answer_subscribe(1, SubscribeStatus.OK, "a", subscription_id=1)
    peers.server.send(
        sid,
        encode_frame(0x22, b"\x05")  # truncated EVENT
        + encode_frame(0x22, b"\x01\x00\x01a" + b"x" * 2000)  # over the client's limit
        + encode_frame(0x3E, b"from the future")  # unknown: ignored
        + encode_event_frame(2, 1, "a", b"ok"),
    )
    _, events = peers.settle()
    assert events[-4:] == [
        SubscriptionStarted(subscription_id=1, topic="a", epoch=0),
        FrameDropped(
            code=ErrorCode.MALFORMED_FRAME,
            reason="malformed EVENT frame: payload ends inside the content type",
            raw=b"\x05",
        ),
        FrameDropped(
            code=ErrorCode.FRAME_TOO_LARGE,
            reason="frame of 2004 bytes exceeds the limit of 1024 bytes",
        ),
        EventReceived("a", b"ok", id=2, content_type=1, subscription_id=1),
    ]
