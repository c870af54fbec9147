"""qh3 2.1 servers cannot complete a handshake with a client using zero-length connection IDs.

Run: python qh3_zero_length_cid.py   (needs aioquic and qh3; nothing else, loopback only)

The client is aioquic with ``connection_id_length=0``, the choice of quic-go, Chrome and
MsQuic clients. Its first Initial packet carries an empty Source Connection ID and an 8-byte
Destination Connection ID (RFC 9000 section 7.2 asks for at least 8; quic-go draws 8 to 20).
aioquic ties that first ID's length to ``connection_id_length``, so two lines set it as
quic-go does. The same client completes the handshake with an aioquic server.
"""

import asyncio
import datetime
import os
import ssl
import sys

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import pull_quic_header
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def certificate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Client(QuicConnectionProtocol):
    def __init__(self, quic, *args, **kwargs):
        # As quic-go: an 8-byte first Destination Connection ID, our own IDs empty.
        quic._peer_cid.cid = os.urandom(8)
        quic._original_destination_connection_id = quic._peer_cid.cid
        super().__init__(quic, *args, **kwargs)

    def datagram_received(self, data, addr):
        header = pull_quic_header(Buffer(data=data), host_cid_length=0)
        print(f"  {header.packet_type.name} to DCID {header.destination_cid.hex() or '(empty)'}")
        super().datagram_received(data, addr)

    def quic_event_received(self, event):
        if type(event).__name__ == "ConnectionTerminated":
            print(f"  closed: {event.reason_phrase!r} (error {event.error_code})")


async def main(server_library: str) -> None:
    if server_library == "qh3":
        from qh3.asyncio import serve
        from qh3.quic.configuration import QuicConfiguration as ServerConfiguration
    else:
        from aioquic.asyncio import serve
        from aioquic.quic.configuration import QuicConfiguration as ServerConfiguration
    chain, key = certificate()
    server_config = ServerConfiguration(is_client=False, alpn_protocols=["x"])
    if server_library == "qh3":
        server_config.load_cert_chain(chain, key)  # qh3 takes PEM bytes
    else:
        with open("cert.pem", "wb") as c, open("key.pem", "wb") as k:
            c.write(chain)
            k.write(key)
        server_config.load_cert_chain("cert.pem", "key.pem")
    server = await serve("127.0.0.1", 0, configuration=server_config)
    port = server._transport.get_extra_info("sockname")[1]
    config = QuicConfiguration(is_client=True, alpn_protocols=["x"], connection_id_length=0)
    config.verify_mode = ssl.CERT_NONE
    print(f"{server_library} server:")
    try:
        async with asyncio.timeout(3):
            async with connect(
                "127.0.0.1", port, configuration=config, create_protocol=Client
            ) as client:
                await client.wait_connected()
                print("  handshake completed")
    except (TimeoutError, ConnectionError):
        print("  handshake failed")
    finally:
        server.close()


if __name__ == "__main__":
    for library in sys.argv[1:] or ["aioquic", "qh3"]:
        asyncio.run(main(library))
