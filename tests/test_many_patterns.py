"""Many distinct pattern subscriptions, over real QUIC on loopback: each pattern is compiled
once, when subscribed, and publishing to new concrete topics compiles none.

Routing used topic_matches, whose cache of compiled patterns holds 1,024: past that many
distinct patterns among all subscriptions (five peers at the default max_subscriptions),
each publish on a new concrete topic (ids make every topic new) recompiled every one of
them, some 180 ms of blocked event loop per publish at 5,000 patterns.
"""

import json

import pytest

from qsse_core import Limits, Server
from qsse_core._topics import _compile, pattern_matcher, topic_matches

from . import helpers
from .helpers import Recorder, eventually, raw_connect
from .test_topics import GO_MATCH

PATTERNS = 1100  # past the 1,024 compiled patterns topic_matches keeps


@pytest.mark.parametrize(("pattern", "topic", "expected"), GO_MATCH)
def test_the_matcher_agrees_with_topic_matches(pattern, topic, expected):
    assert pattern_matcher(pattern)(topic) is expected is topic_matches(pattern, topic)


@pytest.mark.parametrize("pattern", ["[", "a\\", "[z-a]"])
def test_a_malformed_pattern_matches_only_itself(pattern):
    match = pattern_matcher(pattern)
    assert match(pattern) is topic_matches(pattern, pattern) is True
    assert match("anything") is topic_matches(pattern, "anything") is False


async def test_publishing_to_new_topics_compiles_no_pattern():
    limits = Limits(max_subscriptions=PATTERNS)
    async with Server(["t.*"], limits=limits) as server:
        good = helpers.client(server.address, ["t.*"], protocols=["qsse/2"])
        rec = Recorder(good)
        async with good:
            await server.wait_subscribed("t.*")
            # One qsse/1 peer holding 1,100 distinct patterns, each matching one topic.
            topics = [f"t.*x{i}" for i in range(PATTERNS)]
            offer = json.dumps({"token": "", "topics": topics}).encode() + b"\n"
            async with raw_connect(server.port) as raw:
                raw.send(2, offer)
                await eventually(lambda: server.subscription_count() == 1 + PATTERNS)
                compiled = _compile.cache_info().misses
                for i in range(20):
                    assert server.publish(f"t.{i}x{i}", b"%d" % i) == 2  # good and t.*x{i}
                assert _compile.cache_info().misses == compiled
                await eventually(lambda: len(rec.messages) == 20)
                await eventually(lambda: raw.stream_data.count(b"\n") >= 20)
        assert [m.data for m in rec.messages] == [b"%d" % i for i in range(20)]
