"""The broker seam with the in-memory broker: today's behaviour, shared by servers in one
process, and a publisher bound to a broker alone."""

from __future__ import annotations

import pytest

from qsse_core import (
    BrokerPublisher,
    ConfigurationError,
    LocalProtocolError,
    MemoryBroker,
    MemoryHistory,
    Server,
)

from .helpers import Recorder, client, eventually


async def test_two_servers_on_one_memory_broker_share_ids_and_events():
    broker = MemoryBroker()
    async with Server(["t"], broker=broker) as a, Server(["t"], broker=broker) as b:
        ca, cb = client(a.address, ["t"]), client(b.address, ["t"])
        ra, rb = Recorder(ca), Recorder(cb)
        async with ca, cb:
            await a.wait_subscribed("t")
            await b.wait_subscribed("t")
            assert a.publish("t", b"1") == 1  # queued here; b's subscriber gets it from b
            assert b.publish("t", b"2") == 1
            await eventually(lambda: len(ra.messages) == 2 and len(rb.messages) == 2)
    assert [m.data for m in ra.messages] == [m.data for m in rb.messages] == [b"1", b"2"]
    if ra.messages[0].id is not None:
        assert [m.id for m in ra.messages] == [m.id for m in rb.messages] == [1, 2]
    assert a.history is b.history is broker.history


async def test_publish_confirmed_returns_the_ids_in_memory():
    async with Server(["ride.*", "ride.1"]) as server:
        # As in Go, a published topic is a pattern over the declared ones: two events.
        assert await server.publish_confirmed("ride.*", b"x") == [1, 2]
        assert await server.publish_confirmed("ride.7", b"y") == [3]


async def test_a_history_and_a_broker_are_one_or_the_other():
    with pytest.raises(ConfigurationError, match="not both"):
        Server(["t"], history=MemoryHistory(), broker=MemoryBroker())


async def test_a_publisher_bound_to_a_broker_alone_reaches_the_servers_on_it():
    broker = MemoryBroker()
    publisher = BrokerPublisher(broker, ["ride.*"])
    with pytest.raises(LocalProtocolError, match="matches no declared topic"):
        publisher.publish("order.1", b"x")
    async with Server(["ride.*"], broker=broker) as server:
        c = client(server.address, ["ride.*"])
        rec = Recorder(c)
        async with c:
            await server.wait_subscribed("ride.*")
            assert publisher.publish("ride.9", b'{"a":1}') == 1
            await publisher.flush()
            await eventually(lambda: len(rec.messages) == 1)
    assert (rec.messages[0].topic, rec.messages[0].data) == ("ride.9", b'{"a":1}')


async def test_a_client_given_several_addresses_dials_the_next_when_one_is_down():
    import socket

    from qsse_core import Client, ReconnectPolicy

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nobody listens here once the socket is closed
    async with Server(["t"]) as server:
        c = Client(
            [f"127.0.0.1:{dead}", server.address],
            ["t"],
            insecure=True,
            connect_timeout=2.0,
            reconnect=ReconnectPolicy(interval=0.01, max_attempts=3),
        )
        rec = Recorder(c)
        async with c:
            assert (c.host, c.port) == ("127.0.0.1", server.port)
            await server.wait_subscribed("t")
            server.publish("t", b"here")
            await eventually(lambda: len(rec.messages) == 1)
    assert c.addresses == (("127.0.0.1", dead), ("127.0.0.1", server.port))


def test_a_client_needs_an_address():
    from qsse_core import Client

    with pytest.raises(ConfigurationError, match="at least one address"):
        Client([], ["t"])
