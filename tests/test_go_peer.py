"""Interop with a Go-flavoured qsse peer over real QUIC (quic-go 0.29, as Go qsse used).

Go client <- our server: quic-go dials with a zero-length connection ID, as Chrome and
MsQuic do. Our client <- Go server: Go's always-expired certificate, one stream for every
event. Both ways: delivery in order, error events, a wrong token, a topic quiet for 40 s.
"""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from qsse_core import ConnectionClosedError, ConnectionState, ErrorCode, ReconnectPolicy, Server
from qsse_core._quic import server_backend

from . import go_peer
from .go_peer import GoPeer
from .helpers import Recorder, client, eventually

# The first test also builds the peer (about 20 s on two idle cores; quic-go from source).
pytestmark = pytest.mark.timeout(300)

#: quic-go's client leaves a topic quiet past the 30 s idle timeout only if someone pings.
QUIET = 40.0

QH3_SERVER = server_backend().name == "qh3"
QH3_REASON = (
    "qh3 2.1 servers answer a zero-length source connection ID with the client's original "
    "destination ID and refuse its transport parameters (docs/quic-backends.md)"
)


@pytest.fixture(scope="session")
def qssepeer():
    reason = go_peer.missing()
    if reason is not None:
        if os.environ.get("QSSE_REQUIRE_GO_PEER") == "1":
            pytest.fail(f"the Go peer is required here: {reason}")
        pytest.skip(reason)
    return go_peer.build()


def _data(line) -> bytes:
    return base64.b64decode(line.get("data") or "")


async def _go_client(binary, server: Server, topics: str, *args: str) -> GoPeer:
    return await GoPeer.start(binary, "client", "-addr", server.address, "-topics", topics, *args)


async def _go_server(binary, topics: str, *args: str) -> tuple[GoPeer, str]:
    peer = await GoPeer.start(binary, "server", "-listen", "127.0.0.1:0", "-topics", topics, *args)
    listening = await peer.expect(lambda line: line["kind"] == "listening")
    return peer, listening["address"]


# -- Go client <- our server -------------------------------------------------------------------


async def test_go_client_with_zero_length_connection_id_gets_every_event_in_order(
    qssepeer, request
):
    if QH3_SERVER:
        request.applymarker(pytest.mark.xfail(strict=True, reason=QH3_REASON))
    binary = bytes(range(256)) * 256  # every byte value, 64 KiB
    async with Server(["a", "b"]) as server:
        peer = await _go_client(qssepeer, server, "a,b")
        try:
            await peer.expect(lambda line: line["kind"] == "connected")
            await server.wait_subscribed("b")
            for i in range(1000):
                server.publish("a", b"%d" % i)
            server.publish("b", binary)
            last = await peer.expect(lambda line: line.get("topic") == "b", timeout=30)
            assert _data(last) == binary
            got = [_data(line) for line in peer.kind("event") if line["topic"] == "a"]
            assert got == [b"%d" % i for i in range(1000)]
            assert peer.kind("error") == [] and not peer.exited
        finally:
            await peer.stop()


@pytest.mark.skipif(QH3_SERVER, reason=QH3_REASON)
async def test_go_client_gets_error_events_in_offer_order(qssepeer):
    async with Server(["a", "secret"], authorizer=lambda token, topic: topic != "secret") as server:
        peer = await _go_client(qssepeer, server, "secret,a,nope", "-token", "t")
        try:
            await server.wait_subscribed("a")
            await eventually(lambda: server.publish("a", b"hi") == 1)
            await peer.expect(lambda line: line["kind"] == "event")
            errors = [(line["code"], line["data"]) for line in peer.kind("error")]
            assert errors == [
                (ErrorCode.NOT_AUTHORIZED, {"topic": "secret"}),
                (ErrorCode.TOPIC_NOT_AVAILABLE, {"topic": "nope"}),
            ]
        finally:
            await peer.stop()


@pytest.mark.skipif(QH3_SERVER, reason=QH3_REASON)
async def test_go_client_with_a_wrong_token_is_closed_with_code_1(qssepeer):
    async with Server(["a"], authenticator=lambda token: token == "good") as server:
        peer = await _go_client(qssepeer, server, "a", "-token", "bad")
        try:
            closed = await peer.expect(lambda line: line["kind"] == "closed")
            assert "not authorized" in closed["error"]
            assert "0x1" in closed["error"]  # quic-go: "Application error 0x1: not authorized"
            assert await asyncio.wait_for(peer.process.wait(), 5) == 1
            await eventually(lambda: server.connection_count == 0)
        finally:
            await peer.stop()


# -- our client <- Go server -------------------------------------------------------------------


async def test_client_gets_every_event_in_order_from_a_go_server(qssepeer):
    peer, address = await _go_server(qssepeer, "a,b,secret", "-deny", "secret")
    binary = bytes(range(256)) * 256
    try:
        c = client(address, ["secret", "a", "nope"])
        rec = Recorder(c)  # before connecting: the error events may arrive with the handshake
        async with c:
            await peer.expect(
                lambda line: line.get("topic") == "a" and line["kind"] == "subscribed"
            )
            await peer.command(publish="a", count=1000)
            await peer.command(publish="a", data=base64.b64encode(binary).decode())
            await eventually(lambda: len(rec.messages) >= 1001, timeout=30)
            assert [m.data for m in rec.messages[:1000]] == [b"%d" % i for i in range(1000)]
            assert rec.messages[1000].data == binary and len(rec.messages) == 1001
            await eventually(lambda: len(rec.errors) == 2)
            assert rec.errors == [
                (ErrorCode.NOT_AUTHORIZED, {"topic": "secret"}),
                (ErrorCode.TOPIC_NOT_AVAILABLE, {"topic": "nope"}),
            ]
            assert c.state is ConnectionState.CONNECTED
    finally:
        await peer.stop()


async def test_client_with_a_wrong_token_gives_up_on_a_go_server(qssepeer):
    peer, address = await _go_server(qssepeer, "a", "-token", "good")
    try:
        c = client(address, ["a"], token="bad", reconnect=ReconnectPolicy(interval=0.1))
        rec = Recorder(c)
        await c.connect()
        await asyncio.wait_for(c.wait_closed(), 10)
        assert isinstance(c.error, ConnectionClosedError)
        assert c.error.error_code == ErrorCode.NOT_AUTHORIZED
        assert c.error.reason == "not authorized"
        assert "retrying" not in rec.states  # no retry can fix a token, as in Go
        assert len(peer.kind("rejected")) == 1
    finally:
        await peer.stop()


# -- a topic quiet for 40 s, both ways at once -------------------------------------------------


@pytest.mark.timeout(QUIET + 300)
async def test_a_topic_quiet_for_40_s_keeps_both_directions_connected(qssepeer):
    """Go's idle timeout is 30 s and neither Go peer pings: the Python side must."""

    async def go_client_direction() -> None:
        async with Server(["quiet"]) as server:
            peer = await _go_client(qssepeer, server, "quiet")
            try:
                await server.wait_subscribed("quiet")
                server.publish("quiet", b"before")
                await peer.expect(lambda line: line["kind"] == "event")
                await asyncio.sleep(QUIET)
                assert server.publish("quiet", b"after") == 1
                await peer.expect(lambda line: _data(line) == b"after")
                assert peer.kind("closed") == []
            finally:
                await peer.stop()

    async def client_direction() -> None:
        peer, address = await _go_server(qssepeer, "quiet")
        try:
            async with client(address, ["quiet"]) as c:
                rec = Recorder(c)
                await peer.expect(lambda line: line["kind"] == "subscribed")
                await peer.command(publish="quiet", data=base64.b64encode(b"before").decode())
                await eventually(lambda: len(rec.messages) == 1)
                await asyncio.sleep(QUIET)
                assert c.state is ConnectionState.CONNECTED, rec.states
                await peer.command(publish="quiet", data=base64.b64encode(b"after").decode())
                await eventually(lambda: len(rec.messages) == 2)
                assert [m.data for m in rec.messages] == [b"before", b"after"]
        finally:
            await peer.stop()

    directions = [client_direction()]
    if not QH3_SERVER:
        directions.append(go_client_direction())
    results = await asyncio.gather(*directions, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
