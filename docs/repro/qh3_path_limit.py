"""qh3 2.1 servers drop a client at its fourth address change; aioquic servers do not.

Run: python qh3_path_limit.py [qh3|aioquic]   (needs aioquic and qh3; loopback only)

An aioquic client connects, then moves to a new source port before each PING, with a new
connection ID each time (RFC 9000 section 9.5), as a phone changing networks does. A qh3
server answers from source ports 1 to 4 and never from the fifth: it keeps at most four
network paths per connection and never frees one. An aioquic server answers every time.
"""

import asyncio
import datetime
import sys
import tempfile

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
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


class Forward(asyncio.DatagramProtocol):
    """The client's new socket, feeding the same connection."""

    def __init__(self, client: QuicConnectionProtocol) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr) -> None:
        self.client.datagram_received(data, addr)


async def main(server_library: str) -> None:
    if server_library == "qh3":
        from qh3.asyncio import serve
        from qh3.quic.configuration import QuicConfiguration as ServerConfiguration
    else:
        from aioquic.asyncio import serve
        from aioquic.quic.configuration import QuicConfiguration as ServerConfiguration
    chain, key = certificate()
    config = ServerConfiguration(is_client=False, alpn_protocols=["x"])
    if server_library == "qh3":
        config.load_cert_chain(chain, key)  # qh3 takes PEM bytes
    else:
        with tempfile.NamedTemporaryFile(suffix=".pem") as pem:
            pem.write(chain + key)
            pem.flush()
            config.load_cert_chain(pem.name)
    server = await serve("127.0.0.1", 0, configuration=config)
    port = server._transport.get_extra_info("sockname")[1]

    loop = asyncio.get_running_loop()
    quic = QuicConnection(
        configuration=QuicConfiguration(is_client=True, alpn_protocols=["x"], verify_mode=0)
    )
    transport, client = await loop.create_datagram_endpoint(
        lambda: QuicConnectionProtocol(quic), local_addr=("127.0.0.1", 0)
    )
    client.connect(("127.0.0.1", port))
    await client.wait_connected()
    for n in range(1, 6):
        if n > 1:  # a new source port and a new connection ID
            transport.close()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: Forward(client), local_addr=("127.0.0.1", 0)
            )
            client._transport = transport
            quic.change_connection_id()
        source = transport.get_extra_info("sockname")[1]
        try:
            await asyncio.wait_for(client.ping(), 2)
            print(f"source port {n} ({source}): answered")
        except TimeoutError:
            print(f"source port {n} ({source}): no answer within 2 s")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "qh3"))
