"""The client's connection lifecycle: keep-alive, named handshake failures, dialling every
address, reconnecting without storms, noticing a dead socket, and reasons reaching the user.

Real QUIC over loopback on both backends; where a peer must behave unlike ours (a Go server
sends no keep-alive, a server that speaks another QUIC version), it is a bare aioquic or UDP
peer written here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived

from qsse_core import (
    Client,
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    ConnectionState,
    ErrorCode,
    Limits,
    NoCommonProtocolError,
    ReconnectPolicy,
    Server,
    StateChange,
    VersionNegotiationError,
)
from qsse_core._config import keepalive_interval
from qsse_core._framing import encode_event
from qsse_core._tls import self_signed
from qsse_core.asyncio import _client

from .helpers import RawProtocol, Recorder, client, eventually, raw_connect

QUIET = 2.5  # seconds of silence on a topic: several idle timeouts of 0.8 s


# -- peers unlike ours ---------------------------------------------------------------------------


class _GoLikeServerProtocol(QuicConnectionProtocol):
    """Go qsse's server as the wire sees it: reads the offer, answers on one stream, and
    sends no keep-alive of its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.offer = bytearray()
        self.terminated: ConnectionTerminated | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self.offer += event.data
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event

    def send_event(self, topic: str, data: bytes) -> None:
        stream = self._quic.get_next_available_stream_id(is_unidirectional=True)
        self._quic.send_stream_data(stream, encode_event(topic, data))
        self.transmit()


async def go_like_server(idle_timeout: float) -> tuple[Any, list[_GoLikeServerProtocol]]:
    config = QuicConfiguration(
        is_client=False, alpn_protocols=["PROTOCOL_QUIC"], idle_timeout=idle_timeout
    )
    cert = self_signed(["localhost", "127.0.0.1"])
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    config.certificate, *config.certificate_chain = x509.load_pem_x509_certificates(cert.chain_pem)
    config.private_key = load_pem_private_key(cert.key_pem, password=None)
    peers: list[_GoLikeServerProtocol] = []

    def create(*args: Any, **kwargs: Any) -> _GoLikeServerProtocol:
        peer = _GoLikeServerProtocol(*args, **kwargs)
        peers.append(peer)
        return peer

    server = await serve("127.0.0.1", 0, configuration=config, create_protocol=create)
    return server, peers


class _VersionNegotiator(asyncio.DatagramProtocol):
    """Answers every Initial with a Version Negotiation packet offering only a version no
    client speaks (RFC 9000 section 17.2.1; 0x?a?a?a?a is reserved for exactly that)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.answered = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 7 or not data[0] & 0x80:
            return
        dcid_len = data[5]
        dcid = data[6 : 6 + dcid_len]
        scid_len = data[6 + dcid_len]
        scid = data[7 + dcid_len : 7 + dcid_len + scid_len]
        packet = (
            bytes([0x80 | 0x2A, 0, 0, 0, 0])
            + bytes([len(scid)])
            + scid
            + bytes([len(dcid)])
            + dcid
            + bytes.fromhex("1a2a3a4a")
        )
        self.transport.sendto(packet, addr)  # type: ignore[attr-defined]
        self.answered += 1


def _states(c: Client) -> list[StateChange]:
    changes: list[StateChange] = []
    c.on_state(changes.append)
    return changes


# -- 1. keep-alive derived from the negotiated idle timeout -------------------------------------


def test_keepalive_is_a_third_of_the_smaller_idle_timeout():
    assert keepalive_interval(60.0, 30.0) == pytest.approx(10.0)
    assert keepalive_interval(2.0, 30.0) == pytest.approx(2 / 3)
    assert keepalive_interval(30.0, None) == pytest.approx(10.0)  # peer without a timeout
    assert keepalive_interval(60.0, 30.0, configured=5.0) == 5.0  # shorter: used
    assert keepalive_interval(60.0, 3.0, configured=5.0) == pytest.approx(1.0)  # longer: not


def test_keepalive_settings_that_cannot_work_are_refused():
    with pytest.raises(ConfigurationError, match=r"keepalive_interval \(2 s\) must be shorter"):
        Limits(idle_timeout=2, keepalive_interval=2)
    with pytest.raises(ConfigurationError, match=r"keepalive_interval \(3 s\) must be shorter"):
        Client("127.0.0.1:1", ["t"], idle_timeout=2, keepalive_interval=3)
    with pytest.raises(ConfigurationError, match="idle_timeout must be positive"):
        Client("127.0.0.1:1", ["t"], idle_timeout=0)
    with pytest.raises(ValueError):  # ConfigurationError is a ValueError, as before
        Limits(keepalive_interval=-1)
    Limits(idle_timeout=2)  # the keep-alive follows: nothing to configure


async def test_client_keeps_alive_a_quiet_connection_to_a_server_that_never_pings():
    server, peers = await go_like_server(idle_timeout=0.8)
    port = server._transport.get_extra_info("sockname")[1]
    try:
        c = client(f"127.0.0.1:{port}", ["quiet"])  # its own idle timeout: 30 s
        rec = Recorder(c)
        async with c:
            await eventually(lambda: peers and peers[0].offer.endswith(b"\n"))
            await asyncio.sleep(QUIET)  # silence: the server neither writes nor pings
            assert peers[0].terminated is None
            assert rec.states == ["connecting", "connected"]
            peers[0].send_event("quiet", b"still here")
            await eventually(lambda: len(rec.messages) == 1)
    finally:
        server.close()


async def test_server_keeps_alive_a_peer_with_a_shorter_idle_timeout():
    # A bare client that never pings, whose idle timeout is far below the server's.
    async with Server(["quiet"]) as server:
        config = QuicConfiguration(
            is_client=True, alpn_protocols=["PROTOCOL_QUIC"], idle_timeout=0.8
        )
        config.verify_mode = ssl.CERT_NONE
        async with connect(
            "127.0.0.1", server.port, configuration=config, create_protocol=RawProtocol
        ) as raw:
            raw.send(2, b'{"topics":["quiet"]}\n', end_stream=True)
            await server.wait_subscribed("quiet")
            await asyncio.sleep(QUIET)
            assert raw.terminated is None
            assert server.publish("quiet", b"x") == 1
            await eventually(lambda: b"eA==" in raw.stream_data)


async def test_server_keeps_alive_under_its_own_short_idle_timeout():
    async with Server(["quiet"], limits=Limits(idle_timeout=0.8)) as server:
        async with raw_connect(server.port) as raw:  # never pings
            raw.send(2, b'{"topics":["quiet"]}\n', end_stream=True)
            await server.wait_subscribed("quiet")
            await asyncio.sleep(QUIET)
            assert raw.terminated is None
            assert server.publish("quiet", b"x") == 1
            await eventually(lambda: b"eA==" in raw.stream_data)


async def test_short_idle_timeouts_on_both_sides_keep_a_healthy_subscriber():
    async with Server(["quiet"], limits=Limits(idle_timeout=0.8)) as server:
        c = client(server.address, ["quiet"], idle_timeout=0.8)
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("quiet")
            await asyncio.sleep(QUIET)
            assert rec.states == ["connecting", "connected"]
            assert server.publish("quiet", b"x") == 1
            await eventually(lambda: len(rec.messages) == 1)


# -- 2. handshake failures named at once ---------------------------------------------------------


async def test_no_common_alpn_fails_at_once_and_is_not_retried(protocol):
    other = ("qsse/2",) if protocol == "qsse/1" else ("PROTOCOL_QUIC",)
    async with Server(["t"], protocols=other) as server:
        c = client(server.address, ["t"], reconnect=ReconnectPolicy(interval=0.05))
        changes = _states(c)
        with pytest.raises(NoCommonProtocolError, match="no common application protocol") as e:
            await asyncio.wait_for(c.connect(), 5)  # connect_timeout is 10 s, retries 5
        assert "ALPN" in e.value.reason or "ALPN" in str(e.value)
        assert e.value.retryable is False
        assert [ch.state for ch in changes] == [ConnectionState.CONNECTING, ConnectionState.GAVE_UP]
        await c.close()


async def test_version_negotiation_failure_is_named():
    loop = asyncio.get_running_loop()
    transport, negotiator = await loop.create_datagram_endpoint(
        _VersionNegotiator, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        c = client(f"127.0.0.1:{port}", ["t"], reconnect=ReconnectPolicy(interval=0.05))
        with pytest.raises(VersionNegotiationError, match="no common QUIC version"):
            await asyncio.wait_for(c.connect(), 5)
        assert negotiator.answered >= 1
        await c.close()
    finally:
        transport.close()


async def test_wrong_token_is_not_retried(protocol):
    async with Server(["t"], authenticator=lambda token: token == "good") as server:
        c = client(server.address, ["t"], token="bad", reconnect=ReconnectPolicy(interval=0.01))
        changes = _states(c)
        await c.connect()
        await asyncio.wait_for(c.wait_closed(), 5)
        assert ConnectionState.RETRYING not in [ch.state for ch in changes]
        assert isinstance(c.error, ConnectionClosedError)
        assert c.error.error_code == ErrorCode.NOT_AUTHORIZED and not c.error.retryable
        await c.close()


# -- 3. dialling every address -------------------------------------------------------------------


def _dual_stack(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """``dual.test`` resolves to ::1 first, then 127.0.0.1 (as ``localhost`` often does)."""

    async def resolve(host: str, p: int) -> list[tuple[Any, ...]]:
        assert host == "dual.test"
        return [
            (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("::1", p, 0, 0)),
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", p)),
        ]

    monkeypatch.setattr(_client, "_getaddrinfo", resolve)


async def test_every_address_of_a_host_is_tried(monkeypatch):
    async with Server(["t"], host="127.0.0.1") as server:  # IPv4 only
        _dual_stack(monkeypatch, server.port)
        c = client(f"dual.test:{server.port}", ["t"], server_name="localhost")
        rec = Recorder(c)
        async with c:
            await eventually(lambda: server.publish("t", b"v4") == 1)
            await eventually(lambda: len(rec.messages) == 1)
            assert c._transport is not None
            assert c._transport.get_extra_info("peername")[0] == "127.0.0.1"


async def test_every_failure_is_reported(monkeypatch):
    port = _free_udp_port()
    _dual_stack(monkeypatch, port)
    c = client(f"dual.test:{port}", ["t"], connect_timeout=3)
    with pytest.raises(ConnectError) as caught:
        await c.connect()
    message = str(caught.value)
    assert f"cannot connect to dual.test:{port}" in message
    assert f"[::1]:{port}: " in message and f"127.0.0.1:{port}: " in message


async def test_addresses_alternate_families_ipv6_first(monkeypatch):
    async def resolve(host: str, p: int) -> list[tuple[Any, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", p)),
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.2", p)),
            (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("::1", p, 0, 0)),
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", p)),  # repeated
        ]

    monkeypatch.setattr(_client, "_getaddrinfo", resolve)
    c = Client("many.test:4242", ["t"])
    got = [addr[0] for _, addr in await c._resolve()]
    assert got == ["::1", "127.0.0.1", "127.0.0.2"]  # RFC 8305 section 4


async def test_failed_dials_leave_no_timer_task_or_log_behind(caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    port = _free_udp_port()
    c = client(
        f"127.0.0.1:{port}",
        ["t"],
        connect_timeout=1,
        reconnect=ReconnectPolicy(interval=0.05, max_attempts=4),
    )
    with pytest.raises(ConnectError):
        await c.connect()
    await c.close()
    # The QUIC libraries' loss timers would fire within a second of the last dial.
    await asyncio.sleep(1.5)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    noise = [r for r in caplog.records if r.name == "asyncio" or r.levelno >= logging.ERROR]
    assert noise == [], [r.getMessage() for r in noise]


def test_sub_retry_prints_no_socket_noise_while_the_server_is_down():
    port = _free_udp_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qsse_core",
            "sub",
            f"127.0.0.1:{port}",
            "t",
            "--insecure",
            "--retry",
        ],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        while sum("retry" in line for line in lines) < 4:
            line = proc.stderr.readline().decode()
            assert line, "sub exited: " + "".join(lines)
            lines.append(line)
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=20)
    text = "".join(lines) + rest.decode()
    assert "socket.send() raised exception" not in text
    assert "Traceback" not in text and "AttributeError" not in text
    assert proc.returncode == 0  # SIGTERM while dialling ends it cleanly


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 4. reconnect policy that cannot storm -------------------------------------------------------


async def test_a_server_that_refuses_after_the_handshake_sees_backoff_and_a_give_up():
    async with Server(["t"], limits=Limits(max_connections=1)) as server:
        holder = client(server.address, ["t"])
        async with holder:
            await server.wait_subscribed("t")
            c = client(
                server.address, ["t"], reconnect=ReconnectPolicy(interval=0.2, max_attempts=3)
            )
            changes = _states(c)
            await c.connect()
            await asyncio.wait_for(c.wait_closed(), 20)
            refused = server.metrics.protocol_errors.labels(reason="too_many_connections")
            assert refused._value.get() == 4  # the first dial and three retries
            retries = [ch for ch in changes if ch.state is ConnectionState.RETRYING]
            assert [ch.attempt for ch in retries] == [1, 2, 3]
            assert retries[1].delay > retries[0].delay  # backoff
            assert changes[-1].state is ConnectionState.GAVE_UP
            assert isinstance(c.error, ConnectionClosedError)
            assert c.error.error_code == ErrorCode.TOO_MANY_CONNECTIONS
            await c.close()


async def test_the_first_redial_after_a_loss_waits_its_jittered_interval():
    async with Server(["t"]) as server:
        policy = ReconnectPolicy(interval=0.5, jitter=0.2, stable_after=0)
        c = client(server.address, ["t"], reconnect=policy)
        changes = _states(c)
        async with c:
            await server.wait_subscribed("t")
            session = next(iter(server._sessions))
            server._refuse(session, ErrorCode.GOING_AWAY, "restarting")
            await eventually(lambda: len(changes) == 5, 10)
            after = [ch.state for ch in changes[2:]]
            assert after == [
                ConnectionState.LOST,
                ConnectionState.RETRYING,
                ConnectionState.CONNECTED,
            ]
            assert 0.4 <= changes[3].delay <= 0.6


# -- 5. a client notices its dead socket ---------------------------------------------------------


async def test_a_closed_transport_is_noticed_and_reconnected():
    async with Server(["t"]) as server:
        c = client(server.address, ["t"], reconnect=ReconnectPolicy(interval=0.05))
        rec = Recorder(c)
        await c.connect()
        await server.wait_subscribed("t")
        assert c._transport is not None
        c._transport.close()  # as if the socket died under the client
        await eventually(lambda: rec.states[-1:] == ["connected"] and "lost" in rec.states)
        await eventually(lambda: server.publish("t", b"again") >= 1)
        await eventually(lambda: any(m.data == b"again" for m in rec.messages))
        await c.close()  # never raises
        c._transport = None
        await c.close()  # nor twice


async def test_close_after_the_transport_died_does_not_raise():
    async with Server(["t"]) as server:
        c = client(server.address, ["t"])
        await c.connect()
        assert c._transport is not None
        c._transport.close()
        await c.close()
        assert c.state is ConnectionState.CLOSED


_CRASHING_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from qsse_core import Server

    async def main():
        async with Server(["t"]) as server:
            print(server.port, flush=True)
            await server.wait_subscribed("t", timeout=30)
            print("subscribed", flush=True)
            await asyncio.sleep(60)

    asyncio.run(main())
    """
)


async def test_a_server_that_died_is_noticed_before_the_idle_timeout():
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.to_thread(proc.stdout.readline))
        # Keep-alive every second; the idle timeout would take 30 s to say anything.
        c = client(f"127.0.0.1:{port}", ["t"], keepalive_interval=1)
        changes = _states(c)
        await c.connect()
        assert await asyncio.to_thread(proc.stdout.readline) == b"subscribed\n"
        proc.kill()  # no close frame: the next PING meets a closed port
        await asyncio.to_thread(proc.wait, 10)
        await asyncio.wait_for(c.wait_closed(), 15)
        lost = [ch for ch in changes if ch.state is ConnectionState.LOST]
        # The refused PING first moves the client to a new socket (the network may have
        # changed); refused there too, the connection ends at once.
        assert lost and "Connection refused" in lost[0].reason, lost
        await c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


# -- 6. reasons reach the user -------------------------------------------------------------------


async def test_sync_handler_return_values_are_ignored(caplog):
    async with Server(["t"]) as server:
        c = client(server.address, ["t"])
        got: list[bytes] = []

        def handler(message: Any) -> bool:
            got.append(message.data)
            return True

        c.on("t", handler)
        async with c:
            await eventually(lambda: server.publish("t", b"x") == 1)
            await eventually(lambda: got == [b"x"])
            await asyncio.sleep(0.05)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


_SLOW_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from qsse_core import Server

    async def main():
        async with Server(["t"]) as server:
            print(server.port, flush=True)
            await server.wait_subscribed("t", timeout=30)
            payload = b"x" * 1000
            while server.connection_count:  # about 5 MB/s until the subscriber is gone
                for _ in range(10):
                    server.publish("t", payload)
                await asyncio.sleep(0.002)
            sys.stdin.read()

    asyncio.run(main())
    """
)


async def test_a_subscriber_blocked_too_long_hears_slow_consumer_not_idle_timeout(protocol):
    # The server runs in its own process so that blocking this loop blocks only the client.
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.to_thread(proc.stdout.readline))
        c = client(f"127.0.0.1:{port}", ["t"])  # idle timeout 30 s
        changes = _states(c)
        received = 0
        loop = asyncio.get_running_loop()
        started = loop.time()

        def handler(message: Any) -> None:
            nonlocal received
            received += 1
            # Block once the stream is in full flow (its congestion window grown), so that
            # what is in flight overfills a small socket buffer.
            if received == 3000 or (received < 3000 and loop.time() - started > 2):
                received = 3001
                time.sleep(6)  # a blocked loop: nothing read, nothing acknowledged

        c.on("t", handler)
        await c.connect()
        await asyncio.wait_for(c.wait_closed(), 25)
        lost = [ch for ch in changes if ch.state is ConnectionState.LOST]
        assert lost and lost[0].error_code == ErrorCode.SLOW_CONSUMER, lost
        await c.close()
    finally:
        proc.kill()
        proc.communicate(timeout=10)


# -- 7. Go parity at the byte level --------------------------------------------------------------


@pytest.mark.parametrize(
    "offer", [b'{"Topics":["a&b"]}\n', b'{"topics":["a&b"],"token":null}\n', b"null\n"]
)
async def test_server_reads_offers_and_writes_topics_as_go_does(offer):
    async with Server(["a&b"]) as server, raw_connect(server.port) as raw:
        raw.send(2, offer, end_stream=True)
        if offer == b"null\n":  # Go reads it as an empty offer: accepted, no topics
            await eventually(lambda: server.connection_count == 1)
            assert raw.terminated is None and server.subscription_count() == 0
            return
        await server.wait_subscribed("a&b", timeout=5)
        assert server.publish("a&b", b"x") == 1
        await eventually(lambda: raw.stream_data.endswith(b"\n"))
        assert bytes(raw.stream_data) == b'{"topic":"a\\u0026b","data":"eA=="}\n'
