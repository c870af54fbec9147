"""The asyncio qsse client on aioquic."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from .._codes import ErrorCode
from .._config import ReconnectPolicy
from .._connection import QsseClientConnection
from .._connection2 import SUBSCRIPTION_STREAMS, Qsse2ClientConnection
from .._exceptions import (
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    LocalProtocolError,
)
from .._framing import ALPN_QSSE1
from .._framing2 import ALPN_QSSE2, SubscribeStatus
from .._quic import (
    HandshakeCompleted,
    QuicConfiguration,
    QuicConnection,
    QuicEvent,
    client_backend,
    grant_unidirectional_streams,
)
from .._state import ConnectionState, Gap, Message, StateChange
from .._topics import topic_matches, validate_pattern
from ..events import (
    ConnectionClosed,
    ErrorReceived,
    EventReceived,
    FrameDropped,
    GapReceived,
    HandshakeDone,
    QsseEvent,
    SubscriptionAnswered,
    SubscriptionStarted,
    UnsubscriptionAnswered,
    Welcomed,
)
from ._path import PathWatch
from ._protocol import QsseProtocol

__all__ = [
    "Client",
    "ErrorHandler",
    "GapHandler",
    "MessageHandler",
    "StateHandler",
    "parse_address",
]

logger = logging.getLogger("qsse.client")

#: A handler for messages: sync or async, its return value ignored.
MessageHandler = Callable[[Message], Awaitable[None] | None]
#: A handler for errors: ``(code, data)`` as in Go's ``SetErrorHandler``.
ErrorHandler = Callable[[int, Mapping[str, Any]], Awaitable[None] | None]
#: A handler for connection state changes.
StateHandler = Callable[[StateChange], Awaitable[None] | None]
#: A handler for gap notices: events a subscription will never receive.
GapHandler = Callable[[Gap], Awaitable[None] | None]

_STATUS_CODES = {
    SubscribeStatus.NOT_AUTHORIZED: ErrorCode.NOT_AUTHORIZED,
    SubscribeStatus.NOT_AVAILABLE: ErrorCode.TOPIC_NOT_AVAILABLE,
    SubscribeStatus.LIMIT_REACHED: ErrorCode.TOO_MANY_SUBSCRIPTIONS,
}

# RFC 9000 section 20.1: no path left to reach the peer on.
NO_VIABLE_PATH = 0x10

# Closing codes that another attempt cannot fix: retrying would only repeat them.
_FATAL_CODES = frozenset(
    {
        ErrorCode.NOT_AUTHORIZED,
        ErrorCode.MALFORMED_OFFER,
        ErrorCode.OFFER_TOO_LARGE,
        ErrorCode.UNEXPECTED_STREAM,
    }
)
# Closing codes that are news to the state handler but no error.
_QUIET_CODES = frozenset({ErrorCode.NO_ERROR, ErrorCode.GOING_AWAY})


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``.

    :raises ConfigurationError: naming the address when it has no valid port.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"address must be HOST:PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigurationError(f"address must be HOST:PORT, got {address!r}")
    return host, int(port)


class Client:
    """A qsse client: subscribes to topics, routes events to handlers, and reconnects.

    Use it as ``async with Client("127.0.0.1:4242", ["ride.*"]) as client:``. Events go to
    every handler whose pattern matches the topic (as in Go), else to the catch-all message
    handlers; ``async for message in client`` sees every event. Handlers may be sync or
    async; async ones run one after another in arrival order.

    :param address: ``host:port`` of the server (``[::1]:4242`` for IPv6), or several, e.g.
        the nodes of one deployment sharing a broker: when the connection to one is lost
        or a dial fails, the client moves on to the next (round robin) and resumes there
        from the same positions (``docs/scaling.md``).
    :param topics: the topics (or declared patterns) to subscribe to.
    :param token: the token the server's authenticator receives.
    :param insecure: skip certificate verification; needed for Go servers, whose
        certificates cannot be verified. Off by default.
    :param cafile: PEM file of CAs to trust instead of the system's.
    :param server_name: the name to verify the certificate against; the host by default.
    :param reconnect: retry policy for the first dial and for lost connections.
    :param connect_timeout: seconds one dial may take.
    :param idle_timeout: QUIC idle timeout in seconds.
    :param max_frame_size: the longest frame accepted; longer ones are reported and skipped.
    :param queue_size: messages held for ``async for`` before new ones are dropped (and
        reported to the error handlers).
    :param protocols: ALPN protocols offered, in order of preference: qsse/2 first, then Go
        qsse's ``PROTOCOL_QUIC``. qsse/2 adds event ids, resume without loss, a stream per
        subscription and live subscribe/unsubscribe.
    :param last_event_ids: qsse/2 positions to resume from (topic -> last event id seen),
        e.g. :attr:`last_event_ids` saved by an earlier process.
    :param epoch: the history epoch ``last_event_ids`` belong to (:attr:`epoch`).
    :param probe_interval: seconds without a datagram from the server after which the client
        sends a PING, so that the server learns a new address (RFC 9000 section 9) and a dead
        path is noticed; None: never (a quiet path then dies unnoticed until the idle timeout).
        While the server sends no data the wait doubles after each answered probe, up to 16
        intervals; data from the server resets it.
    :param probe_timeout: seconds a probe may go unanswered before the path counts as dead
        and the client moves to a new socket (:meth:`rebind`), and before a new socket that
        hears nothing makes it reconnect instead.
    """

    def __init__(
        self,
        address: str | Sequence[str],
        topics: Sequence[str],
        *,
        token: str = "",
        insecure: bool = False,
        cafile: str | None = None,
        server_name: str | None = None,
        reconnect: ReconnectPolicy | None = None,
        connect_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        max_frame_size: int = 16 * 1024 * 1024,
        queue_size: int = 65536,
        protocols: Sequence[str] = (ALPN_QSSE2, ALPN_QSSE1),
        last_event_ids: Mapping[str, int] | None = None,
        epoch: int | None = None,
        probe_interval: float | None = 1.0,
        probe_timeout: float = 2.0,
    ) -> None:
        addresses = [address] if isinstance(address, str) else list(address)
        if not addresses:
            raise ConfigurationError("a client needs at least one address")
        #: every ``(host, port)`` the client may dial, in order.
        self.addresses = tuple(parse_address(a) for a in addresses)
        self._address_index = 0
        self._server_name = server_name
        self.host, self.port = self.addresses[0]
        if isinstance(topics, str):
            raise ConfigurationError("topics must be a sequence of strings, not one string")
        self.topics = tuple(topics)
        self.token = token
        self.insecure = insecure
        self.cafile = cafile
        self.server_name = server_name or self.host
        self.reconnect = reconnect or ReconnectPolicy()
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_frame_size = max_frame_size
        self.queue_size = queue_size
        self.protocols = tuple(protocols)
        if not self.protocols or set(self.protocols) - {ALPN_QSSE1, ALPN_QSSE2}:
            raise ConfigurationError(
                f"protocols must be taken from {[ALPN_QSSE2, ALPN_QSSE1]}, got {self.protocols}"
            )
        # qsse/2 resume state: the last event id seen per subscribed topic, in ``_epoch``.
        if probe_interval is not None and not probe_interval > 0:
            raise ConfigurationError(
                f"probe_interval must be > 0 s or None, got {probe_interval!r}"
            )
        if not probe_timeout > 0:
            raise ConfigurationError(f"probe_timeout must be > 0 s, got {probe_timeout!r}")
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self._path: PathWatch | None = None
        self._positions: dict[str, int] = dict(last_event_ids or {})
        self._epoch = epoch
        if self._positions and epoch is None:
            raise ConfigurationError("last_event_ids needs the epoch they belong to")
        self._wanted: list[str] = list(self.topics)
        self._subscription_topics: dict[int, str] = {}
        self._requests: dict[int, tuple[str, asyncio.Future[SubscribeStatus] | None]] = {}
        self._gap_handlers: list[GapHandler] = []

        self._handlers: list[tuple[str, MessageHandler]] = []
        self._message_handlers: list[MessageHandler] = []
        self._error_handlers: list[ErrorHandler] = []
        self._state_handlers: list[StateHandler] = []
        self._state = ConnectionState.CLOSED
        self._protocol: QsseProtocol | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._lost: asyncio.Future[ConnectionClosed] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._closing = False
        self._alpn: str | None = None
        self.error: ConnectError | None = None
        # Async handler calls run in order on one task.
        self._pending_calls: deque[Awaitable[Any]] = deque()
        self._dispatcher: asyncio.Task[None] | None = None
        # Iteration.
        self._iterating = False
        self._queue: deque[Message] = deque()
        self._wakeup = asyncio.Event()

    # -- registration -------------------------------------------------------------------------

    def on(self, pattern: str, handler: MessageHandler) -> None:
        """Call ``handler`` for each event whose topic matches ``pattern``."""
        try:
            validate_pattern(pattern)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._handlers.append((pattern, handler))

    def on_message(self, handler: MessageHandler) -> None:
        """Call ``handler`` for each event that no pattern handler matched."""
        self._message_handlers.append(handler)

    def on_error(self, handler: ErrorHandler) -> None:
        """Call ``handler(code, data)`` for error events, dropped frames and error closes."""
        self._error_handlers.append(handler)

    def on_state(self, handler: StateHandler) -> None:
        """Call ``handler`` with every :class:`StateChange`."""
        self._state_handlers.append(handler)

    def on_gap(self, handler: GapHandler) -> None:
        """Call ``handler`` with each :class:`Gap`: events a subscription lost for good."""
        self._gap_handlers.append(handler)

    def emit_error(self, code: int, data: Mapping[str, Any]) -> None:
        """Hand ``(code, data)`` to the error handlers (logged when there are none)."""
        if not self._error_handlers:
            logger.warning("qsse error %s: %s", _code_name(code), dict(data))
        for handler in self._error_handlers:
            self._call(handler, code, data)

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The connection's current state."""
        return self._state

    @property
    def alpn_protocol(self) -> str | None:
        """The protocol negotiated on the current (or last) connection."""
        return self._alpn

    @property
    def last_event_ids(self) -> dict[str, int]:
        """qsse/2: the last event id seen per subscribed topic (save it to resume later)."""
        return dict(self._positions)

    @property
    def epoch(self) -> int | None:
        """qsse/2: the server history epoch :attr:`last_event_ids` belong to."""
        return self._epoch

    # -- live subscriptions (qsse/2) ------------------------------------------------------------

    def _v2(self) -> Qsse2ClientConnection:
        conn = self._protocol.qsse if self._protocol is not None else None
        if not isinstance(conn, Qsse2ClientConnection):
            raise LocalProtocolError(
                "live subscriptions need qsse/2; the connection speaks "
                f"{self._alpn or 'nothing (not connected)'}"
            )
        return conn

    async def subscribe(
        self, topic: str, *, last_event_id: int | None = None, timeout: float = 10.0
    ) -> SubscribeStatus:
        """Subscribe on the open connection, without reconnecting (qsse/2).

        :param last_event_id: replay what came after this id first (needs :attr:`epoch`).
        :returns: the server's answer; only ``OK`` subscribes.
        :raises LocalProtocolError: on a qsse/1 connection or when not connected.
        """
        conn = self._v2()
        if last_event_id is not None:
            self._positions[topic] = last_event_id
        request_id = conn.subscribe(topic, *self._resume_point(topic))
        waiter: asyncio.Future[SubscribeStatus] = asyncio.get_running_loop().create_future()
        self._requests[request_id] = (topic, waiter)
        assert self._protocol is not None
        self._protocol.transmit()
        status = await asyncio.wait_for(waiter, timeout)
        if status == SubscribeStatus.OK:
            self._wanted.append(topic)
        return status

    async def unsubscribe(self, topic: str, *, timeout: float = 10.0) -> SubscribeStatus:
        """End every subscription to ``topic`` on the open connection (qsse/2).

        :returns: ``OK``, or ``NOT_SUBSCRIBED`` when there was none.
        """
        conn = self._v2()
        self._wanted = [t for t in self._wanted if t != topic]
        self._positions.pop(topic, None)
        ids = [sid for sid, t in self._subscription_topics.items() if t == topic]
        if not ids:
            return SubscribeStatus.NOT_SUBSCRIBED
        waiters: list[asyncio.Future[SubscribeStatus]] = []
        for sid in ids:
            waiter: asyncio.Future[SubscribeStatus] = asyncio.get_running_loop().create_future()
            self._requests[conn.unsubscribe(sid)] = (topic, waiter)
            waiters.append(waiter)
        assert self._protocol is not None
        self._protocol.transmit()
        statuses: list[SubscribeStatus] = await asyncio.wait_for(asyncio.gather(*waiters), timeout)
        return SubscribeStatus.OK if SubscribeStatus.OK in statuses else statuses[0]

    def _resume_point(self, topic: str) -> tuple[int | None, int | None]:
        if topic in self._positions:
            return self._positions[topic], self._epoch
        return None, None

    def _adopt_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            # Ids of another epoch mean nothing here; the server reports the gap itself.
            self._epoch = epoch
            self._positions.clear()

    def _set_state(self, change: StateChange) -> None:
        self._state = change.state
        logger.debug("state %s", change)
        for handler in self._state_handlers:
            self._call(handler, change)

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and subscribe, retrying per the reconnect policy.

        :raises ConnectError: when every allowed attempt failed.
        """
        if self._supervisor is not None:
            raise ConfigurationError("connect() was already called")
        self._done.clear()
        self._closing = False
        self._set_state(StateChange(ConnectionState.CONNECTING))
        await self._dial_retrying()
        self._supervisor = asyncio.create_task(self._supervise())

    async def close(self) -> None:
        """Close the connection and stop reconnecting."""
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        self._hang_up(ErrorCode.NO_ERROR, "client closing")
        if self._dispatcher is not None:
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._state is not ConnectionState.GAVE_UP:
            self._set_state(StateChange(ConnectionState.CLOSED))
        self._finish()

    async def wait_closed(self) -> None:
        """Wait until the client is closed or has given up; see :attr:`error` for why."""
        await self._done.wait()

    def _finish(self) -> None:
        self._done.set()
        self._wakeup.set()

    def _hang_up(self, code: int, reason: str) -> None:
        if self._protocol is not None and self._protocol.qsse is not None:
            conn = self._protocol.qsse
            assert isinstance(conn, QsseClientConnection | Qsse2ClientConnection)
            conn.close(code, reason)
            self._protocol.transmit()
        if self._path is not None:
            self._path.close()
            self._path = None
        if self._transport is not None:
            self._transport.close()
        self._protocol = None
        self._transport = None

    async def _dial_retrying(self) -> None:
        attempt = 0
        while True:
            try:
                await self._dial()
                return
            except ConnectError as exc:
                self._next_address()
                attempt += 1
                if not self.reconnect.allows(attempt):
                    self._give_up(exc, attempt - 1)
                    raise
                delay = self.reconnect.delay(attempt, random.random())
                self._set_state(
                    StateChange(ConnectionState.RETRYING, attempt, delay, reason=str(exc))
                )
                await asyncio.sleep(delay)

    def _next_address(self) -> None:
        # Several nodes: the one just lost (or refused) is likely gone; try the next one.
        if len(self.addresses) > 1:
            self._address_index = (self._address_index + 1) % len(self.addresses)
            self.host, self.port = self.addresses[self._address_index]
            self.server_name = self._server_name or self.host

    def _give_up(self, exc: ConnectError, attempt: int) -> None:
        self.error = exc
        self._set_state(StateChange(ConnectionState.GAVE_UP, attempt, reason=str(exc)))
        self._finish()

    def _configuration(self) -> QuicConfiguration:
        backend = client_backend()
        config = backend.configuration(
            is_client=True,
            alpn_protocols=list(self.protocols),
            server_name=self.server_name,
            idle_timeout=self.idle_timeout,
        )
        if self.insecure:
            backend.skip_verification(config)
        elif self.cafile is not None:
            try:
                config.load_verify_locations(self.cafile)
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"cannot load CA file {self.cafile!r}: {exc}") from exc
        return config

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise ConnectError(f"cannot resolve {self.host!r}: {exc}") from exc
        family, _, _, _, addr = infos[0]
        config = self._configuration()
        quic = client_backend().connection(config)
        # A qsse/2 server opens a stream per subscription: allow one for each we may ask for.
        grant_unidirectional_streams(quic, max(SUBSCRIPTION_STREAMS, len(self._wanted)))
        lost: asyncio.Future[ConnectionClosed] = loop.create_future()
        failed: asyncio.Future[Exception] = loop.create_future()

        def on_event(event: QsseEvent) -> None:
            if isinstance(event, ConnectionClosed):
                if not lost.done():
                    lost.set_result(event)
            elif isinstance(event, HandshakeDone):
                if isinstance(protocol.qsse, Qsse2ClientConnection):
                    self._subscribe_all(protocol.qsse)  # pipelined right behind HELLO
            else:
                self._on_event(event)

        def on_error_received(exc: Exception) -> None:
            if not failed.done():
                failed.set_result(exc)

        protocol = QsseProtocol(quic)

        # Our own signal rather than the library's wait_connected(): aioquic marks itself
        # connected only if someone was already waiting when the handshake completed, so a
        # handshake that beats the waiter (as under uvloop) would never count as done.
        handshake: asyncio.Future[None] = loop.create_future()

        def on_quic_event(event: QuicEvent) -> None:
            # The handshake picks the protocol; its connection sees the same event next.
            if isinstance(event, HandshakeCompleted) and protocol.qsse is None:
                protocol.qsse = self._connection(quic, event.alpn_protocol)
                if not handshake.done():
                    handshake.set_result(None)

        protocol.on_quic_event = on_quic_event
        protocol.on_qsse_event = on_event
        protocol.on_error_received = on_error_received
        # A connected socket, so the kernel reports ICMP "port unreachable" and a dial to a
        # server that is down fails at once instead of waiting out the timeout.
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(addr)
        except OSError as exc:
            sock.close()
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        protocol.connect(addr)
        where = f"{self.host}:{self.port}"
        waiters: list[asyncio.Future[Any]] = [handshake, failed, lost]
        done, _ = await asyncio.wait(
            waiters, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if handshake not in done:
            transport.close()
            if lost.done():
                closed = lost.result()
                if closed.application:
                    raise ConnectionClosedError(closed.error_code, closed.reason)
                raise ConnectError(f"cannot connect to {where}: {closed.reason}")
            if failed.done():
                raise ConnectError(f"cannot connect to {where}: {failed.result()}")
            raise ConnectError(
                f"cannot connect to {where}: no handshake within {self.connect_timeout:g} s"
            )
        self._protocol = protocol
        self._transport = transport
        self._lost = lost
        self._set_state(StateChange(ConnectionState.CONNECTED))
        self._watch_path(protocol, transport, lost)

    # -- network path -----------------------------------------------------------------------------

    async def rebind(self) -> bool:
        """Move the connection to a new local UDP socket, as after a change of network.

        The client sends from the new socket with a new connection ID (RFC 9000 section 9.5)
        and probes the server with a PING; the server validates the new path and carries on
        sending there (section 9.3), with no new handshake and nothing to resume. State
        changes: ``PROBING``, then ``MIGRATED``. When the server does not answer within
        :attr:`probe_timeout` seconds (it no longer has the connection, or the network is
        down), the connection counts as lost and the reconnect policy takes over (qsse/2
        resumes where it stopped). The client also moves by itself when its socket reports an
        error or a probe goes unanswered.

        :returns: True when the server answered on the new socket; False when it did not.
        :raises LocalProtocolError: when not connected.
        """
        if self._path is None:
            raise LocalProtocolError("rebind() needs an open connection")
        return await self._path.rebind("rebind requested")

    @property
    def local_address(self) -> tuple[str, int] | None:
        """The (host, port) of the UDP socket in use; None when not connected."""
        return self._path.local_address if self._path is not None else None

    @property
    def migrations(self) -> int:
        """Moves to a new socket that the server answered, on the current connection."""
        return self._path.migrations if self._path is not None else 0

    def _watch_path(
        self,
        protocol: QsseProtocol,
        transport: asyncio.DatagramTransport,
        lost: asyncio.Future[ConnectionClosed],
    ) -> None:
        def on_state(state: ConnectionState, reason: str) -> None:
            self._set_state(StateChange(state, reason=reason))

        def on_dead(reason: str) -> None:
            # As if QUIC had closed it: the supervisor hangs up and reconnects.
            if not lost.done():
                lost.set_result(ConnectionClosed(NO_VIABLE_PATH, reason, application=False))

        self._path = PathWatch(
            protocol,
            transport,
            probe_interval=self.probe_interval,
            probe_timeout=self.probe_timeout,
            on_state=on_state,
            on_dead=on_dead,
        )

    def _connection(
        self, quic: QuicConnection, alpn: str | None
    ) -> QsseClientConnection | Qsse2ClientConnection:
        self._alpn = alpn
        if alpn == ALPN_QSSE2:
            return Qsse2ClientConnection(quic, token=self.token, max_frame_size=self.max_frame_size)
        return QsseClientConnection(
            quic, token=self.token, topics=self._wanted, max_frame_size=self.max_frame_size
        )

    def _subscribe_all(self, conn: Qsse2ClientConnection) -> None:
        self._subscription_topics.clear()
        for request_id in [r for r, (_, w) in self._requests.items() if w is None]:
            del self._requests[request_id]
        for topic in self._wanted:
            request_id = conn.subscribe(topic, *self._resume_point(topic))
            self._requests[request_id] = (topic, None)

    async def _supervise(self) -> None:
        while not self._closing:
            assert self._lost is not None
            closed = await self._lost
            self._hang_up(ErrorCode.NO_ERROR, "")
            code = closed.error_code if closed.application else None
            reason = f"{_code_name(code)}: {closed.reason}" if code is not None else closed.reason
            self._set_state(StateChange(ConnectionState.LOST, reason=reason, error_code=code))
            if code is not None and code not in _QUIET_CODES:
                self.emit_error(code, {"reason": closed.reason})
            if code in _FATAL_CODES or not self.reconnect.retry:
                assert code is not None or not self.reconnect.retry
                self._give_up(
                    ConnectionClosedError(code, closed.reason)
                    if code is not None
                    else ConnectError(f"connection lost: {closed.reason}"),
                    0,
                )
                return
            self._next_address()
            try:
                await self._dial_retrying()
            except ConnectError:
                return

    # -- delivery ------------------------------------------------------------------------------

    def _on_event(self, event: QsseEvent) -> None:
        if isinstance(event, EventReceived):
            if event.subscription_id is not None and event.id is not None:
                topic = self._subscription_topics.get(event.subscription_id)
                if topic is not None and event.id > self._positions.get(topic, 0):
                    self._positions[topic] = event.id
            self._deliver(Message(event.topic, event.data, event.id, event.content_type))
        elif isinstance(event, ErrorReceived):
            self.emit_error(event.code, event.data)
            if event.code == ErrorCode.EVENTS_DROPPED:
                self._gap(
                    Gap(
                        topic=str(event.data.get("topic", "")),
                        first_id=int(event.data.get("first_id", 0)),
                        last_id=event.data.get("last_id"),
                        reason="dropped: the subscriber fell behind",
                        subscription="",
                    )
                )
        elif isinstance(event, FrameDropped):
            self.emit_error(event.code, {"reason": event.reason, "raw": event.raw})
        elif isinstance(event, SubscriptionStarted):
            self._adopt_epoch(event.epoch)
            self._subscription_topics[event.subscription_id] = event.topic
        elif isinstance(event, Welcomed):
            self._adopt_epoch(event.epoch)
        elif isinstance(event, SubscriptionAnswered):
            self._answered(event)
        elif isinstance(event, UnsubscriptionAnswered):
            self._subscription_topics.pop(event.subscription_id, None)
            _, waiter = self._requests.pop(event.request_id, ("", None))
            if waiter is not None and not waiter.done():
                waiter.set_result(SubscribeStatus(event.status))
        elif isinstance(event, GapReceived):
            topic = self._subscription_topics.get(event.subscription_id, "")
            if event.last_id is None:
                # The server cannot vouch for our position (another epoch, or an id it never
                # issued): what follows is everything it holds, so the position starts over.
                if topic in self._positions:
                    self._positions[topic] = 0
            elif event.last_id > self._positions.get(topic, 0):
                self._positions[topic] = event.last_id
            self._gap(
                Gap(event.topic, event.first_id, event.last_id, event.reason, subscription=topic)
            )

    def _answered(self, event: SubscriptionAnswered) -> None:
        topic, waiter = self._requests.pop(event.request_id, (event.topic, None))
        try:
            status = SubscribeStatus(event.status)
        except ValueError:
            status = SubscribeStatus.NOT_AVAILABLE
        if status == SubscribeStatus.OK:
            self._subscription_topics[event.subscription_id] = topic
            self._positions.setdefault(topic, event.position)
        else:
            code = _STATUS_CODES.get(status, ErrorCode.UNKNOWN)
            self.emit_error(code, {"topic": topic})
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def _gap(self, gap: Gap) -> None:
        if not self._gap_handlers:
            logger.warning("qsse gap: %s", gap)
        for handler in self._gap_handlers:
            self._call(handler, gap)

    def _deliver(self, message: Message) -> None:
        matched = False
        for pattern, handler in self._handlers:
            if topic_matches(pattern, message.topic):
                matched = True
                self._call(handler, message)
        if not matched:
            for handler in self._message_handlers:
                self._call(handler, message)
        if self._iterating:
            if len(self._queue) >= self.queue_size:
                self.emit_error(
                    ErrorCode.SLOW_CONSUMER,
                    {
                        "reason": f"iterator queue full ({self.queue_size}); message dropped",
                        "topic": message.topic,
                    },
                )
            else:
                self._queue.append(message)
                self._wakeup.set()

    def _call(self, handler: Callable[..., Awaitable[Any] | None], *args: Any) -> None:
        try:
            result = handler(*args)
        except Exception:
            logger.exception("qsse handler %r raised", handler)
            return
        if result is not None:
            self._pending_calls.append(result)
            if self._dispatcher is None:
                self._dispatcher = asyncio.create_task(self._dispatch())

    async def _dispatch(self) -> None:
        try:
            while self._pending_calls:
                try:
                    await self._pending_calls.popleft()
                except Exception:
                    logger.exception("qsse async handler raised")
        finally:
            self._dispatcher = None

    def __aiter__(self) -> Client:
        self._iterating = True
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._done.is_set():
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()


def _code_name(code: int | None) -> str:
    if code is None:
        return "transport"
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)
