"""RedisBroker against a real redis-server: ids, streams, fan-out, outages and epochs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from qsse_core import BrokerError, HistoryPolicy, MemoryHistory, RedisBroker, StoredEvent

pytest.importorskip("redis")


class Recorder:
    """A broker listener that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, StoredEvent]] = []
        self.gaps: list[tuple[str, int, int]] = []
        self.epochs: list[int] = []
        self.changed = asyncio.Event()

    def on_event(self, label: str, event: StoredEvent) -> None:
        self.events.append((label, event))
        self.changed.set()

    def on_gap(self, label: str, first_id: int, last_id: int) -> None:
        self.gaps.append((label, first_id, last_id))
        self.changed.set()

    def on_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)
        self.changed.set()

    async def wait_for(self, predicate, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def ids(self) -> list[int]:
        return [e.id for _, e in self.events]


def fast_broker(url: str, **kwargs) -> RedisBroker:
    from qsse_core import ReconnectPolicy

    kwargs.setdefault("reconnect", ReconnectPolicy(interval=0.02, max_interval=0.2))
    return RedisBroker(url, **kwargs)


async def test_ids_come_from_one_sequence_and_reach_every_node(redis_server):
    async with fast_broker(redis_server.url) as publisher:
        node = fast_broker(redis_server.url)
        recorder = Recorder()
        node.add_listener(recorder)
        await node.start(["ride.*", "order"])
        try:
            ids = [await publisher.publish("ride.*", f"ride.{i}", b"%d" % i, 1) for i in range(5)]
            ids.append(await publisher.publish("order", "order", b"o", 2))
            assert ids == [1, 2, 3, 4, 5, 6]
            await recorder.wait_for(lambda: len(recorder.events) == 6)
            assert recorder.ids() == ids
            assert recorder.events[5] == (
                "order",
                StoredEvent(6, "order", b"o", 2, recorder.events[5][1].time),
            )
            assert node.epoch == publisher.epoch != 0
            events, evicted = node.history.since("ride.*", "ride.*", 2, recorder.events[-1][1].time)
            assert [e.id for e in events] == [3, 4, 5] and evicted == 0
        finally:
            await node.close()


async def test_a_restarted_node_keeps_epoch_ids_and_history(redis_server):
    async with fast_broker(redis_server.url) as broker:
        await broker.start(["t"])
        for _ in range(3):
            await broker.publish("t", "t", b"x", 1)
        epoch = broker.epoch
        await broker.close()
    async with fast_broker(redis_server.url) as again:
        await again.start(["t"])
        assert again.epoch == epoch
        assert again.history.last_id == 3
        events, _ = again.history.since("t", "t", 0, 1e9)
        assert [e.id for e in events] == [1, 2, 3]
        assert await again.publish("t", "t", b"y", 1) == 4
        await again.close()


async def test_streams_are_bounded_like_the_memory_history(redis_server):
    policy = HistoryPolicy(max_events=3, max_bytes=10)
    async with fast_broker(redis_server.url, topics={"t": policy}) as broker:
        await broker.start(["t"])
        memory = MemoryHistory(topics={"t": policy})
        now = 0.0
        for size in (1, 4, 4, 4, 1, 1):
            await broker.publish("t", "t", b"a" * size, 1)
            memory.append("t", "t", b"a" * size, 1, now)
        await broker.close()
    async with fast_broker(redis_server.url, topics={"t": policy}) as fresh:
        await fresh.start(["t"])
        got, evicted = fresh.history.since("t", "t", 0, 0)
        want, want_evicted = memory.since("t", "t", 0, 0)
        assert [(e.id, e.data) for e in got] == [(e.id, e.data) for e in want]
        assert evicted == want_evicted == 3
        assert redis_server.command("XLEN", "{qsse}:stream:t") == len(want)
        await fresh.close()


async def test_the_function_checks_its_arguments_before_writing(redis_server):
    async with fast_broker(redis_server.url) as broker:
        from redis.exceptions import ResponseError

        with pytest.raises(BrokerError, match="CONTENT_TYPE must be an integer"):
            await broker.publish("t", "t", b"x", -1)
        with pytest.raises(ResponseError, match="expects PREFIX LABEL TOPIC CONTENT_TYPE DATA"):
            redis_server.command("FCALL", "qsse_publish", 0, "qsse", "t")
        assert redis_server.command("GET", "{qsse}:seq") in (None, b"0")
        assert await broker.publish("t", "t", b"x", 1) == 1


async def test_publishing_while_redis_is_down_raises_and_recovers(redis_server):
    broker = fast_broker(redis_server.url, timeout=2.0)
    await broker.start()
    assert await broker.publish("t", "t", b"1", 1) == 1
    redis_server.stop()
    with pytest.raises(BrokerError):
        await broker.publish("t", "t", b"2", 1)
    # Known to be down now: refused at once, without a round trip.
    with pytest.raises(BrokerError, match="unreachable"):
        broker.publish_nowait("t", "t", b"3", 1)
    registry = broker.metrics_registry
    assert registry.get_sample_value("qsse_broker_up") == 0
    assert registry.get_sample_value("qsse_broker_errors_total", {"operation": "publish"}) >= 2
    redis_server.start()
    async with asyncio.timeout(20):
        while not broker.connected:
            await asyncio.sleep(0.02)
    assert await broker.publish("t", "t", b"4", 1) == 2
    assert registry.get_sample_value("qsse_broker_up") == 1
    assert registry.get_sample_value("qsse_broker_reconnects_total") >= 1
    assert registry.get_sample_value("qsse_broker_publish_seconds_count") == 2
    await broker.close()


async def test_queued_events_that_were_not_stored_fail_the_flush(redis_server):
    broker = fast_broker(redis_server.url, timeout=2.0)
    await broker.start()
    broker.publish_nowait("t", "t", b"1", 1)
    await broker.flush()
    redis_server.stop()
    broker.publish_nowait("t", "t", b"2", 1)
    with pytest.raises(BrokerError, match="1 queued events were not stored"):
        await broker.flush()
    await broker.flush()  # reported once
    await broker.close()


async def test_a_node_cut_off_from_redis_catches_up_without_loss_or_duplicates(redis_server):
    node = fast_broker(redis_server.url, timeout=2.0)
    recorder = Recorder()
    node.add_listener(recorder)
    await node.start(["t"])
    async with fast_broker(redis_server.url) as publisher:
        for _ in range(5):
            await publisher.publish("t", "t", b"x", 1)
        await recorder.wait_for(lambda: len(recorder.events) == 5)
    redis_server.restart()  # data kept (append-only file)
    async with fast_broker(redis_server.url) as publisher:
        # Published while the node is still reconnecting: it reads them from the stream.
        for _ in range(5):
            await publisher.publish("t", "t", b"y", 1)
        await recorder.wait_for(lambda: len(recorder.events) >= 10)
        for _ in range(5):
            await publisher.publish("t", "t", b"z", 1)
        await recorder.wait_for(lambda: len(recorder.events) >= 15)
    assert recorder.ids() == list(range(1, 16))
    assert recorder.epochs == [] and recorder.gaps == []
    await node.close()


async def test_a_node_away_longer_than_the_history_is_told_the_gap(redis_server):
    policy = HistoryPolicy(max_events=2)
    node = fast_broker(redis_server.url, topics={"t": policy}, timeout=2.0)
    recorder = Recorder()
    node.add_listener(recorder)
    await node.start(["t"])
    async with fast_broker(redis_server.url, topics={"t": policy}) as publisher:
        await publisher.publish("t", "t", b"1", 1)
        await recorder.wait_for(lambda: len(recorder.events) == 1)
        # Cut this node off (as a partition would) while Redis keeps serving the others.
        node._client.connection_pool.max_connections = 0
        await node._client.connection_pool.disconnect()
        async with asyncio.timeout(20):
            while node.connected:
                await asyncio.sleep(0.02)
        for _ in range(5):
            await publisher.publish("t", "t", b"x", 1)
        node._client.connection_pool.max_connections = 2**31
        await recorder.wait_for(lambda: len(recorder.events) == 3)
    assert recorder.gaps == [("t", 2, 4)]
    assert recorder.ids() == [1, 5, 6]
    await node.close()


async def test_lost_redis_data_starts_a_new_epoch(redis_server):
    node = fast_broker(redis_server.url)
    recorder = Recorder()
    node.add_listener(recorder)
    await node.start(["t"])
    async with fast_broker(redis_server.url) as publisher:
        await publisher.publish("t", "t", b"1", 1)
        await recorder.wait_for(lambda: len(recorder.events) == 1)
        old = node.epoch
        redis_server.command("FLUSHALL")
        assert await publisher.publish("t", "t", b"2", 1) == 1
        await recorder.wait_for(lambda: recorder.epochs and len(recorder.events) == 2)
    assert recorder.epochs == [node.epoch] and node.epoch != old
    assert recorder.ids() == [1, 1]
    await node.close()


async def test_an_older_snapshot_coming_back_starts_a_new_epoch(redis_server):
    node = fast_broker(redis_server.url, timeout=2.0)
    recorder = Recorder()
    node.add_listener(recorder)
    await node.start(["t"])
    async with fast_broker(redis_server.url) as publisher:
        for _ in range(3):
            await publisher.publish("t", "t", b"1", 1)
        await recorder.wait_for(lambda: len(recorder.events) == 3)
        old = node.epoch
        # Redis comes back from an older copy: same epoch, the sequence behind what we saw.
        redis_server.command("SET", "{qsse}:seq", 1)
        await node._client.connection_pool.disconnect()
        await recorder.wait_for(lambda: recorder.epochs)
    assert node.epoch != old
    await node.close()


async def test_unreachable_redis_at_start_is_a_broker_error(tmp_path):
    broker = RedisBroker(f"unix://{tmp_path}/nothing.sock", timeout=1.0)
    with pytest.raises(BrokerError, match="cannot reach Redis"):
        await broker.start()


async def test_the_password_never_reaches_logs_or_repr(tmp_path, caplog):
    from .redis_support import RedisProcess

    server = RedisProcess(tmp_path / "r")
    server.start()
    try:
        server.command("CONFIG", "SET", "requirepass", "s3cret-pw")
        url = f"unix://:s3cret-pw@{server.socket}"
        caplog.set_level(logging.DEBUG, logger="qsse")
        broker = fast_broker(url, timeout=2.0)
        assert "s3cret-pw" not in repr(broker)
        await broker.start(["t"])
        assert await broker.publish("t", "t", b"x", 1) == 1
        server.stop()
        with pytest.raises(BrokerError) as raised:
            await broker.publish("t", "t", b"x", 1)
        assert "s3cret-pw" not in str(raised.value)
        await broker.close()
        wrong = RedisBroker(f"unix://:wrong-pw@{tmp_path}/none.sock", timeout=1.0)
        with pytest.raises(BrokerError) as raised:
            await wrong.start()
        assert "wrong-pw" not in str(raised.value)
    finally:
        server.stop()
    assert "s3cret-pw" not in caplog.text
    assert "lost Redis" in caplog.text


def test_redact_hides_only_the_password():
    from qsse_core.asyncio._redis import redact

    assert redact("rediss://user:pw@host:6380/0?ssl_ca_certs=ca.pem") == (
        "rediss://user:***@host:6380/0?ssl_ca_certs=ca.pem"
    )
    assert redact("redis://:pw@[::1]:6379") == "redis://:***@[::1]:6379"
    assert redact("redis://host") == "redis://host"


async def test_tls_and_a_password(tmp_path, caplog):
    """rediss:// with the server's CA and a password: works, and the password stays out of
    the logs."""
    import socket

    from qsse_core._tls import self_signed

    from .redis_support import RedisProcess

    cert = self_signed(["127.0.0.1"])
    (tmp_path / "ca.pem").write_bytes(cert.certificate_pem)
    (tmp_path / "cert.pem").write_bytes(cert.chain_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = RedisProcess(
        tmp_path / "r",
        {
            "tls-port": str(port),
            "bind": "127.0.0.1",
            "tls-cert-file": str(tmp_path / "cert.pem"),
            "tls-key-file": str(tmp_path / "key.pem"),
            "tls-ca-cert-file": str(tmp_path / "ca.pem"),
            "tls-auth-clients": "no",
            "requirepass": "tls-s3cret",
        },
    )
    server.start()
    caplog.set_level(logging.DEBUG, logger="qsse")
    try:
        url = f"rediss://:tls-s3cret@127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
        node = fast_broker(url, timeout=5.0)
        recorder = Recorder()
        node.add_listener(recorder)
        await node.start(["t"])
        async with fast_broker(url) as publisher:
            assert await publisher.publish("t", "t", b"over tls", 1) == 1
            await recorder.wait_for(lambda: len(recorder.events) == 1)
        # Without the CA the certificate is refused: TLS is really checked.
        untrusted = RedisBroker(f"rediss://:tls-s3cret@127.0.0.1:{port}/0", timeout=2.0)
        with pytest.raises(BrokerError) as raised:
            await untrusted.start()
        assert "tls-s3cret" not in str(raised.value)
        server.stop()
        with pytest.raises(BrokerError):
            await node.publish("t", "t", b"x", 1)
        await node.close()
    finally:
        server.stop()
    assert recorder.events[0][1].data == b"over tls"
    assert "tls-s3cret" not in caplog.text


async def test_a_redis_that_lost_the_function_library_gets_it_back(redis_server):
    broker = fast_broker(redis_server.url)
    await broker.start()
    assert await broker.publish("t", "t", b"1", 1) == 1
    redis_server.command("FUNCTION", "FLUSH")
    with pytest.raises(BrokerError, match="Function not found"):
        await broker.publish("t", "t", b"2", 1)
    async with asyncio.timeout(20):
        while True:
            try:
                assert await broker.publish("t", "t", b"3", 1) == 2
                break
            except BrokerError:
                await asyncio.sleep(0.02)
    await broker.close()


async def test_a_server_that_cannot_reach_redis_does_not_start(tmp_path):
    from qsse_core import Server

    server = Server(["t"], broker=RedisBroker(f"unix://{tmp_path}/none.sock", timeout=1.0))
    with pytest.raises(BrokerError, match="cannot reach Redis"):
        await server.start()
    assert server.connection_count == 0
    with pytest.raises(Exception, match="not started"):
        _ = server.port


async def test_a_foreign_message_on_the_channel_is_ignored_and_counted(redis_server):
    node = fast_broker(redis_server.url)
    recorder = Recorder()
    node.add_listener(recorder)
    await node.start(["t"])
    try:
        async with fast_broker(redis_server.url) as publisher:
            await publisher.publish("t", "t", b"1", 1)
            await recorder.wait_for(lambda: len(recorder.events) == 1)
            for junk in (b"not a header", b"1 2\n", b"\xff\xfe 1 2 3 4 5\nxyz"):
                redis_server.command("PUBLISH", "{qsse}:events", junk)
            await publisher.publish("t", "t", b"2", 1)
            await recorder.wait_for(lambda: len(recorder.events) == 2)
        assert recorder.ids() == [1, 2]
        errors = node.metrics_registry.get_sample_value(
            "qsse_broker_errors_total", {"operation": "decode"}
        )
        assert errors == 3
    finally:
        await node.close()


async def test_a_rewound_redis_that_reissued_ids_starts_a_new_epoch(redis_server):
    node = fast_broker(redis_server.url, timeout=2.0)
    recorder = Recorder()
    node.add_listener(recorder)
    await node.start(["t"])
    async with fast_broker(redis_server.url) as publisher:
        for _ in range(3):
            await publisher.publish("t", "t", b"seen", 1)
        await recorder.wait_for(lambda: len(recorder.events) == 3)
        old = node.epoch
        # Cut the node off; Redis "comes back from an older copy" (event 3 gone, the
        # sequence at 2) and publishers push the sequence past what the node saw.
        pool = node._client.connection_pool
        pool.max_connections = 0
        await pool.disconnect()
        async with asyncio.timeout(20):
            while node.connected:
                await asyncio.sleep(0.02)
        entries = redis_server.command("XRANGE", "{qsse}:stream:t", "-", "+")
        redis_server.command("XDEL", "{qsse}:stream:t", entries[-1][0])
        redis_server.command("SET", "{qsse}:seq", 2)
        await asyncio.sleep(0.01)  # another millisecond: a reissued id gets another entry id
        for _ in range(3):
            await publisher.publish("t", "t", b"reissued", 1)
        pool.max_connections = 2**31
        await recorder.wait_for(lambda: bool(recorder.epochs))
    assert node.epoch != old
    # Nothing of the rewound sequence was delivered as if it followed what the node had seen.
    assert [(e.id, e.data) for _, e in recorder.events] == [(i, b"seen") for i in (1, 2, 3)]
    await node.close()
