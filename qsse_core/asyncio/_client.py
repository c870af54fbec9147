"""The asyncio qsse client on aioquic."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import random
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from .._codes import ErrorCode
from .._config import ReconnectPolicy, check_keepalive, keepalive_interval
from .._connection import QsseClientConnection
from .._connection2 import SUBSCRIPTION_STREAMS, Qsse2ClientConnection
from .._exceptions import (
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    HandshakeError,
    LocalProtocolError,
)
from .._framing import ALPN_QSSE1
from .._framing2 import ALPN_QSSE2, SubscribeStatus
from .._quic import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicConfiguration,
    QuicConnection,
    QuicEvent,
    client_backend,
    grant_unidirectional_streams,
    peer_idle_timeout,
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
from ._protocol import QsseProtocol, format_address

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
    :param connect_timeout: seconds one dial may take, every address of the host included.
        Each address the host name resolves to is tried, IPv6 and IPv4 alternately, the
        next one 250 ms after the last or as soon as it fails (RFC 8305).
    :param idle_timeout: QUIC idle timeout in seconds; the connection uses the smaller of
        this and the server's (RFC 9000 section 10.1).
    :param keepalive_interval: seconds between the client's QUIC PINGs. None, the default,
        derives it from the negotiated idle timeout (a third of it), so that a quiet topic
        never idles out, whatever either side configured; a value is used only where it is
        shorter, and must be shorter than ``idle_timeout``.
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
        keepalive_interval: float | None = None,
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
        if not connect_timeout > 0:
            raise ConfigurationError(f"connect_timeout must be positive, got {connect_timeout!r}")
        check_keepalive("Client", idle_timeout, keepalive_interval)
        self.idle_timeout = idle_timeout
        self.keepalive_interval = keepalive_interval
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
        self._link: _Link | None = None
        self._protocol: QsseProtocol | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._lost: asyncio.Future[ConnectionClosed] | None = None
        # The retry that made the current connection (0: the first dial), and when.
        self._attempt = 0
        self._connected_at = 0.0
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
        """Call ``handler`` for each event whose topic matches ``pattern``.

        Matching is Go qsse's (``path/filepath.Match``). Unlike Go's ``SetEventHandler``, which
        keeps one handler per topic string, every handler registered is called: several parts
        of a program may watch the same topic without knowing of each other.
        """
        try:
            validate_pattern(pattern)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._handlers.append((pattern, handler))

    def on_message(self, handler: MessageHandler) -> None:
        """Call ``handler`` for each event that no pattern handler matched.

        This is Go's rule for the handler of ``SetMessageHandler``: an event goes to every
        matching topic handler, and to the catch-all only when none matched (error events go
        to the error handlers instead). Every catch-all registered is called.
        """
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

        :raises ConnectError: when every allowed attempt failed, or at once when an attempt
            failed in a way no retry can fix (:attr:`ConnectError.retryable` false: a TLS,
            ALPN or QUIC version failure, a refused token).
        """
        if self._supervisor is not None:
            raise ConfigurationError("connect() was already called")
        self._done.clear()
        self._closing = False
        self._set_state(StateChange(ConnectionState.CONNECTING))
        try:
            await self._dial()
        except ConnectError as exc:
            await self._retry(1, exc)
        self._supervisor = asyncio.create_task(self._supervise())

    async def close(self) -> None:
        """Close the connection and stop reconnecting. Never raises."""
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        try:
            self._hang_up(ErrorCode.NO_ERROR, "client closing")
        except Exception:  # a dead transport must not turn closing into an error
            logger.debug("closing a dead connection", exc_info=True)
        if self._dispatcher is not None:
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        await asyncio.sleep(0)  # lets the transport's close callback release the socket
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
        link, self._link = self._link, None
        self._protocol = None
        self._transport = None
        if link is not None:
            link.close(code, reason)  # sends the close on the socket in use
        if self._path is not None:
            self._path.close()
            self._path = None

    async def _retry(self, attempt: int, exc: ConnectError) -> None:
        """Retry number ``attempt`` of an outage whose last attempt failed with ``exc``, and
        the ones after it, until one connects or the policy gives up.

        :raises ConnectError: the last failure, once the client gave up.
        """
        while True:
            if not exc.retryable or not self.reconnect.allows(attempt):
                self._give_up(exc, attempt - 1)
                raise exc
            delay = self.reconnect.delay(attempt, random.random())
            self._set_state(StateChange(ConnectionState.RETRYING, attempt, delay, reason=str(exc)))
            await asyncio.sleep(delay)
            try:
                await self._dial(attempt)
                return
            except ConnectError as failed:
                exc = failed
                self._next_address()
                attempt += 1

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

    # -- dialling ------------------------------------------------------------------------------

    async def _dial(self, attempt: int = 0) -> None:
        """One attempt: every address the host resolves to, raced (RFC 8305).

        :raises ConnectError: naming each address's failure.
        """
        where = f"{self.host}:{self.port}"
        targets = await self._resolve()
        config = self._configuration()
        link = await self._race(targets, config, where)
        self._adopt(link, attempt)

    async def _resolve(self) -> list[tuple[int, Any]]:
        """``(family, sockaddr)`` to try, in RFC 8305 section 4 order: as the resolver sorted
        them (RFC 6724), then families alternated starting with IPv6."""
        try:
            infos = await _getaddrinfo(self.host, self.port)
        except OSError as exc:
            raise ConnectError(f"cannot resolve {self.host!r}: {exc}") from exc
        by_family: dict[int, list[tuple[int, Any]]] = {}
        seen: set[Any] = set()
        for family, _, _, _, addr in infos:
            if addr not in seen and family in (socket.AF_INET, socket.AF_INET6):
                seen.add(addr)
                by_family.setdefault(family, []).append((family, addr))
        if not by_family:
            raise ConnectError(f"cannot resolve {self.host!r}: no IPv4 or IPv6 address")
        v6, v4 = by_family.get(socket.AF_INET6, []), by_family.get(socket.AF_INET, [])
        ordered: list[tuple[int, Any]] = []
        for i in range(max(len(v6), len(v4))):
            ordered += v6[i : i + 1] + v4[i : i + 1]
        return ordered

    async def _race(
        self, targets: list[tuple[int, Any]], config: QuicConfiguration, where: str
    ) -> _Link:
        """Start a dial per address, the next one each :data:`STAGGER` seconds or as soon as
        the one before fails (RFC 8305 section 5); the first established wins.

        :raises ConnectError: the one failure no other address could change (a handshake the
            server answered with a close), or every address's failure.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        queue = list(targets)
        running: dict[asyncio.Task[_Link], _Link] = {}
        failures: list[str] = []
        try:
            while queue or running:
                if queue:
                    family, addr = queue.pop(0)
                    link = _Link(self, family, addr, config)
                    running[asyncio.create_task(link.establish(deadline))] = link
                wait = max(0.0, deadline - loop.time())
                if queue:
                    wait = min(wait, STAGGER)
                done, _ = await asyncio.wait(
                    running, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    spelled = running.pop(task).where
                    exc = task.exception()
                    if exc is None:
                        return task.result()
                    if isinstance(exc, HandshakeError | ConnectionClosedError):
                        raise exc  # the server answered: another address would say the same
                    if not isinstance(exc, ConnectError):
                        raise exc
                    failures.append(f"{spelled}: {exc}" if len(targets) > 1 else str(exc))
                if not done and not queue and loop.time() >= deadline:
                    break
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for link in running.values():
                link.close(ErrorCode.NO_ERROR, "")  # a task cancelled before it ran
        for link in running.values():
            failures.append(f"{link.where}: no handshake within {self.connect_timeout:g} s")
        if len(targets) == 1 and failures:
            raise ConnectError(f"cannot connect to {where}: {failures[0]}")
        raise ConnectError(f"cannot connect to {where}: " + "; ".join(failures))

    def _adopt(self, link: _Link, attempt: int) -> None:
        """Make an established link the client's connection."""
        self._link = link
        self._protocol = link.protocol
        self._transport = link.transport
        self._lost = link.lost
        self._attempt = attempt
        self._connected_at = asyncio.get_running_loop().time()
        self._alpn = link.alpn
        self._set_state(StateChange(ConnectionState.CONNECTED))
        link.adopt(self._keepalive_interval())
        assert link.transport is not None
        self._watch_path(link.protocol, link.transport, link.lost)

    def _keepalive_interval(self) -> float:
        assert self._protocol is not None
        peer = peer_idle_timeout(self._protocol.quic)
        return keepalive_interval(self.idle_timeout, peer, self.keepalive_interval)

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
        loop = asyncio.get_running_loop()
        while not self._closing:
            assert self._lost is not None
            closed = await self._lost
            lived = loop.time() - self._connected_at
            self._hang_up(ErrorCode.NO_ERROR, "")
            code = closed.error_code if closed.application else None
            reason = f"{_code_name(code)}: {closed.reason}" if code is not None else closed.reason
            self._set_state(StateChange(ConnectionState.LOST, reason=reason, error_code=code))
            if code is not None and code not in _QUIET_CODES:
                self.emit_error(code, {"reason": closed.reason})
            exc = (
                ConnectionClosedError(code, closed.reason)
                if code is not None
                else ConnectError(f"connection lost: {closed.reason}")
            )
            # A connection that did not last counts as a failed retry of the same outage.
            attempt = self._attempt + 1 if lived < self.reconnect.stable_after else 1
            self._next_address()
            try:
                await self._retry(attempt, exc)
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
        if inspect.isawaitable(result):  # what a sync handler returns is ignored
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


#: Seconds between starting dials to successive addresses (RFC 8305 section 5 recommends 250 ms).
STAGGER = 0.25
#: Receive buffer asked for the client's socket, in bytes (the kernel caps it at its
#: ``net.core.rmem_max``): while the event loop is blocked, datagrams wait there, and once it
#: is full the newest are dropped, among them the close that would say why the server left.
RECEIVE_BUFFER = 4 * 1024 * 1024
#: The smallest QUIC receive window the client advertises, in bytes, however small the
#: socket buffer: below it throughput would suffer more than a lost close costs.
MIN_WINDOW = 256 * 1024


async def _getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    """The resolver the client uses: the event loop's ``getaddrinfo`` for UDP."""
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)


class _ClientProtocol(QsseProtocol):
    """A client's QUIC protocol that notices when its socket is gone.

    QUIC sends from its timers; once the transport is closed (or ``sendto`` raises, as
    uvloop's does on a closing transport), nothing more can be sent and the connection
    would hang as it was, CONNECTED. Here the first sign of a dead transport stops the
    timer and reports once through :attr:`on_transport_lost`, so the client reconnects.
    """

    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self.dead = False
        self.on_transport_lost: Callable[[str], None] = lambda reason: None

    def transmit(self) -> None:
        if self.dead:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            self.stop("UDP transport closed")
            return
        try:
            super().transmit()
        except Exception as exc:
            self.stop(f"cannot send: {exc!r}")

    def connection_lost(self, exc: Exception | None) -> None:
        # The socket a client moved off (rebind) closes while the connection goes on.
        moved_off = self._transport is not None and not self._transport.is_closing()
        super().connection_lost(exc)
        if not moved_off:
            self.stop(f"UDP transport closed: {exc}" if exc is not None else "UDP transport closed")

    def stop(self, reason: str) -> None:
        """Stop every timer of this connection and report why, once."""
        if self.dead:
            return
        self.dead = True
        self.abort()
        self.on_transport_lost(reason)


class _Link:
    """One QUIC connection of a client to one address, from dial to close.

    Until the client adopts it, the qsse events it produces are held back, so that a dial
    that loses a race (or fails after the handshake) leaves no trace in the client.
    """

    def __init__(
        self, client: Client, family: int, addr: Any, configuration: QuicConfiguration
    ) -> None:
        self.client = client
        self.addr = addr
        self.where = format_address(addr)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.quic = client_backend().connection(self._windows(configuration))
        # A qsse/2 server opens a stream per subscription: allow one for each we may ask for.
        grant_unidirectional_streams(self.quic, max(SUBSCRIPTION_STREAMS, len(client._wanted)))
        self.protocol = _ClientProtocol(self.quic)
        self.transport: asyncio.DatagramTransport | None = None
        self.alpn: str | None = None
        loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[ConnectionClosed] = loop.create_future()
        self._handshake: asyncio.Future[None] = loop.create_future()
        self._failed: asyncio.Future[ConnectError] = loop.create_future()
        self._held: list[QsseEvent] | None = []
        self._keepalive: asyncio.TimerHandle | None = None
        self._keepalive_every = 0.0
        self._closed = False
        self.protocol.on_quic_event = self._quic_event
        self.protocol.on_qsse_event = self._qsse_event
        self.protocol.on_error_received = self._error_received
        self.protocol.on_transport_lost = self._transport_lost

    # -- events ------------------------------------------------------------------------------

    def _quic_event(self, event: QuicEvent) -> None:
        if self.protocol.qsse is not None:
            return
        if isinstance(event, HandshakeCompleted):
            # The handshake picks the protocol; its connection sees the same event next.
            # This is our own signal rather than the library's wait_connected(): aioquic marks
            # itself connected only if someone was already waiting when the handshake
            # completed, which a handshake can beat (as under uvloop).
            self.alpn = event.alpn_protocol
            self.protocol.qsse = self.client._connection(self.quic, event.alpn_protocol)
            if not self._handshake.done():
                self._handshake.set_result(None)
        elif isinstance(event, ConnectionTerminated):
            # Nothing else listens before the handshake completes: this is the only place the
            # reason for a refused handshake (ALPN, certificate, version) can be read.
            if event.reason_phrase == "Idle timeout":  # our own timer, not the server
                self._fail(ConnectError("no handshake before the idle timeout"))
            else:
                code, reason = event.error_code, event.reason_phrase
                self._fail(HandshakeError.from_close(code, reason, self.where))

    def _qsse_event(self, event: QsseEvent) -> None:
        if isinstance(event, ConnectionClosed):
            if not self.lost.done():
                self.lost.set_result(event)
            self._stop_keepalive()
            return
        if isinstance(event, HandshakeDone):
            if isinstance(self.protocol.qsse, Qsse2ClientConnection):
                self.client._subscribe_all(self.protocol.qsse)  # pipelined right behind HELLO
            return
        if self._held is not None:
            self._held.append(event)
        else:
            self.client._on_event(event)

    def _error_received(self, exc: Exception) -> None:
        # An ICMP error (port unreachable) fails a dial at once instead of at its timeout.
        if not self._handshake.done():
            self._fail(ConnectError(str(exc) or type(exc).__name__))
        elif isinstance(exc, ConnectionRefusedError):
            # Later, nothing listens on the server's port any more: whatever comes back
            # there cannot know this connection, so waiting for the idle timeout is pointless.
            self.protocol.stop(f"server port closed: {exc}")

    def _transport_lost(self, reason: str) -> None:
        self._stop_keepalive()
        self._fail(ConnectError(reason))
        if not self.lost.done():
            self.lost.set_result(ConnectionClosed(error_code=0, reason=reason, application=False))

    def _fail(self, exc: ConnectError) -> None:
        if not self._failed.done():
            self._failed.set_result(exc)

    # -- lifecycle ---------------------------------------------------------------------------

    async def establish(self, deadline: float) -> _Link:
        """Dial, and wait for the handshake.

        A server that refuses the session after it (a token, its connection limit) closes
        the connection later: the client counts that as a failed attempt when it comes
        within :attr:`ReconnectPolicy.stable_after`.

        :raises ConnectError: naming why it failed; the link is closed by then.
        """
        try:
            await self._open()
            waiters: list[asyncio.Future[Any]] = [self._handshake, self._failed, self.lost]
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if self._handshake.done() and not self.lost.done():
                return self
            raise self._failure()
        except BaseException:
            self.close(ErrorCode.NO_ERROR, "")
            raise

    def _windows(self, configuration: QuicConfiguration) -> QuicConfiguration:
        """The configuration with receive windows the socket's buffer can hold.

        While the event loop is blocked, whatever the server sends waits in the socket's
        receive buffer; flow control bounds it by these windows. Past the buffer the kernel
        drops datagrams, the server's CONNECTION_CLOSE among them, and the client would
        learn of a SLOW_CONSUMER close only as an idle timeout. Each datagram costs the
        kernel about twice its payload, hence half the buffer.
        """
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        try:
            held = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        except OSError:
            return configuration
        window = max(held, MIN_WINDOW)
        return dataclasses.replace(
            configuration,
            max_data=min(configuration.max_data, window),
            max_stream_data=min(configuration.max_stream_data, window),
        )

    async def _open(self) -> None:
        # A connected socket, so the kernel reports ICMP "port unreachable" and a dial to a
        # server that is down fails at once instead of waiting out the timeout.
        sock = self.sock
        try:
            sock.setblocking(False)
            sock.connect(self.addr)
        except OSError as exc:
            sock.close()
            raise ConnectError(str(exc)) from exc
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: self.protocol, sock=sock)
        except BaseException:
            sock.close()
            raise
        self.transport = transport
        self.protocol.connect(self.addr)

    def _failure(self) -> ConnectError:
        if self._failed.done():
            return self._failed.result()
        if self.lost.done():
            closed = self.lost.result()
            if closed.application:
                return ConnectionClosedError(closed.error_code, closed.reason)
            return ConnectError(closed.reason)
        return ConnectError(f"no handshake within {self.client.connect_timeout:g} s")

    def adopt(self, keepalive: float) -> None:
        """Hand held events to the client, once ``connect()`` has returned, and start sending
        keep-alive PINGs."""
        loop = asyncio.get_running_loop()
        # Soon rather than now: handlers registered right after connect() returns see the
        # events (error events of refused topics, say) that came with the handshake.
        loop.call_soon(self._release)
        if self.lost.done():
            return
        self._keepalive_every = keepalive
        self._keepalive = loop.call_later(keepalive, self._ping)

    def _release(self) -> None:
        held, self._held = self._held or [], None  # later events go straight to the client
        for event in held:
            self.client._on_event(event)

    def _ping(self) -> None:
        # Unconditional: a PING every third of the idle timeout costs a packet or two, and
        # received events say nothing about whether the server still hears from us.
        self._keepalive = None
        if self.protocol.dead or self.lost.done():
            return
        self.quic.send_ping(0)
        self.protocol.transmit()
        if not self.protocol.dead:
            loop = asyncio.get_running_loop()
            self._keepalive = loop.call_later(self._keepalive_every, self._ping)

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def close(self, code: int, reason: str) -> None:
        """Send a close if the connection is still open, then release socket and timers."""
        if self._closed:
            return
        self._closed = True
        self._stop_keepalive()
        protocol = self.protocol
        if not protocol.dead and self.transport is not None:
            conn = protocol.qsse
            with contextlib.suppress(Exception):  # already closed by the library
                if isinstance(conn, QsseClientConnection | Qsse2ClientConnection):
                    conn.close(code, reason)
                else:
                    self.quic.close(error_code=code, reason_phrase=reason)
            protocol.transmit()
        protocol.on_transport_lost = lambda reason: None
        protocol.stop("closed")
        if self.transport is not None:
            self.transport.close()
        else:
            self.sock.close()
