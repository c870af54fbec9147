"""Shared helpers for loopback tests: real QUIC on 127.0.0.1, bounded waits only."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent

from qsse_core import Client, Message, ReconnectPolicy


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, failing after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


class Recorder:
    """Collects what a client's handlers see."""

    def __init__(self, client: Client) -> None:
        self.messages: list[Message] = []
        self.errors: list[tuple[int, dict[str, object]]] = []
        self.states: list[str] = []
        client.on_message(self.messages.append)
        client.on_error(lambda code, data: self.errors.append((code, dict(data))))
        client.on_state(lambda change: self.states.append(change.state.value))


#: The protocols test clients offer; test modules parametrize it over qsse/2 and qsse/1.
PROTOCOLS: list[tuple[str, ...]] = [("qsse/2", "PROTOCOL_QUIC")]


def client(address: str, topics, **kwargs) -> Client:
    kwargs.setdefault("protocols", PROTOCOLS[0])
    kwargs.setdefault("insecure", True)
    kwargs.setdefault("reconnect", ReconnectPolicy(retry=False))
    return Client(address, topics, **kwargs)


class RawProtocol(QuicConnectionProtocol):
    """A bare QUIC client for sending what no qsse client would."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.terminated: ConnectionTerminated | None = None
        self.stream_data = bytearray()
        self.frozen = False

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
        elif hasattr(event, "data") and hasattr(event, "stream_id"):
            self.stream_data += event.data

    def datagram_received(self, data, addr) -> None:
        # A frozen client neither reads nor acknowledges: a stalled subscriber.
        if not self.frozen:
            super().datagram_received(data, addr)

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=end_stream)
        self.transmit()


def raw_connect(port: int, host: str = "127.0.0.1", alpn: str = "PROTOCOL_QUIC"):
    config = QuicConfiguration(is_client=True, alpn_protocols=[alpn])
    config.verify_mode = ssl.CERT_NONE
    return connect(host, port, configuration=config, create_protocol=RawProtocol)


def held_bytes(server) -> dict[object, int]:
    """Per connection: bytes in QUIC's send buffers plus bytes in qsse's queues."""
    held = {}
    for session in server._sessions:
        outboxes = {sub.outbox for sub in session.subscriptions.values()}
        held[session] = sum(session.backlog(o) + o.size for o in outboxes)
    return held
