"""A Server on a RedisBroker in this process, against a real redis-server: what crosses
Redis, what publish() returns, and gaps a node tells its live subscribers."""

from __future__ import annotations

import msgspec
import pytest

from qsse_core import (
    Client,
    ContentType,
    Gap,
    HistoryPolicy,
    ReconnectPolicy,
    RedisBroker,
    Server,
)

from .helpers import Recorder, eventually

pytest.importorskip("redis")

FAST = ReconnectPolicy(interval=0.02, max_interval=0.2)


def clients(address: str, topics) -> tuple[Client, Client]:
    v2 = Client(address, topics, insecure=True, protocols=["qsse/2"])
    v1 = Client(address, topics, insecure=True, protocols=["PROTOCOL_QUIC"])
    return v2, v1


async def test_publish_queues_through_redis_and_go_peers_get_json(redis_server):
    async with Server(["t"], broker=RedisBroker(redis_server.url, reconnect=FAST)) as server:
        v2, v1 = clients(server.address, ["t"])
        r2, r1 = Recorder(v2), Recorder(v1)
        async with v2, v1:
            await server.wait_subscribed("t", 2)
            packed = msgspec.msgpack.encode({"n": 1})
            # Queued for Redis: nothing is delivered before Redis has it, so 0 here.
            assert server.publish("t", b'{"n":1}', compact=(ContentType.MSGPACK, packed)) == 0
            await server.broker.flush()
            assert await server.publish_confirmed("t", b'{"n":2}') == [2]
            await eventually(lambda: len(r2.messages) == 2 and len(r1.messages) == 2)
    assert [(m.data, m.content_type, m.id) for m in r2.messages] == [
        (packed, ContentType.MSGPACK, 1),
        (b'{"n":2}', ContentType.JSON, 2),
    ]
    # Only the compact form crosses Redis; qsse/1 (Go) subscribers get it as JSON.
    assert [m.data for m in r1.messages] == [b'{"n":1}', b'{"n":2}']


async def test_events_evicted_while_a_node_was_cut_off_are_a_gap_for_its_subscribers(
    redis_server,
):
    policy = HistoryPolicy(max_events=2)
    broker = RedisBroker(redis_server.url, topics={"t": policy}, reconnect=FAST, timeout=2.0)
    async with Server(["t"], broker=broker) as server:
        client = Client(server.address, ["t"], insecure=True, protocols=["qsse/2"])
        rec = Recorder(client)
        gaps: list[Gap] = []
        client.on_gap(gaps.append)
        async with client, RedisBroker(redis_server.url, topics={"t": policy}) as publisher:
            await server.wait_subscribed("t")
            await publisher.publish("t", "t", b"1", 1)
            await eventually(lambda: len(rec.messages) == 1)
            # Cut the node off from Redis (as a partition would); its QUIC client stays.
            pool = broker._client.connection_pool
            pool.max_connections = 0
            await pool.disconnect()
            await eventually(lambda: not broker.connected)
            for i in range(2, 7):
                await publisher.publish("t", "t", b"%d" % i, 1)
            pool.max_connections = 2**31
            await eventually(lambda: len(rec.messages) == 3, timeout=20)
    # Ids 2-4 left the two-event history before the node was back: told, not lost silently.
    assert [m.data for m in rec.messages] == [b"1", b"5", b"6"]
    assert [(g.topic, g.first_id, g.last_id) for g in gaps] == [("t", 2, 4)]


async def test_a_flushed_redis_closes_qsse2_connections_so_they_resume_into_a_gap(redis_server):
    broker = RedisBroker(redis_server.url, reconnect=FAST)
    async with Server(["t"], broker=broker) as server:
        client = Client(
            server.address,
            ["t"],
            insecure=True,
            protocols=["qsse/2"],
            reconnect=ReconnectPolicy(interval=0.05, max_attempts=20),
        )
        rec = Recorder(client)
        gaps: list[Gap] = []
        client.on_gap(gaps.append)
        async with client:
            await server.wait_subscribed("t")
            await server.publish_confirmed("t", b"old")
            await eventually(lambda: len(rec.messages) == 1)
            old_epoch = client.epoch
            redis_server.command("FLUSHALL")
            await server.publish_confirmed("t", b"new")
            await eventually(lambda: bool(gaps) and rec.messages[-1].data == b"new", timeout=20)
    assert gaps == [Gap("t", 2, None, "the server's history started over", "t")]
    assert client.epoch == broker.epoch != old_epoch
    assert (rec.messages[-1].id, rec.messages[-1].data) == (1, b"new")
    assert "lost" in rec.states
