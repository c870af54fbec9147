"""qsse/1 framing: Go qsse's wire format, encoded and parsed with no I/O.

Offer (client to server, one unidirectional stream, then FIN)::

    {"token":"secret","topics":["a","b.*"]}\\n

Event (server to client, one unidirectional stream; ``data`` is standard base64, padded, as
Go's encoding/json writes a ``[]byte``)::

    {"topic":"a","data":"aGk="}\\n

An error is an event on the topic ``error`` whose data is the JSON ``{"code":2,"data":{...}}``.
Both sides omit keys whose value is empty, as Go's ``omitempty`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ._codes import ErrorCode
from ._depth import MAX_DEPTH, json_depth_exceeds
from ._exceptions import LocalProtocolError, RemoteProtocolError
from .events import ErrorReceived, EventReceived

__all__ = [
    "ALPN_QSSE1",
    "ERROR_TOPIC",
    "LineBuffer",
    "Offer",
    "decode_frame",
    "decode_offer",
    "encode_error",
    "encode_event",
    "encode_offer",
]

ALPN_QSSE1 = "PROTOCOL_QUIC"
ERROR_TOPIC = "error"


class Offer(msgspec.Struct, omit_defaults=True):
    """A subscription request: the client's token and the topics it asks for."""

    token: str = ""
    topics: list[str] = []


class _Event(msgspec.Struct, omit_defaults=True):
    topic: str = ""
    data: bytes = b""


class _Error(msgspec.Struct):
    code: int
    data: dict[str, Any] = {}


_encoder = msgspec.json.Encoder()
_offer_decoder = msgspec.json.Decoder(Offer)
_event_decoder = msgspec.json.Decoder(_Event)
_error_decoder = msgspec.json.Decoder(_Error)


def encode_offer(token: str, topics: list[str]) -> bytes:
    """The offer line, newline included.

    :raises LocalProtocolError: if a string cannot be encoded as UTF-8 (lone surrogates).
    """
    try:
        return _encoder.encode(Offer(token=token, topics=topics)) + b"\n"
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"offer is not valid UTF-8: {exc}") from exc


def decode_offer(line: bytes) -> Offer:
    """Parse an offer line (without its newline).

    :raises RemoteProtocolError: with code MALFORMED_OFFER, naming what is wrong (also for
        JSON nested deeper than ``MAX_DEPTH``).
    """
    _check_depth(line, "offer", ErrorCode.MALFORMED_OFFER)
    try:
        return _offer_decoder.decode(line)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise RemoteProtocolError(f"malformed offer: {exc}", ErrorCode.MALFORMED_OFFER) from exc


def _check_depth(text: bytes, what: str, code: ErrorCode) -> None:
    # msgspec recurses per level: bound the depth before it can exhaust the stack.
    if json_depth_exceeds(text):
        raise RemoteProtocolError(
            f"malformed {what}: JSON nested deeper than {MAX_DEPTH} levels", code
        )


def encode_event(topic: str, data: bytes) -> bytes:
    """One event line, newline included; encoded once however many subscribers get it."""
    buf = bytearray()
    try:
        _encoder.encode_into(_Event(topic=topic, data=data), buf)
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"topic {topic!r} is not valid UTF-8: {exc}") from exc
    buf += b"\n"
    return bytes(buf)


def encode_error(code: int, data: Mapping[str, Any]) -> bytes:
    """An error event line: Go nests the error's JSON as the base64 data of topic ``error``."""
    return encode_event(ERROR_TOPIC, _encoder.encode(_Error(code=code, data=dict(data))))


def decode_frame(line: bytes) -> EventReceived | ErrorReceived:
    """Parse one line from the server's stream (without its newline).

    :raises RemoteProtocolError: with code MALFORMED_FRAME, naming what is wrong (also for
        JSON nested deeper than ``MAX_DEPTH``).
    """
    _check_depth(line, "event", ErrorCode.MALFORMED_FRAME)
    try:
        event = _event_decoder.decode(line)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise RemoteProtocolError(f"malformed event: {exc}", ErrorCode.MALFORMED_FRAME) from exc
    if event.topic != ERROR_TOPIC:
        return EventReceived(topic=event.topic, data=event.data)
    _check_depth(event.data, "error event", ErrorCode.MALFORMED_FRAME)
    try:
        error = _error_decoder.decode(event.data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise RemoteProtocolError(
            f"malformed error event: {exc}", ErrorCode.MALFORMED_FRAME
        ) from exc
    return ErrorReceived(code=error.code, data=error.data)


class LineBuffer:
    """Splits a byte stream into ``\\n``-terminated lines of bounded length.

    A line longer than ``max_line`` is reported once and then skipped up to its newline, so
    one oversized frame costs neither unbounded memory nor the frames after it.

    :param max_line: the longest line accepted, newline excluded.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a line."""
        return len(self._buf)

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Add ``data``; return the complete lines and how many oversized lines were dropped."""
        lines: list[bytes] = []
        dropped = 0
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            elif len(self._buf) + end - start > self.max_line:
                self._buf.clear()
                dropped += 1
            elif self._buf:
                self._buf += data[start:end]
                lines.append(bytes(self._buf))
                self._buf.clear()
            else:
                lines.append(data[start:end])
            start = end + 1
        if not self._skipping and start < len(data):
            self._buf += data[start:]
            if len(self._buf) > self.max_line:
                self._buf.clear()
                self._skipping = True
                dropped += 1
        return lines, dropped
