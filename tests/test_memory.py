"""What a subscriber cost is given back as soon as it is gone, not when QUIC forgets it."""

import asyncio
import gc
import weakref

import pytest

from qsse_core import Limits, Server

from .helpers import eventually
from .test_hostile_peers import QSSE1, QSSE2, hello_and, peer, subscribe


@pytest.mark.parametrize("alpn", [QSSE1, QSSE2])
async def test_queued_events_of_a_subscriber_that_left_are_freed_at_once(alpn):
    limits = Limits(write_window=8 * 1024, max_queued_bytes=1024 * 1024)
    async with Server(["t"], limits=limits) as server:
        async with peer(server, alpn) as p:
            if alpn == QSSE1:
                p.send(2, b'{"topics":["t"]}\n', end_stream=True)
            else:
                p.send(0, hello_and(subscribe(1, topic="t")))
            await server.wait_subscribed("t")
            (session,) = server._sessions
            p.frozen = True  # reads nothing: what is published queues up
            for _ in range(100):
                server.publish("t", b"x" * 1000)
            await asyncio.sleep(0.05)
            outboxes = [s.outbox for s in session.subscriptions.values()]
            assert sum(o.size for o in outboxes) > 50_000
            p.close()  # its CONNECTION_CLOSE still goes out
            await eventually(lambda: server.connection_count == 0)
            # The QUIC connection drains a while longer, and its protocol refers to the
            # session until then: nothing queued may stay behind with it.
            assert [(o.size, len(o.frames)) for o in outboxes] == [(0, 0)] * len(outboxes)
            assert session.protocol.on_datagram is None


@pytest.mark.parametrize("alpn", [QSSE1, QSSE2])
async def test_nothing_of_a_subscriber_stays_reachable_after_it_left(alpn):
    # The keepalive loop visits every session; its loop variable kept the last one (with its
    # QUIC connection and stream buffers) alive for as long as the server ran.
    limits = Limits(keepalive_interval=0.1)
    async with Server(["t"], limits=limits) as server:
        async with peer(server, alpn) as p:
            if alpn == QSSE1:
                p.send(2, b'{"topics":["t"]}\n', end_stream=True)
            else:
                p.send(0, hello_and(subscribe(1, topic="t")))
            await server.wait_subscribed("t")
            (session,) = server._sessions
            protocol = weakref.ref(session.protocol)
            quic = weakref.ref(session.protocol.quic)
            del session
            server.publish("t", b"x" * 1000)
            await asyncio.sleep(0.3)  # the keepalive loop has been through it
        await eventually(lambda: server.connection_count == 0)

        def released() -> bool:
            gc.collect()
            return protocol() is None and quic() is None

        # Once its QUIC connection has drained, the endpoint forgets it too.
        await eventually(released, timeout=15)
