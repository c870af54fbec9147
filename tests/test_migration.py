"""Connection migration (RFC 9000 section 9): subscribers that change address keep their
connection, whether a NAT moves them (a relay changes the source port the server sees) or the
client moves itself to a new socket (``Client.rebind()``).

Servers run on aioquic, the default server backend, whatever the suite's backend: the client
is the suite's (aioquic in the first run, qh3 in the second). A qh3 server cannot follow more
than three changes; its case is skipped with that reason, and one test pins the limit down.
"""

import asyncio
import importlib.util
import socket

import pytest

from qsse_core import ConnectionState, MemoryHistory, ReconnectPolicy, Server

from .helpers import Recorder, client, eventually
from .relay import Move, UdpRelay

pytestmark = pytest.mark.usefixtures("protocol")

QH3_PATH_LIMIT = (
    "a qh3 server keeps at most 4 network paths per connection and drops a client after its "
    "4th address change (docs/migration.md)"
)
HAS_QH3 = importlib.util.find_spec("qh3") is not None
SERVER_BACKENDS = [
    "aioquic",
    pytest.param("qh3", marks=pytest.mark.skip(reason=QH3_PATH_LIMIT)),
]

#: Waits for a whole step: generous, since the machine may be busy; nothing is timed.
STEP = 30.0


async def received(rec: Recorder, count: int, topic: str = "feed") -> None:
    await eventually(lambda: len([m for m in rec.messages if m.topic == topic]) >= count, STEP)


def aioquic_server(**kwargs) -> Server:
    return Server(["feed"], quic_backend="aioquic", **kwargs)


def publish(server: Server, first: int, count: int) -> int:
    for n in range(first, first + count):
        assert server.publish("feed", b"%d" % n) == 1
    return first + count


@pytest.mark.parametrize("server_backend", SERVER_BACKENDS)
@pytest.mark.parametrize("mode", list(Move), ids=[m.value for m in Move])
async def test_ten_address_changes_lose_nothing(mode, server_backend):
    async with (
        Server(["feed"], quic_backend=server_backend) as server,
        UdpRelay(("127.0.0.1", server.port)) as relay,
    ):
        # Probes after 0.2 s of silence find the server on a killed path quickly; a probe that
        # is late on a busy machine must not count as a dead path, hence the long timeout.
        c = client(relay.address, ["feed"], probe_interval=0.2, probe_timeout=STEP)
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("feed")
            sent = 0
            for _ in range(10):
                sent = publish(server, sent, 20)  # in flight while the address changes
                path = await relay.move(mode)
                sent = publish(server, sent, 20)  # sent to the old address, or the new one
                await asyncio.wait_for(path.reached.wait(), STEP)
                await received(rec, sent)
            assert [m.data for m in rec.messages] == [b"%d" % n for n in range(sent)]
            assert rec.errors == []
            assert rec.states == ["connecting", "connected"]  # no reconnect, no resume
            assert server.connection_count == 1
            migrated = server.metrics.path_migrations.labels(protocol=c.alpn_protocol)
            assert migrated._value.get() == 10
            assert relay.current.from_server > 0


async def test_a_quiet_client_without_probes_is_not_found_after_its_path_dies():
    # What the probes are for: a subscriber sends only acknowledgements, so when its old
    # path dies with nothing to acknowledge, the server never learns where it went.
    async with aioquic_server() as server, UdpRelay(("127.0.0.1", server.port)) as relay:
        c = client(relay.address, ["feed"], probe_interval=None)
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("feed")
            publish(server, 0, 1)
            await eventually(lambda: len(rec.messages) == 1)
            path = await relay.move(Move.KILL)
            publish(server, 1, 5)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(path.reached.wait(), 1.0)
            assert len(rec.messages) == 1
            # One datagram from the client is all it takes.
            c._protocol.quic.send_ping(0)
            c._protocol.transmit()
            await asyncio.wait_for(path.reached.wait(), STEP)
            await eventually(lambda: len(rec.messages) == 6, STEP)


@pytest.mark.skipif(not HAS_QH3, reason="qh3 is not installed")
async def test_qh3_server_keeps_three_address_changes_and_drops_the_fourth():
    async with (
        Server(["feed"], quic_backend="qh3") as server,
        UdpRelay(("127.0.0.1", server.port)) as relay,
    ):
        c = client(relay.address, ["feed"], probe_interval=0.2, probe_timeout=STEP)
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("feed")
            sent = publish(server, 0, 1)
            await eventually(lambda: len(rec.messages) == 1)
            for _ in range(3):  # the connection's paths 2, 3 and 4: the limit, reached
                path = await relay.move(Move.KILL)
                sent = publish(server, sent, 5)
                await asyncio.wait_for(path.reached.wait(), STEP)
                await received(rec, sent)
            migrated = server.metrics.path_migrations.labels(protocol=c.alpn_protocol)
            assert migrated._value.get() == 3
            path = await relay.move(Move.KILL)  # a fifth path: past it
            sent = publish(server, sent, 5)
            # The client's probes reach the server from the new port; it never answers there.
            start = relay.client_datagrams
            await eventually(lambda: relay.client_datagrams >= start + 3, STEP)
            assert path.from_server == 0
            assert len(rec.messages) < sent


# -- client-initiated moves ---------------------------------------------------------------------


async def test_an_unanswered_probe_moves_the_client_to_a_new_socket():
    async with aioquic_server() as server, UdpRelay(("127.0.0.1", server.port)) as relay:
        c = client(relay.address, ["feed"], probe_interval=0.2, probe_timeout=0.5)
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("feed")
            sent = publish(server, 0, 10)
            await received(rec, sent)
            relay.blackhole()  # the client's network is gone, silently
            sent = publish(server, sent, 10)
            await eventually(lambda: c.migrations >= 1, STEP)
            await received(rec, sent)
            assert [m.data for m in rec.messages] == [b"%d" % n for n in range(sent)]
            # A busy machine may delay an answer past 0.5 s and cause another move: harmless.
            assert rec.states[:4] == ["connecting", "connected", "probing", "migrated"]
            assert "lost" not in rec.states
            assert relay.dropped > 0


async def test_a_socket_error_moves_the_client_to_a_new_socket():
    async with aioquic_server() as server, UdpRelay(("127.0.0.1", server.port)) as relay:
        c = client(relay.address, ["feed"], probe_interval=0.2, probe_timeout=STEP)
        rec = Recorder(c)
        reasons: list[str] = []

        def on_state(change):
            if change.state is ConnectionState.PROBING:
                reasons.append(change.reason)
                relay.accept()  # reachable again, but only the new socket finds out

        c.on_state(on_state)
        async with c:
            await server.wait_subscribed("feed")
            sent = publish(server, 0, 10)
            await received(rec, sent)
            first = c.local_address
            relay.refuse()  # the next probe meets "port unreachable"
            sent = publish(server, sent, 10)
            await eventually(lambda: c.state is ConnectionState.MIGRATED, STEP)
            await received(rec, sent)
            assert [m.data for m in rec.messages] == [b"%d" % n for n in range(sent)]
            assert rec.states == ["connecting", "connected", "probing", "migrated"]
            assert reasons[0].startswith("socket error: ")
            assert c.local_address != first and c.migrations == 1


async def test_a_socket_error_on_the_new_socket_too_ends_the_connection_at_once():
    async with aioquic_server() as server, UdpRelay(("127.0.0.1", server.port)) as relay:
        # A probe timeout far beyond the test's wait: only the errors can end it this soon.
        c = client(relay.address, ["feed"], probe_interval=0.2, probe_timeout=10 * STEP)
        rec = Recorder(c)
        await c.connect()
        await server.wait_subscribed("feed")
        relay.refuse()  # for good: the server is unreachable from any socket
        await asyncio.wait_for(c.wait_closed(), STEP)
        assert rec.states == ["connecting", "connected", "probing", "lost", "gave_up"]
        assert c.error is not None and "the new socket failed too: " in str(c.error)
        await c.close()


async def test_ten_rebinds_lose_nothing():
    async with aioquic_server() as server:
        c = client(server.address, ["feed"], probe_timeout=STEP)
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("feed")
            ports = {c.local_address}
            (session,) = server._sessions
            # The connection ID the client addresses the server by (aioquic's host_cid).
            ids = {session.protocol.quic.host_cid}
            sent = 0
            for i in range(10):
                sent = publish(server, sent, 20)
                assert await c.rebind()  # events in flight meanwhile
                assert c.migrations == i + 1
                ports.add(c.local_address)
                await received(rec, sent)
                ids.add(session.protocol.quic.host_cid)
            assert len(ids) == 11  # RFC 9000 section 9.5: a new connection ID per path
            assert [m.data for m in rec.messages] == [b"%d" % n for n in range(sent)]
            assert len(ports) == 11  # a new socket each time
            assert rec.states == ["connecting", "connected"] + ["probing", "migrated"] * 10
            assert c.state is ConnectionState.MIGRATED
            assert server.connection_count == 1
            migrated = server.metrics.path_migrations.labels(protocol=c.alpn_protocol)
            assert migrated._value.get() == 10


async def test_rebind_over_ipv6():
    async with Server(["feed"], host="::1", quic_backend="aioquic") as server:
        c = client(server.address, ["feed"], probe_timeout=STEP)
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("feed")
            for i in range(3):
                publish(server, i, 1)
                assert await c.rebind()
                await received(rec, i + 1)
            assert c.local_address[0] == "::1"
            assert rec.states == ["connecting", "connected"] + ["probing", "migrated"] * 3


async def test_rebind_falls_back_to_resume_when_the_server_lost_the_connection(protocol):
    history = MemoryHistory()
    async with (
        Server(["feed"], history=history) as first,
        Server(["feed"], history=history) as second,
        UdpRelay(("127.0.0.1", first.port)) as relay,
    ):
        c = client(
            relay.address,
            ["feed"],
            probe_timeout=0.5,
            reconnect=ReconnectPolicy(interval=0.05, max_attempts=None),
        )
        rec = Recorder(c)
        async with c:
            await first.wait_subscribed("feed")
            sent = publish(first, 0, 10)
            await eventually(lambda: len(rec.messages) == sent)
            # The address now leads to a server that never heard of the connection.
            await relay.retarget(("127.0.0.1", second.port))
            for n in range(sent, sent + 10):
                second.publish("feed", b"%d" % n)  # into the shared history only
            sent += 10
            assert not await c.rebind()
            await eventually(lambda: c.state is ConnectionState.CONNECTED, STEP)
            assert rec.states[:4] == ["connecting", "connected", "probing", "lost"]
            assert rec.states[-1] == "connected"
            if protocol == "qsse/2":  # resumed from the history: nothing lost
                await received(rec, sent)
                assert [m.data for m in rec.messages] == [b"%d" % n for n in range(sent)]
            await second.wait_subscribed("feed")
            second.publish("feed", b"after")
            await eventually(lambda: rec.messages[-1].data == b"after", STEP)


async def test_closing_during_a_rebind_ends_it_with_false():
    async with aioquic_server() as server, UdpRelay(("127.0.0.1", server.port)) as relay:
        c = client(relay.address, ["feed"], probe_timeout=STEP)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))  # takes datagrams, never answers
            async with c:
                await server.wait_subscribed("feed")
                await relay.retarget(silent.getsockname())
                moving = asyncio.create_task(c.rebind())
                await eventually(lambda: c.state is ConnectionState.PROBING)
            assert await asyncio.wait_for(moving, STEP) is False
            assert c.state is ConnectionState.CLOSED


async def test_probes_of_an_idle_connection_back_off_until_data_flows_again():
    async with aioquic_server() as server:
        c = client(server.address, ["feed"], probe_interval=0.05, probe_timeout=STEP)
        waits = []  # the silence the next probe waits for, as each event arrives
        c.on_message(lambda message: waits.append(c._path._wait))
        async with c:
            await server.wait_subscribed("feed")
            # Each answered probe doubles the wait, up to 16 intervals.
            await eventually(lambda: c._path._wait == pytest.approx(0.8), STEP)
            publish(server, 0, 1)
            await eventually(lambda: waits != [], STEP)
            assert waits == [pytest.approx(0.05)]
            assert c.state is ConnectionState.CONNECTED


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"probe_interval": 0}, "probe_interval must be > 0 s or None, got 0"),
        ({"probe_interval": -1.0}, "probe_interval must be > 0 s or None, got -1.0"),
        ({"probe_timeout": 0.0}, "probe_timeout must be > 0 s, got 0.0"),
    ],
)
def test_probe_settings_are_checked(kwargs, error):
    from qsse_core import ConfigurationError

    with pytest.raises(ConfigurationError) as info:
        client("127.0.0.1:9", ["feed"], **kwargs)
    assert str(info.value) == error


async def test_rebind_needs_a_connection():
    from qsse_core import LocalProtocolError

    c = client("127.0.0.1:9", ["feed"])
    with pytest.raises(LocalProtocolError, match="rebind\\(\\) needs an open connection"):
        await c.rebind()
