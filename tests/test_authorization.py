"""Authorization that patterns cannot bypass, over real QUIC on loopback.

The authorizer sees the subscription as written; a pattern subscription then reaches concrete
topics it never saw, so each one is authorized before its first event, live or replayed.
"""

import asyncio

import pytest

from qsse_core import (
    Gap,
    Limits,
    Server,
    SubscribeStatus,
    is_pattern,
    topic_matches,
)

from . import helpers
from .helpers import Recorder, eventually

SECRET = "ride.secret.status"
OPEN = "ride.secreX.status"  # matched by the first two patterns, allowed
PATTERNS = ["ride.*", "ride.secre?.status", "ride.[s]ecret.status"]


def sync_authorizer(token: str, topic: str) -> bool:
    return topic != SECRET


async def async_authorizer(token: str, topic: str) -> bool:
    await asyncio.sleep(0.001)  # answers later than the events it is asked about
    return topic != SECRET


@pytest.mark.parametrize("authorizer", [sync_authorizer, async_authorizer])
async def test_patterns_do_not_reach_a_refused_topic_live_or_replayed(authorizer):
    async with Server(["ride.*"], authorizer=authorizer) as server:
        assert await _subscribe_status(server, SECRET, authorizer) == SubscribeStatus.NOT_AUTHORIZED
        for i in range(12):  # in history before anyone subscribes
            server.publish(SECRET, b"secret %d" % i)
            server.publish(OPEN, b"open %d" % i)
        c = helpers.client(
            server.address,
            PATTERNS,
            protocols=["qsse/2"],
            last_event_ids={p: 0 for p in PATTERNS},
            epoch=server.history.epoch,
        )
        rec = Recorder(c)
        gaps: list[Gap] = []
        c.on_gap(gaps.append)
        async with c:
            for p in PATTERNS:
                await server.wait_subscribed(p)
            for i in range(12, 24):
                server.publish(SECRET, b"secret %d" % i)
                server.publish(OPEN, b"open %d" % i)
            # Each subscription's stream is in id order: once the last allowed event is in on
            # both, every refused one published before it would have been too.
            await eventually(lambda: len(rec.messages) == 2 * 24)
        # ride.[s]ecret.status matches only the refused topic; the other two get 24 each.
        assert {m.topic for m in rec.messages} == {OPEN}
        assert sorted(m.data for m in rec.messages) == sorted(
            [b"open %d" % i for i in range(24)] * 2
        )
        assert gaps == []  # refused topics are invisible, not a loss
        assert rec.errors == []
        metric = server.metrics.authorization_failures.labels(topic="ride.*")._value.get()
        assert metric == 2  # the direct refusal, then once for the pattern connection


async def _subscribe_status(server, topic, authorizer) -> SubscribeStatus:
    c = helpers.client(server.address, [], protocols=["qsse/2"])
    async with c:
        return await c.subscribe(topic)


async def test_events_behind_an_async_answer_keep_their_order():
    release = asyncio.Event()

    async def slow(token: str, topic: str) -> bool:
        if topic == "ride.2":
            await release.wait()
        return topic != SECRET

    async with Server(["ride.*"], authorizer=slow) as server:
        c = helpers.client(server.address, ["ride.*"], protocols=["qsse/2"])
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("ride.*")
            for i in range(1, 31):  # ids 1..30: ride.1, ride.2, secret, ride.1, ...
                server.publish(["ride.1", "ride.2", SECRET][(i - 1) % 3], b"%d" % i)
            await eventually(lambda: len(rec.messages) >= 1)  # ride.1's first passes
            await asyncio.sleep(0.05)
            assert [m.id for m in rec.messages] == [1]  # then ride.2 waits for its answer
            release.set()
            await eventually(lambda: len(rec.messages) == 20)
        assert [m.id for m in rec.messages] == [i for i in range(1, 31) if i % 3 != 0]


async def test_events_held_for_the_authorizer_are_bounded():
    never = asyncio.Event()

    async def stuck(token: str, topic: str) -> bool:
        if topic != "ride.*":
            await never.wait()
        return True

    limits = Limits(max_queued_bytes=10_000)
    async with Server(["ride.*"], authorizer=stuck, limits=limits) as server:
        c = helpers.client(server.address, ["ride.*"], protocols=["qsse/2"])
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("ride.*")
            for _ in range(9):  # 9 x ~1,000 bytes held: at the limit, not past it
                server.publish("ride.1", b"x" * 980)
            await asyncio.sleep(0.05)
            assert server.connection_count == 1
            for _ in range(3):
                server.publish("ride.1", b"x" * 980)
            await eventually(lambda: server.connection_count == 0)
        assert rec.messages == []
        closed = server.metrics.protocol_errors.labels(reason="slow_consumer")._value.get()
        assert closed == 1


@pytest.mark.usefixtures("protocol")
async def test_both_protocols_hide_a_refused_topic_from_a_pattern():
    async with Server(["ride.*"], authorizer=sync_authorizer) as server:
        c = helpers.client(server.address, ["ride.*"])
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("ride.*")
            for i in range(10):
                server.publish(SECRET, b"s")
                server.publish("ride.1", b"%d" % i)
            await eventually(lambda: len(rec.messages) == 10)
            await asyncio.sleep(0.05)
        assert [m.data for m in rec.messages] == [b"%d" % i for i in range(10)]


async def test_an_authorizer_can_tell_and_match_patterns():
    def strict(token: str, topic: str) -> bool:
        # Patterns only for admins; concrete topics by rule.
        if is_pattern(topic):
            return token == "admin"
        return not topic_matches("ride.secret.*", topic)

    async with Server(["ride.*"], authorizer=strict) as server:
        user = helpers.client(server.address, [], protocols=["qsse/2"], token="user")
        async with user:
            assert await user.subscribe("ride.*") == SubscribeStatus.NOT_AUTHORIZED
            assert await user.subscribe("ride.1") == SubscribeStatus.OK
            assert await user.subscribe("ride.secret.x") == SubscribeStatus.NOT_AUTHORIZED


async def test_answers_are_kept_per_connection_up_to_the_bound():
    from qsse_core.asyncio._server import _AUTHORIZED_TOPICS

    asked: list[str] = []

    def counting(token: str, topic: str) -> bool:
        asked.append(topic)
        return True

    async with Server(["ride.*"], authorizer=counting) as server:
        c = helpers.client(server.address, ["ride.*"], protocols=["qsse/2"])
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("ride.*")
            asked.clear()
            for i in range(_AUTHORIZED_TOPICS):  # exactly as many topics as are kept
                server.publish(f"ride.{i}", b"x")
            server.publish("ride.0", b"again")
            assert len(asked) == _AUTHORIZED_TOPICS  # ride.0 answered from the cache
            server.publish(f"ride.{_AUTHORIZED_TOPICS}", b"x")  # one past: starts over
            server.publish("ride.0", b"once more")
            assert asked[-2:] == [f"ride.{_AUTHORIZED_TOPICS}", "ride.0"]
            await eventually(lambda: len(rec.messages) == _AUTHORIZED_TOPICS + 3)
