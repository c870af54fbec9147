"""Property: the Redis store and the in-memory store agree on ids, order, bounds and gaps for
any sequence of publishes and resumes (no age bound: wall clocks differ between the two)."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qsse_core import HistoryPolicy, MemoryHistory, RedisBroker

aioredis = pytest.importorskip("redis.asyncio")

POLICIES = {
    "a": HistoryPolicy(max_events=3, max_bytes=20),
    "b.*": HistoryPolicy(max_events=5, max_bytes=1000),
}
TOPICS = {"a": ["a"], "b.*": ["b.1", "b.2", "b.3"]}
SUBSCRIPTIONS = {"a": ["a"], "b.*": ["b.*", "b.1", "b.[23]"]}

publish = st.tuples(
    st.just("publish"),
    st.sampled_from(sorted(TOPICS)),
    st.integers(0, 2),
    st.integers(0, 12),
)
resume = st.tuples(
    st.just("resume"),
    st.sampled_from(sorted(TOPICS)),
    st.integers(0, 2),
    st.integers(0, 40),
)
_prefixes = itertools.count()


def seen(result):
    """A since() result without publish times (each store reads its own clock)."""
    events, evicted = result
    return [(e.id, e.topic, e.data, e.content_type) for e in events], evicted


async def scenario(url: str, ops) -> None:
    prefix = f"eq{next(_prefixes)}"
    memory = MemoryHistory(topics=POLICIES)
    node = RedisBroker(url, topics=POLICIES, prefix=prefix)
    await node.start(sorted(POLICIES))
    try:
        for op, label, which, value in ops:
            if op == "publish":
                topic = TOPICS[label][which % len(TOPICS[label])]
                data = b"x" * value
                got = await node.publish(label, topic, data, 1)
                assert got == memory.append(label, topic, data, 1, 0.0)
            else:
                subscription = SUBSCRIPTIONS[label][which % len(SUBSCRIPTIONS[label])]
                await node.sync(memory.last_id)  # the node has heard every publish
                want = seen(memory.since(label, subscription, value, 0.0))
                assert seen(node.history.since(label, subscription, value, 0.0)) == want
        # Redis itself holds what the memory store holds (the streams, the evicted marks).
        raw = aioredis.Redis.from_url(url)
        try:
            for label in POLICIES:
                entries = await raw.xrange(f"{{{prefix}}}:stream:{label}")
                held = [int(sid.split(b"-")[1]) for sid, _ in entries]
                events, _ = memory.since(label, label, 0, 0)
                assert held == [e.id for e in events]
                marked = await raw.hget(f"{{{prefix}}}:evicted", label)
                assert int(marked or 0) == memory.since(label, label, 2**62, 0)[1]
        finally:
            await raw.aclose()
        # A node started now reads everything from Redis: same events; gaps never smaller,
        # and exact per declared topic (Redis keeps the newest evicted id per declared topic).
        fresh = RedisBroker(url, topics=POLICIES, prefix=prefix)
        await fresh.start(sorted(POLICIES))
        try:
            assert fresh.history.last_id == memory.last_id
            for label, subscriptions in SUBSCRIPTIONS.items():
                for subscription in subscriptions:
                    for after in (0, memory.last_id // 2, memory.last_id):
                        events, evicted = seen(fresh.history.since(label, subscription, after, 0))
                        want_events, want_evicted = seen(
                            memory.since(label, subscription, after, 0)
                        )
                        assert events == want_events
                        if subscription == label:
                            assert evicted == want_evicted
                        else:
                            assert evicted >= want_evicted
        finally:
            await fresh.close()
    finally:
        await node.close()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(st.one_of(publish, resume), max_size=40))
def test_redis_and_memory_stores_agree(redis_server, ops):
    asyncio.run(scenario(redis_server.url, ops))
