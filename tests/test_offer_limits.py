"""Limits.max_subscriptions holds for qsse/1 offers as for qsse/2 SUBSCRIBEs, over real QUIC
on loopback: an offer's topics past it get a TOO_MANY_SUBSCRIPTIONS error event.

Before, one 60 KB offer repeating a topic 12,000 times held 12,000 subscriptions, and every
event on that topic became 12,000 queue entries and writes for that one connection.
"""

import json

from qsse_core import ErrorCode, Limits, Server

from . import helpers
from .helpers import Recorder, eventually, raw_connect


async def test_an_offer_reaching_the_limit_is_admitted_whole():
    async with Server(["t.*"], limits=Limits(max_subscriptions=3)) as server:
        c = helpers.client(server.address, ["t.1", "t.2", "t.3"], protocols=["PROTOCOL_QUIC"])
        rec = Recorder(c)
        async with c:
            await eventually(lambda: server.subscription_count() == 3)
            server.publish("t.3", b"x")
            await eventually(lambda: len(rec.messages) == 1)
        assert rec.errors == []


async def test_an_offers_topics_past_the_limit_are_refused_with_an_error_event():
    async with Server(["t.*"], limits=Limits(max_subscriptions=3)) as server:
        topics = [f"t.{i}" for i in range(1, 6)]
        c = helpers.client(server.address, topics, protocols=["PROTOCOL_QUIC"])
        rec = Recorder(c)
        async with c:
            await eventually(lambda: len(rec.errors) == 2)
            assert server.subscription_count() == 3
            server.publish("t.5", b"refused")
            server.publish("t.1", b"admitted")
            await eventually(lambda: len(rec.messages) == 1)
        assert [m.data for m in rec.messages] == [b"admitted"]
        assert rec.errors == [
            (ErrorCode.TOO_MANY_SUBSCRIPTIONS, {"topic": "t.4"}),
            (ErrorCode.TOO_MANY_SUBSCRIPTIONS, {"topic": "t.5"}),
        ]


async def test_an_offer_repeating_one_topic_holds_at_most_the_limit():
    async with Server(["t"]) as server:  # the default limit: 1,000
        good = helpers.client(server.address, ["t"], protocols=["qsse/2"])
        rec = Recorder(good)
        async with good:
            await server.wait_subscribed("t")
            offer = json.dumps({"token": "", "topics": ["t"] * 12_000}).encode() + b"\n"
            async with raw_connect(server.port) as raw:
                raw.send(2, offer)
                await server.wait_subscribed("t", count=1 + 1000)
                assert server.subscription_count("t") == 1 + 1000
                for i in range(5):
                    server.publish("t", b"%d" % i)
                await eventually(lambda: len(rec.messages) == 5)
                assert raw.terminated is None
        assert [m.data for m in rec.messages] == [b"%d" % i for i in range(5)]
