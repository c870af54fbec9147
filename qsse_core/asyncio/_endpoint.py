"""The server's UDP endpoint: routes datagrams to QUIC connections by connection ID.

In place of the QUIC libraries' ``QuicServer``, which scan their whole connection-ID table
each time a connection ends (quadratic when thousands end at once: 5,000 closes stalled the
loop for half a minute). Here each connection keeps the set of its own IDs, so a close costs
time in its IDs alone, and the same endpoint runs connections of either library.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import cast

from .._quic import QuicBackend, QuicConfiguration, QuicConnection, initial_carries_crypto
from ._protocol import Address, QsseProtocol

__all__ = ["ServerEndpoint", "listen", "parse_header"]

logger = logging.getLogger("qsse.quic")

# RFC 9000 section 14.1: a client's first datagram is at least 1200 bytes; smaller ones
# neither open a connection nor get a Version Negotiation (no amplification).
_MIN_INITIAL_DATAGRAM = 1200
_VERSION_2 = 0x6B3343CF  # RFC 9369: its Initial packets carry long-header type 1, not 0
_MAX_CID_LENGTH = 20  # RFC 9000 section 17.2
# One socket receives every client's datagrams: the kernel's default buffer (208 KiB, a few
# hundred datagrams) overflows when hundreds of clients close or dial at once, and a lost
# CONNECTION_CLOSE holds its connection until the idle timeout. quic-go asks for 2 MiB too.
_RECEIVE_BUFFER = 2 * 1024 * 1024


def parse_header(data: bytes, cid_length: int) -> tuple[int | None, bool, bytes, bytes] | None:
    """``(version, is_initial, destination CID, source CID)`` of a datagram's first packet.

    ``version`` is None for a short header (RFC 9000 section 17.3), whose destination CID
    has our own length, ``cid_length``. None when the header is cut short or invalid, or
    when an Initial's fixed bit is clear or its token or payload runs past the datagram.
    """
    if not data:
        return None
    first = data[0]
    if not first & 0x80:
        if len(data) < 1 + cid_length:
            return None
        return None, False, data[1 : 1 + cid_length], b""
    if len(data) < 7:
        return None
    version = int.from_bytes(data[1:5], "big")
    dcid_length = data[5]
    end = 6 + dcid_length
    if dcid_length > _MAX_CID_LENGTH or len(data) < end + 1:
        return None
    scid_length = data[end]
    if scid_length > _MAX_CID_LENGTH or len(data) < end + 1 + scid_length:
        return None
    packet_type = (first & 0x30) >> 4
    is_initial = version != 0 and packet_type == (1 if version == _VERSION_2 else 0)
    if is_initial and not _initial_fits(data, end + 1 + scid_length):
        return None
    return version, is_initial, data[6:end], data[end + 1 : end + 1 + scid_length]


def _varint(data: bytes, offset: int) -> tuple[int, int] | None:
    """A variable-length integer (RFC 9000 section 16) at ``offset``: ``(value, end)``."""
    if offset >= len(data):
        return None
    size = 1 << (data[offset] >> 6)
    if offset + size > len(data):
        return None
    value = int.from_bytes(data[offset : offset + size], "big") & ((1 << (8 * size - 2)) - 1)
    return value, offset + size


def _initial_fits(data: bytes, offset: int) -> bool:
    """Whether an Initial's fixed bit is set and its token and packet lie inside ``data``.

    RFC 9000 section 17.2.2. The QUIC libraries drop such a packet before they know the
    peer's address and then can neither send nor time out: it must not open a connection.
    """
    if not data[0] & 0x40:
        return False
    token = _varint(data, offset)
    if token is None:
        return False
    length = _varint(data, token[1] + token[0])
    return length is not None and length[1] + length[0] <= len(data)


class ServerEndpoint(asyncio.DatagramProtocol):
    """Accepts QUIC connections on one socket and hands each datagram to its connection.

    :param backend: the QUIC library the connections run on.
    :param configuration: the server configuration every connection shares.
    :param create_protocol: makes the protocol of a new connection.
    """

    def __init__(
        self,
        backend: QuicBackend,
        configuration: QuicConfiguration,
        create_protocol: Callable[[QuicConnection], QsseProtocol],
    ) -> None:
        self._backend = backend
        self._configuration = configuration
        self._create_protocol = create_protocol
        self._cid_length = configuration.connection_id_length
        self._versions = list(configuration.supported_versions)
        self._transport: asyncio.DatagramTransport | None = None
        # connection ID -> its connection; and each connection's IDs, for a linear teardown.
        self._protocols: dict[bytes, QsseProtocol] = {}
        self._cids: dict[QsseProtocol, set[bytes]] = {}

    @property
    def sockname(self) -> Address:
        """The local address of the socket."""
        assert self._transport is not None
        sockname: Address = self._transport.get_extra_info("sockname")
        return sockname

    @property
    def connection_count(self) -> int:
        """QUIC connections held, handshaking and closing ones included."""
        return len(self._cids)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes | str, addr: Address) -> None:
        data = cast(bytes, data)
        header = parse_header(data, self._cid_length)
        if header is None:
            return
        version, is_initial, dcid, scid = header
        protocol = self._protocols.get(dcid)
        if protocol is None:
            if version is None or len(data) < _MIN_INITIAL_DATAGRAM:
                return
            if version not in self._versions:
                if version != 0 and self._transport is not None:
                    # RFC 9000 section 17.2.1: the client's IDs, swapped.
                    packet = self._backend.version_negotiation(
                        source_cid=dcid, destination_cid=scid, versions=self._versions
                    )
                    self._transport.sendto(packet, addr)
                return
            if not is_initial or not initial_carries_crypto(data, self._cid_length):
                return
            protocol = self._accept(dcid)
        protocol.datagram_received(data, addr)

    def _accept(self, dcid: bytes) -> QsseProtocol:
        quic = self._backend.connection(self._configuration, dcid)
        protocol = self._create_protocol(quic)
        assert self._transport is not None
        protocol.connection_made(self._transport)
        cids = {dcid, quic.host_cid}
        self._cids[protocol] = cids
        for cid in cids:
            self._protocols[cid] = protocol
        protocol.on_connection_id_issued = lambda cid: self._issued(protocol, cid)
        protocol.on_connection_id_retired = lambda cid: self._retired(protocol, cid)
        protocol.on_terminated = lambda: self._terminated(protocol)
        return protocol

    def _issued(self, protocol: QsseProtocol, cid: bytes) -> None:
        cids = self._cids.get(protocol)
        if cids is not None:
            cids.add(cid)
            self._protocols[cid] = protocol

    def _retired(self, protocol: QsseProtocol, cid: bytes) -> None:
        cids = self._cids.get(protocol)
        if cids is not None:
            cids.discard(cid)
            if self._protocols.get(cid) is protocol:
                del self._protocols[cid]

    def _terminated(self, protocol: QsseProtocol) -> None:
        for cid in self._cids.pop(protocol, ()):
            if self._protocols.get(cid) is protocol:
                del self._protocols[cid]

    def close(self) -> None:
        """Close every connection (sending its close) and the socket."""
        protocols = list(self._cids)
        for protocol in protocols:
            protocol.close()
        # The socket goes with the endpoint: no connection's timer may fire after it.
        for protocol in protocols:
            protocol.abort()
        self._protocols.clear()
        self._cids.clear()
        if self._transport is not None:
            self._transport.close()


async def listen(
    host: str,
    port: int,
    backend: QuicBackend,
    configuration: QuicConfiguration,
    create_protocol: Callable[[QuicConnection], QsseProtocol],
    reuse_port: bool = False,
) -> ServerEndpoint:
    """Bind a UDP socket to ``host:port`` and serve QUIC on it.

    :param reuse_port: set ``SO_REUSEPORT``, so several processes share the port (Linux).
    :raises OSError: when the address cannot be bound.
    """
    loop = asyncio.get_running_loop()
    endpoint = ServerEndpoint(backend, configuration, create_protocol)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: endpoint, local_addr=(host, port), reuse_port=reuse_port or None
    )
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        except OSError as exc:  # the kernel caps it at net.core.rmem_max instead
            logger.debug("could not enlarge the receive buffer: %s", exc)
    return endpoint
