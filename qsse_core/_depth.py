"""Nesting-depth bounds for what peers send, checked before msgspec decodes it.

msgspec decodes nested arrays and maps recursively (also while skipping unknown keys), so a
few kilobytes nested a thousand levels deep exhaust Python's recursion limit, at a depth that
depends on how deep the caller's stack already is. Checking the depth first makes the bound
exact and the error the protocol's own. No qsse message nests more than a few levels; the
bound leaves room for error-event data and fields added later.

Both checks cost one C-speed pass over the bytes in the common case: a document with fewer
possible container openings than the bound cannot be nested deeper than it. Only documents
with more openings than that get an exact scan.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate

__all__ = ["MAX_DEPTH", "json_depth_exceeds", "msgpack_depth_exceeds"]

#: The deepest nesting of arrays and maps accepted in JSON and MessagePack from a peer.
MAX_DEPTH = 64

# JSON: strings (which may hold brackets) are removed first; what remains maps openers to +1
# and closers to -1 (as signed bytes), everything else to 0.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_SIGNS = bytes(1 if c in b"[{" else 0xFF if c in b"]}" else 0 for c in range(256))


def json_depth_exceeds(data: bytes | bytearray | memoryview, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text ``data`` nests arrays/objects more than ``limit`` deep.

    Malformed text is judged as far as it goes; the decoder reports what is malformed.
    """
    raw = bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    bare = _JSON_STRING.sub(b"", raw)
    if bare.count(b"[") + bare.count(b"{") <= limit:
        return False
    signs = array("b", bare.translate(_JSON_SIGNS).replace(b"\x00", b""))
    return max(accumulate(signs), default=0) > limit


# MessagePack container headers: fixmap 0x80-0x8f, fixarray 0x90-0x9f, array 16/32 0xdc-0xdd,
# map 16/32 0xde-0xdf. Other bytes are deleted, so the length left bounds the depth.
_MSGPACK_NOT_CONTAINER = bytes(
    c for c in range(256) if not (0x80 <= c <= 0x9F or 0xDC <= c <= 0xDF)
)


def msgpack_depth_exceeds(data: bytes | bytearray | memoryview, limit: int = MAX_DEPTH) -> bool:
    """Whether the MessagePack object ``data`` nests arrays/maps more than ``limit`` deep.

    Truncated or malformed input is judged as far as it goes; the decoder reports the rest.
    """
    raw = bytes(data)
    if len(raw.translate(None, _MSGPACK_NOT_CONTAINER)) <= limit:
        return False
    return _msgpack_depth(raw, limit) > limit


def _msgpack_depth(raw: bytes, limit: int) -> int:
    """The deepest nesting in ``raw``, walking headers and skipping payloads by their length;
    stops as soon as it exceeds ``limit``."""
    pos, end = 0, len(raw)
    # Items still to read in each open container, innermost last.
    pending = [1]
    deepest = 0
    while pos < end and pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        b = raw[pos]
        pos += 1
        items = 0
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            pass  # fixint, nil, bool
        elif b <= 0x8F:
            items = 2 * (b & 0x0F)
        elif b <= 0x9F:
            items = b & 0x0F
        elif b <= 0xBF:
            pos += b & 0x1F  # fixstr
        elif b in (0xC4, 0xD9):  # bin 8, str 8
            pos += 1 + (raw[pos] if pos < end else 0)
        elif b in (0xC5, 0xDA):  # bin 16, str 16
            pos += 2 + int.from_bytes(raw[pos : pos + 2], "big")
        elif b in (0xC6, 0xDB):  # bin 32, str 32
            pos += 4 + int.from_bytes(raw[pos : pos + 4], "big")
        elif b == 0xC7:  # ext 8
            pos += 2 + (raw[pos] if pos < end else 0)
        elif b == 0xC8:  # ext 16
            pos += 3 + int.from_bytes(raw[pos : pos + 2], "big")
        elif b == 0xC9:  # ext 32
            pos += 5 + int.from_bytes(raw[pos : pos + 4], "big")
        elif b in (0xCA, 0xCB, 0xCC, 0xCD, 0xCE, 0xCF, 0xD0, 0xD1, 0xD2, 0xD3):
            pos += (4, 8, 1, 2, 4, 8, 1, 2, 4, 8)[b - 0xCA]  # float, uint, int
        elif 0xD4 <= b <= 0xD8:  # fixext 1-16
            pos += 1 + (1, 2, 4, 8, 16)[b - 0xD4]
        elif b in (0xDC, 0xDE):
            items = int.from_bytes(raw[pos : pos + 2], "big") * (2 if b == 0xDE else 1)
            pos += 2
        elif b in (0xDD, 0xDF):
            items = int.from_bytes(raw[pos : pos + 4], "big") * (2 if b == 0xDF else 1)
            pos += 4
        # 0xC1 is never used: the decoder rejects it.
        if 0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF:
            pending.append(items)
            deepest = max(deepest, len(pending) - 1)
            if deepest > limit:
                break
    return deepest
