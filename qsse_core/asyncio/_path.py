"""A client's network path: noticing that it died and moving the connection to a new socket.

QUIC lets a client keep its connection across an address change (RFC 9000 section 9). The
server only learns the new address from a packet the client sends, so a subscriber, which
otherwise sends nothing but acknowledgements, must speak up when it stops hearing the
server: :class:`PathWatch` sends a PING after ``probe_interval`` seconds of silence, and when
that goes unanswered too, or the socket reports an error, it moves the connection to a new
local socket with a new connection ID (section 9.5) and probes the server there. No answer
within ``probe_timeout`` on the new path means the server no longer has the connection; the
client then falls back to reconnecting (and resuming, on qsse/2).

While the server sends no data and answers the probes, the silence before each probe doubles,
up to 16 intervals, so that an idle subscriber does not cost its server a packet a second;
the first data from the server brings it back to ``probe_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from .._quic import QuicEvent, StreamDataReceived
from .._state import ConnectionState
from ._protocol import QsseProtocol

__all__ = ["PathWatch"]

logger = logging.getLogger("qsse.client")

# Probes of a quiet connection back off up to this many probe intervals.
_MAX_BACKOFF = 16


class _Path(asyncio.DatagramProtocol):
    """A socket after the first: feeds what it hears to the same QUIC connection."""

    def __init__(self, watch: PathWatch) -> None:
        self.watch = watch
        self.answered: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answered.done():
            self.answered.set_result(None)
        self.watch.protocol.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.watch._error(self, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        # Ends the connection's timers when this was its socket, as for the first one.
        self.watch.protocol.connection_lost(exc)


class PathWatch:
    """Watches one client connection's path and moves it when it dies.

    :param protocol: the connection's protocol, already connected.
    :param transport: the connected datagram transport it was dialled on.
    :param probe_interval: seconds of silence from the server before a PING; None: never.
    :param probe_timeout: seconds to wait for an answer to a probe, on the old path or a new one.
    :param on_state: told ``(PROBING, why)`` when a move starts and ``(MIGRATED, why)``
        when the server answered on the new path.
    :param on_dead: told why when the server did not answer on a new path.
    """

    def __init__(
        self,
        protocol: QsseProtocol,
        transport: asyncio.DatagramTransport,
        *,
        probe_interval: float | None,
        probe_timeout: float,
        on_state: Callable[[ConnectionState, str], None],
        on_dead: Callable[[str], None],
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.migrations = 0
        self._on_state = on_state
        self._on_dead = on_dead
        self._path: _Path | None = None  # None: still the socket it was dialled on
        self._loop = asyncio.get_running_loop()
        self._heard_at = self._loop.time()
        self._hearing: asyncio.Future[None] | None = None
        self._move: asyncio.Task[bool] | None = None
        self._closed = False
        self._gave_up = False
        protocol.on_datagram = self._heard
        self._next_on_quic_event = protocol.on_quic_event
        protocol.on_quic_event = self._on_quic_event
        protocol.on_error_received = lambda exc: self._error(None, exc)
        self._task: asyncio.Task[None] | None = None
        # Silence before the next probe (see the module's docstring).
        self._wait = probe_interval or 0.0
        if probe_interval is not None:
            self._task = asyncio.create_task(self._watch(probe_interval))

    @property
    def local_address(self) -> tuple[str, int]:
        """The (host, port) of the socket in use."""
        name = self.transport.get_extra_info("sockname")
        return name[0], name[1]

    def close(self) -> None:
        """Stop watching and close the socket in use."""
        self._closed = True
        for task in (self._task, self._move):
            if task is not None:
                task.cancel()
        self.transport.close()

    async def rebind(self, reason: str) -> bool:
        """Move to a new socket (one move at a time; a second call joins the first).

        :returns: True when the server answered there; False when it did not and the
            connection was given up (``on_dead``).
        """
        move = self._begin(reason)
        try:
            return await asyncio.shield(move)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if move.cancelled() and not (current is not None and current.cancelling()):
                return False  # the connection closed meanwhile, not the caller's doing
            raise

    def _begin(self, reason: str) -> asyncio.Task[bool]:
        if self._move is None:
            self._move = asyncio.create_task(self._rebind(reason))
            self._move.add_done_callback(self._moved)
        return self._move

    def _moved(self, task: asyncio.Task[bool]) -> None:
        if self._move is task:
            self._move = None

    # -- detection ----------------------------------------------------------------------------

    def _heard(self) -> None:
        self._heard_at = self._loop.time()
        if self._hearing is not None and not self._hearing.done():
            self._hearing.set_result(None)

    def _on_quic_event(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self._wait = self.probe_interval or 0.0  # data flows: probe soon after it stops
        self._next_on_quic_event(event)

    def _error(self, path: _Path | None, exc: Exception) -> None:
        if self._closed:
            return
        if path is not None and path is self._path and not path.answered.done():
            path.answered.set_result(exc)  # the new path fails as well: no need to wait
        elif path is self._path and self._move is None:
            # Errors after the handshake mean the path broke (network gone, address lost).
            logger.info("socket error on %s: %s; moving to a new socket", self.local_address, exc)
            self._begin(f"socket error: {exc}")

    async def _watch(self, interval: float) -> None:
        while not (self._closed or self._gave_up):
            silent = self._loop.time() - self._heard_at
            if silent < self._wait:
                await asyncio.sleep(self._wait - silent)
                continue
            if self._move is not None:
                await asyncio.shield(self._move)
                continue
            # RFC 9000 section 9.3: only a non-probing packet from the client tells the
            # server where it is now; a PING is the smallest one that asks for an answer.
            self._hearing = self._loop.create_future()
            self._ping()
            try:
                await asyncio.wait_for(self._hearing, self.probe_timeout)
                self._wait = min(2 * self._wait, _MAX_BACKOFF * interval)
            except TimeoutError:
                await self.rebind(f"no answer to a probe within {self.probe_timeout:g} s")
            finally:
                self._hearing = None

    def _ping(self) -> None:
        try:
            self.protocol.quic.send_ping(0)
        except Exception:  # qh3 raises once the connection is closed; the close event follows
            return
        self.protocol.transmit()

    # -- moving -------------------------------------------------------------------------------

    async def _rebind(self, reason: str) -> bool:
        if self._gave_up:
            return False
        self._on_state(ConnectionState.PROBING, reason)
        try:
            path = await self._open()
        except OSError as exc:
            return self._dead(f"{reason}; cannot open a new socket: {exc}")
        assert path.transport is not None
        if self._closed:  # closed while the socket opened
            path.transport.close()
            return False
        old, self.transport, self._path = self.transport, path.transport, path
        # RFC 9000 section 9.5: a new path gets a connection ID not used on the old one, so
        # that an observer cannot link the two; then a PING to learn the server is there.
        try:
            self.protocol.quic.change_connection_id()
        except Exception as exc:  # qh3 with no spare ID: the old one still works, linkably
            logger.info("keeping the connection ID on the new path: %s", exc)
        self.protocol.switch_transport(self.transport)
        self._ping()
        try:
            failure = await asyncio.wait_for(asyncio.shield(path.answered), self.probe_timeout)
        except TimeoutError:
            failure = TimeoutError(f"no answer within {self.probe_timeout:g} s")
        finally:
            # What the old socket still heard fed the connection meanwhile.
            old.close()
        if failure is not None:
            return self._dead(f"{reason}; the new socket failed too: {failure}")
        self.migrations += 1
        host, port = self.local_address
        logger.info("connection moved to %s:%d (%s)", host, port, reason)
        self._on_state(ConnectionState.MIGRATED, reason)
        return True

    def _dead(self, reason: str) -> bool:
        self._gave_up = True
        logger.info("giving up the connection: %s", reason)
        self._on_dead(reason)
        return False

    async def _open(self) -> _Path:
        old = self.transport.get_extra_info("socket")
        peer = self.transport.get_extra_info("peername")
        sock = socket.socket(old.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(peer)  # connected, to hear ICMP as the first socket does
            path = _Path(self)
            await self._loop.create_datagram_endpoint(lambda: path, sock=sock)
        except BaseException:
            sock.close()
            raise
        return path
