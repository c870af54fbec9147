"""The asyncio qsse server on aioquic: qsse/2 and Go's qsse/1 on one port, chosen by ALPN."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from .._broker import Broker
from .._codes import ErrorCode
from .._config import Limits, keepalive_interval
from .._connection import QsseServerConnection
from .._connection2 import Qsse2ServerConnection
from .._exceptions import ConfigurationError, LocalProtocolError
from .._framing import ALPN_QSSE1, encode_error, encode_event
from .._framing2 import (
    ALPN_QSSE2,
    MAX_WIRE_INT,
    ContentType,
    GapFrame,
    SubscribeStatus,
    encode_control,
    encode_event_frame,
)
from .._history import HistoryStore, MemoryHistory, StoredEvent
from .._hooks import Authenticator, Authorizer, allow_all_tokens, allow_all_topics, resolve
from .._metrics import Metrics
from .._quic import (
    HandshakeCompleted,
    QuicConfiguration,
    QuicConnection,
    QuicEvent,
    path_address,
    peer_idle_timeout,
    send_backlog,
    server_backend,
)
from .._tls import self_signed
from .._topics import TopicTable, is_pattern, pattern_matcher, topic_matches
from ..events import (
    ConnectionClosed,
    HelloReceived,
    OfferReceived,
    ProtocolViolation,
    QsseEvent,
    SubscribeRequested,
    UnsubscribeRequested,
)
from ._broker import MemoryBroker
from ._endpoint import ServerEndpoint, listen
from ._protocol import QsseProtocol, format_address

__all__ = ["Server"]

logger = logging.getLogger("qsse.server")

# qsse/1 subscribers of events that came through a broker in MessagePack get JSON.
_MSGPACK = msgspec.msgpack.Decoder()
_JSON = msgspec.json.Encoder()

# Why a subscriber missed events, as told in its gap notice.
_DROPPED, _EVICTED, _EPOCH, _UNISSUED = range(4)
_GAP_REASONS = (
    "dropped: the subscriber fell behind",
    "no longer held in the history",
    "the server's history started over",
    "the resume position was never issued by the server's history",
)

# A wildcard address listens everywhere but cannot be sent to: clients dial loopback.
_DIALABLE = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}

# Concrete topics whose authorization a connection remembers; past it the cache starts over
# (concrete topics carry ids, so they are unbounded). About 40 bytes an entry: at most some
# 40 KiB per connection, asked afresh rather than held without bound.
_AUTHORIZED_TOPICS = 1024

# An event waiting for the authorizer: ((frame, event id, declared label), concrete topic),
# the topic None for an event that needs no answer but must stay behind those before it.
_Held = tuple[tuple[bytes, int, str], str | None]

_Request = HelloReceived | OfferReceived | SubscribeRequested | UnsubscribeRequested


def _ignore(event: QsseEvent) -> None:
    """What a dropped session's protocol hands its late events to."""


class _Outbox:
    """Frames waiting for one stream: a qsse/1 connection's, or one qsse/2 subscription's."""

    __slots__ = ("frames", "gaps", "held", "held_size", "session", "size", "stream_id", "v2")

    def __init__(self, session: _Session, stream_id: int) -> None:
        self.session = session
        self.stream_id = stream_id
        self.v2 = session.v2
        self.frames: deque[tuple[bytes, int, str]] = deque()  # (frame, event id, label)
        self.size = 0
        # label -> [first, last, why] of events lost and not yet told; last -1: unknown.
        self.gaps: dict[str, list[int]] = {}
        # Events behind an authorizer answer still awaited, in order; None when there are none.
        self.held: deque[_Held] | None = None
        self.held_size = 0


class _Subscription:
    __slots__ = ("id", "label", "outbox", "session", "topic")

    def __init__(
        self, session: _Session, sub_id: int, topic: str, label: str, outbox: _Outbox
    ) -> None:
        self.session = session
        self.id = sub_id
        self.topic = topic
        self.label = label
        self.outbox = outbox


class _Session:
    """One subscriber connection as the server sees it."""

    __slots__ = (
        "authorized",
        "blocked",
        "closed",
        "conn",
        "last_write",
        "next_sub_id",
        "offer_timer",
        "outbox",
        "path",
        "pending",
        "protocol",
        "requests",
        "subscriptions",
        "token",
        "welcomed",
        "worker",
    )

    def __init__(
        self, protocol: QsseProtocol, conn: QsseServerConnection | Qsse2ServerConnection
    ) -> None:
        self.protocol = protocol
        self.conn = conn
        self.subscriptions: dict[int, _Subscription] = {}
        self.next_sub_id = 1
        self.outbox: _Outbox | None = None  # qsse/1: the one stream every event goes on
        self.blocked: set[_Outbox] = set()  # outboxes waiting for their write window
        self.requests: deque[_Request] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.token = ""
        self.welcomed = False
        self.closed = False
        self.last_write = 0.0
        self.offer_timer: asyncio.TimerHandle | None = None
        self.path: Any = path_address(protocol.quic)  # where the client is, seen last
        # Concrete topics reached through pattern subscriptions -> the authorizer's answer.
        self.authorized: dict[str, bool] = {}
        # Concrete topics whose answer an async authorizer has not given yet.
        self.pending: dict[str, asyncio.Future[None]] = {}

    @property
    def v2(self) -> bool:
        return isinstance(self.conn, Qsse2ServerConnection)

    def backlog(self, outbox: _Outbox) -> int:
        return send_backlog(self.protocol.quic, outbox.stream_id)


class _BrokerFeed:
    """The server's :class:`~qsse_core.BrokerListener`, kept off its public surface."""

    __slots__ = ("server",)

    def __init__(self, server: Server) -> None:
        self.server = server

    def on_event(self, label: str, event: StoredEvent) -> None:
        self.server._broker_event(label, event)

    def on_gap(self, label: str, first_id: int, last_id: int) -> None:
        self.server._broker_gap(label, first_id, last_id)

    def on_epoch(self, epoch: int) -> None:
        self.server._broker_epoch(epoch)


class Server:
    """A qsse server: declared topics, ``publish()``, authentication hooks, history and limits.

    Use it as ``async with Server(["ride.*"]) as server:``; it listens once the block is
    entered and closes every connection with GOING_AWAY when it is left. It speaks qsse/2
    and Go qsse's protocol (ALPN ``PROTOCOL_QUIC``) on the same port.

    :param topics: the declared topics, exact or patterns (``*``, ``?``, ``[...]`` as in Go).
    :param host: the address to listen on; a wildcard (``0.0.0.0``, ``::``) listens on every
        interface, and :attr:`address` then names the loopback address of its family.
    :param port: the UDP port; 0 picks a free one, readable as :attr:`port` once started.
    :param authenticator: ``(token) -> bool``, sync or async; default accepts everyone.
    :param authorizer: ``(token, topic) -> bool``, sync or async; default allows every topic.
        It is asked about each subscription as the client wrote it (as in Go); when that is a
        pattern (:func:`qsse_core.is_pattern`), it is also asked about every concrete topic
        before that topic's first event, live or replayed, reaches the connection, with the
        answer kept for the connection. Events of a refused concrete topic are not sent to
        that connection and are not reported to it as a gap. An async authorizer's answer
        is awaited with the connection's later events for that subscription held in order.
    :param certfile: PEM certificate chain; without it a self-signed certificate is made in
        memory and a warning logged (development only).
    :param keyfile: PEM private key for ``certfile`` (may be the same file).
    :param limits: see :class:`Limits`.
    :param history: where recent events are kept for qsse/2 resume; a
        :class:`MemoryHistory` by default. Pass the same store to a restarted server so its
        clients resume without loss.
    :param broker: what carries events between servers (nodes) and keeps their shared
        history, e.g. :class:`~qsse_core.RedisBroker`; a :class:`~qsse_core.MemoryBroker` on
        ``history`` by default (give one or the other). The server starts it with itself, and
        receives every node's events from it. With a remote broker, :meth:`publish` queues
        the event (see there) and :meth:`publish_confirmed` waits until it is stored.
    :param reuse_port: listen with ``SO_REUSEPORT`` so several processes share one port
        (Linux), as ``qsse serve --workers N`` does; see ``docs/scaling.md``.
    :param registry: Prometheus registry for :attr:`metrics`; a fresh one by default.
    :param metrics_namespace: prefix of every metric name.
    :param congestion_control: QUIC congestion control algorithm (aioquic: ``reno`` or
        ``cubic``); None keeps the QUIC library's default.
    :param protocols: the ALPN protocols offered, in order of preference.
    :param quic_backend: the QUIC library, ``aioquic`` or ``qh3``; None takes
        ``QSSE_QUIC_SERVER_BACKEND``, else ``QSSE_QUIC_BACKEND``, else aioquic, the one that
        accepts every client (``docs/quic-backends.md``).
    :raises ConfigurationError: on an unknown or uninstalled ``quic_backend``.
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
        history: HistoryStore | None = None,
        broker: Broker | None = None,
        reuse_port: bool = False,
        registry: CollectorRegistry | None = None,
        metrics_namespace: str = "qsse",
        congestion_control: str | None = None,
        protocols: Iterable[str] = (ALPN_QSSE2, ALPN_QSSE1),
        quic_backend: str | None = None,
    ) -> None:
        self._backend = server_backend(quic_backend)
        #: the QUIC library serving: ``"aioquic"`` or ``"qh3"``.
        self.quic_backend: str = self._backend.name
        try:
            self._table = TopicTable(topics)
        except ValueError as exc:
            raise ConfigurationError(f"invalid topic declaration: {exc}") from None
        if not self._table.declared:
            raise ConfigurationError("a server needs at least one declared topic")
        if keyfile is not None and certfile is None:
            raise ConfigurationError("keyfile given without certfile")
        self.protocols = tuple(protocols)
        unknown = set(self.protocols) - {ALPN_QSSE1, ALPN_QSSE2}
        if unknown or not self.protocols:
            raise ConfigurationError(
                f"protocols must be taken from {[ALPN_QSSE2, ALPN_QSSE1]}, got {self.protocols}"
            )
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.authenticator: Authenticator = authenticator or allow_all_tokens
        self.authorizer: Authorizer = authorizer or allow_all_topics
        self.limits = limits or Limits()
        if broker is not None and history is not None:
            raise ConfigurationError("give a history or a broker (which holds one), not both")
        #: carries events between nodes; :attr:`history` is its history.
        self.broker: Broker = broker or MemoryBroker(history or MemoryHistory())
        self.history: HistoryStore = self.broker.history
        self._feed = _BrokerFeed(self)
        self._reuse_port = reuse_port
        self.metrics = Metrics(registry, metrics_namespace)
        self.metrics.prepare(self._table.declared)
        self._certfile = certfile
        self._keyfile = keyfile
        self._congestion_control = congestion_control
        self.certificate_pem: bytes | None = None

        self._endpoint: ServerEndpoint | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: set[_Session] = set()
        self._keepalive: asyncio.Task[None] | None = None
        # Seconds the keep-alive loop sleeps, and its wake-up: a peer needing PINGs sooner.
        self._keepalive_tick = 0.0
        self._keepalive_waiter: asyncio.Future[None] | None = None
        # Routing: subscription topic -> subscriptions (one entry per subscription).
        self._subs: dict[str, list[_Subscription]] = {}
        # Pattern subscription topics -> their matcher, compiled once per topic subscribed.
        self._wildcards: dict[str, Callable[[str], bool]] = {}
        self._route_cache: dict[str, tuple[str, ...]] = {}
        # Writing: outboxes with queued frames, drained together once per loop iteration.
        self._dirty: set[_Outbox] = set()
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
        """``host:port`` (IPv6 hosts in brackets), ready for a client to dial.

        For a server on a wildcard address that is the loopback address of its family
        (``127.0.0.1``, ``::1``): a wildcard is no address to send to.
        """
        host = _DIALABLE.get(self.host, self.host)
        return format_address((host, self.port))

    @property
    def connection_count(self) -> int:
        """Connections currently held."""
        return len(self._sessions)

    def metrics_handler(self) -> Callable[..., Any]:
        """A WSGI app serving this server's metrics, like Go's ``MetricHandler()``.

        See :attr:`metrics` for an ASGI app or a standalone HTTP server.
        """
        return self.metrics.wsgi_app()

    def subscription_count(self, topic: str | None = None) -> int:
        """Subscriptions held, to ``topic`` as subscribers wrote it, or to any topic."""
        if topic is None:
            return sum(len(subs) for subs in self._subs.values())
        return len(self._subs.get(topic, ()))

    async def wait_subscribed(self, topic: str, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` subscriptions to ``topic`` are held.

        :raises TimeoutError: after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while self.subscription_count(topic) < count:
                await asyncio.sleep(0.01)

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
        config = self._backend.configuration(
            is_client=False,
            alpn_protocols=list(self.protocols),
            idle_timeout=self.limits.idle_timeout,
        )
        if self._congestion_control is not None:
            try:
                self._backend.set_congestion_control(config, self._congestion_control)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        if self._certfile is not None:
            try:
                config.load_cert_chain(self._certfile, self._keyfile)
            except (OSError, ValueError) as exc:
                raise ConfigurationError(
                    f"cannot load certificate {self._certfile!r}: {exc}"
                ) from exc
        else:
            cert = self_signed(["localhost", self.host])
            self._backend.set_certificate(config, cert.chain_pem, cert.key_pem)
            self.certificate_pem = cert.certificate_pem
            logger.warning(
                "no certificate configured: using a self-signed in-memory certificate; "
                "clients must trust it explicitly or connect with insecure=True"
            )
        return config

    async def start(self) -> None:
        """Start the broker, then listen.

        :raises BrokerError: when the broker cannot be reached.
        :raises ConfigurationError: when the address cannot be bound.
        """
        if self._endpoint is not None:
            raise LocalProtocolError("the server is already started")
        self._loop = asyncio.get_running_loop()
        self._closing = False
        configuration = self._configuration()
        # The broker first: a node that cannot reach it does not take clients.
        await self.broker.start(self._table.declared)
        self.broker.add_listener(self._feed)
        try:
            self._endpoint = await listen(
                self.host,
                self._requested_port,
                self._backend,
                configuration,
                self._create_protocol,
                reuse_port=self._reuse_port,
            )
        except OSError as exc:
            self.broker.remove_listener(self._feed)
            await self.broker.close()
            raise ConfigurationError(
                f"cannot listen on {self.host}:{self._requested_port}: {exc}"
            ) from exc
        self._port = self._endpoint.sockname[1]
        self._keepalive = asyncio.create_task(self._keepalive_loop())
        logger.info("qsse server listening on %s (%s)", self.address, self.quic_backend)

    async def close(self) -> None:
        """Flush queued events, close every connection with GOING_AWAY, and stop listening."""
        if self._endpoint is None:
            return
        self._closing = True
        self._flush()
        for session in list(self._sessions):
            session.conn.close(ErrorCode.GOING_AWAY, "server shutting down")
            session.protocol.transmit()
        if self._keepalive is not None:
            self._keepalive.cancel()
        workers = [s.worker for s in self._sessions if s.worker is not None]
        for session in list(self._sessions):
            self._drop(session)
        await asyncio.gather(*workers, return_exceptions=True)
        if self._keepalive is not None:
            await asyncio.gather(self._keepalive, return_exceptions=True)
            self._keepalive = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._endpoint.close()
        self._endpoint = None
        self.broker.remove_listener(self._feed)
        await self.broker.close()
        # Let the transport's close callback run before the caller rebinds the port.
        await asyncio.sleep(0)

    # -- connections -------------------------------------------------------------------------

    def _create_protocol(self, quic: QuicConnection) -> QsseProtocol:
        protocol = QsseProtocol(quic)

        def on_quic_event(event: QuicEvent) -> None:
            if isinstance(event, HandshakeCompleted) and protocol.qsse is None:
                self._attach(protocol, event.alpn_protocol)

        protocol.on_quic_event = on_quic_event
        return protocol

    def _attach(self, protocol: QsseProtocol, alpn: str | None) -> None:
        conn: QsseServerConnection | Qsse2ServerConnection
        if alpn == ALPN_QSSE2:
            conn = Qsse2ServerConnection(protocol.quic, max_frame_size=self.limits.max_frame_size)
        else:
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
        protocol.on_datagram = lambda: self._on_datagram(session)
        limits = self.limits
        peer_idle = peer_idle_timeout(protocol.quic)
        if keepalive_interval(limits.idle_timeout, peer_idle) / 2 < self._keepalive_tick:
            _wake(self._keepalive_waiter)
        assert self._loop is not None
        session.offer_timer = self._loop.call_later(
            self.limits.offer_timeout, self._offer_timed_out, session
        )

    def _offer_timed_out(self, session: _Session) -> None:
        session.offer_timer = None
        if session.conn.offered or session.closed:
            return
        what = "HELLO" if session.v2 else "offer"
        reason = f"no complete {what} within {self.limits.offer_timeout:g} s"
        self._refuse(session, ErrorCode.OFFER_TIMEOUT, reason)

    def _refuse(self, session: _Session, code: ErrorCode, reason: str) -> None:
        session.conn.close(code, reason)
        session.protocol.transmit()
        self.metrics.protocol_errors.labels(reason=code.name.lower()).inc()
        logger.warning("closed connection %s: %s", self._peer(session), reason)
        # Stop routing to it now rather than when QUIC finishes closing, a few RTTs later.
        self._drop(session)

    def _session_event(self, session: _Session, event: QsseEvent) -> None:
        if session.closed:
            return  # refused: what the peer sent after that goes unanswered
        if isinstance(event, _Request):
            if session.offer_timer is not None and isinstance(event, OfferReceived | HelloReceived):
                session.offer_timer.cancel()
                session.offer_timer = None
            # Requests are answered in order; hooks may await, so one task works through them.
            # A legitimate client has at most a HELLO and a SUBSCRIBE and an UNSUBSCRIBE per
            # subscription it may hold waiting; more is a flood, which would grow this queue.
            waiting = 2 * self.limits.max_subscriptions + 1
            if len(session.requests) >= waiting:
                self._refuse(
                    session,
                    ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                    f"more than {waiting} requests waiting for answers",
                )
                return
            session.requests.append(event)
            if session.worker is None:
                session.worker = asyncio.create_task(self._work(session))
        elif isinstance(event, ProtocolViolation):
            try:
                reason = ErrorCode(event.error_code).name.lower()
            except ValueError:
                reason = "unknown"
            self.metrics.protocol_errors.labels(reason=reason).inc()
            logger.warning("closed connection %s: %s", self._peer(session), event.reason)
            self._drop(session)
        elif isinstance(event, ConnectionClosed):
            self._drop(session)

    @staticmethod
    def _peer(session: _Session) -> str:
        return session.protocol.peer

    async def _work(self, session: _Session) -> None:
        try:
            while session.requests and not session.closed:
                request = session.requests.popleft()
                if isinstance(request, OfferReceived):
                    await self._admit_offer(session, request)
                elif isinstance(request, HelloReceived):
                    await self._hello(session, request)
                elif isinstance(request, SubscribeRequested):
                    await self._subscribe_request(session, request)
                else:
                    self._unsubscribe_request(session, request)
                session.protocol.transmit()
        except Exception:
            logger.exception("failed to answer %s", self._peer(session))
            self._refuse(session, ErrorCode.UNKNOWN, "internal server error")
        finally:
            session.worker = None

    async def _authenticate(self, token: str) -> bool:
        try:
            ok = await resolve(self.authenticator(token))
        except Exception:
            logger.exception("authenticator raised; refusing the client")
            ok = False
        if not ok:
            self.metrics.authentication_failures.inc()
        return ok

    async def _authorize(self, session: _Session, topic: str, label: str) -> bool:
        """Ask the authorizer about a subscription as the client wrote it."""
        try:
            ok = bool(await resolve(self.authorizer(session.token, topic)))
        except Exception:
            logger.exception("authorizer raised; refusing topic %r", topic)
            ok = False
        if not ok:
            self.metrics.authorization_failures.labels(topic=label).inc()
        if not is_pattern(topic) and len(session.authorized) < _AUTHORIZED_TOPICS:
            # A concrete topic's answer also serves pattern subscriptions that reach it.
            session.authorized[topic] = ok
        return ok

    async def _admit_offer(self, session: _Session, offer: OfferReceived) -> None:
        conn = session.conn
        assert isinstance(conn, QsseServerConnection)
        if not await self._authenticate(offer.token):
            conn.reject()
            return
        errors: list[tuple[int, dict[str, Any]]] = []
        admitted: list[tuple[str, str]] = []
        session.token = offer.token
        for topic in offer.topics:
            label = self._table.admit(topic)
            if label is None:
                errors.append((ErrorCode.TOPIC_NOT_AVAILABLE, {"topic": topic}))
            elif len(admitted) >= self.limits.max_subscriptions:
                # As on qsse/2: an offer repeating one topic 10,000 times would otherwise
                # make each event on it 10,000 queue entries and writes for this connection.
                errors.append((ErrorCode.TOO_MANY_SUBSCRIPTIONS, {"topic": topic}))
            elif await self._authorize(session, topic, label):
                admitted.append((topic, label))
            else:
                errors.append((ErrorCode.NOT_AUTHORIZED, {"topic": topic}))
        if session.closed:
            return
        conn.accept(errors)
        assert conn.stream_id is not None
        session.outbox = _Outbox(session, conn.stream_id)
        for topic, label in admitted:
            self._subscribe(session, topic, label, session.outbox)

    async def _hello(self, session: _Session, hello: HelloReceived) -> None:
        conn = session.conn
        assert isinstance(conn, Qsse2ServerConnection)
        session.token = hello.token
        if not await self._authenticate(hello.token):
            conn.reject()
            return
        session.welcomed = True
        conn.accept(self.history.epoch, self.limits.max_frame_size)

    async def _subscribe_request(self, session: _Session, request: SubscribeRequested) -> None:
        conn = session.conn
        assert isinstance(conn, Qsse2ServerConnection)
        if not session.welcomed:
            return  # the HELLO was refused and the connection is closing
        topic = request.topic
        label = self._table.admit(topic)
        status, reason = SubscribeStatus.OK, ""
        if label is None:
            status, reason = SubscribeStatus.NOT_AVAILABLE, "topic is not declared"
        elif len(session.subscriptions) >= self.limits.max_subscriptions:
            status = SubscribeStatus.LIMIT_REACHED
            reason = f"connection holds its maximum of {self.limits.max_subscriptions}"
        elif not await self._authorize(session, topic, label):
            status, reason = SubscribeStatus.NOT_AUTHORIZED, "not authorized"
        if status == SubscribeStatus.OK and request.last_id is not None and self.broker.remote:
            # Another node may have issued the position: let the broker's history catch up.
            await self.broker.sync(request.last_id)
        if session.closed:
            return
        if status == SubscribeStatus.OK and conn.stream_credit <= 0:
            # Opened anyway, the stream would wait forever (aioquic) or fail (qh3).
            status = SubscribeStatus.LIMIT_REACHED
            reason = "the client allows no more subscription streams (QUIC MAX_STREAMS)"
        if status != SubscribeStatus.OK or label is None:
            conn.answer_subscribe(request.request_id, status, topic, reason=reason)
            return
        sub_id = session.next_sub_id
        session.next_sub_id += 1
        stream_id = conn.answer_subscribe(
            request.request_id,
            status,
            topic,
            subscription_id=sub_id,
            position=self.history.last_id,
            epoch=self.history.epoch,
        )
        assert stream_id is not None
        outbox = _Outbox(session, stream_id)
        if request.last_id is not None:
            self._replay(session, outbox, topic, label, request.last_id, request.epoch)
        # No await between replay and registration: no event can fall between the two.
        self._subscribe(session, topic, label, outbox, sub_id)
        if outbox.frames or outbox.gaps:
            self._mark_dirty(outbox)

    def _replay(
        self,
        session: _Session,
        outbox: _Outbox,
        topic: str,
        label: str,
        last_id: int,
        epoch: int | None,
    ) -> None:
        """Queue what the history holds for a subscription resuming after ``last_id``.

        A position the store cannot vouch for (another epoch, or above any id it issued) gets
        a gap of unknown end and then everything the store holds for the subscription; the
        client restarts its position from what follows. Gaps count only events the
        subscription's topic matches (docs/protocol.md, "Event ids, history and resume").
        """
        history = self.history
        labels = [
            d
            for d in self._table.declared
            if d == label or topic_matches(topic, d) or topic_matches(d, topic)
        ]
        after = last_id
        if epoch != history.epoch or last_id > history.last_id:
            why = _EPOCH if epoch != history.epoch else _UNISSUED
            # The largest position (MAX_WIRE_INT) has no successor a frame can carry.
            first = min(last_id + 1, MAX_WIRE_INT)
            for d in labels:
                outbox.gaps[d] = [first, -1, why]
            after = 0
        now = time.time()
        streams = []
        for d in labels:
            events, evicted = history.since(d, topic, after, now)
            if evicted > after and d not in outbox.gaps:
                outbox.gaps[d] = [after + 1, evicted, _EVICTED]
            streams.append([(event, d) for event in events])
        gated = self.authorizer is not allow_all_topics and is_pattern(topic)
        # Each item names the declared topic its event is stored under, as live ones do:
        # a gap after an overflow must name the topic that lost the events.
        for event, stored_under in heapq.merge(*streams, key=lambda pair: pair[0].id):
            frame = encode_event_frame(event.id, event.content_type, event.topic, event.data)
            item = (frame, event.id, stored_under)
            asked = event.topic if gated and event.topic != topic else None
            if asked is not None or outbox.held is not None:
                self._gate(session, outbox, asked, item)
            else:
                outbox.frames.append(item)
                outbox.size += len(frame)

    def _unsubscribe_request(self, session: _Session, request: UnsubscribeRequested) -> None:
        conn = session.conn
        assert isinstance(conn, Qsse2ServerConnection)
        sub = session.subscriptions.get(request.subscription_id)
        if sub is None:
            conn.answer_unsubscribe(
                request.request_id,
                request.subscription_id,
                SubscribeStatus.NOT_SUBSCRIBED,
                None,
            )
            return
        self._unsubscribe(sub)
        outbox = sub.outbox
        outbox.held, outbox.held_size = None, 0  # the subscriber left: held events are not owed
        tail = self._take(outbox, None)
        self._dirty.discard(outbox)
        session.blocked.discard(outbox)
        conn.answer_unsubscribe(
            request.request_id, sub.id, SubscribeStatus.OK, outbox.stream_id, tail
        )

    def _subscribe(
        self, session: _Session, topic: str, label: str, outbox: _Outbox, sub_id: int = 0
    ) -> None:
        if not sub_id:
            sub_id = session.next_sub_id
            session.next_sub_id += 1
        sub = _Subscription(session, sub_id, topic, label, outbox)
        session.subscriptions[sub_id] = sub
        subs = self._subs.get(topic)
        if subs is None:
            subs = self._subs[topic] = []
            if is_pattern(topic):
                self._wildcards[topic] = pattern_matcher(topic)
            self._route_cache.clear()
        subs.append(sub)
        self.metrics.subscribers.labels(topic=label).inc()

    def _unsubscribe(self, sub: _Subscription) -> None:
        del sub.session.subscriptions[sub.id]
        subs = self._subs[sub.topic]
        subs.remove(sub)
        if not subs:
            del self._subs[sub.topic]
            self._wildcards.pop(sub.topic, None)
            self._route_cache.clear()
        self.metrics.subscribers.labels(topic=sub.label).dec()

    def _drop(self, session: _Session) -> None:
        if session.closed:
            return
        session.closed = True
        if session.offer_timer is not None:
            session.offer_timer.cancel()
        self._sessions.discard(session)
        self.metrics.connections.labels(protocol=session.conn.alpn_protocol).dec()
        outboxes = [sub.outbox for sub in session.subscriptions.values()]
        for sub in list(session.subscriptions.values()):
            self._unsubscribe(sub)
        if session.outbox is not None:
            outboxes.append(session.outbox)
        for outbox in outboxes:
            # Free what was queued now: the QUIC connection (and through its callbacks this
            # session) lives on for its draining period, or until the server forgets it.
            self._dirty.discard(outbox)
            outbox.frames.clear()
            outbox.gaps.clear()
            outbox.size = 0
        session.blocked.clear()
        session.requests.clear()
        for waiting in session.pending.values():
            waiting.cancel()
        session.pending.clear()
        session.protocol.on_qsse_event = _ignore
        session.protocol.on_datagram = None

    # -- publishing --------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        content_type: int = ContentType.JSON,
        compact: tuple[int, bytes] | None = None,
    ) -> int:
        """Send ``data`` to every subscription whose topic matches.

        ``topic`` is a pattern over the declared topics, as in Go; a concrete topic admitted by
        a declared pattern (``ride.42.status`` under ``ride.*.status``) is published as is.
        Each event gets an id and is kept in the history for qsse/2 resume. It is encoded
        once per protocol and written on the next loop iteration (or after
        ``Limits.flush_interval``); this call never blocks.

        :param content_type: the payload's encoding, carried to qsse/2 subscribers.
        :param compact: ``(content type, bytes)`` of the same event in a more compact
            encoding (e.g. MessagePack) for qsse/2 subscribers and the history; qsse/1
            subscribers, Go peers among them, still get ``data``.
        Everything is checked before any state changes, so an event that could not be sent
        is never kept in the history.

        With a remote :attr:`broker` (Redis) the event is only queued for it, in call order:
        it reaches subscribers, this node's as every node's, once the broker has stored and
        fanned it out, and this returns 0. Whether it was stored is told by
        ``await server.broker.flush()`` (or use :meth:`publish_confirmed`).

        :returns: the number of subscriptions the event was queued for (events held for an
            async authorizer's answer count; connections refused the topic do not).
        :raises LocalProtocolError: if ``topic`` matches no declared topic or cannot be
            encoded as UTF-8, or the server is not running.
        :raises BrokerError: with a remote broker known to be unreachable (nothing queued).
        :raises TypeError: if ``topic`` is not a str, or ``data`` (or the compact payload) is
            not bytes-like.
        :raises ValueError: if a content type is not an int from 0 to 2**62 - 1.
        """
        if self._loop is None or self._closing:
            raise LocalProtocolError("publish() on a server that is not running")
        # Everything is checked before the history keeps anything: an event stored but not
        # encodable would break every later resume of its topic.
        if data.__class__ is not bytes:
            data = _payload("data", data)
        if not (isinstance(content_type, int) and 0 <= content_type < _VARINT_LIMIT):
            _check_content_type(content_type)
        if compact is None:
            v2_type, v2_data = content_type, data
        else:
            v2_type, v2_data = compact
            v2_data = _payload("compact", v2_data)
            _check_content_type(v2_type)
        targets = self._publish_targets(topic)
        broker, feed = self.broker, self._feed
        now = time.time()
        queued = 0
        for concrete, label in targets:
            self.metrics.published_child(label).inc()
            event_id = broker.publish_nowait(label, concrete, v2_data, v2_type, now, feed)
            if event_id:
                queued += self._deliver(label, concrete, event_id, v2_type, v2_data, data)
            # else a remote broker queued it: it comes back through _BrokerFeed, as on every
            # node, once stored.
        return queued

    async def publish_confirmed(
        self,
        topic: str,
        data: bytes,
        *,
        content_type: int = ContentType.JSON,
        compact: tuple[int, bytes] | None = None,
    ) -> list[int]:
        """Like :meth:`publish`, but wait until the broker has stored the event.

        With a remote broker the event reaches subscribers (of this node too) once stored;
        qsse/1 subscribers of a MessagePack event get it transcoded to JSON.

        :returns: the id of the event on each declared topic it was published on.
        :raises BrokerError: when the broker did not store it (nothing was reported sent).
        :raises LocalProtocolError: as :meth:`publish`.
        """
        if not self.broker.remote:
            before = self.history.last_id
            self.publish(topic, data, content_type=content_type, compact=compact)
            return list(range(before + 1, self.history.last_id + 1))
        if self._loop is None or self._closing:
            raise LocalProtocolError("publish_confirmed() on a server that is not running")
        v2_type, v2_data = (content_type, data) if compact is None else compact
        v2_data = _payload("compact" if compact else "data", v2_data)
        _check_content_type(v2_type)
        targets = self._publish_targets(topic)
        ids = []
        for concrete, label in targets:
            self.metrics.published_child(label).inc()
            ids.append(await self.broker.publish(label, concrete, v2_data, v2_type))
        return ids

    def _publish_targets(self, topic: str) -> tuple[tuple[str, str], ...]:
        """``(concrete topic, declared label)`` pairs an event on ``topic`` goes to.

        :raises TypeError: if ``topic`` is not a str.
        :raises LocalProtocolError: if it cannot be encoded or matches no declared topic.
        """
        if topic.__class__ is not str:
            raise TypeError(f"topic must be a str, got {type(topic).__name__}")
        try:
            targets = self._table.publish_targets(topic)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
        if not targets:
            raise LocalProtocolError(
                f"topic {topic!r} matches no declared topic (declared: {list(self.topics)})"
            )
        return targets

    def _broker_event(self, label: str, event: StoredEvent) -> None:
        """An event another node (or this one, through a remote broker) published."""
        # qsse/1 peers (Go) read JSON and the broker carries only the qsse/2 form: None has
        # _deliver transcode a MessagePack event, and only if a qsse/1 subscriber wants it.
        data = None if event.content_type == ContentType.MSGPACK else event.data
        self._deliver(label, event.topic, event.id, event.content_type, event.data, data)

    def _broker_gap(self, label: str, first_id: int, last_id: int) -> None:
        """Events of ``label`` left the broker's history before this node received them."""
        for subs in self._subs.values():
            for sub in subs:
                if sub.label == label or topic_matches(sub.topic, label):
                    span = sub.outbox.gaps.setdefault(label, [first_id, last_id, _EVICTED])
                    span[1] = max(span[1], last_id)
                    self._mark_dirty(sub.outbox)

    def _broker_epoch(self, epoch: int) -> None:
        """The broker's history started over: qsse/2 positions mean nothing any more.

        Each qsse/2 connection is closed with GOING_AWAY; its client reconnects and resumes
        with its old epoch, and is told its gap explicitly.
        """
        for session in list(self._sessions):
            if session.v2 and not session.closed:
                session.conn.close(ErrorCode.GOING_AWAY, "the history started over")
                session.protocol.transmit()
                self._drop(session)

    def _deliver(
        self,
        label: str,
        concrete: str,
        event_id: int,
        v2_type: int,
        v2_data: bytes,
        data: bytes | None,
    ) -> int:
        """Queue event ``event_id`` for every matching subscription; return how many.

        ``data`` is the qsse/1 (JSON) payload; None when it is to be transcoded from the
        MessagePack ``v2_data``.
        """
        check = self.authorizer is not allow_all_topics
        routes = self._route_cache.get(concrete)
        if routes is None:
            routes = self._routes(concrete)
        if not routes:
            self.metrics.events_dropped.labels(topic=label, reason="no_subscribers").inc()
            return 0
        # Encoded at most once per protocol, and one queue entry shared by every
        # subscriber: the loop below allocates nothing per subscriber.
        v1_item: tuple[bytes, int, str] | None = None
        v2_item: tuple[bytes, int, str] | None = None
        v1_size = v2_size = 0
        dirty = self._dirty
        count = 0
        for route in routes:
            subs = self._subs[route]
            count += len(subs)
            # A pattern subscription reaches topics the authorizer never saw: ask it.
            gated = check and route != concrete
            for sub in subs:
                outbox = sub.outbox
                if outbox.v2:
                    if v2_item is None:
                        frame = encode_event_frame(event_id, v2_type, concrete, v2_data)
                        v2_item, v2_size = (frame, event_id, label), len(frame)
                    item, size = v2_item, v2_size
                else:
                    if v1_item is None:
                        frame = encode_event(concrete, _as_json(v2_data) if data is None else data)
                        v1_item, v1_size = (frame, event_id, label), len(frame)
                    item, size = v1_item, v1_size
                if outbox.held is not None or (
                    gated and sub.session.authorized.get(concrete) is not True
                ):
                    # Held events go first, even before one this route may see.
                    asked = concrete if gated else None
                    if not self._gate(sub.session, outbox, asked, item):
                        count -= 1
                        continue
                else:
                    outbox.frames.append(item)
                    outbox.size += size
                dirty.add(outbox)
        self.metrics.delivered_child(label).inc(count)
        if count:
            self._publish_times.append(time.perf_counter())
            self._schedule_flush()
        return count

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and self._loop is not None:
            interval = self.limits.flush_interval
            if interval > 0:
                self._flush_handle = self._loop.call_later(interval, self._flush)
            else:
                self._flush_handle = self._loop.call_soon(self._flush)

    def _mark_dirty(self, outbox: _Outbox) -> None:
        self._dirty.add(outbox)
        self._schedule_flush()

    def _routes(self, concrete: str) -> tuple[str, ...]:
        routes = [concrete] if concrete in self._subs else []
        routes += [p for p, match in self._wildcards.items() if p != concrete and match(concrete)]
        result = tuple(sorted(routes))
        if len(self._route_cache) >= 4096:
            self._route_cache.clear()
        self._route_cache[concrete] = result
        return result

    # -- authorization of concrete topics under pattern subscriptions -------------------------

    def _gate(
        self,
        session: _Session,
        outbox: _Outbox,
        concrete: str | None,
        item: tuple[bytes, int, str],
    ) -> bool:
        """Queue ``item`` of ``concrete`` on ``outbox`` if the authorizer allows it, or hold it
        (and what follows) while an async authorizer answers; False when refused. With
        ``concrete`` None the item needs no answer, only its place behind held ones."""
        if outbox.held is None:
            if concrete is None:
                outbox.frames.append(item)
                outbox.size += len(item[0])
                return True
            allowed = self._allowed(session, concrete, item[2])
            if allowed is not None:
                if allowed:
                    outbox.frames.append(item)
                    outbox.size += len(item[0])
                return allowed
            outbox.held = deque()
        outbox.held.append((item, concrete))
        outbox.held_size += len(item[0])
        if (
            outbox.held_size > self.limits.max_queued_bytes
            and outbox.held_size - len(item[0]) <= self.limits.max_queued_bytes
        ):
            # Not here: publish is iterating the subscriptions a refusal would remove.
            assert self._loop is not None
            # Named by the topic whose answer holds everything up: the first one held.
            self._loop.call_soon(self._held_overflow, outbox, outbox.held[0][1] or concrete)
        return True

    def _allowed(self, session: _Session, concrete: str, label: str) -> bool | None:
        """The authorizer's answer for ``concrete`` on this connection; None while awaited."""
        known = session.authorized.get(concrete)
        if known is not None:
            return known
        if concrete in session.pending:
            return None
        try:
            answer = self.authorizer(session.token, concrete)
        except Exception:
            logger.exception("authorizer raised; refusing topic %r", concrete)
            answer = False
        if inspect.isawaitable(answer):
            session.pending[concrete] = asyncio.ensure_future(
                self._authorize_later(session, concrete, label, answer)
            )
            return None
        return self._remember(session, concrete, label, bool(answer))

    async def _authorize_later(
        self, session: _Session, concrete: str, label: str, answer: Awaitable[bool]
    ) -> None:
        try:
            ok = bool(await answer)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("authorizer raised; refusing topic %r", concrete)
            ok = False
        session.pending.pop(concrete, None)
        if session.closed:
            return
        self._remember(session, concrete, label, ok)
        outboxes = {sub.outbox for sub in session.subscriptions.values()}
        for outbox in outboxes:
            if outbox.held is not None:
                self._release(outbox)

    def _remember(self, session: _Session, concrete: str, label: str, ok: bool) -> bool:
        if len(session.authorized) >= _AUTHORIZED_TOPICS:
            session.authorized.clear()
        session.authorized[concrete] = ok
        if not ok:
            self.metrics.authorization_failures.labels(topic=label).inc()
        return ok

    def _release(self, outbox: _Outbox) -> None:
        """Move held events whose answers are in to the outbox, in order, up to the first
        one still awaited."""
        held = outbox.held
        assert held is not None
        while held:
            item, concrete = held[0]
            allowed = True if concrete is None else self._allowed(outbox.session, concrete, item[2])
            if allowed is None:
                return
            held.popleft()
            outbox.held_size -= len(item[0])
            if allowed:
                outbox.frames.append(item)
                outbox.size += len(item[0])
        outbox.held = None
        self._mark_dirty(outbox)

    def _held_overflow(self, outbox: _Outbox, concrete: str | None) -> None:
        session = outbox.session
        bound = self.limits.max_queued_bytes
        if session.closed or outbox.held is None or outbox.held_size <= bound:
            return
        # Held events cannot be dropped with a gap: they come after what is queued, and a
        # gap is told first. The limit is the slow-consumer one, so is the close.
        reason = (
            f"{outbox.held_size} bytes held waiting for the authorizer's answer on topic "
            f"{concrete!r}, limit {bound}"
        )
        outbox.held, outbox.held_size = None, 0
        self._refuse(session, ErrorCode.SLOW_CONSUMER, reason)

    def _flush(self) -> None:
        """Write what each stream has queued, within its window, and transmit once per peer."""
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        touched: set[_Session] = set()
        for outbox in dirty:
            session = outbox.session
            if session.closed:
                continue
            try:
                self._drain(outbox)
            except Exception as exc:
                self._failed(session, exc)
                continue
            touched.add(session)
        now = time.monotonic()
        for session in touched:
            if not session.closed:
                session.last_write = now
                try:
                    session.protocol.transmit()
                except Exception as exc:
                    self._failed(session, exc)
        end = time.perf_counter()
        observe = self.metrics.publish_write_latency.observe
        for started in self._publish_times:
            observe(end - started)
        self._publish_times.clear()

    def _failed(self, session: _Session, exc: Exception) -> None:
        """Serving one session raised: close it alone, so the flush goes on for the others."""
        if session.closed:
            return
        logger.error("closing %s: serving it failed: %r", self._peer(session), exc, exc_info=exc)
        # The session is dropped whatever state its QUIC connection is left in.
        with contextlib.suppress(Exception):
            session.conn.close(ErrorCode.UNKNOWN, "internal server error")
            session.protocol.transmit()
        self.metrics.protocol_errors.labels(reason=ErrorCode.UNKNOWN.name.lower()).inc()
        self._drop(session)

    def _drain(self, outbox: _Outbox) -> None:
        session = outbox.session
        room = self.limits.write_window - session.backlog(outbox)
        if room > 0:
            data = self._take(outbox, room)
            if data:
                conn = session.conn
                if isinstance(conn, Qsse2ServerConnection):
                    sent = conn.send(outbox.stream_id, data)
                else:
                    sent = conn.send(data)
                if not sent:
                    # The peer closed or reset it before we heard: forget this subscriber now.
                    logger.info("stream %d of %s is gone", outbox.stream_id, self._peer(session))
                    conn.close(ErrorCode.UNEXPECTED_STREAM, "subscription stream was reset")
                    session.protocol.transmit()  # the flush transmits only live sessions
                    self._drop(session)
                    return
        if outbox.frames:
            session.blocked.add(outbox)
            if outbox.size > self.limits.max_queued_bytes:
                self._overflow(outbox)
        else:
            session.blocked.discard(outbox)

    def _take(self, outbox: _Outbox, room: int | None) -> bytes:
        """Dequeue gap notices and then frames, up to ``room`` bytes (at least one frame)."""
        parts: list[bytes] = []
        if outbox.gaps:
            parts += [self._gap_frame(outbox, label, span) for label, span in outbox.gaps.items()]
            outbox.gaps.clear()
        frames = outbox.frames
        taken = 0
        while frames and (room is None or taken < room):
            frame = frames.popleft()[0]
            parts.append(frame)
            taken += len(frame)
        outbox.size -= taken
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _gap_frame(self, outbox: _Outbox, label: str, span: list[int]) -> bytes:
        first, last, why = span
        if outbox.session.v2:
            gap = GapFrame(
                topic=label,
                first_id=first,
                last_id=None if last < 0 else last,
                reason=_GAP_REASONS[why],
            )
            return encode_control(gap)
        return encode_error(
            ErrorCode.EVENTS_DROPPED, {"topic": label, "first_id": first, "last_id": last}
        )

    def _overflow(self, outbox: _Outbox) -> None:
        session = outbox.session
        bound = self.limits.max_queued_bytes
        if self.limits.slow_consumer == "disconnect":
            for _, _, label in outbox.frames:
                self.metrics.events_dropped.labels(topic=label, reason="slow_consumer").inc()
            reason = (
                f"subscriber fell behind: {outbox.size} bytes queued beyond the write window, "
                f"limit {bound}"
            )
            outbox.frames.clear()
            outbox.size = 0
            self._refuse(session, ErrorCode.SLOW_CONSUMER, reason)
            return
        while outbox.frames and outbox.size > bound:
            frame, event_id, label = outbox.frames.popleft()
            outbox.size -= len(frame)
            span = outbox.gaps.setdefault(label, [event_id, event_id, _DROPPED])
            span[1] = max(span[1], event_id)
            self.metrics.events_dropped.labels(topic=label, reason="slow_consumer").inc()

    def _on_datagram(self, session: _Session) -> None:
        path = path_address(session.protocol.quic)
        if path != session.path:
            self._migrated(session, path)
        # Acknowledgements free window space. Waiting frames move on in the next flush, with
        # everything else, rather than in a write and a transmit per acknowledgement.
        if session.blocked and not session.closed:
            self._dirty.update(session.blocked)
            self._schedule_flush()

    def _migrated(self, session: _Session, path: Any) -> None:
        # The QUIC library already moved the connection to the client's new address; count
        # it so operators see how often subscribers change networks.
        logger.info("connection %s moved to %s", session.path, path)
        session.path = path
        self.metrics.path_migrations.labels(protocol=session.conn.alpn_protocol).inc()

    async def _keepalive_loop(self) -> None:
        # Each connection's interval follows the idle timeout negotiated with its peer, which
        # may be far shorter than ours; the loop wakes at half the shortest one, or sooner
        # when a new peer needs it (see _attach).
        loop = asyncio.get_running_loop()
        while True:
            self._keepalive_tick = max(self._ping_quiet() / 2, 0.01)
            self._keepalive_waiter = waiter = loop.create_future()
            timer = loop.call_later(self._keepalive_tick, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()

    def _ping_quiet(self) -> float:
        """PING each connection quiet for its keep-alive interval; return the shortest one."""
        # In a function of its own: a loop variable in the loop above would keep the last
        # session (and its QUIC connection) alive across every sleep, long after it left.
        limits = self.limits
        shortest = keepalive_interval(limits.idle_timeout, None, limits.keepalive_interval)
        now = time.monotonic()
        for session in list(self._sessions):
            interval = keepalive_interval(
                limits.idle_timeout,
                peer_idle_timeout(session.protocol.quic),
                limits.keepalive_interval,
            )
            shortest = min(shortest, interval)
            if not session.closed and now - session.last_write >= interval:
                try:
                    session.protocol.quic.send_ping(0)
                except Exception as exc:
                    # qh3 raises when the connection closed before the event saying so was
                    # handled: forget it now rather than end the loop for everyone.
                    logger.info("connection %s is gone: %s", self._peer(session), exc)
                    self._drop(session)
                    continue
                session.last_write = now
                try:
                    session.protocol.transmit()
                except Exception as exc:
                    self._failed(session, exc)
        return shortest


# The largest value of a QUIC variable-length integer (RFC 9000 section 16).
_VARINT_LIMIT = 2**62


def _payload(name: str, data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"{name} must be bytes, got {type(data).__name__}")


def _check_content_type(content_type: object) -> None:
    if not isinstance(content_type, int) or not 0 <= content_type < _VARINT_LIMIT:
        raise ValueError(
            f"content_type must be an int from 0 to 2**62 - 1 (a QUIC varint), got {content_type!r}"
        )


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _as_json(msgpack: bytes) -> bytes:
    """A MessagePack payload as JSON for qsse/1 peers; as it is when it cannot be read."""
    with contextlib.suppress(msgspec.DecodeError, TypeError, ValueError):
        return _JSON.encode(_MSGPACK.decode(msgpack))
    return msgpack
