"""qsse/2 framing: binary, length-prefixed frames, encoded and parsed with no I/O.

Every frame is ``type (varint) | length (varint) | payload``, with QUIC's variable-length
integers (RFC 9000 section 16). EVENT payloads are binary so that an event costs no base64 and
is encoded once for every subscriber; control payloads are MessagePack maps, so fields can be
added without breaking older peers (unknown keys are ignored, as are unknown frame types).
See docs/protocol.md.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated

import msgspec

from ._codes import ErrorCode
from ._depth import MAX_DEPTH, msgpack_depth_exceeds
from ._exceptions import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ALPN_QSSE2",
    "MAX_EPOCH",
    "MAX_WIRE_INT",
    "ContentType",
    "EventFrame",
    "FrameReader",
    "FrameType",
    "GapFrame",
    "Hello",
    "StreamHeader",
    "Subscribe",
    "SubscribeResult",
    "SubscribeStatus",
    "Unsubscribe",
    "UnsubscribeResult",
    "Welcome",
    "decode_control",
    "decode_event",
    "decode_varint",
    "encode_control",
    "encode_event_frame",
    "encode_frame",
    "encode_varint",
]

ALPN_QSSE2 = "qsse/2"


class FrameType(IntEnum):
    HELLO = 0x01
    SUBSCRIBE = 0x02
    UNSUBSCRIBE = 0x03
    WELCOME = 0x11
    SUBSCRIBE_RESULT = 0x12
    UNSUBSCRIBE_RESULT = 0x13
    STREAM_HEADER = 0x21
    EVENT = 0x22
    GAP = 0x23


class ContentType(IntEnum):
    """The payload encoding an event declares."""

    OCTET_STREAM = 0
    JSON = 1
    MSGPACK = 2


class SubscribeStatus(IntEnum):
    OK = 0
    NOT_AUTHORIZED = 1
    NOT_AVAILABLE = 2
    LIMIT_REACHED = 3
    NOT_SUBSCRIBED = 4


# -- control messages --------------------------------------------------------------------------

#: The largest id, count or status a frame may carry: the largest QUIC varint (RFC 9000
#: section 16), which an EVENT frame's id must fit. Checked when a frame is decoded, so
#: ``last_id + 1`` and the like can always be encoded again.
MAX_WIRE_INT = (1 << 62) - 1
#: The largest epoch: a MessagePack int64 (epochs are only ever sent in MessagePack maps).
MAX_EPOCH = (1 << 63) - 1
_Int = Annotated[int, msgspec.Meta(ge=0, le=MAX_WIRE_INT)]
_Epoch = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH)]


class Hello(msgspec.Struct, omit_defaults=True):
    """Client, first frame on the control stream: who it is."""

    token: str = ""


class Subscribe(msgspec.Struct, omit_defaults=True):
    """Client: subscribe to ``topic``; with ``last_id``, first replay what came after it."""

    request_id: _Int
    topic: str
    last_id: _Int | None = None
    epoch: _Epoch | None = None


class Unsubscribe(msgspec.Struct, omit_defaults=True):
    request_id: _Int
    subscription_id: _Int


class Welcome(msgspec.Struct, omit_defaults=True):
    """Server: the token was accepted. ``epoch`` names the event-id sequence in use."""

    epoch: _Epoch
    max_frame_size: _Int


class SubscribeResult(msgspec.Struct, omit_defaults=True):
    request_id: _Int
    status: _Int
    topic: str
    subscription_id: _Int = 0
    #: the last event id at subscription time; live events follow it.
    position: _Int = 0
    reason: str = ""


class UnsubscribeResult(msgspec.Struct, omit_defaults=True):
    request_id: _Int
    subscription_id: _Int
    status: _Int


class StreamHeader(msgspec.Struct, omit_defaults=True):
    """Server, first frame of each subscription stream."""

    subscription_id: _Int
    topic: str
    #: the epoch of the ids on this stream (it may arrive before WELCOME).
    epoch: _Epoch = 0


class GapFrame(msgspec.Struct, omit_defaults=True):
    """Server, on a subscription stream: events of ``topic`` with ids from ``first_id`` to
    ``last_id`` (None: unknown) are lost to this subscriber."""

    topic: str
    first_id: _Int
    last_id: _Int | None = None
    reason: str = ""


Control = Hello | Subscribe | Unsubscribe | Welcome | SubscribeResult | UnsubscribeResult
_CONTROL_TYPES: dict[int, type[msgspec.Struct]] = {
    FrameType.HELLO: Hello,
    FrameType.SUBSCRIBE: Subscribe,
    FrameType.UNSUBSCRIBE: Unsubscribe,
    FrameType.WELCOME: Welcome,
    FrameType.SUBSCRIBE_RESULT: SubscribeResult,
    FrameType.UNSUBSCRIBE_RESULT: UnsubscribeResult,
    FrameType.STREAM_HEADER: StreamHeader,
    FrameType.GAP: GapFrame,
}
_FRAME_TYPES = {cls: t for t, cls in _CONTROL_TYPES.items()}
_DECODERS = {t: msgspec.msgpack.Decoder(cls) for t, cls in _CONTROL_TYPES.items()}
_encoder = msgspec.msgpack.Encoder()


# -- varints (RFC 9000 section 16) ------------------------------------------------------------

_VARINT_MAX = (1 << 62) - 1


def encode_varint(value: int) -> bytes:
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    if value <= _VARINT_MAX:
        return (value | 0xC000000000000000).to_bytes(8, "big")
    raise LocalProtocolError(f"{value} does not fit a QUIC varint (max {_VARINT_MAX})")


def decode_varint(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """The varint at ``pos`` and the position after it, or None if ``data`` ends first."""
    if pos >= len(data):
        return None
    first = data[pos]
    size = 1 << (first >> 6)
    if pos + size > len(data):
        return None
    value = first & 0x3F
    for i in range(pos + 1, pos + size):
        value = (value << 8) | data[i]
    return value, pos + size


# -- frames ------------------------------------------------------------------------------------


def encode_frame(frame_type: int, payload: bytes) -> bytes:
    return encode_varint(frame_type) + encode_varint(len(payload)) + payload


def encode_control(message: Control | StreamHeader | GapFrame) -> bytes:
    """A control, stream-header or gap frame."""
    try:
        payload = _encoder.encode(message)
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"frame holds a string that is not valid UTF-8: {exc}") from exc
    return encode_frame(_FRAME_TYPES[type(message)], payload)


def decode_control(frame_type: int, payload: bytes) -> msgspec.Struct:
    """Parse a non-EVENT frame's payload.

    Integers are checked against ``MAX_WIRE_INT`` / ``MAX_EPOCH`` and nesting against
    ``MAX_DEPTH`` here, before any state can depend on them.

    :raises RemoteProtocolError: naming the frame and what is wrong with it.
    """
    name = FrameType(frame_type).name
    if msgpack_depth_exceeds(payload):
        raise RemoteProtocolError(
            f"malformed {name} frame: nested deeper than {MAX_DEPTH} levels",
            ErrorCode.MALFORMED_FRAME,
        )
    try:
        return _DECODERS[frame_type].decode(payload)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise RemoteProtocolError(
            f"malformed {name} frame: {exc}", ErrorCode.MALFORMED_FRAME
        ) from exc


class EventFrame(msgspec.Struct, frozen=True):
    id: int
    content_type: int
    topic: str
    data: bytes


_EVENT_TYPE = encode_varint(FrameType.EVENT)
# (content type, topic) -> ``content type | topic length | topic``: the same for every event.
_event_tails: dict[tuple[int, str], bytes] = {}


def encode_event_frame(event_id: int, content_type: int, topic: str, data: bytes) -> bytes:
    """An EVENT frame: ``id | content type | topic length | topic | data``."""
    tail = _event_tails.get((content_type, topic))
    if tail is None:
        try:
            topic_bytes = topic.encode()
        except UnicodeEncodeError as exc:
            raise LocalProtocolError(f"topic {topic!r} is not valid UTF-8: {exc}") from exc
        tail = encode_varint(content_type) + encode_varint(len(topic_bytes)) + topic_bytes
        if len(_event_tails) >= 4096:
            _event_tails.clear()  # concrete topics carry ids: keep memory flat
        _event_tails[(content_type, topic)] = tail
    head = encode_varint(event_id)
    size = len(head) + len(tail) + len(data)
    return b"".join((_EVENT_TYPE, encode_varint(size), head, tail, data))


def decode_event(payload: bytes) -> EventFrame:
    """Parse an EVENT payload.

    :raises RemoteProtocolError: naming what is wrong.
    """
    pos = 0
    fields = []
    for name in ("id", "content type", "topic length"):
        got = decode_varint(payload, pos)
        if got is None:
            raise RemoteProtocolError(
                f"malformed EVENT frame: payload ends inside the {name}", ErrorCode.MALFORMED_FRAME
            )
        value, pos = got
        fields.append(value)
    event_id, content_type, topic_len = fields
    if pos + topic_len > len(payload):
        raise RemoteProtocolError(
            f"malformed EVENT frame: topic length {topic_len} exceeds the payload",
            ErrorCode.MALFORMED_FRAME,
        )
    try:
        topic = payload[pos : pos + topic_len].decode()
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(
            f"malformed EVENT frame: topic is not UTF-8: {exc}", ErrorCode.MALFORMED_FRAME
        ) from exc
    return EventFrame(event_id, content_type, topic, payload[pos + topic_len :])


class FrameReader:
    """Splits a byte stream into ``(type, payload)`` frames of bounded size.

    A frame larger than ``max_frame_size`` is skipped by its length and reported, so it costs
    neither memory nor the frames after it.
    """

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._skip = 0

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a frame (or are still to be skipped)."""
        return len(self._buf) + self._skip

    def feed(self, data: bytes) -> list[tuple[int, bytes | None, int]]:
        """Add ``data``; return ``(type, payload, length)`` for each complete frame, in order.

        ``payload`` is None for a frame skipped as larger than ``max_frame_size``.
        """
        if self._skip:
            taken = min(self._skip, len(data))
            self._skip -= taken
            data = data[taken:]
        self._buf += data
        frames: list[tuple[int, bytes | None, int]] = []
        buf = self._buf
        pos = 0
        while True:
            got = decode_varint(buf, pos)
            if got is None:
                break
            frame_type, after_type = got
            got = decode_varint(buf, after_type)
            if got is None:
                break
            length, start = got
            if length > self.max_frame_size:
                frames.append((frame_type, None, length))
                available = len(buf) - start
                if available >= length:
                    pos = start + length
                    continue
                self._skip = length - available
                pos = len(buf)
                break
            if start + length > len(buf):
                break
            frames.append((frame_type, bytes(buf[start : start + length]), length))
            pos = start + length
        del buf[:pos]
        return frames
