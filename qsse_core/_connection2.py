"""qsse/2 connections as sans-I/O state machines over an aioquic ``QuicConnection``.

Streams: the client's first bidirectional stream is the control stream (HELLO, SUBSCRIBE,
UNSUBSCRIBE and their answers); the server opens one unidirectional stream per subscription,
so a large or lost packet on one topic never holds back another. See docs/protocol.md.
"""

from __future__ import annotations

from ._codes import ErrorCode
from ._connection import _client_initiated, _Connection, _unidirectional
from ._exceptions import LocalProtocolError, RemoteProtocolError
from ._framing2 import (
    ALPN_QSSE2,
    FrameReader,
    FrameType,
    GapFrame,
    Hello,
    StreamHeader,
    Subscribe,
    SubscribeResult,
    SubscribeStatus,
    Unsubscribe,
    UnsubscribeResult,
    Welcome,
    decode_control,
    decode_event,
    encode_control,
)
from ._quic import (
    HandshakeCompleted,
    QuicConnection,
    QuicEvent,
    StreamDataReceived,
    StreamReset,
    unidirectional_stream_credit,
    write,
)
from .events import (
    EventReceived,
    FrameDropped,
    GapReceived,
    HandshakeDone,
    HelloReceived,
    ProtocolViolation,
    QsseEvent,
    SubscribeRequested,
    SubscriptionAnswered,
    SubscriptionStarted,
    UnsubscribeRequested,
    UnsubscriptionAnswered,
    Welcomed,
)

__all__ = ["SUBSCRIPTION_STREAMS", "Qsse2ClientConnection", "Qsse2ServerConnection"]

#: Subscription streams a qsse client lets a server keep open at once (its QUIC
#: initial_max_streams_uni; one more is granted as each ends): the server's default
#: ``Limits.max_subscriptions`` with room to spare.
SUBSCRIPTION_STREAMS = 1024

_CLIENT_FRAMES = frozenset({FrameType.HELLO, FrameType.SUBSCRIBE, FrameType.UNSUBSCRIBE})
_SERVER_FRAMES = frozenset(
    {
        FrameType.WELCOME,
        FrameType.SUBSCRIBE_RESULT,
        FrameType.UNSUBSCRIBE_RESULT,
        FrameType.STREAM_HEADER,
        FrameType.EVENT,
        FrameType.GAP,
    }
)


class Qsse2ServerConnection(_Connection):
    """The server side of one qsse/2 connection.

    Inputs: :meth:`handle_event` with each QUIC event; :meth:`accept` or :meth:`reject` once
    the HELLO token is judged; :meth:`answer_subscribe` / :meth:`answer_unsubscribe` for each
    request; :meth:`send` with encoded frames for a subscription stream.

    :param quic: the QUIC connection, already accepted by the server.
    :param max_frame_size: the largest control frame accepted from the client, in bytes.
    """

    alpn_protocol = ALPN_QSSE2

    def __init__(self, quic: QuicConnection, *, max_frame_size: int) -> None:
        super().__init__(quic)
        self._reader = FrameReader(max_frame_size)
        self._control: int | None = None
        self._hello = False

    @property
    def offered(self) -> bool:
        """Whether HELLO has arrived (the offer timeout stops here)."""
        return self._hello

    @property
    def stream_credit(self) -> int:
        """Subscription streams the client lets us open now (its QUIC MAX_STREAMS)."""
        return unidirectional_stream_credit(self._quic)

    def _handle(self, event: QuicEvent) -> list[QsseEvent]:
        if isinstance(event, StreamDataReceived):
            return self._stream_data(event)
        if isinstance(event, StreamReset) and event.stream_id == self._control:
            return self._violation(ErrorCode.UNEXPECTED_STREAM, "control stream was reset")
        if isinstance(event, HandshakeCompleted):
            return [HandshakeDone(alpn_protocol=event.alpn_protocol or "")]
        return []

    def _stream_data(self, event: StreamDataReceived) -> list[QsseEvent]:
        sid = event.stream_id
        if not _client_initiated(sid) or _unidirectional(sid):
            return self._violation(
                ErrorCode.UNEXPECTED_STREAM,
                f"unexpected data on stream {sid}: qsse/2 clients only use one bidirectional "
                "control stream",
            )
        if self._control is None:
            self._control = sid
        elif sid != self._control:
            return self._violation(
                ErrorCode.UNEXPECTED_STREAM, f"unexpected second bidirectional stream {sid}"
            )
        out: list[QsseEvent] = []
        for frame_type, payload, length in self._reader.feed(event.data):
            if payload is None:
                return out + self._violation(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"control frame of {length} bytes exceeds the limit of "
                    f"{self._reader.max_frame_size} bytes",
                )
            try:
                produced = self._control_frame(frame_type, payload)
            except RemoteProtocolError as exc:
                return out + self._violation(exc.error_code, exc.reason)
            if produced is not None:
                out.append(produced)
        if event.end_stream:
            out += self._violation(ErrorCode.UNEXPECTED_STREAM, "control stream was closed")
        return out

    def _control_frame(self, frame_type: int, payload: bytes) -> QsseEvent | None:
        if frame_type not in _CLIENT_FRAMES:
            if frame_type in _SERVER_FRAMES:
                raise RemoteProtocolError(
                    f"{FrameType(frame_type).name} frames only go from server to client",
                    ErrorCode.MALFORMED_FRAME,
                )
            return None  # unknown frame types are ignored, so the protocol can grow
        message = decode_control(frame_type, payload)
        if isinstance(message, Hello):
            if self._hello:
                raise RemoteProtocolError("second HELLO frame", ErrorCode.MALFORMED_FRAME)
            self._hello = True
            return HelloReceived(token=message.token)
        if not self._hello:
            raise RemoteProtocolError(
                f"{FrameType(frame_type).name} before HELLO", ErrorCode.MALFORMED_FRAME
            )
        if isinstance(message, Subscribe):
            return SubscribeRequested(
                request_id=message.request_id,
                topic=message.topic,
                last_id=message.last_id,
                epoch=message.epoch,
            )
        assert isinstance(message, Unsubscribe)
        return UnsubscribeRequested(
            request_id=message.request_id, subscription_id=message.subscription_id
        )

    def _violation(self, code: int, reason: str) -> list[QsseEvent]:
        self.close(code, reason)
        return [ProtocolViolation(error_code=code, reason=reason)]

    def _send_control(self, data: bytes) -> None:
        if self._control is None:
            raise LocalProtocolError("no control stream yet")
        if not self._closed:
            write(self._quic, self._control, data)

    def accept(self, epoch: int, max_frame_size: int) -> None:
        """Accept the HELLO token."""
        self._send_control(encode_control(Welcome(epoch=epoch, max_frame_size=max_frame_size)))

    def reject(self) -> None:
        """Refuse the token, as qsse/1 does: close with NOT_AUTHORIZED."""
        self.close(ErrorCode.NOT_AUTHORIZED, "not authorized")

    def answer_subscribe(
        self,
        request_id: int,
        status: SubscribeStatus,
        topic: str,
        *,
        subscription_id: int = 0,
        position: int = 0,
        epoch: int = 0,
        reason: str = "",
    ) -> int | None:
        """Answer a SUBSCRIBE; on success open and return the subscription's stream.

        :raises LocalProtocolError: for ``OK`` when the client allows no more streams
            (:attr:`stream_credit`): answer ``LIMIT_REACHED`` instead.
        """
        stream_id = None
        if status == SubscribeStatus.OK:
            if self.stream_credit <= 0:
                raise LocalProtocolError("the client allows no more subscription streams")
            stream_id = self._quic.get_next_available_stream_id(is_unidirectional=True)
            write(
                self._quic,
                stream_id,
                encode_control(
                    StreamHeader(subscription_id=subscription_id, topic=topic, epoch=epoch)
                ),
            )
        self._send_control(
            encode_control(
                SubscribeResult(
                    request_id=request_id,
                    status=status,
                    topic=topic,
                    subscription_id=subscription_id,
                    position=position,
                    reason=reason,
                )
            )
        )
        return stream_id

    def answer_unsubscribe(
        self,
        request_id: int,
        subscription_id: int,
        status: SubscribeStatus,
        stream_id: int | None,
        tail: bytes = b"",
    ) -> None:
        """Answer an UNSUBSCRIBE; end the subscription's stream after ``tail``."""
        if stream_id is not None and not self._closed:
            write(self._quic, stream_id, tail, end_stream=True)
        self._send_control(
            encode_control(
                UnsubscribeResult(
                    request_id=request_id, subscription_id=subscription_id, status=status
                )
            )
        )

    def send(self, stream_id: int, frames: bytes) -> bool:
        """Queue encoded frames on a subscription stream; False if it cannot be written."""
        return not self._closed and write(self._quic, stream_id, frames)


class _Incoming:
    __slots__ = ("reader", "subscription_id", "topic")

    def __init__(self, max_frame_size: int) -> None:
        self.reader = FrameReader(max_frame_size)
        self.subscription_id: int | None = None
        self.topic = ""


class Qsse2ClientConnection(_Connection):
    """The client side of one qsse/2 connection.

    It sends HELLO when the handshake completes; :meth:`subscribe` and :meth:`unsubscribe`
    may be called at any time after. A frame it cannot use becomes :class:`FrameDropped` and
    the connection goes on.

    :param quic: the QUIC connection.
    :param token: the token to present.
    :param max_frame_size: the largest frame accepted, in bytes.
    """

    alpn_protocol = ALPN_QSSE2

    def __init__(self, quic: QuicConnection, *, token: str, max_frame_size: int) -> None:
        super().__init__(quic)
        self._token = token
        self._max_frame_size = max_frame_size
        self._control: int | None = None
        self._control_reader = FrameReader(max_frame_size)
        self._incoming: dict[int, _Incoming] = {}
        self._next_request = 0

    def _handle(self, event: QuicEvent) -> list[QsseEvent]:
        if isinstance(event, HandshakeCompleted):
            self._control = self._quic.get_next_available_stream_id(is_unidirectional=False)
            self._quic.send_stream_data(self._control, encode_control(Hello(token=self._token)))
            return [HandshakeDone(alpn_protocol=event.alpn_protocol or "")]
        if isinstance(event, StreamDataReceived):
            if event.stream_id == self._control:
                return self._control_data(event)
            return self._stream_data(event)
        return []

    def _dropped(self, code: int, reason: str, raw: bytes = b"") -> FrameDropped:
        return FrameDropped(code=code, reason=reason, raw=raw[:200])

    def _too_large(self, size: int) -> FrameDropped:
        return self._dropped(
            ErrorCode.FRAME_TOO_LARGE,
            f"frame of {size} bytes exceeds the limit of {self._max_frame_size} bytes",
        )

    def _control_data(self, event: StreamDataReceived) -> list[QsseEvent]:
        out: list[QsseEvent] = []
        for frame_type, payload, length in self._control_reader.feed(event.data):
            if payload is None:
                out.append(self._too_large(length))
                continue
            if frame_type not in (
                FrameType.WELCOME,
                FrameType.SUBSCRIBE_RESULT,
                FrameType.UNSUBSCRIBE_RESULT,
            ):
                if frame_type in _CLIENT_FRAMES or frame_type in _SERVER_FRAMES:
                    out.append(
                        self._dropped(
                            ErrorCode.MALFORMED_FRAME,
                            f"{FrameType(frame_type).name} frame on the control stream",
                        )
                    )
                continue
            try:
                message = decode_control(frame_type, payload)
            except RemoteProtocolError as exc:
                out.append(self._dropped(exc.error_code, exc.reason, payload))
                continue
            if isinstance(message, Welcome):
                out.append(Welcomed(epoch=message.epoch))
            elif isinstance(message, SubscribeResult):
                out.append(
                    SubscriptionAnswered(
                        request_id=message.request_id,
                        status=message.status,
                        topic=message.topic,
                        subscription_id=message.subscription_id,
                        position=message.position,
                        reason=message.reason,
                    )
                )
            elif isinstance(message, UnsubscribeResult):
                out.append(
                    UnsubscriptionAnswered(
                        request_id=message.request_id,
                        subscription_id=message.subscription_id,
                        status=message.status,
                    )
                )
        return out

    def _stream_data(self, event: StreamDataReceived) -> list[QsseEvent]:
        sid = event.stream_id
        if _client_initiated(sid) or not _unidirectional(sid):
            self._quic.stop_stream(sid, ErrorCode.UNEXPECTED_STREAM)
            return [self._dropped(ErrorCode.UNEXPECTED_STREAM, f"unexpected data on stream {sid}")]
        incoming = self._incoming.get(sid)
        if incoming is None:
            incoming = self._incoming[sid] = _Incoming(self._max_frame_size)
        out: list[QsseEvent] = []
        for frame_type, payload, length in incoming.reader.feed(event.data):
            if payload is None:
                out.append(self._too_large(length))
                continue
            try:
                produced = self._subscription_frame(incoming, frame_type, payload)
            except RemoteProtocolError as exc:
                out.append(self._dropped(exc.error_code, exc.reason, payload))
                continue
            if produced is not None:
                out.append(produced)
        if event.end_stream:
            if incoming.reader.pending:
                out.append(self._dropped(ErrorCode.MALFORMED_FRAME, "stream ended inside a frame"))
            del self._incoming[sid]
        return out

    def _subscription_frame(
        self, incoming: _Incoming, frame_type: int, payload: bytes
    ) -> QsseEvent | None:
        if frame_type == FrameType.STREAM_HEADER:
            header = decode_control(frame_type, payload)
            assert isinstance(header, StreamHeader)
            incoming.subscription_id = header.subscription_id
            incoming.topic = header.topic
            return SubscriptionStarted(
                subscription_id=header.subscription_id, topic=header.topic, epoch=header.epoch
            )
        if frame_type not in (FrameType.EVENT, FrameType.GAP):
            if frame_type in _CLIENT_FRAMES or frame_type in _SERVER_FRAMES:
                raise RemoteProtocolError(
                    f"{FrameType(frame_type).name} frame on a subscription stream",
                    ErrorCode.MALFORMED_FRAME,
                )
            return None
        if incoming.subscription_id is None:
            raise RemoteProtocolError(
                f"{FrameType(frame_type).name} frame before STREAM_HEADER",
                ErrorCode.MALFORMED_FRAME,
            )
        if frame_type == FrameType.EVENT:
            frame = decode_event(payload)
            return EventReceived(
                topic=frame.topic,
                data=frame.data,
                id=frame.id,
                content_type=frame.content_type,
                subscription_id=incoming.subscription_id,
            )
        gap = decode_control(frame_type, payload)
        assert isinstance(gap, GapFrame)
        return GapReceived(
            subscription_id=incoming.subscription_id,
            topic=gap.topic,
            first_id=gap.first_id,
            last_id=gap.last_id,
            reason=gap.reason,
        )

    def _request_id(self) -> int:
        self._next_request += 1
        return self._next_request

    def subscribe(self, topic: str, last_id: int | None = None, epoch: int | None = None) -> int:
        """Ask for a subscription; returns the request id its answer will carry."""
        if self._control is None:
            raise LocalProtocolError("subscribe() before the handshake completed")
        request_id = self._request_id()
        frame = Subscribe(request_id=request_id, topic=topic, last_id=last_id, epoch=epoch)
        if self._closed or not write(self._quic, self._control, encode_control(frame)):
            raise LocalProtocolError("subscribe() on a closed connection")
        return request_id

    def unsubscribe(self, subscription_id: int) -> int:
        """End a subscription; returns the request id its answer will carry."""
        if self._control is None:
            raise LocalProtocolError("unsubscribe() before the handshake completed")
        request_id = self._request_id()
        frame = Unsubscribe(request_id=request_id, subscription_id=subscription_id)
        if self._closed or not write(self._quic, self._control, encode_control(frame)):
            raise LocalProtocolError("unsubscribe() on a closed connection")
        return request_id
