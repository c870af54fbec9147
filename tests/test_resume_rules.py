"""qsse/2 resume rules over real QUIC on loopback: what a store holds is replayed, gaps name only
what the subscription lost, positions the store never issued are corrected, and nothing that
cannot be sent is ever kept."""

import pytest

from qsse_core import (
    Client,
    Gap,
    HistoryPolicy,
    LocalProtocolError,
    MemoryHistory,
    ReconnectPolicy,
    Server,
)

from .helpers import Recorder, eventually

FAST_RETRY = ReconnectPolicy(interval=0.05, max_interval=0.2, max_attempts=100)


def v2_client(address: str, topics, **kwargs) -> Client:
    kwargs.setdefault("insecure", True)
    kwargs.setdefault("protocols", ["qsse/2"])
    kwargs.setdefault("reconnect", ReconnectPolicy(retry=False))
    return Client(address, topics, **kwargs)


async def test_restart_with_an_empty_history_replays_what_the_new_store_holds():
    server = Server(["t"])
    await server.start()
    port = server.port
    c = v2_client(server.address, ["t"], reconnect=FAST_RETRY)
    rec = Recorder(c)
    gaps: list[Gap] = []
    c.on_gap(gaps.append)
    await c.connect()
    try:
        await server.wait_subscribed("t")
        for i in range(1, 11):
            server.publish("t", b"old %d" % i)
        await eventually(lambda: len(rec.messages) == 10)
        await server.close()
        # A new process: a new store, which publishes before the client is back.
        server = Server(["t"], port=port)
        await server.start()
        for i in range(1, 31):
            server.publish("t", b"new %d" % i)
        await server.wait_subscribed("t")
        server.publish("t", b"new 31")
        await eventually(lambda: len(rec.messages) == 41)
        assert gaps == [Gap("t", 11, None, "the server's history started over", "t")]
        assert [m.data for m in rec.messages[10:]] == [b"new %d" % i for i in range(1, 32)]
        assert [m.id for m in rec.messages[10:]] == list(range(1, 32))
        assert c.epoch == server.history.epoch
        assert c.last_event_ids == {"t": 31}
    finally:
        await c.close()
        await server.close()


async def test_gap_names_only_what_the_subscription_itself_lost():
    history = MemoryHistory(HistoryPolicy(max_events=5))
    async with Server(["ride.*"], history=history) as server:
        first = v2_client(server.address, ["ride.1", "ride.*"])
        rec = Recorder(first)
        async with first:
            await server.wait_subscribed("ride.1")
            await server.wait_subscribed("ride.*")
            server.publish("ride.1", b"a")  # id 1
            await eventually(lambda: len(rec.messages) == 2)
        saved, epoch = first.last_event_ids, first.epoch
        assert saved == {"ride.1": 1, "ride.*": 1}
        for _ in range(40):  # ids 2..41 on another ride push ride.1's event out
            server.publish("ride.2", b"other")
        server.publish("ride.1", b"b")  # id 42
        again = v2_client(server.address, ["ride.1", "ride.*"], last_event_ids=saved, epoch=epoch)
        rec2 = Recorder(again)
        gaps: list[Gap] = []
        again.on_gap(gaps.append)
        async with again:
            # ride.*: 5 kept (38..42), 2..37 evicted; ride.1: only 42, nothing of it lost.
            await eventually(lambda: len(rec2.messages) == 6)
            await eventually(lambda: len(gaps) == 1)
        assert gaps == [Gap("ride.*", 2, 37, "no longer held in the history", "ride.*")]
        assert sorted(m.id for m in rec2.messages if m.topic == "ride.1") == [42, 42]
        assert sorted(m.id for m in rec2.messages if m.topic == "ride.2") == [38, 39, 40, 41]


async def test_a_position_the_store_never_issued_is_a_gap_and_is_corrected():
    async with Server(["t"]) as server:
        for i in range(1, 4):
            server.publish("t", b"%d" % i)
        epoch = server.history.epoch
        c = v2_client(server.address, ["t"], last_event_ids={"t": 100}, epoch=epoch)
        rec = Recorder(c)
        gaps: list[Gap] = []
        c.on_gap(gaps.append)
        async with c:
            await eventually(lambda: len(rec.messages) == 3)
            assert gaps == [
                Gap(
                    "t",
                    101,
                    None,
                    "the resume position was never issued by the server's history",
                    "t",
                )
            ]
            assert [m.id for m in rec.messages] == [1, 2, 3]
            assert c.last_event_ids == {"t": 3}
        # Published while the client is away: the corrected position gets it on resume.
        server.publish("t", b"4")
        again = v2_client(server.address, ["t"], last_event_ids=c.last_event_ids, epoch=epoch)
        rec2 = Recorder(again)
        again_gaps: list[Gap] = []
        again.on_gap(again_gaps.append)
        async with again:
            await eventually(lambda: len(rec2.messages) == 1)
        assert [(m.id, m.data) for m in rec2.messages] == [(4, b"4")]
        assert again_gaps == []


async def test_a_topic_that_cannot_be_sent_is_refused_before_it_is_stored():
    async with Server(["user.*"]) as server:
        with pytest.raises(LocalProtocolError, match="not valid UTF-8"):
            server.publish("user.\udc80", b"{}")
        with pytest.raises(ValueError, match="content_type"):
            server.publish("user.1", b"{}", content_type=-1)
        with pytest.raises(TypeError, match="compact must be bytes"):
            server.publish("user.1", b"{}", compact=(2, "text"))  # type: ignore[arg-type]
        assert server.history.last_id == 0  # nothing kept
        server.publish("user.1", b"{}")
        # Every later resume of user.* replays cleanly (it used to close with UNKNOWN).
        c = v2_client(
            server.address,
            ["user.*"],
            last_event_ids={"user.*": 0},
            epoch=server.history.epoch,
        )
        rec = Recorder(c)
        async with c:
            await eventually(lambda: len(rec.messages) == 1)
            assert rec.errors == []
            assert server.connection_count == 1
        assert [(m.topic, m.id) for m in rec.messages] == [("user.1", 1)]
        assert rec.states.count("lost") == 0
