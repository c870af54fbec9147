"""The server endpoint under datagrams no honest QUIC stack sends, over real UDP on loopback.

Each test keeps a good subscriber on the server: whatever the hostile datagrams do, it goes on
receiving every event, and the endpoint's tables hold only the connections that can end.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import socket

import pytest

from qsse_core import Limits, Server
from qsse_core.asyncio._endpoint import parse_header

from .helpers import Recorder, client, eventually


def initial(
    dcid: bytes,
    *,
    first: int = 0xC3,
    token: bytes = b"",
    length: int | None = None,
    size: int = 1200,
) -> bytes:
    """A version 1 Initial long header (RFC 9000 section 17.2.2), padded to ``size`` bytes."""
    header = bytes([first]) + (1).to_bytes(4, "big") + bytes([len(dcid)]) + dcid + b"\x08SSSSSSSS"
    header += bytes([0x40 | len(token) >> 8, len(token) & 0xFF]) + token
    if length is None:
        length = size - len(header) - 2
    header += (0x4000 | length).to_bytes(2, "big")
    return header + os.urandom(size - len(header))


# Each opens no connection: the QUIC libraries cannot read their header, so drop the packet
# before they know the peer's address, and are then left without a path to send on or a
# timer to end them (aioquic raised IndexError on every transmit, qh3 held them forever).
MALFORMED = {
    "length past the datagram": lambda dcid: initial(dcid, length=5000),
    "token past the datagram": lambda dcid: initial(dcid, token=b"t" * 4000, size=4100)[:1200],
    "fixed bit clear": lambda dcid: initial(dcid, first=0x83),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_parse_header_refuses_malformed_initials(name):
    assert parse_header(initial(b"D" * 8), 8) is not None
    assert parse_header(MALFORMED[name](b"D" * 8), 8) is None


@pytest.mark.parametrize("name", MALFORMED)
async def test_malformed_initials_open_no_connection_and_hurt_no_one(name, caplog):
    caplog.set_level(logging.DEBUG)
    async with Server(["a"]) as server:
        async with client(server.address, ["a"]) as c:
            rec = Recorder(c)
            await server.wait_subscribed("a")
            endpoint = server._endpoint
            assert endpoint is not None
            (good,) = set(endpoint._protocols.values())
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                for i in range(20):
                    sock.sendto(MALFORMED[name](os.urandom(8)), ("127.0.0.1", server.port))
                    server.publish("a", b"%d" % i)
                await eventually(lambda: len(rec.messages) == 20)
            finally:
                sock.close()
            assert [m.data for m in rec.messages] == [b"%d" % i for i in range(20)]
            assert endpoint.connection_count == 1
            # Only the good connection holds IDs (it may have issued more meanwhile).
            assert set(endpoint._protocols.values()) == {good}
    # The server closed cleanly (no connection without a path to send its close on), and
    # nothing was logged per datagram.
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_well_formed_garbage_initials_time_out_and_are_forgotten():
    # Undecryptable Initials do open connections (their header is valid, RFC 9000 section
    # 14.1); each ends by the idle timeout and takes its connection IDs with it.
    async with Server(["a"], limits=Limits(idle_timeout=0.5)) as server:
        endpoint = server._endpoint
        assert endpoint is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _ in range(20):
                sock.sendto(initial(os.urandom(8)), ("127.0.0.1", server.port))
        finally:
            sock.close()
        await eventually(lambda: endpoint.connection_count == 20)
        await eventually(lambda: endpoint.connection_count == 0)
        assert endpoint._protocols == {}


class LossyRelay:
    """Relays a client's datagrams to a server, dropping the client's first ``lost``."""

    def __init__(self, server_port: int, lost: int) -> None:
        self.server = ("127.0.0.1", server_port)
        self.lost = lost
        self.client: tuple[str, int] | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        relay = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                relay.client = addr
                if relay.lost > 0:
                    relay.lost -= 1
                else:
                    relay.back.sendto(data)

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                if relay.client is not None:
                    relay.front.sendto(data, relay.client)

        self.front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self.back, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.server)
        return self.front.get_extra_info("sockname")[1]

    def close(self) -> None:
        self.front.close()
        self.back.close()


@pytest.mark.skipif(importlib.util.find_spec("qh3") is None, reason="qh3 is not installed")
async def test_client_whose_first_initials_are_lost_still_connects(monkeypatch):
    # qh3 (the default client library) probes with a CRYPTO packet and a PING-only one: with
    # its first three datagrams lost, a PING-only Initial reached the server first, and the
    # server closed with PROTOCOL_VIOLATION instead of waiting for the next probe.
    monkeypatch.setenv("QSSE_QUIC_CLIENT_BACKEND", "qh3")
    async with Server(["a"]) as server:
        relay = LossyRelay(server.port, lost=3)
        port = await relay.start()
        try:
            async with client(f"127.0.0.1:{port}", ["a"], connect_timeout=15) as c:
                rec = Recorder(c)
                await server.wait_subscribed("a")
                server.publish("a", b"hi")
                await eventually(lambda: len(rec.messages) == 1)
        finally:
            relay.close()


async def test_hundreds_of_clients_closing_at_once_are_all_forgotten(monkeypatch):
    # Each close is one small datagram, all arriving together: the kernel's default receive
    # buffer dropped most of them, and each dropped close held its connection (and IDs) until
    # the idle timeout, a minute later.
    monkeypatch.setenv("QSSE_QUIC_CLIENT_BACKEND", "aioquic")
    async with Server(["a"]) as server:
        endpoint = server._endpoint
        assert endpoint is not None
        clients = [client(server.address, ["a"], connect_timeout=60) for _ in range(400)]
        await asyncio.gather(*(c.connect() for c in clients))
        await server.wait_subscribed("a", 400, timeout=60)
        await asyncio.gather(*(c.close() for c in clients))
        await eventually(lambda: endpoint.connection_count == 0, timeout=20)
        assert endpoint._protocols == {}
