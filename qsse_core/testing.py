"""Test aids: two in-memory QUIC endpoints that exchange datagrams with no sockets, and
seeded generators of hostile input.

Protocol tests drive the sans-I/O connections through real QUIC and TLS this way, the way
aioquic's own tests do, with time passed in explicitly.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

import msgspec

from ._framing import ALPN_QSSE1, encode_event
from ._framing2 import encode_event_frame, encode_frame
from ._quic import QuicConnection, QuicEvent, server_backend
from ._tls import self_signed

__all__ = [
    "EDGE_INTS",
    "QuicPair",
    "deep_json",
    "deep_msgpack",
    "mutate",
    "qsse1_event_lines",
    "qsse1_offer",
    "qsse2_client_frames",
    "qsse2_server_frames",
    "split",
]

_CLIENT_ADDR = ("127.0.0.1", 40000)
_SERVER_ADDR = ("127.0.0.1", 4242)


class QuicPair:
    """A client and a server ``QuicConnection`` joined by an in-memory link.

    :param alpn: the ALPN protocol both sides offer.
    :param max_stream_data: the per-stream receive window of both sides.
    :param quic_backend: the QUIC library of both sides; the servers' default when None.
    """

    def __init__(
        self,
        alpn: str = ALPN_QSSE1,
        max_stream_data: int = 1024 * 1024,
        quic_backend: str | None = None,
    ) -> None:
        backend = server_backend(quic_backend)
        cert = self_signed(["localhost"])
        server_config = backend.configuration(
            is_client=False, alpn_protocols=[alpn], max_stream_data=max_stream_data
        )
        backend.set_certificate(server_config, cert.chain_pem, cert.key_pem)
        client_config = backend.configuration(
            is_client=True, alpn_protocols=[alpn], max_stream_data=max_stream_data
        )
        backend.skip_verification(client_config)
        self.now = 0.0
        self.client = backend.connection(client_config)
        self.server = backend.connection(
            server_config, self.client.original_destination_connection_id
        )
        self.client.connect(_SERVER_ADDR, now=self.now)

    def transfer(self, max_rounds: int = 100) -> None:
        """Exchange datagrams both ways until neither side has anything to send."""
        for _ in range(max_rounds):
            self.now += 0.001
            moved = 0
            for data, _addr in self.client.datagrams_to_send(now=self.now):
                self.server.receive_datagram(data, _CLIENT_ADDR, now=self.now)
                moved += 1
            for data, _addr in self.server.datagrams_to_send(now=self.now):
                self.client.receive_datagram(data, _SERVER_ADDR, now=self.now)
                moved += 1
            if not moved:
                return
        raise RuntimeError(f"link still busy after {max_rounds} rounds")

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, firing each side's due timers (loss recovery, draining)."""
        # What the last call queued goes out first, as a real transport transmits at once.
        self.transfer()
        self.now += seconds
        for quic in (self.client, self.server):
            timer = quic.get_timer()
            if timer is not None and timer <= self.now:
                quic.handle_timer(now=self.now)
        self.transfer()

    @staticmethod
    def events(quic: QuicConnection) -> list[QuicEvent]:
        """Drain the events ``quic`` has queued."""
        out: list[QuicEvent] = []
        while (event := quic.next_event()) is not None:
            out.append(event)
        return out


# -- hostile input ------------------------------------------------------------------------------
#
# Seeded generators of what a broken or hostile peer sends, for fuzzing the sans-I/O
# connections and for hostile peers on loopback. Mostly near-valid (real frames, mutated), so
# inputs get past the first check; some deeply nested or out of range on purpose.

#: Integers that sit on or just past the bounds qsse checks, and where codecs change width.
EDGE_INTS = (
    0,
    1,
    -1,
    127,
    128,
    255,
    256,
    2**16,
    2**31 - 1,
    2**32,
    2**53 + 1,
    2**62 - 1,
    2**62,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
)


def deep_json(depth: int) -> bytes:
    """A JSON array nested ``depth`` levels deep."""
    return b"[" * depth + b"]" * depth


def deep_msgpack(depth: int) -> bytes:
    """A MessagePack array nested ``depth`` levels deep."""
    return b"\x91" * (depth - 1) + b"\x90" if depth > 0 else b"\xc0"


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(EDGE_INTS) if rng.random() < 0.5 else rng.randint(-5, 10**6)
    if roll < 0.55:
        return rng.choice(["", "t", "ride.*", "a.b", "é\u200b", "x" * rng.randint(0, 300)])
    if roll < 0.65:
        return rng.choice([None, True, False, 1.5, b"\x00\xff"])
    if depth > 4:
        return 0
    if roll < 0.8:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["token", "topics", "topic", "data", "code", "request_id", "last_id", "epoch", "zz"]
    return {rng.choice(keys): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate(rng: random.Random, data: bytes) -> bytes:
    """``data`` with a few random byte-level edits (flip, cut, insert, duplicate)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del buf[pos:]
        elif op == 2:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            buf[pos:pos] = buf[pos : pos + rng.randint(1, 16)]
        elif buf:
            buf[min(pos, len(buf) - 1)] = rng.choice(b'\x00\n"[]{}\\\x91\xdc\xff')
    return bytes(buf)


def _maybe_mutate(rng: random.Random, data: bytes) -> bytes:
    return mutate(rng, data) if rng.random() < 0.5 else data


def qsse1_offer(rng: random.Random) -> bytes:
    """What a qsse/1 client might write on its offer stream."""
    roll = rng.random()
    if roll < 0.1:
        depth = rng.choice((60, 64, 65, 200, 1000, 20_000))
        return b'{"token":"t","topics":["a"],"x":' + deep_json(depth) + b"}\n"
    if roll < 0.15:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    offer: Any = {"token": _value(rng), "topics": [_value(rng) for _ in range(rng.randint(0, 3))]}
    if rng.random() < 0.3:
        offer = _value(rng)
    line = msgspec.json.encode(offer) + b"\n"
    return _maybe_mutate(rng, line)


def qsse1_event_lines(rng: random.Random) -> bytes:
    """What a qsse/1 server might write on its event stream: a few lines."""
    lines = []
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.1:
            nested = deep_json(rng.choice((62, 64, 65, 1000, 20_000)))
            lines.append(encode_event("error", b'{"code":5,"data":{"x":' + nested + b"}}"))
        elif roll < 0.2:
            lines.append(b'{"topic":"a","x":' + deep_json(rng.choice((64, 1000))) + b"}\n")
        elif roll < 0.4:
            data = msgspec.json.encode({"code": _value(rng), "data": _value(rng)})
            lines.append(encode_event("error", data))
        else:
            lines.append(encode_event(rng.choice(["a", "b.c", "error"]), rng.randbytes(20)))
        if rng.random() < 0.4:
            lines[-1] = mutate(rng, lines[-1])
    return b"".join(lines)


def _frame(rng: random.Random, frame_type: int, fields: Any) -> bytes:
    if rng.random() < 0.1:
        payload = deep_msgpack(rng.choice((63, 64, 65, 1000, 50_000)))
        payload = b"\x81\xa2zz" + payload  # an unknown key holding it
    else:
        payload = msgspec.msgpack.encode(fields)
    return _maybe_mutate(rng, encode_frame(frame_type, payload))


def _fields(rng: random.Random, names: Sequence[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in names:
        if rng.random() < 0.85:
            fields[name] = _value(rng) if rng.random() < 0.3 else rng.choice(EDGE_INTS[:9])
        if name == "topic" and rng.random() < 0.7:
            fields[name] = rng.choice(["a", "b.*", "t.1"])
    return fields


def qsse2_client_frames(rng: random.Random) -> bytes:
    """What a qsse/2 client might write on its control stream: HELLO then requests."""
    out = [_frame(rng, 0x01, {"token": _value(rng)} if rng.random() < 0.5 else {})]
    for _ in range(rng.randint(0, 3)):
        kind = rng.choice((0x02, 0x02, 0x03, 0x11, 0x23, 0x40, rng.randrange(1 << 14)))
        names = ["request_id", "topic", "last_id", "epoch", "subscription_id"]
        out.append(_frame(rng, kind, _fields(rng, names)))
    return b"".join(out)


def qsse2_server_frames(rng: random.Random, control: bool) -> bytes:
    """What a qsse/2 server might write on the control stream or a subscription stream."""
    out = []
    if control:
        for _ in range(rng.randint(1, 3)):
            kind = rng.choice((0x11, 0x12, 0x13, 0x21, 0x02, rng.randrange(1 << 14)))
            names = ["epoch", "max_frame_size", "request_id", "status", "topic"]
            out.append(_frame(rng, kind, _fields(rng, [*names, "subscription_id", "position"])))
        return b"".join(out)
    if rng.random() < 0.8:
        out.append(_frame(rng, 0x21, _fields(rng, ["subscription_id", "topic", "epoch"])))
    for _ in range(rng.randint(0, 3)):
        if rng.random() < 0.6:
            event_id = rng.choice((1, 2**62 - 1, rng.randrange(1 << 30)))
            frame = encode_event_frame(event_id, rng.randrange(4), "t", rng.randbytes(8))
            out.append(_maybe_mutate(rng, frame))
        else:
            out.append(_frame(rng, 0x23, _fields(rng, ["topic", "first_id", "last_id"])))
    return b"".join(out)


def split(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` cut at up to three random places, as QUIC may deliver it."""
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 3)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
