"""qsse/1 connections as sans-I/O state machines over an aioquic ``QuicConnection``.

Like aioquic's ``H3Connection``, these translate QUIC events into qsse events and only queue
data on the QUIC object: the caller owns sockets, clocks and ``transmit()``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from ._codes import ErrorCode
from ._exceptions import LocalProtocolError, RemoteProtocolError
from ._framing import ALPN_QSSE1, LineBuffer, decode_frame, decode_offer, encode_error, encode_offer
from ._quic import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicConnection,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
    send_backlog,
    write,
)
from .events import (
    ConnectionClosed,
    FrameDropped,
    HandshakeDone,
    OfferReceived,
    ProtocolViolation,
    QsseEvent,
)

__all__ = ["QsseClientConnection", "QsseServerConnection"]


def _client_initiated(stream_id: int) -> bool:
    return stream_id & 1 == 0


def _unidirectional(stream_id: int) -> bool:
    return stream_id & 2 == 2


def _closed_event(event: ConnectionTerminated) -> ConnectionClosed:
    return ConnectionClosed(
        error_code=event.error_code,
        reason=event.reason_phrase,
        application=event.frame_type is None,
    )


class _Connection(ABC):
    """What every qsse connection shares: it wraps a QUIC connection, turns its termination
    into :class:`ConnectionClosed`, and ignores everything after it."""

    alpn_protocol: str

    def __init__(self, quic: QuicConnection) -> None:
        self._quic = quic
        self._closed = False

    def handle_event(self, event: QuicEvent) -> list[QsseEvent]:
        """Translate one QUIC event into qsse events."""
        if isinstance(event, ConnectionTerminated):
            self._closed = True
            return [_closed_event(event)]
        if self._closed:
            return []
        return self._handle(event)

    @abstractmethod
    def _handle(self, event: QuicEvent) -> list[QsseEvent]:
        """The protocol's own handling of an event on a live connection."""

    def close(self, code: int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """Close the connection with an application error code."""
        if not self._closed:
            self._closed = True
            self._quic.close(error_code=code, reason_phrase=reason)


class QsseServerConnection(_Connection):
    """The server side of one qsse/1 connection.

    Three inputs drive it: :meth:`handle_event` with each QUIC event, :meth:`accept` or
    :meth:`reject` once the offer's token is judged, and :meth:`send` with encoded frames.

    :param quic: the QUIC connection, already accepted by the server.
    :param max_offer_size: the longest offer accepted, in bytes.
    """

    alpn_protocol = ALPN_QSSE1

    def __init__(self, quic: QuicConnection, *, max_offer_size: int) -> None:
        super().__init__(quic)
        self._max_offer_size = max_offer_size
        self._offer_stream: int | None = None
        self._offer_buf = bytearray()
        self._offered = False
        self._stream_id: int | None = None

    @property
    def offered(self) -> bool:
        """Whether the offer has arrived."""
        return self._offered

    @property
    def stream_id(self) -> int | None:
        """The server-initiated stream that carries every event, once accepted."""
        return self._stream_id

    @property
    def backlog(self) -> int:
        """Bytes queued for this subscriber and not yet acknowledged."""
        if self._stream_id is None:
            return 0
        return send_backlog(self._quic, self._stream_id)

    def _handle(self, event: QuicEvent) -> list[QsseEvent]:
        if isinstance(event, StreamDataReceived):
            return self._stream_data(event)
        if (
            isinstance(event, StreamReset)
            and event.stream_id == self._offer_stream
            and not self._offered
        ):
            return self._violation(ErrorCode.MALFORMED_OFFER, "offer stream was reset")
        if isinstance(event, HandshakeCompleted):
            return [HandshakeDone(alpn_protocol=event.alpn_protocol or "")]
        return []

    def _stream_data(self, event: StreamDataReceived) -> list[QsseEvent]:
        sid = event.stream_id
        if not (_client_initiated(sid) and _unidirectional(sid)):
            return self._violation(
                ErrorCode.UNEXPECTED_STREAM,
                f"unexpected data on stream {sid}: qsse/1 clients only send one "
                "unidirectional offer stream",
            )
        if self._offer_stream is None:
            self._offer_stream = sid
        elif sid != self._offer_stream:
            return self._violation(
                ErrorCode.UNEXPECTED_STREAM,
                f"unexpected second unidirectional stream {sid}",
            )
        if self._offered:
            return []  # Go reads up to the newline and ignores the rest
        newline = event.data.find(b"\n")
        chunk = event.data if newline < 0 else event.data[:newline]
        if len(self._offer_buf) + len(chunk) > self._max_offer_size:
            return self._violation(
                ErrorCode.OFFER_TOO_LARGE,
                f"offer exceeds the limit of {self._max_offer_size} bytes",
            )
        self._offer_buf += chunk
        if newline < 0:
            if event.end_stream:
                return self._violation(ErrorCode.MALFORMED_OFFER, "offer ended without a newline")
            return []
        self._offered = True
        line = bytes(self._offer_buf)
        self._offer_buf = bytearray()
        try:
            offer = decode_offer(line)
        except RemoteProtocolError as exc:
            return self._violation(exc.error_code, exc.reason)
        return [OfferReceived(token=offer.token, topics=tuple(offer.topics))]

    def _violation(self, code: int, reason: str) -> list[QsseEvent]:
        self.close(code, reason)
        return [ProtocolViolation(error_code=code, reason=reason)]

    def accept(self, errors: Iterable[tuple[int, dict[str, Any]]] = ()) -> None:
        """Open the event stream and send an error event for each refused topic.

        :param errors: ``(code, data)`` pairs, in the order of the offer's topics.
        """
        if not self._offered or self._stream_id is not None:
            raise LocalProtocolError("accept() needs a received offer and may be called once")
        self._stream_id = self._quic.get_next_available_stream_id(is_unidirectional=True)
        frames = b"".join(encode_error(code, data) for code, data in errors)
        # Opening the stream with no data sends nothing; Go servers also stay silent until
        # the first event, so Go clients see the same behaviour.
        write(self._quic, self._stream_id, frames)

    def reject(self) -> None:
        """Refuse the client's token: Go closes with code 1 and this reason phrase."""
        self.close(ErrorCode.NOT_AUTHORIZED, "not authorized")

    def send(self, frames: bytes) -> bool:
        """Queue encoded frames on the event stream; False if it can no longer be written."""
        if self._stream_id is None:
            raise LocalProtocolError("send() before accept()")
        return not self._closed and write(self._quic, self._stream_id, frames)


class QsseClientConnection(_Connection):
    """The client side of one qsse/1 connection.

    It sends the offer as soon as the handshake completes, then turns every line the server
    sends into events. A frame it cannot use becomes :class:`FrameDropped` and the connection
    goes on, so one bad frame never costs the events after it.

    :param quic: the QUIC connection, before ``connect()``.
    :param token: the token to present.
    :param topics: the topics to subscribe to.
    :param max_frame_size: the longest frame accepted, in bytes.
    """

    alpn_protocol = ALPN_QSSE1

    def __init__(
        self,
        quic: QuicConnection,
        *,
        token: str,
        topics: Sequence[str],
        max_frame_size: int,
    ) -> None:
        super().__init__(quic)
        self._token = token
        self._topics = list(topics)
        self._max_frame_size = max_frame_size
        self._buffers: dict[int, LineBuffer] = {}

    def _handle(self, event: QuicEvent) -> list[QsseEvent]:
        if isinstance(event, HandshakeCompleted):
            sid = self._quic.get_next_available_stream_id(is_unidirectional=True)
            self._quic.send_stream_data(
                sid, encode_offer(self._token, self._topics), end_stream=True
            )
            return [HandshakeDone(alpn_protocol=event.alpn_protocol or "")]
        if isinstance(event, StreamDataReceived):
            return self._stream_data(event)
        return []

    def _stream_data(self, event: StreamDataReceived) -> list[QsseEvent]:
        sid = event.stream_id
        if _client_initiated(sid) or not _unidirectional(sid):
            # Not ours to read; ask the server to stop instead of buffering it.
            self._quic.stop_stream(sid, ErrorCode.UNEXPECTED_STREAM)
            return [
                FrameDropped(
                    code=ErrorCode.UNEXPECTED_STREAM,
                    reason=f"unexpected data on stream {sid}",
                )
            ]
        buf = self._buffers.get(sid)
        if buf is None:
            buf = self._buffers[sid] = LineBuffer(self._max_frame_size)
        lines, dropped = buf.feed(event.data)
        out: list[QsseEvent] = []
        for line in lines:
            try:
                out.append(decode_frame(line))
            except RemoteProtocolError as exc:
                out.append(FrameDropped(code=exc.error_code, reason=exc.reason, raw=line[:200]))
        for _ in range(dropped):
            out.append(
                FrameDropped(
                    code=ErrorCode.FRAME_TOO_LARGE,
                    reason=f"frame exceeds the limit of {self._max_frame_size} bytes",
                )
            )
        if event.end_stream:
            if buf.pending:
                out.append(
                    FrameDropped(
                        code=ErrorCode.MALFORMED_FRAME,
                        reason="stream ended inside a frame (no newline)",
                    )
                )
            del self._buffers[sid]
        return out
