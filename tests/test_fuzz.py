"""Seeded fuzzing of the four sans-I/O connections with hostile input, over real QUIC.

Each class gets ``QSSE_FUZZ_INPUTS`` inputs (default 30,000: 120,000 per backend, twice
that in CI's two runs), mostly real frames mutated, some nested far past the depth bound or
carrying integers past the wire's, cut at random places as QUIC may deliver them. Whatever
arrives, a connection must answer with qsse events or the project's own errors: anything
else escaping (RecursionError, OverflowError, KeyError...) would reach the server's loop.
"""

import importlib
import os
import random

import pytest

from qsse_core import QsseError
from qsse_core._connection import QsseClientConnection, QsseServerConnection
from qsse_core._connection2 import Qsse2ClientConnection, Qsse2ServerConnection
from qsse_core._framing import ALPN_QSSE1
from qsse_core._framing2 import ALPN_QSSE2
from qsse_core._quic import server_backend
from qsse_core.events import QsseEvent
from qsse_core.testing import (
    QuicPair,
    qsse1_event_lines,
    qsse1_offer,
    qsse2_client_frames,
    qsse2_server_frames,
    split,
)

# QuicPair's library: the events fed in must be its own classes.
_events = importlib.import_module(f"{server_backend().name}.quic.events")
StreamDataReceived, StreamReset = _events.StreamDataReceived, _events.StreamReset
INPUTS = int(os.environ.get("QSSE_FUZZ_INPUTS", "30000"))
SEED = int(os.environ.get("QSSE_FUZZ_SEED", "20261130"))


def feed(conn, rng: random.Random, stream_id: int, data: bytes) -> None:
    end = rng.random() < 0.3
    chunks = split(rng, data)
    for i, chunk in enumerate(chunks):
        event = StreamDataReceived(
            data=chunk, end_stream=end and i == len(chunks) - 1, stream_id=stream_id
        )
        try:
            produced = conn.handle_event(event)
        except QsseError:
            return
        except Exception as exc:
            raise AssertionError(
                f"{type(conn).__name__} let {type(exc).__name__} escape on stream "
                f"{stream_id} for input {data[:300]!r}"
            ) from exc
        assert all(isinstance(e, QsseEvent) for e in produced), produced


def connected(alpn: str) -> QuicPair:
    pair = QuicPair(alpn=alpn)
    pair.transfer()
    return pair


@pytest.mark.parametrize("protocol", ["qsse/1", "qsse/2"])
def test_server_connections_survive_hostile_clients(protocol):
    rng = random.Random(f"{SEED}-server-{protocol}")
    pair = connected(ALPN_QSSE1 if protocol == "qsse/1" else ALPN_QSSE2)
    for _ in range(INPUTS):
        # A fresh connection per input: most inputs close theirs.
        if protocol == "qsse/1":
            conn = QsseServerConnection(pair.server, max_offer_size=4096)
            feed(conn, rng, rng.choice((2, 2, 2, 6, 0)), qsse1_offer(rng))
        else:
            conn = Qsse2ServerConnection(pair.server, max_frame_size=4096)
            feed(conn, rng, rng.choice((0, 0, 0, 4, 2)), qsse2_client_frames(rng))
            if rng.random() < 0.05:
                conn.handle_event(StreamReset(error_code=rng.randrange(1 << 16), stream_id=0))


@pytest.mark.parametrize("protocol", ["qsse/1", "qsse/2"])
def test_client_connections_survive_hostile_servers(protocol):
    rng = random.Random(f"{SEED}-client-{protocol}")
    pair = connected(ALPN_QSSE1 if protocol == "qsse/1" else ALPN_QSSE2)
    handshake = pair.events(pair.client)
    conn: QsseClientConnection | Qsse2ClientConnection
    if protocol == "qsse/1":
        conn = QsseClientConnection(pair.client, token="t", topics=["a"], max_frame_size=4096)
    else:
        conn = Qsse2ClientConnection(pair.client, token="t", max_frame_size=4096)
    for event in handshake:
        conn.handle_event(event)
    # One connection for every input: a client reports bad frames and goes on, so state
    # carried from one input to the next (half-read frames, open streams) is fuzzed too.
    for _ in range(INPUTS):
        if protocol == "qsse/1":
            feed(conn, rng, rng.choice((3, 3, 7, 11)), qsse1_event_lines(rng))
        elif rng.random() < 0.3:
            feed(conn, rng, 0, qsse2_server_frames(rng, control=True))
        else:
            feed(conn, rng, rng.choice((3, 7, 11, 15)), qsse2_server_frames(rng, control=False))
