"""The publishing side of every target, behind one small interface.

Each server fans an event out to every connected subscriber of its topic and reports the most
bytes queued for any one subscriber (``backlog``), so the full-speed publisher can hold back
instead of growing buffers without bound. The same loop drives every target.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any, Protocol

from ._common import CertFiles, qsse1_frame

__all__ = ["BenchServer", "make_server"]


class BenchServer(Protocol):
    async def start(self, host: str, port: int) -> int: ...

    def subscriber_count(self) -> int: ...

    def publish(self, topic: str, data: bytes) -> None: ...

    def backlog(self) -> int: ...

    async def close(self) -> None: ...


class QsseBench:
    """qsse's own :class:`~qsse_core.Server`; it serves qsse/1 and (once landed) qsse/2."""

    def __init__(
        self,
        certs: CertFiles,
        topics: list[str],
        congestion_control: str | None = None,
        redis: str | None = None,
    ) -> None:
        self._certs = certs
        self._topics = topics
        # A Redis URL: the server publishes through a RedisBroker and delivers its echo.
        self._redis = redis
        self._broker: Any = None
        # None: the backend's own controller (aioquic: reno; qh3 has a fixed one and refuses
        # any name).
        self._cc = congestion_control or None
        self.server: Any = None

    async def start(self, host: str, port: int) -> int:
        from qsse_core import Limits, RedisBroker, Server

        if self._redis is not None:
            # A store of its own per run: nothing left over from an earlier run is replayed.
            prefix = f"bench{time.time_ns()}"
            self._broker = RedisBroker(self._redis, prefix=prefix, max_batch=1024)
        self.server = Server(
            self._topics,
            host=host,
            port=port,
            certfile=self._certs.certfile,
            keyfile=self._certs.keyfile,
            limits=Limits(
                flush_interval=0.0,
                max_queued_bytes=256 * 1024 * 1024,
                max_connections=100_000,
                # An idle subscriber must stay connected for the whole memory run.
                idle_timeout=600.0,
                # Thousands of handshakes at once on a loaded machine can hold an offer up
                # for more than the default 10 s; a subscriber closed for that is not held.
                offer_timeout=120.0,
            ),
            congestion_control=self._cc,
            broker=self._broker,
        )
        await self.server.start()
        return int(self.server.port)

    def subscriber_count(self) -> int:
        return int(self.server.subscription_count())

    async def wait_subscribers(self, n: int, timeout: float) -> int:
        """Wait until every topic has ``n`` subscriptions; returns the fewest any topic has."""
        deadline = time.monotonic() + timeout
        for topic in self._topics:
            with contextlib.suppress(TimeoutError):
                left = max(0.0, deadline - time.monotonic())
                await self.server.wait_subscribed(topic, n, timeout=left)
        return min(self.server.subscription_count(t) for t in self._topics)

    def publish(self, topic: str, data: bytes) -> None:
        self.server.publish(topic, data)

    def backlog(self) -> int:
        # Private state, read only to pace the publisher: the bytes qsse holds in its own
        # per-stream queues (beyond the write window already handed to QUIC). There is no
        # public figure for it; should these names change, this fails loudly rather than
        # report 0 and let the publisher run unpaced.
        most = 0
        for session in self.server._sessions:
            # qsse/1 subscriptions share the connection's one outbox; qsse/2 have one each.
            outboxes = {id(sub.outbox): sub.outbox for sub in session.subscriptions.values()}
            if session.outbox is not None:
                outboxes[id(session.outbox)] = session.outbox
            most = max(most, sum(o.size for o in outboxes.values()))
        if self._broker is not None:
            # Events still on their way to Redis and back: bounded like the outboxes.
            most += self._broker.pending * 256
        return most

    async def close(self) -> None:
        await self.server.close()


class RawQuicBench:
    """The transport ceiling: the least code that writes qsse/1's bytes over QUIC.

    One unidirectional stream per connection, opened at the handshake; frames encoded once per
    event and, as in qsse, coalesced into one write and one ``transmit()`` per connection per
    loop iteration. No offers, topics, auth, metrics or limits.
    """

    #: qsse's default ``Limits.write_window``.
    WRITE_WINDOW = 1024 * 1024

    def __init__(self, certs: CertFiles, backend: str) -> None:
        self._certs = certs
        self._backend = backend
        self._conns: dict[Any, int] = {}  # protocol -> stream id
        self._pending: dict[Any, list[bytes]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, host: str, port: int) -> int:
        if self._backend == "qh3":
            from qh3.asyncio import QuicConnectionProtocol, serve
            from qh3.quic.configuration import QuicConfiguration
            from qh3.quic.events import ConnectionTerminated, HandshakeCompleted
        else:
            from aioquic.asyncio import QuicConnectionProtocol, serve  # type: ignore[assignment]
            from aioquic.quic.configuration import (  # type: ignore[assignment]
                QuicConfiguration,
            )
            from aioquic.quic.events import (  # type: ignore[assignment]
                ConnectionTerminated,
                HandshakeCompleted,
            )
        bench = self

        class Protocol(QuicConnectionProtocol):  # type: ignore[misc, valid-type]
            def quic_event_received(self, event: Any) -> None:
                if isinstance(event, HandshakeCompleted):
                    sid = self._quic.get_next_available_stream_id(is_unidirectional=True)
                    bench._conns[self] = sid
                elif isinstance(event, ConnectionTerminated):
                    bench._conns.pop(self, None)
                    bench._pending.pop(self, None)

        config = QuicConfiguration(is_client=False, alpn_protocols=["PROTOCOL_QUIC", "qsse/2"])
        config.idle_timeout = 600.0
        config.load_cert_chain(self._certs.certfile, self._certs.keyfile)
        self._loop = asyncio.get_running_loop()
        self._server = await serve(host, port, configuration=config, create_protocol=Protocol)
        return int(self._server._transport.get_extra_info("sockname")[1])

    def subscriber_count(self) -> int:
        return len(self._conns)

    def publish(self, topic: str, data: bytes) -> None:
        frame = qsse1_frame(topic, data)
        pending = self._pending
        for proto in self._conns:
            queue = pending.get(proto)
            if queue is None:
                pending[proto] = [frame]
            else:
                queue.append(frame)
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        pending, self._pending = self._pending, {}
        for proto, frames in pending.items():
            sid = self._conns.get(proto)
            if sid is None:
                continue
            proto._quic.send_stream_data(sid, b"".join(frames))
            proto.transmit()

    def backlog(self) -> int:
        # Paced like qsse, which hands QUIC up to ``Limits.write_window`` per stream and counts
        # only what it queues beyond that: what QUIC holds past the same window. (Counting
        # every unacknowledged byte held the aioquic ceiling back at N = 100 while qsse ran
        # on, so the ceiling was set by the pacing, not the transport.)
        most = 0
        for proto, sid in self._conns.items():
            quic = proto._quic
            if self._backend == "qh3":
                queued = quic.get_send_buffer_size(sid)
            else:
                stream = quic._streams.get(sid)
                sender = None if stream is None else stream.sender
                queued = 0 if sender is None else sender._buffer_stop - sender._buffer_start
            most = max(most, queued - self.WRITE_WINDOW)
        return max(most, 0)

    async def close(self) -> None:
        for proto in list(self._conns):
            proto.close()
        self._server.close()
        await asyncio.sleep(0)


class SseStarletteBench:
    """sse-starlette on uvicorn: HTTP/1.1 SSE over TCP, one generator and queue per client."""

    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[tuple[str, str]]]] = {}
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._size = 0

    async def start(self, host: str, port: int) -> int:
        import uvicorn
        from sse_starlette import EventSourceResponse
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.routing import Route

        queues = self._queues

        async def events(request: Request) -> EventSourceResponse:
            topics = request.query_params.get("topics", "bench").split(",")
            queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

            async def stream() -> Any:
                for topic in topics:
                    queues.setdefault(topic, set()).add(queue)
                try:
                    while True:
                        topic, text = await queue.get()
                        yield {"event": topic, "data": text}
                finally:
                    for topic in topics:
                        queues[topic].discard(queue)

            return EventSourceResponse(stream())

        app = Starlette(routes=[Route("/events", events)])
        try:
            import httptools  # noqa: F401

            http = "httptools"
        except ImportError:
            http = "h11"
        config = uvicorn.Config(
            app, loop="none", lifespan="off", log_level="warning", http=http, access_log=False
        )
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(4096)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        for _ in range(200):  # bounded: at most 2 s
            if self._server.started:
                break
            await asyncio.sleep(0.01)
        return int(sock.getsockname()[1])

    def subscriber_count(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def publish(self, topic: str, data: bytes) -> None:
        text = data.decode()
        self._size = len(data)
        item = (topic, text)
        for queue in self._queues.get(topic, ()):
            queue.put_nowait(item)

    def backlog(self) -> int:
        most = 0
        for queues in self._queues.values():
            for queue in queues:
                most = max(most, queue.qsize())
        return most * self._size

    async def close(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)


class WebsocketsBench:
    """websockets' asyncio server with ``broadcast()``; text frames ``TOPIC SPACE PAYLOAD``.

    Compression is off so that every peer carries the same bytes (it is on by default).
    """

    def __init__(self) -> None:
        self._subs: dict[str, set[Any]] = {}
        self._server: Any = None

    async def start(self, host: str, port: int) -> int:
        from websockets.asyncio.server import serve

        subs = self._subs

        async def handler(conn: Any) -> None:
            topics = conn.request.path.partition("?topics=")[2] or "bench"
            names = topics.split(",")
            for topic in names:
                subs.setdefault(topic, set()).add(conn)
            try:
                await conn.wait_closed()
            finally:
                for topic in names:
                    subs[topic].discard(conn)

        self._server = await serve(
            handler, host, port, compression=None, max_queue=None, ping_interval=None
        )
        return int(next(iter(self._server.sockets)).getsockname()[1])

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def publish(self, topic: str, data: bytes) -> None:
        from websockets.asyncio.server import broadcast

        conns = self._subs.get(topic)
        if conns:
            broadcast(conns, topic.encode() + b" " + data, text=True)

    def backlog(self) -> int:
        most = 0
        for conns in self._subs.values():
            for conn in conns:
                most = max(most, conn.transport.get_write_buffer_size())
        return most

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)


def make_server(
    target: str,
    certs: CertFiles,
    topics: list[str],
    congestion_control: str | None = None,
    redis: str | None = None,
) -> BenchServer:
    """The server for ``target`` (see ``bench._targets.TARGETS``)."""
    if target.startswith("qsse/"):
        return QsseBench(certs, topics, congestion_control, redis)
    if target == "raw-aioquic":
        return RawQuicBench(certs, "aioquic")
    if target == "raw-qh3":
        return RawQuicBench(certs, "qh3")
    if target == "sse-starlette":
        return SseStarletteBench()
    if target == "websockets":
        return WebsocketsBench()
    raise ValueError(f"unknown target {target!r}")
