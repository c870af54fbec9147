"""The protocol shared by server and client on the QUIC library: QUIC events in, qsse events out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

from .._quic import (
    BACKEND,
    QuicConnection,
    QuicConnectionProtocol,
    QuicEvent,
    QuicStreamHandler,
)
from ..events import QsseEvent

__all__ = ["QsseProtocol"]

logger = logging.getLogger("qsse.quic")


class _Connection(Protocol):
    def handle_event(self, event: QuicEvent) -> list[QsseEvent]: ...


class _Connected:
    """A datagram transport on a connected socket, sending without an address.

    The QUIC libraries pass the peer address to every ``sendto``; uvloop (rightly) refuses an
    address on a connected socket, which clients use to hear ICMP errors.
    """

    def __init__(self, transport: asyncio.DatagramTransport) -> None:
        self._transport = transport

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._transport.sendto(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class QsseProtocol(QuicConnectionProtocol):
    """Feeds each QUIC event to a sans-I/O qsse connection and hands its events on.

    The qsse connection is attached once the handshake has chosen the protocol (by ALPN), so
    one listening port can serve several protocol versions.
    """

    def __init__(self, quic: QuicConnection, stream_handler: QuicStreamHandler | None = None):
        super().__init__(quic, stream_handler)
        self.qsse: _Connection | None = None
        self.on_quic_event: Callable[[QuicEvent], None] = lambda event: None
        self.on_qsse_event: Callable[[QsseEvent], None] = lambda event: None
        self.on_error_received: Callable[[Exception], None] = lambda exc: None
        #: called after each datagram is processed: acknowledgements may have opened windows.
        self.on_datagram: Callable[[], None] | None = None

    @property
    def quic(self) -> QuicConnection:
        return self._quic

    def transmit(self) -> None:
        try:
            super().transmit()
        except Exception as exc:
            if BACKEND != "qh3":
                raise
            # qh3 2.1 servers sometimes fail to build a handshake packet for aioquic clients
            # ("packet builder capacity exhausted"); its loss timers send it again shortly,
            # so this costs a handshake about a second, not the connection.
            logger.debug("qh3 could not transmit: %s", exc)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if transport.get_extra_info("peername") is not None:
            transport = cast(asyncio.DatagramTransport, _Connected(transport))  # type: ignore[arg-type]
        super().connection_made(transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        if self.on_datagram is not None:
            self.on_datagram()

    def error_received(self, exc: Exception) -> None:
        # An ICMP error (e.g. port unreachable) lets a client fail fast instead of timing out.
        self.on_error_received(exc)

    def quic_event_received(self, event: QuicEvent) -> None:
        self.on_quic_event(event)
        if self.qsse is not None:
            for qsse_event in self.qsse.handle_event(event):
                self.on_qsse_event(qsse_event)
