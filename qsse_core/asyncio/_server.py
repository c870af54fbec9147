"""The asyncio qsse server on aioquic."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from aioquic.asyncio.server import QuicServer, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import HandshakeCompleted, QuicEvent
from prometheus_client import CollectorRegistry

from .._codes import ErrorCode
from .._config import Limits
from .._connection import QsseServerConnection
from .._exceptions import ConfigurationError, LocalProtocolError
from .._framing import ALPN_QSSE1, encode_event
from .._hooks import Authenticator, Authorizer, allow_all_tokens, allow_all_topics, resolve
from .._metrics import Metrics
from .._tls import self_signed
from .._topics import TopicTable, is_pattern, topic_matches
from ..events import ConnectionClosed, OfferReceived, ProtocolViolation, QsseEvent
from ._protocol import QsseProtocol

__all__ = ["Server"]

logger = logging.getLogger("qsse.server")


class _Session:
    """One subscriber connection as the server sees it."""

    __slots__ = (
        "closed",
        "conn",
        "last_write",
        "offer_timer",
        "pending",
        "pending_bytes",
        "protocol",
        "subscriptions",
    )

    def __init__(self, protocol: QsseProtocol, conn: QsseServerConnection) -> None:
        self.protocol = protocol
        self.conn = conn
        self.subscriptions: list[tuple[str, str]] = []  # (requested topic, declared label)
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.closed = False
        self.last_write = 0.0
        self.offer_timer: asyncio.TimerHandle | None = None


class Server:
    """A qsse server: declared topics, ``publish()``, authentication hooks and limits.

    Use it as ``async with Server(["ride.*"]) as server:``; it listens once the block is
    entered and closes every connection with GOING_AWAY when it is left.

    :param topics: the declared topics, exact or patterns (``*``, ``?``, ``[...]`` as in Go).
    :param host: the address to listen on.
    :param port: the UDP port; 0 picks a free one, readable as :attr:`port` once started.
    :param authenticator: ``(token) -> bool``, sync or async; default accepts everyone.
    :param authorizer: ``(token, topic) -> bool``, sync or async; default allows every topic.
    :param certfile: PEM certificate chain; without it a self-signed certificate is made in
        memory and a warning logged (development only).
    :param keyfile: PEM private key for ``certfile`` (may be the same file).
    :param limits: see :class:`Limits`.
    :param registry: Prometheus registry for :attr:`metrics`; a fresh one by default.
    :param metrics_namespace: prefix of every metric name.
    :param congestion_control: QUIC congestion control algorithm (``reno`` or ``cubic``).
    """

    def __init__(
        self,
        topics: Iterable[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        authenticator: Authenticator | None = None,
        authorizer: Authorizer | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        limits: Limits | None = None,
        registry: CollectorRegistry | None = None,
        metrics_namespace: str = "qsse",
        congestion_control: str = "reno",
    ) -> None:
        try:
            self._table = TopicTable(topics)
        except ValueError as exc:
            raise ConfigurationError(f"invalid topic declaration: {exc}") from None
        if not self._table.declared:
            raise ConfigurationError("a server needs at least one declared topic")
        if (certfile is None) != (keyfile is None) and keyfile is not None:
            raise ConfigurationError("keyfile given without certfile")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.authenticator: Authenticator = authenticator or allow_all_tokens
        self.authorizer: Authorizer = authorizer or allow_all_topics
        self.limits = limits or Limits()
        self.metrics = Metrics(registry, metrics_namespace)
        self.metrics.prepare(self._table.declared)
        self._certfile = certfile
        self._keyfile = keyfile
        self._congestion_control = congestion_control
        self.certificate_pem: bytes | None = None

        self._quic_server: QuicServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._keepalive: asyncio.Task[None] | None = None
        # Routing: subscription topic -> sessions (a session appears once per subscription).
        self._subs: dict[str, list[_Session]] = {}
        self._wildcards: set[str] = set()
        self._route_cache: dict[str, tuple[str, ...]] = {}
        # Writing: sessions with queued frames, flushed together once per loop iteration.
        self._dirty: set[_Session] = set()
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._publish_times: list[float] = []
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def topics(self) -> tuple[str, ...]:
        """The declared topics."""
        return self._table.declared

    @property
    def port(self) -> int:
        """The UDP port listened on."""
        if self._port is None:
            raise LocalProtocolError("the server is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets), ready for a client."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def connection_count(self) -> int:
        """Connections currently held."""
        return len(self._sessions)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _configuration(self) -> QuicConfiguration:
        config = QuicConfiguration(
            is_client=False,
            alpn_protocols=[ALPN_QSSE1],
            idle_timeout=self.limits.idle_timeout,
            congestion_control_algorithm=self._congestion_control,
        )
        if self._certfile is not None:
            try:
                config.load_cert_chain(self._certfile, self._keyfile)
            except (OSError, ValueError) as exc:
                raise ConfigurationError(
                    f"cannot load certificate {self._certfile!r}: {exc}"
                ) from exc
        else:
            cert = self_signed(["localhost", self.host])
            config.certificate = cert.certificate
            config.private_key = cert.key
            self.certificate_pem = cert.certificate_pem
            logger.warning(
                "no certificate configured: using a self-signed in-memory certificate; "
                "clients must trust it explicitly or connect with insecure=True"
            )
        return config

    async def start(self) -> None:
        """Start listening."""
        if self._quic_server is not None:
            raise LocalProtocolError("the server is already started")
        self._loop = asyncio.get_running_loop()
        self._closing = False
        try:
            self._quic_server = await serve(
                self.host,
                self._requested_port,
                configuration=self._configuration(),
                create_protocol=self._create_protocol,
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {self.host}:{self._requested_port}: {exc}"
            ) from exc
        transport = self._quic_server._transport
        assert transport is not None
        self._port = transport.get_extra_info("sockname")[1]
        self._keepalive = asyncio.create_task(self._keepalive_loop())
        logger.info("qsse server listening on %s", self.address)

    async def close(self) -> None:
        """Flush queued events, close every connection with GOING_AWAY, and stop listening."""
        if self._quic_server is None:
            return
        self._closing = True
        self._flush()
        for session in list(self._sessions):
            session.conn.close(ErrorCode.GOING_AWAY, "server shutting down")
            session.protocol.transmit()
        if self._keepalive is not None:
            self._keepalive.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._keepalive is not None:
            await asyncio.gather(self._keepalive, return_exceptions=True)
        for session in list(self._sessions):
            self._drop(session)
        self._quic_server.close()
        self._quic_server = None
        # Let the transport's close callback run before the caller rebinds the port.
        await asyncio.sleep(0)

    # -- connections -------------------------------------------------------------------------

    def _create_protocol(self, quic: QuicConnection, **kwargs: Any) -> QsseProtocol:
        protocol = QsseProtocol(quic, **kwargs)

        def on_quic_event(event: QuicEvent) -> None:
            if isinstance(event, HandshakeCompleted) and protocol.qsse is None:
                self._attach(protocol, event)

        protocol.on_quic_event = on_quic_event
        return protocol

    def _attach(self, protocol: QsseProtocol, event: HandshakeCompleted) -> None:
        conn = QsseServerConnection(protocol.quic, max_offer_size=self.limits.max_offer_size)
        protocol.qsse = conn
        if self._closing:
            conn.close(ErrorCode.GOING_AWAY, "server shutting down")
            return
        if len(self._sessions) >= self.limits.max_connections:
            conn.close(
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"server holds its maximum of {self.limits.max_connections} connections",
            )
            self.metrics.protocol_errors.labels(reason="too_many_connections").inc()
            logger.warning("refused a connection: %d connections held", len(self._sessions))
            return
        session = _Session(protocol, conn)
        self._sessions.add(session)
        self.metrics.connections.labels(protocol=conn.alpn_protocol).inc()
        protocol.on_qsse_event = lambda ev: self._session_event(session, ev)
        assert self._loop is not None
        session.offer_timer = self._loop.call_later(
            self.limits.offer_timeout, self._offer_timed_out, session
        )

    def _offer_timed_out(self, session: _Session) -> None:
        session.offer_timer = None
        if session.conn.offered or session.closed:
            return
        reason = f"no complete offer within {self.limits.offer_timeout:g} s"
        self._refuse(session, ErrorCode.OFFER_TIMEOUT, reason)

    def _refuse(self, session: _Session, code: ErrorCode, reason: str) -> None:
        session.conn.close(code, reason)
        session.protocol.transmit()
        # Stop routing to it now rather than when QUIC finishes closing, a few RTTs later.
        self._drop(session)
        self.metrics.protocol_errors.labels(reason=code.name.lower()).inc()
        logger.warning("closed connection %s: %s", self._peer(session), reason)

    def _session_event(self, session: _Session, event: QsseEvent) -> None:
        if isinstance(event, OfferReceived):
            if session.offer_timer is not None:
                session.offer_timer.cancel()
                session.offer_timer = None
            task = asyncio.create_task(self._admit(session, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(event, ProtocolViolation):
            try:
                reason = ErrorCode(event.error_code).name.lower()
            except ValueError:
                reason = "unknown"
            self.metrics.protocol_errors.labels(reason=reason).inc()
            logger.warning("closed connection %s: %s", self._peer(session), event.reason)
        elif isinstance(event, ConnectionClosed):
            self._drop(session)

    @staticmethod
    def _peer(session: _Session) -> str:
        addr = session.protocol.quic._network_paths[0].addr
        return f"{addr[0]}:{addr[1]}"

    async def _admit(self, session: _Session, offer: OfferReceived) -> None:
        try:
            authenticated = await resolve(self.authenticator(offer.token))
        except Exception:
            logger.exception("authenticator raised; refusing the client")
            authenticated = False
        if session.closed:
            return
        if not authenticated:
            self.metrics.authentication_failures.inc()
            session.conn.reject()
            session.protocol.transmit()
            return
        errors: list[tuple[int, dict[str, Any]]] = []
        admitted: list[tuple[str, str]] = []
        for topic in offer.topics:
            label = self._table.admit(topic)
            if label is None:
                errors.append((ErrorCode.TOPIC_NOT_AVAILABLE, {"topic": topic}))
                continue
            try:
                allowed = await resolve(self.authorizer(offer.token, topic))
            except Exception:
                logger.exception("authorizer raised; refusing topic %r", topic)
                allowed = False
            if allowed:
                admitted.append((topic, label))
            else:
                self.metrics.authorization_failures.labels(topic=label).inc()
                errors.append((ErrorCode.NOT_AUTHORIZED, {"topic": topic}))
        if session.closed:
            return
        session.conn.accept(errors)
        for topic, label in admitted:
            self._subscribe(session, topic, label)
        session.protocol.transmit()

    def _subscribe(self, session: _Session, topic: str, label: str) -> None:
        session.subscriptions.append((topic, label))
        subs = self._subs.get(topic)
        if subs is None:
            subs = self._subs[topic] = []
            if is_pattern(topic):
                self._wildcards.add(topic)
            self._route_cache.clear()
        subs.append(session)
        self.metrics.subscribers.labels(topic=label).inc()

    def _drop(self, session: _Session) -> None:
        if session.closed:
            return
        session.closed = True
        if session.offer_timer is not None:
            session.offer_timer.cancel()
        self._sessions.discard(session)
        self._dirty.discard(session)
        self.metrics.connections.labels(protocol=session.conn.alpn_protocol).dec()
        for topic, label in session.subscriptions:
            subs = self._subs[topic]
            subs.remove(session)
            if not subs:
                del self._subs[topic]
                self._wildcards.discard(topic)
                self._route_cache.clear()
            self.metrics.subscribers.labels(topic=label).dec()
        session.subscriptions.clear()
        session.pending.clear()

    # -- publishing --------------------------------------------------------------------------

    def publish(self, topic: str, data: bytes) -> int:
        """Send ``data`` to every subscription whose topic matches.

        ``topic`` is a pattern over the declared topics, as in Go; a concrete topic admitted by
        a declared pattern (``ride.42.status`` under ``ride.*.status``) is published as is. The
        event is encoded once per concrete topic and written on the next loop iteration (or
        after ``Limits.flush_interval``); this call never blocks.

        :returns: the number of subscriptions the event was queued for.
        :raises LocalProtocolError: if ``topic`` matches no declared topic, or the server is
            not running.
        """
        if self._loop is None or self._closing:
            raise LocalProtocolError("publish() on a server that is not running")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        targets = self._table.publish_targets(topic)
        if not targets:
            raise LocalProtocolError(
                f"topic {topic!r} matches no declared topic (declared: {list(self.topics)})"
            )
        queued = 0
        for concrete, label in targets:
            self.metrics.published_child(label).inc()
            routes = self._route_cache.get(concrete)
            if routes is None:
                routes = self._routes(concrete)
            if not routes:
                self.metrics.events_dropped.labels(topic=label, reason="no_subscribers").inc()
                continue
            frame = encode_event(concrete, bytes(data))
            size = len(frame)
            count = 0
            for route in routes:
                for session in self._subs[route]:
                    session.pending.append(frame)
                    session.pending_bytes += size
                    self._dirty.add(session)
                    count += 1
            self.metrics.delivered_child(label).inc(count)
            queued += count
        if queued:
            self._publish_times.append(time.perf_counter())
            if self._flush_handle is None:
                interval = self.limits.flush_interval
                if interval > 0:
                    self._flush_handle = self._loop.call_later(interval, self._flush)
                else:
                    self._flush_handle = self._loop.call_soon(self._flush)
        return queued

    def _routes(self, concrete: str) -> tuple[str, ...]:
        routes = [concrete] if concrete in self._subs else []
        routes += [p for p in self._wildcards if p != concrete and topic_matches(p, concrete)]
        result = tuple(sorted(routes))
        if len(self._route_cache) >= 4096:
            self._route_cache.clear()
        self._route_cache[concrete] = result
        return result

    def _flush(self) -> None:
        """Write what each subscriber has queued in one write and one transmit."""
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        bound = self.limits.max_queued_bytes
        now = time.monotonic()
        for session in dirty:
            if session.closed or not session.pending:
                continue
            backlog = session.conn.backlog
            if backlog + session.pending_bytes > bound:
                self._slow_consumer(session, backlog)
                continue
            data = b"".join(session.pending) if len(session.pending) > 1 else session.pending[0]
            session.pending.clear()
            session.pending_bytes = 0
            session.conn.send(data)
            session.last_write = now
            session.protocol.transmit()
        end = time.perf_counter()
        observe = self.metrics.publish_write_latency.observe
        for started in self._publish_times:
            observe(end - started)
        self._publish_times.clear()

    def _slow_consumer(self, session: _Session, backlog: int) -> None:
        for _, label in session.subscriptions:
            self.metrics.events_dropped.labels(topic=label, reason="slow_consumer").inc(
                len(session.pending)
            )
        reason = (
            f"subscriber fell behind: {backlog + session.pending_bytes} bytes queued, "
            f"limit {self.limits.max_queued_bytes}"
        )
        session.pending.clear()
        session.pending_bytes = 0
        self._refuse(session, ErrorCode.SLOW_CONSUMER, reason)

    async def _keepalive_loop(self) -> None:
        interval = self.limits.keepalive_interval
        while True:
            await asyncio.sleep(interval / 2)
            now = time.monotonic()
            for session in list(self._sessions):
                if not session.closed and now - session.last_write >= interval:
                    session.protocol.quic.send_ping(0)
                    session.last_write = now
                    session.protocol.transmit()
