"""Subscriptions are bounded by the streams QUIC lets the server open: past any limit a
subscription is refused with a status the client reports, never dropped in silence."""

import asyncio
import importlib

from qsse_core import ErrorCode, Limits, Server, SubscribeStatus
from qsse_core._connection2 import SUBSCRIPTION_STREAMS, Qsse2ClientConnection
from qsse_core._quic import StreamDataReceived, grant_unidirectional_streams
from qsse_core.events import (
    EventReceived,
    SubscriptionAnswered,
    UnsubscriptionAnswered,
    Welcomed,
)

from .helpers import Recorder, eventually
from .test_hostile_peers import QUIC, QuicConnectionProtocol
from .test_qsse2 import v2_client


async def test_more_subscriptions_than_either_library_grants_by_default_all_get_events():
    # aioquic grants 128 streams, qh3 103: before the client granted its own, qh3 servers
    # failed the 104th stream (and dropped the session), aioquic ones never sent the 129th.
    topics = [f"t.{i}" for i in range(150)]
    async with Server(["t.*"]) as server:
        c = v2_client(server.address, topics)
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("t.149")
            for topic in topics:
                server.publish(topic, topic.encode())
            await eventually(lambda: len(rec.messages) == len(topics))
        assert sorted(m.topic for m in rec.messages) == sorted(topics)
        assert rec.errors == []


async def test_max_subscriptions_at_its_default_is_reached_and_then_refused():
    limit = Limits().max_subscriptions
    topics = [f"t.{i}" for i in range(limit)]
    async with Server(["t.*", "over"]) as server:
        c = v2_client(server.address, topics)
        rec = Recorder(c)
        async with c:
            await eventually(lambda: server.subscription_count() == limit, timeout=30)
            assert await c.subscribe("over") == SubscribeStatus.LIMIT_REACHED
            assert rec.errors == [(ErrorCode.TOO_MANY_SUBSCRIPTIONS, {"topic": "over"})]
            for topic in topics:
                server.publish(topic, b"each")
            await eventually(lambda: len(rec.messages) == limit, timeout=30)


async def test_client_stream_grant_is_reached_and_then_refused_with_a_status():
    # The server allows more than the client grants: the grant is the limit met first.
    topics = [f"t.{i}" for i in range(SUBSCRIPTION_STREAMS)]
    limits = Limits(max_subscriptions=2 * SUBSCRIPTION_STREAMS)
    async with Server(["t.*"], limits=limits) as server:
        c = v2_client(server.address, topics)
        rec = Recorder(c)
        async with c:
            await eventually(lambda: server.subscription_count() == len(topics), timeout=30)
            assert await c.subscribe("t.extra") == SubscribeStatus.LIMIT_REACHED
            assert rec.errors == [(ErrorCode.TOO_MANY_SUBSCRIPTIONS, {"topic": "t.extra"})]
            assert await c.unsubscribe("t.0") == SubscribeStatus.OK
            # The ended stream's credit comes back with the client's next MAX_STREAMS.
            status = SubscribeStatus.LIMIT_REACHED
            for _ in range(50):
                status = await c.subscribe("t.extra")
                if status == SubscribeStatus.OK:
                    break
                await asyncio.sleep(0.05)
            assert status == SubscribeStatus.OK
            server.publish("t.extra", b"late")
            await eventually(lambda: [m.data for m in rec.messages] == [b"late"])


class LimitedClient(QuicConnectionProtocol):
    """A qsse/2 client (the real sans-I/O connection) whose QUIC grants ``GRANT`` streams."""

    GRANT = 4

    def __init__(self, quic, *args, **kwargs) -> None:
        super().__init__(quic, *args, **kwargs)
        grant_unidirectional_streams(quic, self.GRANT)
        self.conn = Qsse2ClientConnection(quic, token="", max_frame_size=1 << 20)
        self.events: list[object] = []

    def quic_event_received(self, event) -> None:
        if not isinstance(event, StreamDataReceived):  # the library's handshake waiter
            super().quic_event_received(event)
        self.events += self.conn.handle_event(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


async def test_subscription_past_the_clients_stream_grant_is_refused_until_one_ends():
    config = QUIC.configuration(is_client=True, alpn_protocols=["qsse/2"])
    QUIC.skip_verification(config)
    connect = importlib.import_module(f"{QUIC.name}.asyncio").connect
    async with Server(["t.*"]) as server:
        async with connect(
            "127.0.0.1", server.port, configuration=config, create_protocol=LimitedClient
        ) as peer:
            await eventually(lambda: peer.of(Welcomed))
            for i in range(5):
                peer.conn.subscribe(f"t.{i}")
            peer.transmit()
            await eventually(lambda: len(peer.of(SubscriptionAnswered)) == 5)
            answers = peer.of(SubscriptionAnswered)
            assert [a.status for a in answers] == [SubscribeStatus.OK] * 4 + [
                SubscribeStatus.LIMIT_REACHED
            ]
            assert answers[4].reason == (
                "the client allows no more subscription streams (QUIC MAX_STREAMS)"
            )
            for i in range(5):
                server.publish(f"t.{i}", b"x")
            await eventually(lambda: len(peer.of(EventReceived)) == 4)
            # Ending one stream returns its credit (MAX_STREAMS): the next subscribe succeeds.
            peer.conn.unsubscribe(answers[0].subscription_id)
            peer.transmit()
            await eventually(lambda: peer.of(UnsubscriptionAnswered))
            for attempt in range(50):
                peer.conn.subscribe("t.again")
                peer.transmit()
                answered = 6 + attempt
                await eventually(lambda n=answered: len(peer.of(SubscriptionAnswered)) == n)
                if peer.of(SubscriptionAnswered)[-1].status == SubscribeStatus.OK:
                    break
                await asyncio.sleep(0.05)  # MAX_STREAMS is on its way
            assert peer.of(SubscriptionAnswered)[-1].status == SubscribeStatus.OK
            assert server.subscription_count() == 4


async def test_qsse1_offer_topics_past_max_subscriptions_are_refused_with_an_error_event():
    # Go subscribes a topic listed twice twice; an offer listing it thousands of times would
    # have every event queued that many times for one peer.
    async with Server(["good"], limits=Limits(max_subscriptions=3)) as server:
        c = v2_client(server.address, ["good"] * 10, protocols=["PROTOCOL_QUIC"])
        rec = Recorder(c)
        async with c:
            await eventually(lambda: len(rec.errors) == 7)
            assert server.subscription_count("good") == 3
            assert rec.errors == [(ErrorCode.TOO_MANY_SUBSCRIPTIONS, {"topic": "good"})] * 7
            server.publish("good", b"once per subscription")
            await eventually(lambda: len(rec.messages) == 3)
