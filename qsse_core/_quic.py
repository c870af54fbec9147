"""The QUIC libraries under qsse: aioquic, and qh3 (a Rust-core fork of aioquic, same API).

Each role picks its library: servers run on aioquic, clients on qh3 when it is installed
(``pip install qsse[fast]``), else aioquic. qh3 servers fail zero-length connection IDs (the
choice of quic-go, Chrome and MsQuic clients) and keep at most four network paths per
connection, which ends connection migration; see ``docs/quic-backends.md``.

Environment overrides, most specific first: ``QSSE_QUIC_SERVER_BACKEND`` or
``QSSE_QUIC_CLIENT_BACKEND`` for one role, then ``QSSE_QUIC_BACKEND`` for both; each is
``aioquic``, ``qh3`` or ``auto``. Everything qsse needs from a library is named here, so the
rest of the code never asks which one it runs on. Types are checked against aioquic's; qh3
mirrors them. Both libraries can serve in one process at once (e.g. a qh3 client talking to
an aioquic server), so the event classes below match either library's events.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import ssl
from typing import TYPE_CHECKING, Any, Final, Literal

from ._exceptions import ConfigurationError

__all__ = [
    "BACKEND",
    "BACKEND_NAMES",
    "ConnectionIdIssued",
    "ConnectionIdRetired",
    "ConnectionTerminated",
    "HandshakeCompleted",
    "QuicBackend",
    "QuicConfiguration",
    "QuicConnection",
    "QuicEvent",
    "StreamDataReceived",
    "StreamReset",
    "backend",
    "client_backend",
    "grant_unidirectional_streams",
    "is_qh3",
    "initial_carries_crypto",
    "peer_idle_timeout",
    "path_address",
    "send_backlog",
    "server_backend",
    "unidirectional_stream_credit",
    "write",
]

BackendName = Literal["aioquic", "qh3"]
#: The QUIC libraries qsse runs on.
BACKEND_NAMES: Final = ("aioquic", "qh3")

_EVENT_NAMES = (
    "ConnectionIdIssued",
    "ConnectionIdRetired",
    "ConnectionTerminated",
    "HandshakeCompleted",
    "QuicEvent",
    "StreamDataReceived",
    "StreamReset",
)

if TYPE_CHECKING:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import (
        ConnectionIdIssued,
        ConnectionIdRetired,
        ConnectionTerminated,
        HandshakeCompleted,
        QuicEvent,
        StreamDataReceived,
        StreamReset,
    )
else:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    def _event_classes(name: str) -> tuple[type, ...]:
        # Every installed library's class, for isinstance(): an event from either matches.
        found = [getattr(importlib.import_module("aioquic.quic.events"), name)]
        if importlib.util.find_spec("qh3") is not None:
            found.append(getattr(importlib.import_module("qh3.quic.events"), name))
        return tuple(found)

    globals().update({name: _event_classes(name) for name in _EVENT_NAMES})


class QuicBackend:
    """One QUIC library: makes configurations and connections, and hides its quirks.

    Obtain one with :func:`server_backend`, :func:`client_backend` or :func:`backend`.
    """

    def __init__(self, name: BackendName) -> None:
        self.name: BackendName = name
        root = f"{name}.quic"
        self._configuration: type[QuicConfiguration] = importlib.import_module(
            f"{root}.configuration"
        ).QuicConfiguration
        self._connection: type[QuicConnection] = importlib.import_module(
            f"{root}.connection"
        ).QuicConnection
        self._packet: Any = importlib.import_module(f"{root}.packet")

    def __repr__(self) -> str:
        return f"QuicBackend({self.name!r})"

    def configuration(self, **kwargs: Any) -> QuicConfiguration:
        """A ``QuicConfiguration`` of this library (aioquic's keyword arguments)."""
        return self._configuration(**kwargs)

    def connection(
        self,
        configuration: QuicConfiguration,
        original_destination_connection_id: bytes | None = None,
    ) -> QuicConnection:
        """A ``QuicConnection`` of this library: a client's, or a server's for a new peer."""
        return self._connection(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
        )

    def version_negotiation(
        self, source_cid: bytes, destination_cid: bytes, versions: list[int]
    ) -> bytes:
        """A Version Negotiation packet (RFC 9000 section 17.2.1) answering a peer."""
        data: bytes = self._packet.encode_quic_version_negotiation(
            source_cid=source_cid,
            destination_cid=destination_cid,
            supported_versions=versions,
        )
        return data

    def set_certificate(self, config: QuicConfiguration, chain_pem: bytes, key_pem: bytes) -> None:
        """Give ``config`` an in-memory certificate chain (PEM, leaf first) and key (PKCS#8)."""
        if self.name == "qh3":
            # qh3 takes PEM data where aioquic takes file names.
            config.load_cert_chain(chain_pem, key_pem)  # type: ignore[arg-type]
            return
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        leaf, *chain = x509.load_pem_x509_certificates(chain_pem)
        config.certificate = leaf
        config.certificate_chain = chain
        config.private_key = load_pem_private_key(key_pem, password=None)

    def set_congestion_control(self, config: QuicConfiguration, algorithm: str) -> None:
        """Choose the congestion controller (aioquic: ``reno`` or ``cubic``).

        :raises ValueError: on qh3, whose controller is fixed.
        """
        if not hasattr(config, "congestion_control_algorithm"):
            raise ValueError(f"the {self.name} backend has a fixed congestion controller")
        config.congestion_control_algorithm = algorithm

    def skip_verification(self, config: QuicConfiguration) -> None:
        """Accept any server certificate (Go qsse servers' cannot be verified)."""
        config.verify_mode = ssl.CERT_NONE
        if self.name == "qh3":
            config.verify_hostname = False  # type: ignore[attr-defined]


def _wanted(role: str) -> str:
    for variable in (f"QSSE_QUIC_{role.upper()}_BACKEND", "QSSE_QUIC_BACKEND"):
        value = os.environ.get(variable, "").strip().lower()
        if value:
            if value not in ("auto", *BACKEND_NAMES):
                raise ConfigurationError(f"{variable} must be auto, aioquic or qh3, got {value!r}")
            return value
    return "auto"


def backend(name: str) -> QuicBackend:
    """The backend of library ``name`` (``aioquic`` or ``qh3``), loaded once.

    :raises ConfigurationError: for another name, or qh3 when it is not installed.
    """
    if name not in BACKEND_NAMES:
        raise ConfigurationError(f"QUIC backend must be aioquic or qh3, got {name!r}")
    if name == "qh3" and importlib.util.find_spec("qh3") is None:
        raise ConfigurationError("QUIC backend qh3 asked for but not installed (qsse[fast])")
    return _load(name)


@functools.cache
def _load(name: BackendName) -> QuicBackend:
    return QuicBackend(name)


def server_backend(name: str | None = None) -> QuicBackend:
    """The library a server runs on: ``name``, else the environment's, else aioquic.

    aioquic by default because qh3 2.1 servers refuse clients with zero-length connection
    IDs and lose connections after their fourth address change (``docs/quic-backends.md``).
    """
    wanted = name or _wanted("server")
    return backend("aioquic" if wanted == "auto" else wanted)


def client_backend(name: str | None = None) -> QuicBackend:
    """The library a client runs on: ``name``, else the environment's, else qh3 if installed.

    qh3 clients complete handshakes with aioquic and quic-go servers and cost several times
    less per packet; aioquic otherwise.
    """
    wanted = name or _wanted("client")
    if wanted == "auto":
        wanted = "qh3" if importlib.util.find_spec("qh3") is not None else "aioquic"
    return backend(wanted)


#: The library servers run on unless told otherwise, as the environment said at import:
#: ``"aioquic"`` or ``"qh3"``. Clients: :func:`client_backend`.
BACKEND: str = server_backend().name


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
    buffered = getattr(quic, "get_send_buffer_size", None)  # qh3
    if buffered is not None:
        size: int = buffered(stream_id)
        return size
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return sender._buffer_stop - sender._buffer_start


def peer_idle_timeout(quic: QuicConnection) -> float | None:
    """The peer's ``max_idle_timeout`` transport parameter in seconds; None when it sent none
    (or 0, which means none, RFC 9000 section 18.2) or the handshake has not told it yet."""
    seconds: Any = getattr(quic, "_remote_max_idle_timeout", None)  # aioquic, in seconds
    if seconds is None:
        tls: Any = getattr(quic, "_tls", None)  # qh3 keeps the peer's parameters as sent
        params: Any = getattr(tls, "remote_transport_parameters", None)
        millis = getattr(params, "max_idle_timeout", None)
        seconds = millis / 1000 if millis else None
    return float(seconds) if seconds else None


def is_qh3(quic: QuicConnection) -> bool:
    return type(quic).__module__.startswith("qh3.")


def unidirectional_stream_credit(quic: QuicConnection) -> int:
    """Unidirectional streams the peer lets us open now (its MAX_STREAMS, RFC 9000 section
    4.6, less the streams opened so far). A stream past it would wait in aioquic forever
    and fail to open in qh3."""
    core = getattr(quic, "_core", None)  # qh3
    if core is not None:
        limits: tuple[int, int, int, int] = core.stream_limits
        return limits[1] - limits[3]
    if is_qh3(quic):
        return 0  # not started: nothing may be opened yet
    return quic._remote_max_streams_uni - quic._local_next_stream_id_uni // 4


def grant_unidirectional_streams(quic: QuicConnection, count: int) -> None:
    """Let the peer keep ``count`` unidirectional streams open at once (transport parameter
    initial_max_streams_uni, RFC 9000 section 18.2); call before ``connect()``.

    Both libraries fix it (aioquic 128, qh3 103) and grant one more stream for each that ends,
    so ``count`` stays the bound on concurrent streams. Should a future qh3 lay its
    connection out differently, its own default stays in force.
    """
    if not is_qh3(quic):
        limit = quic._local_max_streams_uni
        limit.value = limit.sent = count
        return
    import qh3.quic.connection as qh3_connection
    from qh3._hazmat import Buffer
    from qh3.quic.packet import pull_quic_transport_parameters, push_quic_transport_parameters
    from qh3.tls import ExtensionType

    # The native core takes its local limits positionally; index 22 is local_max_streams_uni.
    create_core = quic._create_core  # type: ignore[attr-defined]
    create_tls = quic._create_tls  # type: ignore[attr-defined]
    native = getattr(qh3_connection, "QuicConnectionCore")  # noqa: B009 (not re-exported)

    def core_with_limit(*args: Any) -> Any:
        if len(args) > 22 and args[22] == 103:
            args = (*args[:22], count, *args[23:])
        return native(*args)

    def create_core_with_limit(*args: Any, **kwargs: Any) -> None:
        setattr(qh3_connection, "QuicConnectionCore", core_with_limit)  # noqa: B010
        try:
            create_core(*args, **kwargs)
        finally:
            setattr(qh3_connection, "QuicConnectionCore", native)  # noqa: B010

    def create_tls_with_limit(*args: Any, **kwargs: Any) -> Any:
        bridge = create_tls(*args, **kwargs)
        extensions = []
        for kind, data in bridge.tls.handshake_extensions:
            if kind != ExtensionType.QUIC_TRANSPORT_PARAMETERS:
                extensions.append((kind, data))
                continue
            params = pull_quic_transport_parameters(Buffer(data=data))
            if params.initial_max_streams_uni == 103:
                params.initial_max_streams_uni = count
                buf = Buffer(capacity=len(data) + 16)
                push_quic_transport_parameters(buf, params)
                data = buf.data
            extensions.append((kind, data))
        bridge.tls.handshake_extensions = extensions
        return bridge

    quic._create_core = create_core_with_limit  # type: ignore[attr-defined]
    quic._create_tls = create_tls_with_limit  # type: ignore[attr-defined]


def path_address(quic: QuicConnection) -> Any:
    """The address the connection sends to now: it changes when the peer migrates.

    aioquic keeps the active path first in its list (RFC 9000 section 9.3: a server moves
    to a client's new address on its first non-probing packet from there); qh3's core
    reports it as ``(id, local, remote, ...)``. Asked of the object, so that it holds
    whichever library made the connection.
    """
    paths: Any = getattr(quic, "_network_paths", None)
    if paths is not None:
        return paths[0].addr if paths else None
    core: Any = getattr(quic, "_core", None)
    return core.active_path[2] if core is not None else None


# Frames a client's Initial may carry besides CRYPTO (RFC 9000 section 17.2.2, table 3).
_PADDING, _PING, _ACK, _ACK_ECN, _CRYPTO = 0x00, 0x01, 0x02, 0x03, 0x06


def initial_carries_crypto(data: bytes, cid_length: int) -> bool:
    """Whether a client's Initial, the first packet of ``data``, carries a CRYPTO frame.

    A client's lost Initial is resent by probes, and qh3 sends each probe as a CRYPTO packet
    and a PING-only one: when the first ones are lost, a PING-only Initial may be the first
    a server hears. aioquic and qh3 servers then close with PROTOCOL_VIOLATION ("packet
    contains no CRYPTO frame"), ending a handshake the next probe would have started. True
    when the packet cannot be read here: the QUIC library then judges it.
    """
    from aioquic._buffer import Buffer, BufferReadError
    from aioquic._crypto import CryptoError
    from aioquic.quic.crypto import CryptoPair
    from aioquic.quic.packet import pull_quic_header

    buf = Buffer(data=data)
    try:
        header = pull_quic_header(buf, host_cid_length=cid_length)
        if header.version is None:
            return True
        crypto = CryptoPair()
        crypto.setup_initial(header.destination_cid, is_client=False, version=header.version)
        _, payload, _ = crypto.decrypt_packet(data[: header.packet_length], buf.tell(), 0)
    except (ValueError, BufferReadError, CryptoError):
        return True
    frames = Buffer(data=payload)
    try:
        while not frames.eof():
            frame_type = frames.pull_uint_var()
            if frame_type in (_PADDING, _PING):
                continue
            if frame_type not in (_ACK, _ACK_ECN):
                return True  # CRYPTO, or a frame the library must judge
            frames.pull_uint_var()  # largest acknowledged
            frames.pull_uint_var()  # ACK delay
            ranges = frames.pull_uint_var()
            for _ in range(1 + 2 * ranges):  # first range, then gap and length pairs
                frames.pull_uint_var()
            if frame_type == _ACK_ECN:
                for _ in range(3):
                    frames.pull_uint_var()
    except BufferReadError:
        return True
    return False
