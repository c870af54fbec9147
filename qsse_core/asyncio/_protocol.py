"""One QUIC connection on a datagram transport: QUIC events in, qsse events out.

Our own protocol rather than the QUIC libraries' ``QuicConnectionProtocol``, so one class
drives a connection of either library (a process may run a qh3 client beside an aioquic
server), and so the server endpoint can keep each connection's connection IDs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

from .._quic import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    QuicConnection,
    QuicEvent,
    is_qh3,
)
from ..events import QsseEvent

__all__ = ["QsseProtocol", "format_address"]

logger = logging.getLogger("qsse.quic")

Address = tuple[Any, ...]


class _Connection(Protocol):
    def handle_event(self, event: QuicEvent) -> list[QsseEvent]: ...


def format_address(addr: Address) -> str:
    """``host:port``, IPv6 hosts in brackets, for logs and for clients to dial."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ignore(*args: Any) -> None:
    return None


class QsseProtocol(asyncio.DatagramProtocol):
    """Feeds each QUIC event to a sans-I/O qsse connection and hands its events on.

    The qsse connection is attached once the handshake has chosen the protocol (by ALPN), so
    one listening port can serve several protocol versions. A client's protocol runs on a
    connected socket (to hear ICMP errors); a server's shares the endpoint's socket.
    """

    def __init__(self, quic: QuicConnection) -> None:
        self._quic = quic
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._sendto: Callable[[bytes, Address], None] = _ignore
        # On a connected socket the kernel delivers only the dialled peer's datagrams: their
        # source is that peer whatever its spelling (0.0.0.0 vs 127.0.0.1, v4-mapped v6).
        self._dialled: Address | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._aborted = False
        # qh3 2.1 servers sometimes fail to build a handshake packet for aioquic clients
        # ("packet builder capacity exhausted"); their loss timers send it again shortly.
        self._lenient = is_qh3(quic)
        self.qsse: _Connection | None = None
        self._peer: Address | None = None
        self.on_quic_event: Callable[[QuicEvent], None] = _ignore
        self.on_qsse_event: Callable[[QsseEvent], None] = _ignore
        self.on_error_received: Callable[[Exception], None] = _ignore
        #: called when the socket is gone; QUIC's timers still run, so the connection ends
        #: by its idle timeout at the latest, and its owner hears of it.
        self.on_connection_lost: Callable[[Exception | None], None] = _ignore
        #: called after each datagram is processed: acknowledgements may have opened windows.
        self.on_datagram: Callable[[], None] | None = None
        # The server endpoint's bookkeeping of connection IDs (RFC 9000 section 5.1).
        self.on_connection_id_issued: Callable[[bytes], None] = _ignore
        self.on_connection_id_retired: Callable[[bytes], None] = _ignore
        self.on_terminated: Callable[[], None] = _ignore

    @property
    def quic(self) -> QuicConnection:
        return self._quic

    @property
    def peer(self) -> str:
        """``host:port`` of the peer: the address dialled, or the last datagram's source."""
        return "?" if self._peer is None else format_address(self._peer)

    # -- asyncio -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        peername = transport.get_extra_info("peername")
        if peername is not None:
            # uvloop (rightly) refuses an address on a connected socket.
            self._dialled = peername
            send = self._transport.sendto
            self._sendto = lambda data, addr: send(data)
        else:
            self._sendto = self._transport.sendto

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None and not self._transport.is_closing():
            return  # the socket of a client before it moved (switch_transport)
        # The socket is gone: nothing more can be sent. The timers go on (sending nothing),
        # so the connection still ends and says so rather than hanging connected forever.
        self._transport = None
        self._sendto = _ignore
        self.on_connection_lost(exc)

    def abort(self) -> None:
        """Forget the connection now: no timer fires for it again, nothing is sent."""
        self._aborted = True
        self._sendto = _ignore
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = None

    def switch_transport(self, transport: asyncio.DatagramTransport) -> None:
        """Send on ``transport`` from now on: a client moved to a new socket (RFC 9000
        section 9). Datagrams the new socket hears must be passed to
        :meth:`datagram_received`; closing the old socket then leaves the connection alone."""
        self.connection_made(transport)

    def datagram_received(self, data: bytes | str, addr: Address) -> None:
        if self._dialled is not None:
            addr = self._dialled
        else:
            self._peer = addr
        self._quic.receive_datagram(cast(bytes, data), addr, now=self._loop.time())
        self._process_events()
        self.transmit()
        if self.on_datagram is not None:
            self.on_datagram()

    def error_received(self, exc: Exception) -> None:
        # An ICMP error (e.g. port unreachable) lets a client fail fast instead of timing out.
        self.on_error_received(exc)

    # -- QUIC ----------------------------------------------------------------------------------

    def connect(self, addr: Address) -> None:
        """Start a client's handshake with the server at ``addr``."""
        self._peer = addr
        if self._dialled is not None:
            addr = self._dialled
        self._quic.connect(addr, now=self._loop.time())
        self.transmit()

    def close(self) -> None:
        """Close the QUIC connection (no error) and send the close."""
        self._quic.close()
        self.transmit()

    def transmit(self) -> None:
        """Send what QUIC has to send and re-arm its timer."""
        quic = self._quic
        now = self._loop.time()
        try:
            for data, addr in quic.datagrams_to_send(now=now):
                self._sendto(data, addr)
        except Exception as exc:
            transport = self._transport
            if transport is not None and not transport.is_closing() and not self._lenient:
                raise
            # A socket on its way out (uvloop raises where asyncio only logs) costs nothing:
            # the timer below still runs, so the connection still ends and says so.
            logger.debug("could not transmit: %s", exc)
        if self._aborted:
            return
        timer_at = quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None:
            self._timer = self._loop.call_at(timer_at, self._handle_timer)
        self._timer_at = timer_at

    def _handle_timer(self) -> None:
        now = max(self._timer_at or 0.0, self._loop.time())
        self._timer = None
        self._timer_at = None
        self._quic.handle_timer(now=now)
        self._process_events()
        self.transmit()

    def _process_events(self) -> None:
        quic = self._quic
        event = quic.next_event()
        while event is not None:
            if isinstance(event, ConnectionIdIssued):
                self.on_connection_id_issued(event.connection_id)
            elif isinstance(event, ConnectionIdRetired):
                self.on_connection_id_retired(event.connection_id)
            elif isinstance(event, ConnectionTerminated):
                self.on_terminated()
            self.on_quic_event(event)
            if self.qsse is not None:
                for qsse_event in self.qsse.handle_event(event):
                    self.on_qsse_event(qsse_event)
            event = quic.next_event()
