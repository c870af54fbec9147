"""Twenty-odd kinds of hostile peer at once against one server, while good subscribers (qsse/2
and Go's qsse/1) lose nothing: every event arrives, in order, with no error and no gap."""

import asyncio
import contextlib
import importlib
import random
import socket

from qsse_core import ErrorCode, Limits, Server, SubscribeStatus
from qsse_core._connection2 import Qsse2ClientConnection
from qsse_core._framing2 import (
    FrameReader,
    FrameType,
    Hello,
    Subscribe,
    Unsubscribe,
    decode_control,
    encode_control,
    encode_frame,
)
from qsse_core._quic import (
    ConnectionTerminated,
    StreamDataReceived,
    client_backend,
    grant_unidirectional_streams,
)
from qsse_core.events import SubscriptionAnswered, Welcomed
from qsse_core.testing import deep_json, deep_msgpack, qsse2_client_frames

from .helpers import Recorder, client, eventually

LIMITS = Limits(
    offer_timeout=1.0,
    max_offer_size=4096,
    max_frame_size=4096,
    max_subscriptions=8,
    write_window=16 * 1024,
    max_queued_bytes=32 * 1024,
    idle_timeout=4.0,
    keepalive_interval=0.5,
)
QSSE1, QSSE2 = "PROTOCOL_QUIC", "qsse/2"
# Hostile peers are bare clients of the library qsse's clients use (the environment's).
QUIC = client_backend()
QuicConnectionProtocol = importlib.import_module(f"{QUIC.name}.asyncio").QuicConnectionProtocol


class Peer(QuicConnectionProtocol):
    """A bare QUIC client on qsse's QUIC library, for sending what no qsse client would."""

    grant: int | None = None

    def __init__(self, quic, *args, **kwargs) -> None:
        super().__init__(quic, *args, **kwargs)
        if self.grant is not None:
            grant_unidirectional_streams(quic, self.grant)
        self.terminated: ConnectionTerminated | None = None
        self.streams: dict[int, bytearray] = {}
        self.frozen = False
        self.qsse: Qsse2ClientConnection | None = None
        self.events: list[object] = []

    def quic_event_received(self, event) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
        if self.qsse is not None:
            self.events += self.qsse.handle_event(event)
        elif isinstance(event, StreamDataReceived):
            self.streams.setdefault(event.stream_id, bytearray()).extend(event.data)
        if not isinstance(event, StreamDataReceived):
            super().quic_event_received(event)  # the library's own waiters

    def datagram_received(self, data, addr) -> None:
        if not self.frozen:  # a frozen peer neither reads nor acknowledges
            super().datagram_received(data, addr)

    def datagrams_received(self, data, addr) -> None:  # qh3's batched path
        if not self.frozen:
            super().datagrams_received(data, addr)

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=end_stream)
        self.transmit()

    def answers(self) -> list[SubscriptionAnswered]:
        return [e for e in self.events if isinstance(e, SubscriptionAnswered)]


class LimitedPeer(Peer):
    grant = 2


@contextlib.asynccontextmanager
async def peer(server: Server, alpn: str, protocol: type[Peer] = Peer, qsse: bool = False):
    config = QUIC.configuration(is_client=True, alpn_protocols=[alpn])
    QUIC.skip_verification(config)
    connect = importlib.import_module(f"{QUIC.name}.asyncio").connect

    def create(quic, **kwargs):
        p = protocol(quic, **kwargs)
        if qsse:
            p.qsse = Qsse2ClientConnection(quic, token="", max_frame_size=1 << 20)
        return p

    async with connect("127.0.0.1", server.port, configuration=config, create_protocol=create) as p:
        yield p


async def closed_with(p: Peer, code: int, timeout: float = 10.0) -> None:
    await eventually(lambda: p.terminated is not None, timeout)
    assert p.terminated is not None
    assert p.terminated.error_code == code, (p.terminated.error_code, p.terminated.reason_phrase)


def hello_and(*frames: bytes) -> bytes:
    return encode_control(Hello()) + b"".join(frames)


def subscribe(request_id: int, topic: str = "good", **fields) -> bytes:
    return encode_control(Subscribe(request_id=request_id, topic=topic, **fields))


# -- the hostile peers --------------------------------------------------------------------------


async def offer_not_json(server):
    async with peer(server, QSSE1) as p:
        p.send(2, b"hello\n", end_stream=True)
        await closed_with(p, ErrorCode.MALFORMED_OFFER)


async def offer_of_the_wrong_shape(server):
    async with peer(server, QSSE1) as p:
        p.send(2, b'{"token":7,"topics":"good"}\n', end_stream=True)
        await closed_with(p, ErrorCode.MALFORMED_OFFER)


async def offer_nested_deep(server):
    async with peer(server, QSSE1) as p:
        p.send(2, b'{"topics":["good"],"x":' + deep_json(1000) + b"}\n", end_stream=True)
        await closed_with(p, ErrorCode.MALFORMED_OFFER)


async def offer_too_large(server):
    async with peer(server, QSSE1) as p:
        p.send(2, b"{" + b" " * 5000)
        await closed_with(p, ErrorCode.OFFER_TOO_LARGE)


async def offer_never_finished(server):
    async with peer(server, QSSE1) as p:
        p.send(2, b'{"topics":')
        await closed_with(p, ErrorCode.OFFER_TIMEOUT)


async def half_open_no_hello(server):
    async with peer(server, QSSE2) as p:
        await closed_with(p, ErrorCode.OFFER_TIMEOUT)


async def last_id_past_the_wire(server):
    async with peer(server, QSSE2) as p:
        p.send(0, hello_and(subscribe(1, last_id=2**64 - 1)))
        await closed_with(p, ErrorCode.MALFORMED_FRAME)


async def hello_nested_deep(server):
    async with peer(server, QSSE2) as p:
        p.send(0, encode_frame(FrameType.HELLO, b"\x81\xa1x" + deep_msgpack(2000)))
        await closed_with(p, ErrorCode.MALFORMED_FRAME)


async def subscribe_before_hello(server):
    async with peer(server, QSSE2) as p:
        p.send(0, subscribe(1))
        await closed_with(p, ErrorCode.MALFORMED_FRAME)


async def control_frame_too_large(server):
    async with peer(server, QSSE2) as p:
        p.send(0, hello_and(encode_frame(FrameType.SUBSCRIBE, b"\xc0" * 5000)))
        await closed_with(p, ErrorCode.FRAME_TOO_LARGE)


async def request_flood(server):
    async with peer(server, QSSE2) as p:
        p.send(0, hello_and(*(subscribe(i) for i in range(1, 200))))
        await closed_with(p, ErrorCode.TOO_MANY_SUBSCRIPTIONS)


async def subscribe_past_max_subscriptions(server):
    async with peer(server, QSSE2, qsse=True) as p:
        await eventually(lambda: any(isinstance(e, Welcomed) for e in p.events))
        assert p.qsse is not None
        for _ in range(10):
            p.qsse.subscribe("good")
        p.transmit()
        await eventually(lambda: len(p.answers()) == 10)
        statuses = [a.status for a in p.answers()]
        assert statuses == [SubscribeStatus.OK] * 8 + [SubscribeStatus.LIMIT_REACHED] * 2
        assert p.terminated is None


async def subscribe_past_own_stream_grant(server):
    async with peer(server, QSSE2, LimitedPeer, qsse=True) as p:
        await eventually(lambda: any(isinstance(e, Welcomed) for e in p.events))
        assert p.qsse is not None
        for _ in range(4):
            p.qsse.subscribe("quiet")
        p.transmit()
        await eventually(lambda: len(p.answers()) == 4)
        statuses = [a.status for a in p.answers()]
        assert statuses == [SubscribeStatus.OK] * 2 + [SubscribeStatus.LIMIT_REACHED] * 2
        assert "MAX_STREAMS" in p.answers()[-1].reason


async def unsubscribe_unknown(server):
    async with peer(server, QSSE2) as p:
        p.send(0, hello_and(encode_control(Unsubscribe(request_id=1, subscription_id=99))))
        await eventually(lambda: FrameType.UNSUBSCRIBE_RESULT in frame_types(p.streams.get(0)))
        assert p.terminated is None


def frame_types(data: bytearray | None) -> list[int]:
    frames = FrameReader(1 << 20).feed(bytes(data or b""))
    for frame_type, payload, _ in frames:
        if frame_type == FrameType.UNSUBSCRIBE_RESULT:
            assert payload is not None
            assert decode_control(frame_type, payload).status == SubscribeStatus.NOT_SUBSCRIBED
    return [frame_type for frame_type, _, _ in frames]


async def unidirectional_stream_flood(server):
    async with peer(server, QSSE2) as p:
        p.send(0, hello_and())
        for i in range(50):
            p.send(2 + 4 * i, b"x" * 100, end_stream=True)
        await closed_with(p, ErrorCode.UNEXPECTED_STREAM)


async def bidirectional_stream_flood(server):
    async with peer(server, QSSE1) as p:
        for i in range(50):
            p.send(4 * i, b"GET / HTTP/1.1\r\n")
        await closed_with(p, ErrorCode.UNEXPECTED_STREAM)


async def control_stream_reset(server):
    async with peer(server, QSSE2) as p:
        p.send(0, hello_and())
        await eventually(lambda: 0 in p.streams)  # WELCOME
        p._quic.reset_stream(0, 7)
        p.transmit()
        await closed_with(p, ErrorCode.UNEXPECTED_STREAM)


async def event_stream_stopped(server):
    async with peer(server, QSSE1) as p:
        p.send(2, b'{"topics":["good"]}\n', end_stream=True)
        await eventually(lambda: 3 in p.streams)
        p._quic.stop_stream(3, 99)  # the server's next write to it fails
        p.transmit()
        await closed_with(p, ErrorCode.UNEXPECTED_STREAM)


async def stalled_reader(server):
    async with peer(server, QSSE1) as p:
        p.send(2, b'{"topics":["stalled"]}\n', end_stream=True)
        await eventually(lambda: 3 in p.streams)
        assert server.subscription_count("stalled") == 1
        p.frozen = True
        # Dropped as a slow consumer, or by the idle timeout if that comes first.
        await eventually(lambda: server.subscription_count("stalled") == 0, timeout=20)


async def vanished_without_a_close(server):
    async with peer(server, QSSE2) as p:
        p.send(0, hello_and(subscribe(1, topic="vanished")))
        await eventually(lambda: server.subscription_count("vanished") == 1)
        p.frozen = True
        # The idle timeout (4 s here) finds it although nothing is written to it.
        await eventually(lambda: server.subscription_count("vanished") == 0, timeout=20)


async def closed_mid_request(server):
    async with peer(server, QSSE2) as p:
        p.send(0, hello_and(subscribe(1)))
        p.close()
    # The server forgets it: checked at the end with the connection count.


async def garbage_datagrams(server):
    rng = random.Random(7)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(300):
            size = 1200 if i % 2 else rng.randint(1, 64)
            head = b"\xc0\x00\x00\x00\x01" if i % 3 == 0 else b""  # a QUIC v1 long header
            sock.sendto(head + rng.randbytes(size), ("127.0.0.1", server.port))
            if i % 50 == 0:
                await asyncio.sleep(0.01)


async def fuzzed_control_frames(server):
    rng = random.Random(11)
    for _ in range(15):
        async with peer(server, QSSE2) as p:
            p.send(0, qsse2_client_frames(rng))
            with contextlib.suppress(AssertionError):
                await eventually(lambda: p.terminated is not None, timeout=0.3)
            if p.terminated is not None:  # closed with a qsse code, never a QUIC error
                assert p.terminated.frame_type is None or p.terminated.error_code >= 0x100


HOSTILE = [
    offer_not_json,
    offer_of_the_wrong_shape,
    offer_nested_deep,
    offer_too_large,
    offer_never_finished,
    half_open_no_hello,
    last_id_past_the_wire,
    hello_nested_deep,
    subscribe_before_hello,
    control_frame_too_large,
    request_flood,
    subscribe_past_max_subscriptions,
    subscribe_past_own_stream_grant,
    unsubscribe_unknown,
    unidirectional_stream_flood,
    bidirectional_stream_flood,
    control_stream_reset,
    event_stream_stopped,
    stalled_reader,
    vanished_without_a_close,
    closed_mid_request,
    garbage_datagrams,
    fuzzed_control_frames,
]


async def test_hostile_peers_cost_good_subscribers_nothing():
    async with Server(["good", "quiet", "vanished", "stalled"], limits=LIMITS) as server:
        goods = [
            client(server.address, ["good"], protocols=[QSSE2]),
            client(server.address, ["good"], protocols=[QSSE2]),
            client(server.address, ["good"], protocols=[QSSE1]),
        ]
        recorders = [Recorder(c) for c in goods]
        gaps: list[object] = []
        for c in goods:
            c.on_gap(gaps.append)
        await asyncio.gather(*(c.connect() for c in goods))
        await server.wait_subscribed("good", 3)
        sent = 0
        stop = asyncio.Event()

        async def publish() -> None:
            nonlocal sent
            while not stop.is_set():
                server.publish("good", b"%06d" % sent + b"." * 500)
                server.publish("stalled", b"." * 500)
                sent += 1
                await asyncio.sleep(0.005)

        publisher = asyncio.create_task(publish())
        try:
            async with asyncio.timeout(90):
                results = await asyncio.gather(
                    *(kind(server) for kind in HOSTILE), return_exceptions=True
                )
        finally:
            stop.set()
            await publisher
        failed = {
            kind.__name__: repr(result)
            for kind, result in zip(HOSTILE, results, strict=True)
            if isinstance(result, BaseException)
        }
        assert failed == {}
        expected = [b"%06d" % i + b"." * 500 for i in range(sent)]
        await eventually(lambda: all(len(r.messages) == sent for r in recorders), timeout=20)
        for r in recorders:
            assert [m.data for m in r.messages] == expected
            assert r.errors == []
        assert gaps == []
        # Nothing hostile is left holding a connection.
        await eventually(lambda: server.connection_count == 3, timeout=20)
        for c in goods:
            await c.close()
