"""The server endpoint and the choice of QUIC library per role, over real QUIC on loopback."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket

import pytest

from qsse_core import ConfigurationError, Limits, ReconnectPolicy, Server
from qsse_core._quic import client_backend, server_backend
from qsse_core.asyncio._endpoint import parse_header

from .helpers import Recorder, client, eventually, raw_connect

HAS_QH3 = importlib.util.find_spec("qh3") is not None
ROLE_VARIABLES = ("QSSE_QUIC_BACKEND", "QSSE_QUIC_SERVER_BACKEND", "QSSE_QUIC_CLIENT_BACKEND")


@pytest.fixture
def no_backend_variables(monkeypatch):
    for name in ROLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_per_role(no_backend_variables):
    # Servers on aioquic: qh3 servers fail zero-length connection IDs (docs/quic-backends.md).
    assert server_backend().name == "aioquic"
    assert client_backend().name == ("qh3" if HAS_QH3 else "aioquic")
    assert Server(["a"]).quic_backend == "aioquic"


@pytest.mark.skipif(not HAS_QH3, reason="qh3 is not installed")
def test_environment_forces_both_roles_and_each_role_alone(no_backend_variables):
    env = no_backend_variables
    env.setenv("QSSE_QUIC_BACKEND", "qh3")
    assert (server_backend().name, client_backend().name) == ("qh3", "qh3")
    env.setenv("QSSE_QUIC_SERVER_BACKEND", "aioquic")
    env.setenv("QSSE_QUIC_CLIENT_BACKEND", "auto")
    assert (server_backend().name, client_backend().name) == ("aioquic", "qh3")
    assert Server(["a"], quic_backend="qh3").quic_backend == "qh3"


def test_unknown_backends_are_named(no_backend_variables):
    no_backend_variables.setenv("QSSE_QUIC_SERVER_BACKEND", "quiche")
    with pytest.raises(ConfigurationError, match=r"QSSE_QUIC_SERVER_BACKEND.*'quiche'"):
        server_backend()
    with pytest.raises(ConfigurationError, match="'msquic'"):
        Server(["a"], quic_backend="msquic")


@pytest.mark.skipif(not HAS_QH3, reason="qh3 is not installed")
async def test_default_pair_qh3_client_and_aioquic_server_in_one_process(
    no_backend_variables, protocol
):
    async with Server(["a"]) as server:
        assert server.quic_backend == "aioquic"
        async with client(server.address, ["a"]) as c:
            rec = Recorder(c)
            await server.wait_subscribed("a")
            for i in range(200):
                server.publish("a", b"%d" % i)
            await eventually(lambda: len(rec.messages) == 200)
            assert [m.data for m in rec.messages] == [b"%d" % i for i in range(200)]


@pytest.mark.parametrize(("host", "dialled"), [("0.0.0.0", "127.0.0.1"), ("::", "::1")])
async def test_wildcard_server_reports_an_address_a_client_can_dial(host, dialled):
    async with Server(["a"], host=host) as server:
        assert server.address == (f"[{dialled}]" if ":" in dialled else dialled) + f":{server.port}"
        async with client(server.address, ["a"], connect_timeout=5) as c:
            rec = Recorder(c)
            await server.wait_subscribed("a")
            server.publish("a", b"hi")
            await eventually(lambda: len(rec.messages) == 1)


@pytest.mark.parametrize("spelling", ["0.0.0.0", "[::ffff:127.0.0.1]"])
async def test_client_takes_replies_from_the_peer_it_dialled_whatever_the_spelling(spelling):
    # The kernel answers 0.0.0.0 from 127.0.0.1, and a v4-mapped address from a dual-stack
    # socket; the connected socket only delivers that peer's datagrams.
    async with Server(["a"], host="::" if spelling.startswith("[") else "0.0.0.0") as server:
        async with client(f"{spelling}:{server.port}", ["a"], connect_timeout=5) as c:
            rec = Recorder(c)
            await server.wait_subscribed("a")
            server.publish("a", b"hi")
            await eventually(lambda: len(rec.messages) == 1)


async def test_server_logs_the_peer_address(caplog):
    caplog.set_level(logging.WARNING, logger="qsse.server")
    async with Server(["a"], limits=Limits(offer_timeout=0.2)) as server:
        async with raw_connect(server.port) as raw:
            port = raw._transport.get_extra_info("sockname")[1]
            await eventually(lambda: raw.terminated is not None, timeout=5)
    closed = [r.getMessage() for r in caplog.records if "closed connection" in r.getMessage()]
    assert closed == [f"closed connection 127.0.0.1:{port}: no complete offer within 0.2 s"]


async def test_connection_ids_are_forgotten_when_connections_end(protocol):
    async with Server(["a"]) as server:
        clients = [client(server.address, ["a"]) for _ in range(20)]
        await asyncio.gather(*(c.connect() for c in clients))
        await server.wait_subscribed("a", 20)
        endpoint = server._endpoint
        assert endpoint is not None and endpoint.connection_count == 20
        # Each connection has several IDs (the client's first, ours, and those we issued).
        assert len(endpoint._protocols) > 20
        await asyncio.gather(*(c.close() for c in clients))
        await eventually(lambda: endpoint.connection_count == 0, timeout=10)
        assert endpoint._protocols == {}


def test_header_parsing_of_long_and_short_headers():
    initial = bytes([0xC3]) + (1).to_bytes(4, "big") + b"\x08" + b"D" * 8 + b"\x00" + b"\0" * 1200
    assert parse_header(initial, 8) == (1, True, b"D" * 8, b"")
    handshake = bytes([0xE3]) + (1).to_bytes(4, "big") + b"\x00" + b"\x04SSSS"
    assert parse_header(handshake, 8) == (1, False, b"", b"SSSS")
    v2_initial = bytes([0xD3]) + (0x6B3343CF).to_bytes(4, "big") + b"\x01X\x00"
    assert parse_header(v2_initial, 8) == (0x6B3343CF, True, b"X", b"")
    assert parse_header(bytes([0x43]) + b"C" * 8 + b"payload", 8) == (None, False, b"C" * 8, b"")
    # Cut short or out of bounds: dropped, never raised.
    for bad in (b"", b"\xc3\x00\x00", bytes([0xC3, 0, 0, 0, 1, 21]) + b"x" * 40, b"\x43CC"):
        assert parse_header(bad, 8) is None


async def test_unknown_version_gets_a_version_negotiation_and_no_connection():
    async with Server(["a"]) as server:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Catch(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                if not got.done():
                    got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(
            Catch, remote_addr=("127.0.0.1", server.port), family=socket.AF_INET
        )
        try:
            probe = bytes([0xC0]) + (0x1A2A3A4A).to_bytes(4, "big") + b"\x08DDDDDDDD\x04SSSS"
            transport.sendto(probe + b"\0" * (1200 - len(probe)))
            reply = await asyncio.wait_for(got, 5)
        finally:
            transport.close()
        version, _, dcid, scid = parse_header(reply, 8)
        assert version == 0 and dcid == b"SSSS" and scid == b"DDDDDDDD"
        assert server._endpoint is not None and server._endpoint.connection_count == 0


async def test_clients_whose_sockets_die_notice_and_reconnect(protocol):
    async with Server(["a"]) as server:
        clients = [
            client(server.address, ["a"], idle_timeout=2.0, reconnect=ReconnectPolicy(interval=0.1))
            for _ in range(20)
        ]
        recorders = [Recorder(c) for c in clients]
        await asyncio.gather(*(c.connect() for c in clients))
        await server.wait_subscribed("a", 20)
        for c in clients:
            c._transport.close()  # the socket dies under a connected client
        await eventually(lambda: all("lost" in r.states for r in recorders), timeout=20)
        await eventually(lambda: all(r.states[-1] == "connected" for r in recorders), timeout=20)
        await server.wait_subscribed("a", 20)
        await asyncio.gather(*(c.close() for c in clients))
