"""Events held for an async authorizer's answer keep their place in line, over real QUIC on
loopback: an event the subscription needs no answer for (its own topic, or a concrete topic
subscribed to as such on the shared qsse/1 stream) waits behind them instead of overtaking.

Overtaking broke qsse/2's id order within one subscription: the client's resume position
(the highest id handed) passed the held event, so a connection lost before it arrived
resumed after it, and it was never seen: a silent gap.
"""

import asyncio

import pytest

from qsse_core import Server

from . import helpers
from .helpers import Recorder, eventually


def _slow_on(topic: str, release: asyncio.Event):
    async def authorize(token: str, asked: str) -> bool:
        if asked == topic:
            await release.wait()
        return True

    return authorize


@pytest.mark.parametrize("when", ["live", "replayed"])
async def test_an_event_of_the_subscription_topic_waits_behind_held_ones(when: str) -> None:
    release = asyncio.Event()
    async with Server(["ride.*"], authorizer=_slow_on("ride.2", release)) as server:
        if when == "replayed":
            server.publish("ride.2", b"1")  # id 1: held until the answer for ride.2
            server.publish("ride.*", b"2")  # id 2: on ride.* itself, the subscription's topic
            kwargs = {"last_event_ids": {"ride.*": 0}, "epoch": server.history.epoch}
        else:
            kwargs = {}
        c = helpers.client(server.address, ["ride.*"], protocols=["qsse/2"], **kwargs)
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("ride.*")
            if when == "live":
                server.publish("ride.2", b"1")
                server.publish("ride.*", b"2")
            # Released only once both are queued, so the second had the chance to overtake.
            await asyncio.sleep(0)
            release.set()
            await eventually(lambda: len(rec.messages) == 2)
            assert [(m.id, m.data) for m in rec.messages] == [(1, b"1"), (2, b"2")]
            assert c.last_event_ids == {"ride.*": 2}


async def test_qsse1_concrete_subscription_waits_behind_the_pattern_ones_held() -> None:
    release = asyncio.Event()
    async with Server(["ride.*"], authorizer=_slow_on("ride.2", release)) as server:
        c = helpers.client(server.address, ["ride.*", "ride.1"], protocols=["PROTOCOL_QUIC"])
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("ride.*")
            await server.wait_subscribed("ride.1")
            server.publish("ride.2", b"first")  # held for the answer about ride.2
            server.publish("ride.1", b"second")  # once per subscription: ride.* and ride.1
            await asyncio.sleep(0)
            release.set()
            await eventually(lambda: len(rec.messages) == 3)
        assert [(m.topic, m.data) for m in rec.messages] == [
            ("ride.2", b"first"),
            ("ride.1", b"second"),
            ("ride.1", b"second"),
        ]
