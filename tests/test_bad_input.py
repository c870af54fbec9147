"""Bad peers close only their own connection, with a code and reason, while good ones go on."""

import asyncio
import contextlib

import pytest
from aioquic.asyncio import serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived
from prometheus_client import generate_latest

from qsse_core import ErrorCode, Limits, Server
from qsse_core._framing import encode_event
from qsse_core._tls import self_signed

from .helpers import Recorder, client, eventually, held_bytes, raw_connect

pytestmark = pytest.mark.usefixtures("protocol")


class Ticker:
    """Publishes a numbered event every few milliseconds to one good subscriber."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.sent = 0
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self):
        self.client = client(self.server.address, ["good"])
        self.recorder = Recorder(self.client)
        await self.client.connect()
        await eventually(lambda: self.server.publish("good", b"0") == 1)
        self.sent = 1
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.server.publish("good", b"%d" % self.sent)
            self.sent += 1

    async def __aexit__(self, *exc):
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        # Everything sent reached the good subscriber, in order, with no error.
        await eventually(lambda: len(self.recorder.messages) == self.sent)
        assert [m.data for m in self.recorder.messages] == [b"%d" % i for i in range(self.sent)]
        assert self.recorder.errors == []
        await self.client.close()


BAD_OFFERS = [
    (
        b"hello\n",
        ErrorCode.MALFORMED_OFFER,
        "malformed offer: JSON is malformed: invalid character (byte 0)",
    ),
    (b"[1]\n", ErrorCode.MALFORMED_OFFER, "malformed offer: Expected `object`, got `array`"),
    (
        b'{"token":"t","topics":"a"}\n',
        ErrorCode.MALFORMED_OFFER,
        "malformed offer: Expected `array`, got `str` - at `$.topics`",
    ),
    (b'{"topics":["good"]}', ErrorCode.MALFORMED_OFFER, "offer ended without a newline"),
    (b"{" + b" " * 5000, ErrorCode.OFFER_TOO_LARGE, "offer exceeds the limit of 4096 bytes"),
]


@pytest.mark.parametrize(("payload", "code", "reason"), BAD_OFFERS)
async def test_bad_offer_closes_only_that_connection(payload, code, reason):
    limits = Limits(max_offer_size=4096)
    async with Server(["good"], limits=limits) as server, Ticker(server):
        async with raw_connect(server.port) as raw:
            raw.send(2, payload, end_stream=True)
            await eventually(lambda: raw.terminated is not None)
            assert (raw.terminated.error_code, raw.terminated.reason_phrase) == (code, reason)
        await asyncio.sleep(0.05)
        out = generate_latest(server.metrics.registry).decode()
        assert f'qsse_protocol_errors_total{{reason="{code.name.lower()}"}} 1.0' in out


async def test_offer_never_finished_times_out():
    limits = Limits(offer_timeout=0.3)
    async with Server(["good"], limits=limits) as server, Ticker(server):
        async with raw_connect(server.port) as raw:
            raw.send(2, b'{"topics":')  # and never the rest
            await eventually(lambda: raw.terminated is not None)
            assert raw.terminated.error_code == ErrorCode.OFFER_TIMEOUT
            assert raw.terminated.reason_phrase == "no complete offer within 0.3 s"


async def test_unexpected_bidirectional_stream():
    async with Server(["good"]) as server, Ticker(server), raw_connect(server.port) as raw:
        raw.send(0, b"GET / HTTP/1.1\r\n")
        await eventually(lambda: raw.terminated is not None)
        assert raw.terminated.error_code == ErrorCode.UNEXPECTED_STREAM
        assert raw.terminated.reason_phrase == (
            "unexpected data on stream 0: qsse/1 clients only send one unidirectional offer stream"
        )


async def test_connection_flood_is_capped():
    limits = Limits(max_connections=4)
    async with Server(["good"], limits=limits) as server, Ticker(server):
        async with contextlib.AsyncExitStack() as stack:
            raws = [await stack.enter_async_context(raw_connect(server.port)) for _ in range(6)]
            await eventually(lambda: sum(r.terminated is not None for r in raws) == 3)
            refused = [r.terminated for r in raws if r.terminated is not None]
            assert {(t.error_code, t.reason_phrase) for t in refused} == {
                (ErrorCode.TOO_MANY_CONNECTIONS, "server holds its maximum of 4 connections")
            }
            assert server.connection_count == 4


async def test_stalled_subscriber_is_disconnected_and_memory_stays_bounded():
    limits = Limits(write_window=32 * 1024, max_queued_bytes=64 * 1024)
    async with Server(["good", "big"], limits=limits) as server:
        goods = [client(server.address, ["big"]) for _ in range(5)]
        recs = [Recorder(c) for c in goods]
        await asyncio.gather(*(c.connect() for c in goods))
        async with raw_connect(server.port) as raw:
            raw.send(2, b'{"topics":["big"]}\n', end_stream=True)
            subscribers = server.metrics.subscribers.labels(topic="big")
            await eventually(lambda: subscribers._value.get() == 6)
            assert server.publish("big", b"warmup") == 6
            await eventually(lambda: all(len(r.messages) == 1 for r in recs))
            raw.frozen = True
            payload = b"x" * 1000
            for _ in range(200):
                server.publish("big", payload)
                await asyncio.sleep(0.002)
                # What one subscriber can hold: a window in QUIC plus the bounded queue.
                for held in held_bytes(server).values():
                    assert held <= limits.write_window + limits.max_queued_bytes + 2000
            await eventually(lambda: server.connection_count == 5)
            await eventually(lambda: all(len(r.messages) == 201 for r in recs))
            for r in recs:
                assert [m.data for m in r.messages[-200:]] == [payload] * 200
        out = generate_latest(server.metrics.registry).decode()
        assert 'qsse_protocol_errors_total{reason="slow_consumer"} 1.0' in out
        for c, r in zip(goods, recs, strict=True):
            assert r.errors == []
            await c.close()


async def test_vanished_client_is_cleaned_up_by_idle_timeout():
    limits = Limits(idle_timeout=1.0, keepalive_interval=0.2)
    async with Server(["good"], limits=limits) as server, Ticker(server):
        async with raw_connect(server.port) as raw:
            raw.send(2, b'{"topics":["good"]}\n', end_stream=True)
            await eventually(lambda: server.connection_count == 2)
            raw.frozen = True  # gone without a CONNECTION_CLOSE
            await eventually(lambda: server.connection_count == 1, timeout=10)


class GarbageServer(QuicConnectionProtocol):
    """A broken server: answers any offer with malformed frames between good ones."""

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.end_stream:
            sid = self._quic.get_next_available_stream_id(is_unidirectional=True)
            self._quic.send_stream_data(
                sid,
                encode_event("a", b"first")
                + b"not json\n"
                + b'{"topic":"a","data":"%%%"}\n'
                + b"x" * 2000
                + b"\n"
                + encode_event("a", b"second"),
            )
            self.transmit()


async def test_client_reports_malformed_frames_and_keeps_going(tmp_path):
    # The broken server is a bare aioquic peer, whichever QUIC library qsse runs on.
    cert = self_signed(["127.0.0.1"])
    (tmp_path / "chain.pem").write_bytes(cert.chain_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem)
    config = QuicConfiguration(is_client=False, alpn_protocols=["PROTOCOL_QUIC"])
    config.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    quic_server = await serve("127.0.0.1", 0, configuration=config, create_protocol=GarbageServer)
    port = quic_server._transport.get_extra_info("sockname")[1]
    try:
        c = client(f"127.0.0.1:{port}", ["a"], max_frame_size=1024, protocols=["PROTOCOL_QUIC"])
        rec = Recorder(c)
        async with c:
            await eventually(lambda: len(rec.messages) == 2)
            assert [m.data for m in rec.messages] == [b"first", b"second"]
            assert rec.errors == [
                (
                    ErrorCode.MALFORMED_FRAME,
                    {
                        "reason": "malformed event: JSON is malformed: invalid character (byte 4)",
                        "raw": b"not json",
                    },
                ),
                (
                    ErrorCode.MALFORMED_FRAME,
                    {
                        "reason": "malformed event: Invalid base64 encoded string - at `$.data`",
                        "raw": b'{"topic":"a","data":"%%%"}',
                    },
                ),
                (
                    ErrorCode.FRAME_TOO_LARGE,
                    {"reason": "frame exceeds the limit of 1024 bytes", "raw": b""},
                ),
            ]
    finally:
        quic_server.close()


async def test_subscriber_that_resets_its_stream_is_dropped_alone():
    async with Server(["good"]) as server, Ticker(server):
        async with raw_connect(server.port) as raw:
            raw.send(2, b'{"topics":["good"]}\n', end_stream=True)
            await eventually(lambda: server.subscription_count("good") == 2)
            await eventually(lambda: len(raw.stream_data) > 0)
            # STOP_SENDING on the event stream: the server's next write to it fails.
            raw._quic.stop_stream(3, 99)
            raw.transmit()
            await eventually(lambda: server.subscription_count("good") == 1)
