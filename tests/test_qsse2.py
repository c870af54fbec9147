"""qsse/2 over real QUIC on loopback: resume, gaps, live subscriptions, per-stream delivery."""

import asyncio

import pytest

from qsse_core import (
    Client,
    ErrorCode,
    Gap,
    HistoryPolicy,
    Limits,
    MemoryHistory,
    ReconnectPolicy,
    Server,
    SubscribeStatus,
)

from .helpers import Recorder, eventually, held_bytes

FAST_RETRY = ReconnectPolicy(interval=0.05, max_interval=0.2, max_attempts=100)


def v2_client(address: str, topics, **kwargs) -> Client:
    kwargs.setdefault("insecure", True)
    kwargs.setdefault("protocols", ["qsse/2"])
    kwargs.setdefault("reconnect", ReconnectPolicy(retry=False))
    return Client(address, topics, **kwargs)


def ids(recorder: Recorder) -> list[int]:
    return [m.id for m in recorder.messages]


async def test_negotiates_qsse2_and_go_protocol_side_by_side():
    async with Server(["t"]) as server:
        new = v2_client(server.address, ["t"], protocols=["qsse/2", "PROTOCOL_QUIC"])
        old = v2_client(server.address, ["t"], protocols=["PROTOCOL_QUIC"])
        r_new, r_old = Recorder(new), Recorder(old)
        async with new, old:
            assert new.alpn_protocol == "qsse/2"
            assert old.alpn_protocol == "PROTOCOL_QUIC"
            await server.wait_subscribed("t", 2)
            for i in range(100):
                server.publish("t", b"%d" % i)
            await eventually(lambda: len(r_new.messages) == 100 and len(r_old.messages) == 100)
        assert [m.data for m in r_new.messages] == [m.data for m in r_old.messages]
        assert ids(r_new) == list(range(1, 101))
        assert {m.id for m in r_old.messages} == {None}  # Go's protocol has no ids


async def test_resume_after_client_side_abort_is_exactly_once_in_order():
    async with Server(["t"]) as server:
        c = v2_client(server.address, ["t"], reconnect=FAST_RETRY)
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("t")
            sent = 0
            for cut in range(3):
                for _ in range(200):
                    sent += 1
                    server.publish("t", b"%d" % sent)
                    if sent % 20 == 0:
                        await asyncio.sleep(0.001)
                # Abort from the client side mid-stream, with events still in flight.
                assert c._protocol is not None
                c._protocol.quic.close(error_code=ErrorCode.UNKNOWN, reason_phrase="test abort")
                c._protocol.transmit()
                for _ in range(50):  # published before the client can be back
                    sent += 1
                    server.publish("t", b"%d" % sent)
                await eventually(lambda cut=cut: rec.states.count("lost") == cut + 1)
                await eventually(lambda cut=cut: rec.states.count("connected") == cut + 2)
            await eventually(lambda: len(rec.messages) >= sent)
            await asyncio.sleep(0.1)
        assert ids(rec) == list(range(1, sent + 1))
        assert [m.data for m in rec.messages] == [b"%d" % i for i in range(1, sent + 1)]
        assert rec.states.count("lost") == 3


async def test_resume_across_server_restart_over_the_same_history():
    history = MemoryHistory()
    server = Server(["t"], history=history)
    await server.start()
    port = server.port
    c = v2_client(server.address, ["t"], reconnect=FAST_RETRY)
    rec = Recorder(c)
    await c.connect()
    try:
        await server.wait_subscribed("t")
        for i in range(1, 51):
            server.publish("t", b"%d" % i)
        await eventually(lambda: len(rec.messages) == 50)
        await server.close()
        # A new server on the same port and store publishes before the client is back.
        server = Server(["t"], port=port, history=history)
        await server.start()
        for i in range(51, 101):
            server.publish("t", b"%d" % i)
        await server.wait_subscribed("t")
        for i in range(101, 151):
            server.publish("t", b"%d" % i)
        await eventually(lambda: len(rec.messages) >= 150)
        await asyncio.sleep(0.1)
        assert [m.data for m in rec.messages] == [b"%d" % i for i in range(1, 151)]
        assert ids(rec) == list(range(1, 151))
    finally:
        await c.close()
        await server.close()


async def test_gap_beyond_history_is_reported_with_its_range():
    history = MemoryHistory(HistoryPolicy(max_events=10))
    async with Server(["t", "u"], history=history) as server:
        first = v2_client(server.address, ["t"])
        rec = Recorder(first)
        async with first:
            await server.wait_subscribed("t")
            for i in range(1, 6):
                server.publish("t", b"%d" % i)
            await eventually(lambda: len(rec.messages) == 5)
        saved, epoch = first.last_event_ids, first.epoch
        assert saved == {"t": 5}
        for i in range(6, 36):  # 30 more while away; only the last 10 are kept
            server.publish("t", b"%d" % i)
            server.publish("u", b"other topic")
        again = v2_client(server.address, ["t"], last_event_ids=saved, epoch=epoch)
        rec2 = Recorder(again)
        gaps: list[Gap] = []
        order: list[object] = []
        again.on_gap(gaps.append)
        again.on_gap(order.append)
        again.on_message(order.append)
        async with again:
            await eventually(lambda: len(rec2.messages) == 10)
        # ids interleave with topic u's: t's events 6..35 have ids 6, 8, ..., 64.
        t_ids = [2 * i - 6 for i in range(6, 36)]
        assert ids(rec2) == t_ids[-10:]
        assert gaps == [
            Gap(
                topic="t",
                first_id=6,
                last_id=t_ids[-11],
                reason="no longer held in the history",
                subscription="t",
            )
        ]
        assert order[0] == gaps[0]  # told before anything after it is delivered


async def test_unknown_epoch_is_an_explicit_gap():
    async with Server(["t"]) as server:
        c = v2_client(server.address, ["t"], last_event_ids={"t": 41}, epoch=12345)
        gaps: list[Gap] = []
        c.on_gap(gaps.append)
        rec = Recorder(c)
        async with c:
            await eventually(lambda: gaps != [])
            assert gaps == [Gap("t", 42, None, "the server's history started over", "t")]
            await server.wait_subscribed("t")
            server.publish("t", b"new")
            await eventually(lambda: len(rec.messages) == 1)
            assert c.epoch == server.history.epoch
            assert c.last_event_ids == {"t": 1}


async def test_live_subscribe_and_unsubscribe_without_reconnecting():
    async with Server(
        ["a", "b", "secret"], authorizer=lambda token, topic: topic != "secret"
    ) as server:
        c = v2_client(server.address, ["a"])
        rec = Recorder(c)
        async with c:
            assert await c.subscribe("b") == SubscribeStatus.OK
            assert await c.subscribe("nope") == SubscribeStatus.NOT_AVAILABLE
            assert await c.subscribe("secret") == SubscribeStatus.NOT_AUTHORIZED
            assert server.connection_count == 1
            server.publish("a", b"1")
            server.publish("b", b"2")
            await eventually(lambda: len(rec.messages) == 2)
            assert await c.unsubscribe("a") == SubscribeStatus.OK
            assert await c.unsubscribe("a") == SubscribeStatus.NOT_SUBSCRIBED
            assert server.subscription_count("a") == 0
            server.publish("a", b"3")
            server.publish("b", b"4")
            await eventually(lambda: len(rec.messages) == 3)
            await asyncio.sleep(0.05)
            # Each subscription is its own stream: order holds within a topic, not across.
            assert sorted((m.topic, m.data) for m in rec.messages) == [
                ("a", b"1"),
                ("b", b"2"),
                ("b", b"4"),
            ]
            assert rec.errors == [
                (ErrorCode.TOPIC_NOT_AVAILABLE, {"topic": "nope"}),
                (ErrorCode.NOT_AUTHORIZED, {"topic": "secret"}),
            ]
            assert server.connection_count == 1  # all of it on one connection


async def test_live_subscribe_needs_qsse2():
    async with Server(["a"]) as server:
        c = v2_client(server.address, ["a"], protocols=["PROTOCOL_QUIC"])
        async with c:
            with pytest.raises(Exception, match="live subscriptions need qsse/2"):
                await c.subscribe("a")


@pytest.mark.parametrize("policy", ["disconnect", "drop"])
async def test_stalled_subscriber_per_policy_while_twenty_others_get_everything(policy):
    limits = Limits(write_window=32 * 1024, max_queued_bytes=64 * 1024, slow_consumer=policy)
    async with Server(["t"], limits=limits) as server:
        others = [v2_client(server.address, ["t"]) for _ in range(20)]
        recs = [Recorder(c) for c in others]
        slow = v2_client(server.address, ["t"])
        slow_rec = Recorder(slow)
        gaps: list[Gap] = []
        slow.on_gap(gaps.append)
        await asyncio.gather(*(c.connect() for c in [*others, slow]))
        try:
            await server.wait_subscribed("t", 21)
            assert slow._protocol is not None
            proto = slow._protocol
            original = proto.datagram_received
            proto.datagram_received = lambda data, addr: None  # stops reading and acking
            # 300 KB in all, in batches of 20 KB that the 20 clients sharing this process
            # take in before the next (however loaded the machine): only the stalled one lags.
            payload = b"x" * 1000
            for sent in range(20, 301, 20):
                for _ in range(20):
                    server.publish("t", payload)
                    await asyncio.sleep(0.005)
                    for held in held_bytes(server).values():
                        assert held <= limits.write_window + limits.max_queued_bytes + 2000
                await eventually(lambda n=sent: all(len(r.messages) == n for r in recs), timeout=30)
            for r in recs:
                assert [m.id for m in r.messages] == list(range(1, 301))
            if policy == "disconnect":
                await eventually(lambda: server.connection_count == 20)
            else:
                assert server.connection_count == 21
                proto.datagram_received = original  # reads again
                server.publish("t", b"after")
                await eventually(
                    lambda: slow_rec.messages and slow_rec.messages[-1].data == b"after"
                )
                assert len(gaps) == 1
                gap = gaps[0]
                got = [m.id for m in slow_rec.messages]
                assert gap.last_id is not None
                lost = set(range(gap.first_id, gap.last_id + 1))
                # Every event was either delivered exactly once or named in the gap.
                assert sorted(got) == got and len(set(got)) == len(got)
                assert set(got) | lost == set(range(1, 302))
                assert not set(got) & lost
        finally:
            for c in [*others, slow]:
                await c.close()


async def test_small_topic_is_not_held_behind_a_large_one():
    arrivals: dict[str, list[str]] = {}
    for protocol in ("qsse/2", "PROTOCOL_QUIC"):
        async with Server(["big", "small"]) as server:
            c = v2_client(server.address, ["big", "small"], protocols=[protocol])
            order: list[str] = []
            c.on_message(lambda m, order=order: order.append(m.topic))
            async with c:
                await server.wait_subscribed("small")
                server.publish("big", b"x" * (4 * 1024 * 1024))
                await asyncio.sleep(0)  # the big event is written first
                server.publish("small", b"tiny")
                await eventually(lambda order=order: len(order) == 2, timeout=30)
            arrivals[protocol] = order
    # One stream per subscription: the small event overtakes the 4 MiB one.
    assert arrivals["qsse/2"] == ["small", "big"]
    # Go's protocol has one stream: the small event waits behind the large one.
    assert arrivals["PROTOCOL_QUIC"] == ["big", "small"]


async def test_subscription_limits():
    async def slow_authorizer(token: str, topic: str) -> bool:
        await asyncio.sleep(0.05)
        return True

    limits = Limits(max_subscriptions=2)
    async with Server(["a", "b", "c"], limits=limits, authorizer=slow_authorizer) as server:
        c = v2_client(server.address, ["a", "b"])
        async with c:
            await server.wait_subscribed("b")
            assert await c.subscribe("c") == SubscribeStatus.LIMIT_REACHED
        # A client that queues more requests than that before any is answered is cut off.
        flood = v2_client(server.address, ["a", "b", "c"] * 3)
        states: list[object] = []
        flood.on_state(states.append)
        await flood.connect()
        await asyncio.wait_for(flood.wait_closed(), 5)
        assert flood.error is not None
        assert "TOO_MANY_SUBSCRIPTIONS" in str(flood.error)
        assert "more than 5 requests waiting for answers" in str(flood.error)
