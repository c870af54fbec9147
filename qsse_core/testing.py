"""Test aids: two in-memory QUIC endpoints that exchange datagrams with no sockets.

Protocol tests drive the sans-I/O connections through real QUIC and TLS this way, the way
aioquic's own tests do, with time passed in explicitly.
"""

from __future__ import annotations

from ._framing import ALPN_QSSE1
from ._quic import QuicConnection, QuicEvent, server_backend
from ._tls import self_signed

__all__ = ["QuicPair"]

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
