"""The sans-I/O connections over real QUIC and TLS, in memory: no sockets, no clock."""

import pytest

from qsse_core import ErrorCode
from qsse_core._connection import QsseClientConnection, QsseServerConnection
from qsse_core._framing import encode_event
from qsse_core.events import (
    ConnectionClosed,
    ErrorReceived,
    EventReceived,
    FrameDropped,
    HandshakeDone,
    OfferReceived,
    ProtocolViolation,
)
from qsse_core.testing import QuicPair


class Peers:
    def __init__(self, token="t", topics=("a", "b"), max_offer_size=1024, max_frame_size=1024):
        self.pair = QuicPair()
        self.server = QsseServerConnection(self.pair.server, max_offer_size=max_offer_size)
        self.client = QsseClientConnection(
            self.pair.client, token=token, topics=list(topics), max_frame_size=max_frame_size
        )

    def pump(self):
        self.pair.transfer()
        server_events = [
            e for q in QuicPair.events(self.pair.server) for e in self.server.handle_event(q)
        ]
        client_events = [
            e for q in QuicPair.events(self.pair.client) for e in self.client.handle_event(q)
        ]
        return server_events, client_events

    def settle(self):
        server_events, client_events = [], []
        for _ in range(5):
            self.pair.advance(1.0)  # lets a closed connection finish draining (3 PTOs)
            s, c = self.pump()
            server_events += s
            client_events += c
        return server_events, client_events


def test_handshake_offer_accept_and_events():
    peers = Peers(token="secret", topics=("a", "nope", "c"))
    server_events, client_events = peers.settle()
    assert HandshakeDone("PROTOCOL_QUIC") in client_events
    assert OfferReceived(token="secret", topics=("a", "nope", "c")) in server_events
    peers.server.accept([(ErrorCode.TOPIC_NOT_AVAILABLE, {"topic": "nope"})])
    peers.server.send(encode_event("a", b"one") + encode_event("c", b"two"))
    _, client_events = peers.settle()
    assert client_events == [
        ErrorReceived(code=2, data={"topic": "nope"}),
        EventReceived(topic="a", data=b"one"),
        EventReceived(topic="c", data=b"two"),
    ]
    # Go's stream layout: offer on client uni stream 2, events on server uni stream 3.
    assert peers.server.stream_id == 3


def test_offer_arriving_one_byte_at_a_time():
    pair = QuicPair()
    server = QsseServerConnection(pair.server, max_offer_size=1024)
    pair.transfer()
    for q in QuicPair.events(pair.server):
        server.handle_event(q)
    offer = b'{"token":"x","topics":["a"]}\n'
    events = []
    for i, byte in enumerate(offer):
        pair.client.send_stream_data(2, bytes([byte]), end_stream=i == len(offer) - 1)
        pair.transfer()
        events += [e for q in QuicPair.events(pair.server) for e in server.handle_event(q)]
    assert events == [OfferReceived(token="x", topics=("a",))]


def raw_offer(payload: bytes, *, end_stream=True, stream_id=2, max_offer_size=1024):
    pair = QuicPair()
    server = QsseServerConnection(pair.server, max_offer_size=max_offer_size)
    pair.transfer()
    for q in QuicPair.events(pair.server):
        server.handle_event(q)
    pair.client.send_stream_data(stream_id, payload, end_stream=end_stream)
    events = []
    client_events = []
    for _ in range(5):
        pair.advance(1.0)
        events += [e for q in QuicPair.events(pair.server) for e in server.handle_event(q)]
        client_events += QuicPair.events(pair.client)
    closes = [e for e in client_events if type(e).__name__ == "ConnectionTerminated"]
    return events, closes


@pytest.mark.parametrize(
    ("payload", "kwargs", "code", "reason"),
    [
        (
            b"hello\n",
            {},
            ErrorCode.MALFORMED_OFFER,
            "malformed offer: JSON is malformed: invalid character (byte 0)",
        ),
        (b"[]\n", {}, ErrorCode.MALFORMED_OFFER, "malformed offer: Expected `object`, got `array`"),
        (
            b'{"token":1}\n',
            {},
            ErrorCode.MALFORMED_OFFER,
            "malformed offer: Expected `str`, got `int` - at `$.token`",
        ),
        (b'{"token":"a"}', {}, ErrorCode.MALFORMED_OFFER, "offer ended without a newline"),
        (
            b"x" * 2000,
            {"end_stream": False},
            ErrorCode.OFFER_TOO_LARGE,
            "offer exceeds the limit of 1024 bytes",
        ),
        (
            b"{}\n",
            {"stream_id": 0},
            ErrorCode.UNEXPECTED_STREAM,
            "unexpected data on stream 0: qsse/1 clients only send one unidirectional offer stream",
        ),
    ],
)
def test_bad_offers_close_with_code_and_reason(payload, kwargs, code, reason):
    events, closes = raw_offer(payload, **kwargs)
    assert events == [
        ProtocolViolation(error_code=code, reason=reason),
        ConnectionClosed(error_code=code, reason=reason, application=True),
    ]
    assert [(c.error_code, c.reason_phrase) for c in closes] == [(code, reason)]


def test_second_offer_stream_is_unexpected():
    pair = QuicPair()
    server = QsseServerConnection(pair.server, max_offer_size=1024)
    pair.transfer()
    for q in QuicPair.events(pair.server):
        server.handle_event(q)
    pair.client.send_stream_data(2, b"{}\n", end_stream=True)
    pair.client.send_stream_data(6, b"{}\n", end_stream=True)
    pair.transfer()
    events = [e for q in QuicPair.events(pair.server) for e in server.handle_event(q)]
    assert events == [
        OfferReceived(token="", topics=()),
        ProtocolViolation(ErrorCode.UNEXPECTED_STREAM, "unexpected second unidirectional stream 6"),
    ]


def test_client_reports_bad_frames_and_keeps_going():
    peers = Peers(max_frame_size=64)
    peers.settle()
    peers.server.accept()
    peers.server.send(
        b"garbage\n"
        + b'{"topic":"a","data":"'
        + b"A" * 100
        + b'"}\n'
        + encode_event("a", b"after")
        + b'{"topic":"error","data":"bm9wZQ=="}\n'
        + encode_event("b", b"last")
    )
    _, events = peers.settle()
    assert events == [
        FrameDropped(
            code=ErrorCode.MALFORMED_FRAME,
            reason="malformed event: JSON is malformed: invalid character (byte 0)",
            raw=b"garbage",
        ),
        EventReceived("a", b"after"),
        FrameDropped(
            code=ErrorCode.MALFORMED_FRAME,
            reason="malformed error event: JSON is malformed: invalid character (byte 4)",
            raw=b'{"topic":"error","data":"bm9wZQ=="}',
        ),
        EventReceived("b", b"last"),
        FrameDropped(code=ErrorCode.FRAME_TOO_LARGE, reason="frame exceeds the limit of 64 bytes"),
    ]


def test_reject_closes_with_go_code_and_reason():
    peers = Peers()
    peers.settle()
    peers.server.reject()
    _, events = peers.settle()
    assert events == [ConnectionClosed(error_code=1, reason="not authorized", application=True)]


def test_backlog_counts_unacknowledged_bytes():
    peers = Peers()
    peers.settle()
    peers.server.accept()
    assert peers.server.backlog == 0
    peers.server.send(b"x" * 5000 + b"\n")
    assert peers.server.backlog == 5001
    peers.settle()
    assert peers.server.backlog == 0
