"""The QUIC library under qsse: aioquic by default, or qh3 (a Rust-core fork of aioquic with
the same API, several times cheaper per packet).

``QSSE_QUIC_BACKEND`` chooses: ``aioquic``, ``qh3``, or ``auto`` (the default: qh3 when it
is installed, as ``pip install qsse[fast]`` does, else aioquic). Everything qsse needs from
the library is named here, so the rest of the code never asks which one it runs on. Types
are checked against aioquic's; qh3 mirrors them.
"""

from __future__ import annotations

import importlib.util
import os
import ssl
from typing import TYPE_CHECKING, Any

__all__ = [
    "BACKEND",
    "ConnectionTerminated",
    "HandshakeCompleted",
    "QuicConfiguration",
    "QuicConnection",
    "QuicConnectionProtocol",
    "QuicEvent",
    "QuicServer",
    "QuicStreamHandler",
    "StreamDataReceived",
    "StreamReset",
    "peer_address",
    "peer_idle_timeout",
    "send_backlog",
    "serve",
    "set_certificate",
    "set_congestion_control",
    "skip_verification",
    "write",
]


def _choose() -> str:
    wanted = os.environ.get("QSSE_QUIC_BACKEND", "auto").strip().lower() or "auto"
    if wanted not in ("auto", "aioquic", "qh3"):
        raise ImportError(f"QSSE_QUIC_BACKEND must be auto, aioquic or qh3, got {wanted!r}")
    if wanted == "auto":
        return "qh3" if importlib.util.find_spec("qh3") is not None else "aioquic"
    return wanted


#: The QUIC library in use: ``"aioquic"`` or ``"qh3"``.
BACKEND = _choose()

if TYPE_CHECKING or BACKEND == "aioquic":
    from aioquic.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
    from aioquic.asyncio.server import QuicServer, serve
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import (
        ConnectionTerminated,
        HandshakeCompleted,
        QuicEvent,
        StreamDataReceived,
        StreamReset,
    )
else:
    from qh3.asyncio.protocol import QuicConnectionProtocol, QuicStreamHandler
    from qh3.asyncio.server import QuicServer, serve
    from qh3.quic.configuration import QuicConfiguration
    from qh3.quic.connection import QuicConnection
    from qh3.quic.events import (
        ConnectionTerminated,
        HandshakeCompleted,
        QuicEvent,
        StreamDataReceived,
        StreamReset,
    )


def write(quic: QuicConnection, stream_id: int, data: bytes, end_stream: bool = False) -> bool:
    """Queue ``data`` on a stream; False when the stream or connection cannot take it.

    Both libraries raise when a peer closed the connection or reset the stream before the
    event saying so was processed (aioquic ``RuntimeError``/``ValueError``, qh3
    ``QuicConnectionError``): one subscriber's race must not fail a write to everyone.
    """
    try:
        quic.send_stream_data(stream_id, data, end_stream=end_stream)
    except Exception:
        return False
    return True


def send_backlog(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written to a stream that QUIC still holds for it.

    On aioquic, which exposes no send-buffer size, that is every byte not yet acknowledged
    (read from the stream sender's offsets). qh3 reports the bytes not yet sent once; bytes in
    flight are bounded by its congestion window.
    """
    if BACKEND == "qh3":
        size: int = quic.get_send_buffer_size(stream_id)  # type: ignore[attr-defined]
        return size
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return sender._buffer_stop - sender._buffer_start


def set_certificate(config: QuicConfiguration, chain_pem: bytes, key_pem: bytes) -> None:
    """Give ``config`` an in-memory certificate chain (PEM, leaf first) and key (PKCS#8)."""
    if BACKEND == "qh3":
        # qh3 takes PEM data where aioquic takes file names.
        config.load_cert_chain(chain_pem, key_pem)  # type: ignore[arg-type]
        return
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    leaf, *chain = x509.load_pem_x509_certificates(chain_pem)
    config.certificate = leaf
    config.certificate_chain = chain
    config.private_key = load_pem_private_key(key_pem, password=None)


def set_congestion_control(config: QuicConfiguration, algorithm: str) -> None:
    """Choose the congestion controller (aioquic: ``reno`` or ``cubic``).

    :raises ValueError: on qh3, whose controller is fixed.
    """
    if not hasattr(config, "congestion_control_algorithm"):
        raise ValueError(f"the {BACKEND} backend has a fixed congestion controller")
    config.congestion_control_algorithm = algorithm


def skip_verification(config: QuicConfiguration) -> None:
    """Accept any server certificate (Go qsse servers' cannot be verified)."""
    config.verify_mode = ssl.CERT_NONE
    if BACKEND == "qh3":
        config.verify_hostname = False  # type: ignore[attr-defined]


def peer_address(quic: QuicConnection) -> str:
    """``host:port`` of the peer, for logs."""
    paths: Any = getattr(quic, "_network_paths", None)
    if paths:
        addr = paths[0].addr
        return f"{addr[0]}:{addr[1]}"
    return "?"


def peer_idle_timeout(quic: QuicConnection) -> float | None:
    """The peer's ``max_idle_timeout`` transport parameter in seconds; None when it sent none
    (or 0, which means none, RFC 9000 section 18.2) or the handshake has not told it yet."""
    if BACKEND == "qh3":
        tls: Any = getattr(quic, "_tls", None)
        params: Any = getattr(tls, "remote_transport_parameters", None)
        millis = getattr(params, "max_idle_timeout", None)
        return millis / 1000 if millis else None
    seconds = quic._remote_max_idle_timeout
    return seconds if seconds else None
