"""qsse/1 framing: Go qsse's wire format, encoded and parsed with no I/O.

Offer (client to server, one unidirectional stream, then FIN)::

    {"token":"secret","topics":["a","b.*"]}\\n

Event (server to client, one unidirectional stream; ``data`` is standard base64, padded, as
Go's encoding/json writes a ``[]byte``)::

    {"topic":"a","data":"aGk="}\\n

An error is an event on the topic ``error`` whose data is the JSON ``{"code":2,"data":{...}}``.
Both sides omit keys whose value is empty, as Go's ``omitempty`` does.

Byte-level parity with Go's ``encoding/json``: offers are read as Go reads them (keys matched
case-insensitively, the last match winning; ``null`` leaves a field empty; unknown keys
ignored), and strings are written as Go writes them (``<``, ``>``, ``&``, U+2028 and U+2029
escaped as ``\\u003c`` and so on).
"""

from __future__ import annotations

import re
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
# Offer keys stay undecoded until matched, so unknown keys cost no parsing (nor recursion).
_offer_keys_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw] | None)
_offer_field_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    "token": msgspec.json.Decoder(str | None),
    "topics": msgspec.json.Decoder(list[str | None] | None),
}
_event_decoder = msgspec.json.Decoder(_Event)
_error_decoder = msgspec.json.Decoder(_Error)


def encode_offer(token: str, topics: list[str]) -> bytes:
    """The offer line, newline included.

    :raises LocalProtocolError: if a string cannot be encoded as UTF-8 (lone surrogates).
    """
    try:
        encoded = _encoder.encode(Offer(token=token, topics=topics))
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"offer is not valid UTF-8: {exc}") from exc
    return _go_escape(token + "".join(topics), encoded) + b"\n"


def decode_offer(line: bytes) -> Offer:
    """Parse an offer line (without its newline) as Go's ``encoding/json`` reads it into
    Go qsse's offer struct.

    Keys match ``token`` and ``topics`` case-insensitively (``{"Topics":["a"]}``), the last
    matching key winning; ``null`` leaves the field empty (``"token":null`` is no token, a
    ``null`` topic is ``""``); other keys are ignored. Where Go would fail to decode, the
    server closes the connection instead of staying silent as Go's does.

    :raises RemoteProtocolError: with code MALFORMED_OFFER, naming what is wrong and where
        (also for JSON nested deeper than ``MAX_DEPTH``).
    """
    _check_depth(line, "offer", ErrorCode.MALFORMED_OFFER)
    try:
        fields = _offer_keys_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise _malformed_offer(exc, "") from exc
    offer = Offer()
    for key, raw in (fields or {}).items():  # a null offer is an empty one, as in Go
        name = key if key in _offer_field_decoders else key.casefold()
        decoder = _offer_field_decoders.get(name)
        if decoder is None:
            continue
        try:
            value = decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise _malformed_offer(exc, f".{key}") from exc
        if name == "token":
            if value is not None:
                offer.token = value
        else:
            offer.topics = [t or "" for t in value] if value is not None else []
    return offer


def _malformed_offer(exc: msgspec.DecodeError, path: str) -> RemoteProtocolError:
    # Null is taken as absent, so it goes unsaid; the path is the offer's, not the field's.
    text = str(exc).replace(" | null`", "`")
    if path:
        text = text.replace("`$", f"`${path}", 1) if "`$" in text else f"{text} - at `${path}`"
    return RemoteProtocolError(f"malformed offer: {text}", ErrorCode.MALFORMED_OFFER)


# What Go's encoder escapes inside strings that JSON itself does not require escaping.
_GO_ESCAPES = {
    b"<": b"\\u003c",
    b">": b"\\u003e",
    b"&": b"\\u0026",
    "\u2028".encode(): b"\\u2028",
    "\u2029".encode(): b"\\u2029",
}
_GO_ESCAPED_TEXT = re.compile("[<>&\u2028\u2029]")
_GO_ESCAPED_JSON = re.compile(b"|".join(re.escape(k) for k in _GO_ESCAPES))


def _go_escape(text: str, encoded: bytes) -> bytes:
    """``encoded`` (JSON holding ``text``) with Go's extra escapes; these characters can only
    occur inside JSON strings, so replacing them anywhere is safe."""
    if _GO_ESCAPED_TEXT.search(text) is None:
        return encoded
    return _GO_ESCAPED_JSON.sub(lambda m: _GO_ESCAPES[m.group()], encoded)


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
    return _go_escape(topic, bytes(buf))


def encode_error(code: int, data: Mapping[str, Any]) -> bytes:
    """An error event line: Go nests the error's JSON as the base64 data of topic ``error``."""
    error = _encoder.encode(_Error(code=code, data=dict(data)))
    return encode_event(ERROR_TOPIC, _GO_ESCAPED_JSON.sub(lambda m: _GO_ESCAPES[m.group()], error))


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
