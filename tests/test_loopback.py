"""Server and clients over real QUIC on loopback, in separate tasks."""

import asyncio

import pytest
from prometheus_client import generate_latest

from qsse_core import (
    Client,
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    ConnectionState,
    ErrorCode,
    Limits,
    LocalProtocolError,
    ReconnectPolicy,
    Server,
    TLSError,
)

from .helpers import Recorder, client, eventually

pytestmark = pytest.mark.usefixtures("protocol")


async def test_fifty_clients_each_receive_a_thousand_events_in_order():
    async with Server(["feed"]) as server:
        clients = [client(server.address, ["feed"]) for _ in range(50)]
        recorders = [Recorder(c) for c in clients]
        await asyncio.gather(*(c.connect() for c in clients))
        await eventually(lambda: server.metrics.subscribers.labels(topic="feed")._value.get() == 50)
        for i in range(1000):
            assert server.publish("feed", b"%d" % i) == 50
            if i % 100 == 99:
                await asyncio.sleep(0)
        expected = [b"%d" % i for i in range(1000)]
        await eventually(lambda: all(len(r.messages) >= 1000 for r in recorders), timeout=60)
        for r in recorders:
            assert [m.data for m in r.messages] == expected
            assert r.errors == []
        await asyncio.gather(*(c.close() for c in clients))


async def test_authentication_rejected_with_code_1():
    async with Server(["a"], authenticator=lambda token: token == "good") as server:
        bad = client(server.address, ["a"], token="bad")
        rec = Recorder(bad)
        await bad.connect()
        await asyncio.wait_for(bad.wait_closed(), 5)
        assert rec.errors == [(ErrorCode.NOT_AUTHORIZED, {"reason": "not authorized"})]
        assert rec.states[-2:] == ["lost", "gave_up"]
        assert isinstance(bad.error, ConnectionClosedError)
        assert bad.error.error_code == 1 and bad.error.reason == "not authorized"
        assert server.metrics.authentication_failures._value.get() == 1

        async with client(server.address, ["a"], token="good") as good:
            rec = Recorder(good)
            await eventually(lambda: server.publish("a", b"hi") == 1)
            await eventually(lambda: rec.messages != [])


async def test_async_hooks_and_per_topic_authorization():
    async def authenticate(token: str) -> bool:
        await asyncio.sleep(0.01)
        return token.startswith("user:")

    async def authorize(token: str, topic: str) -> bool:
        await asyncio.sleep(0)
        return topic != "secret"

    async with Server(
        ["open", "secret"], authenticator=authenticate, authorizer=authorize
    ) as server:
        c = client(server.address, ["open", "secret", "nope"], token="user:1")
        rec = Recorder(c)
        async with c:
            await eventually(lambda: len(rec.errors) == 2)
            assert rec.errors == [
                (ErrorCode.NOT_AUTHORIZED, {"topic": "secret"}),
                (ErrorCode.TOPIC_NOT_AVAILABLE, {"topic": "nope"}),
            ]
            assert server.publish("secret", b"x") == 0
            assert server.publish("open", b"y") == 1
            await eventually(lambda: len(rec.messages) == 1)
            assert rec.messages[0].topic == "open"
        out = generate_latest(server.metrics.registry).decode()
        assert 'qsse_authorization_failures_total{topic="secret"} 1.0' in out


async def test_wildcard_publish_and_handler_routing_like_go():
    topics = ["ride.passenger.start", "ride.passenger.cancel", "ride.driver.location"]
    async with Server(topics) as server:
        c = client(server.address, topics)
        passenger, every, rest = [], [], []
        c.on("ride.passenger.*", passenger.append)
        c.on("ride.*", every.append)
        c.on_message(rest.append)
        c2 = client(server.address, ["ride.driver.location"])
        only_driver = []
        c2.on("ride.passenger.*", only_driver.append)
        c2.on_message(only_driver.append)
        async with c, c2:
            await server.wait_subscribed("ride.passenger.cancel")
            await server.wait_subscribed("ride.driver.location", 2)
            assert server.publish("ride.*", b"all") == 4
            assert server.publish("ride.passenger.*", b"p") == 2
            await eventually(lambda: len(every) == 5 and len(only_driver) == 1)
            assert sorted(m.topic for m in passenger) == [
                "ride.passenger.cancel",
                "ride.passenger.cancel",
                "ride.passenger.start",
                "ride.passenger.start",
            ]
            assert rest == []  # every event matched a handler
            assert [(m.topic, m.data) for m in only_driver] == [("ride.driver.location", b"all")]


async def test_declared_pattern_admits_concrete_topics_once_per_subscription():
    async with Server(["ride.*.status"]) as server:
        one = client(server.address, ["ride.42.status"])
        all_ = client(server.address, ["ride.*.status"])
        both = client(server.address, ["ride.*.status", "ride.42.status"])
        recs = [Recorder(c) for c in (one, all_, both)]
        async with one, all_, both:
            await server.wait_subscribed("ride.*.status", 2)
            await server.wait_subscribed("ride.42.status", 2)
            assert server.publish("ride.42.status", b"a") == 4
            assert server.publish("ride.7.status", b"b") == 2
            await eventually(lambda: [len(r.messages) for r in recs] == [1, 2, 3])
            assert {m.topic for r in recs for m in r.messages} == {
                "ride.42.status",
                "ride.7.status",
            }
        with pytest.raises(LocalProtocolError, match="matches no declared topic"):
            server.publish("driver.1.location", b"x")


async def test_reconnect_and_resubscribe_after_server_restart():
    server = Server(["a"])
    await server.start()
    port = server.port
    c = Client(
        server.address,
        ["a"],
        insecure=True,
        reconnect=ReconnectPolicy(interval=0.05, max_interval=0.2, max_attempts=50),
    )
    rec = Recorder(c)
    await c.connect()
    await eventually(lambda: server.publish("a", b"before") == 1)
    await eventually(lambda: len(rec.messages) == 1)
    await server.close()
    await eventually(lambda: "retrying" in rec.states)
    server = Server(["a"], port=port)
    await server.start()
    try:
        # Published once the client is back: qsse/2 would replay (after a gap) whatever the
        # new server published before that, so polling with publish would deliver every try.
        await server.wait_subscribed("a")
        assert server.publish("a", b"after") == 1
        await eventually(lambda: len(rec.messages) == 2)
        assert [m.data for m in rec.messages] == [b"before", b"after"]
        assert rec.states[:2] == ["connecting", "connected"]
        assert "lost" in rec.states and rec.states[-1] == "connected"
    finally:
        await c.close()
        await server.close()


async def test_graceful_shutdown_sends_going_away():
    server = Server(["a"])
    await server.start()
    c = client(server.address, ["a"])
    changes = []
    c.on_state(changes.append)
    await c.connect()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.close()
    await asyncio.wait_for(c.wait_closed(), 5)
    assert loop.time() - started < 2  # a close frame, not an idle timeout
    lost = [ch for ch in changes if ch.state is ConnectionState.LOST]
    assert lost[0].error_code == ErrorCode.GOING_AWAY
    assert lost[0].reason == "GOING_AWAY: server shutting down"
    await c.close()


async def test_first_dial_retries_then_gives_up():
    c = Client(
        "127.0.0.1:9",
        ["a"],
        insecure=True,
        connect_timeout=0.5,
        reconnect=ReconnectPolicy(interval=0.01, max_attempts=2),
    )
    states = []
    c.on_state(lambda ch: states.append((ch.state.value, ch.attempt)))
    with pytest.raises(ConnectError, match=r"cannot connect to 127\.0\.0\.1:9"):
        await c.connect()
    assert states == [
        ("connecting", 0),
        ("retrying", 1),
        ("retrying", 2),
        ("gave_up", 2),
    ]


async def test_tls_verification_is_on_by_default(tmp_path):
    async with Server(["a"], host="127.0.0.1") as server:
        strict = Client(
            server.address, ["a"], reconnect=ReconnectPolicy(retry=False), connect_timeout=3
        )
        # Refused at once and by name, not after the connect timeout; never retried.
        with pytest.raises(TLSError, match=r"cannot connect .* \(bad_certificate\)") as caught:
            await asyncio.wait_for(strict.connect(), 2)
        assert caught.value.alert == 42 and not caught.value.retryable
        assert server.certificate_pem is not None
        ca = tmp_path / "ca.pem"
        ca.write_bytes(server.certificate_pem)
        trusted = Client(
            server.address, ["a"], cafile=str(ca), reconnect=ReconnectPolicy(retry=False)
        )
        rec = Recorder(trusted)
        async with trusted:
            await eventually(lambda: server.publish("a", b"v") == 1)
            await eventually(lambda: len(rec.messages) == 1)


async def test_ipv6_loopback():
    async with Server(["a"], host="::1") as server:
        assert server.address.startswith("[::1]:")
        c = client(server.address, ["a"])
        rec = Recorder(c)
        async with c:
            await eventually(lambda: server.publish("a", b"six") == 1)
            await eventually(lambda: len(rec.messages) == 1)


async def test_async_iteration_and_async_handlers_in_order():
    async with Server(["a"]) as server:
        c = client(server.address, ["a"])
        seen = []

        async def slow(message):
            await asyncio.sleep(0.001)
            seen.append(message.data)

        c.on("a", slow)
        async with c:
            iterator = aiter(c)
            await eventually(lambda: server.publish("a", b"0") == 1)
            for i in range(1, 20):
                server.publish("a", b"%d" % i)
            got = [(await anext(iterator)).data for _ in range(20)]
            assert got == [b"%d" % i for i in range(20)]
            await eventually(lambda: len(seen) == 20)
            assert seen == got


async def test_metrics_names_follow_prometheus_conventions(protocol):
    async with Server(["ride.*.status"]) as server:
        c = client(server.address, ["ride.*.status"])
        async with c:
            await server.wait_subscribed("ride.*.status")
            assert server.publish("ride.1.status", b"x") == 1
        server.metrics.validation_rejected("ride.*.status")
        out = generate_latest(server.metrics.registry).decode()
    for line in [
        'qsse_connections{protocol="%s"}' % ("qsse/2" if protocol == "qsse/2" else "PROTOCOL_QUIC"),
        'qsse_subscribers{topic="ride.*.status"}',
        'qsse_events_published_total{topic="ride.*.status"} 1.0',
        'qsse_events_delivered_total{topic="ride.*.status"} 1.0',
        'qsse_validation_rejections_total{topic="ride.*.status"} 1.0',
        "qsse_publish_write_latency_seconds_count 1.0",
        "qsse_authentication_failures_total 0.0",
    ]:
        assert line in out
    assert "ride.1.status" not in out  # labels stay bounded: declared topics only


async def test_keepalive_pings_hold_quiet_connections_open():
    # The client's 1 s idle timeout stands in for Go's 30 s, which exits Go clients; an
    # explicit interval shorter than the derived one is used as is.
    limits = Limits(keepalive_interval=0.2)
    async with Server(["quiet"], limits=limits) as server:
        c = client(server.address, ["quiet"], idle_timeout=1.0)
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("quiet")
            await asyncio.sleep(2.5)  # silence on the topic
            assert rec.states == ["connecting", "connected"]
            assert server.publish("quiet", b"still here") == 1
            await eventually(lambda: len(rec.messages) == 1)


def test_metrics_handler_is_a_wsgi_app_like_gos_metric_handler():
    server = Server(["a"])
    app = server.metrics_handler()
    status: list[str] = []
    body = b"".join(
        app(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""},
            lambda s, headers: status.append(s),
        )
    )
    assert status == ["200 OK"]
    assert b'qsse_events_published_total{topic="a"} 0.0' in body


async def test_runs_on_the_loop_and_backend_asked_for():
    import os

    import qsse_core

    if os.environ.get("QSSE_TEST_UVLOOP") == "1":
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    wanted = os.environ.get("QSSE_QUIC_BACKEND")
    if wanted in ("aioquic", "qh3"):
        assert wanted == qsse_core.QUIC_BACKEND


async def test_certificate_files_for_production(tmp_path):
    from qsse_core._tls import self_signed

    issued = self_signed(["127.0.0.1"])
    (tmp_path / "chain.pem").write_bytes(issued.chain_pem)
    (tmp_path / "key.pem").write_bytes(issued.key_pem)
    (tmp_path / "ca.pem").write_bytes(issued.certificate_pem)
    server = Server(["a"], certfile=str(tmp_path / "chain.pem"), keyfile=str(tmp_path / "key.pem"))
    async with server:
        assert server.certificate_pem is None  # nothing made up: the files are used
        c = Client(
            server.address,
            ["a"],
            cafile=str(tmp_path / "ca.pem"),
            reconnect=ReconnectPolicy(retry=False),
        )
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("a")
            server.publish("a", b"verified")
            await eventually(lambda: len(rec.messages) == 1)
    with pytest.raises(ConfigurationError, match="cannot load certificate"):
        await Server(["a"], certfile=str(tmp_path / "missing.pem")).start()
