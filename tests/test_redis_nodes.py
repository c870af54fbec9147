"""Several server processes (nodes) on one real Redis: fan-out across nodes, failover of a
client between nodes killed with SIGKILL, Redis restarts and data loss, typed publishing
from a process with no QUIC server, and ``qsse serve --workers``."""

from __future__ import annotations

import asyncio
import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qsse_core import BrokerError, Client, Gap, Message, ReconnectPolicy, RedisBroker

pytest.importorskip("redis")

QSSE = [sys.executable, "-m", "qsse_core"]
FAST_RETRY = ReconnectPolicy(interval=0.05, max_interval=0.3, max_attempts=None)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """``qsse serve --redis`` in its own process."""

    def __init__(self, url: str, logs: Path, topics=("t",), port: int = 0, workers: int = 1):
        self.url = url
        self.logs = logs
        self.topics = topics
        self.port = port or free_udp_port()
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        # A free port picked at random can be taken by another process before we bind it: on
        # a first start, try another one (a restart must keep its port for the clients).
        for _ in range(5):
            try:
                self._start(timeout)
                return
            except AssertionError:
                if self.starts > 1 or "cannot listen" not in self.stderr():
                    raise
                self._close_pipes()
                self.port = free_udp_port()
                self.starts = 0
        raise AssertionError(f"no free port to listen on: {self.stderr()}")

    def _start(self, timeout: float) -> None:
        self.starts += 1
        err = (self.logs / f"node-{self.port}-{self.starts}.err").open("wb")
        args = [*QSSE, "serve", *self.topics, "--port", str(self.port)]
        args += ["--history-events", "10000", "--workers", str(self.workers)]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "QSSE_REDIS_URL": self.url, "PYTHONUNBUFFERED": "1"},
        )
        err.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for _ in range(self.workers):
            while True:
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, self.stderr()
                ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
                if ready:
                    line = self.proc.stdout.readline().decode()
                    assert line == f"listening on {self.address}\n", (line, self.stderr())
                    break

    def publish(self, line: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_pipes()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        assert self.proc is not None
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def stderr(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.logs.glob("node-*.err")))


@pytest.fixture
def nodes(redis_server, tmp_path):
    made: list[Node] = []

    def make(**kwargs) -> Node:
        node = Node(redis_server.url, tmp_path, **kwargs)
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()


class Inbox:
    def __init__(self, client: Client) -> None:
        self.messages: list[Message] = []
        self.gaps: list[Gap] = []
        self.changed = asyncio.Event()
        client.on_message(self._message)
        client.on_gap(self._gap)

    def _message(self, message: Message) -> None:
        self.messages.append(message)
        self.changed.set()

    def _gap(self, gap: Gap) -> None:
        self.gaps.append(gap)
        self.changed.set()

    async def wait_for(self, predicate, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def v2_client(addresses, topics=("t",), **kwargs) -> Client:
    kwargs.setdefault("insecure", True)
    kwargs.setdefault("protocols", ["qsse/2"])
    kwargs.setdefault("reconnect", FAST_RETRY)
    return Client(addresses, list(topics), **kwargs)


async def test_an_event_published_on_one_node_reaches_subscribers_of_both(nodes, redis_server):
    a, b = nodes(), nodes()
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    on_a = v2_client(a.address)
    # A Go-protocol (qsse/1) subscriber on the other node.
    on_b = v2_client(b.address, protocols=["PROTOCOL_QUIC"])
    inbox_a, inbox_b = Inbox(on_a), Inbox(on_b)
    async with on_a, on_b:
        await asyncio.sleep(0)  # subscriptions are sent with the handshake; wait for them:
        async with RedisBroker(redis_server.url) as publisher:
            # Published on node A (its stdin), then from a separate publisher, then by the CLI.
            async def both_get(count: int) -> None:
                await inbox_a.wait_for(lambda: len(inbox_a.messages) >= count)
                await inbox_b.wait_for(lambda: len(inbox_b.messages) >= count)

            deadline = time.monotonic() + 30
            # A and B learn of their subscriptions asynchronously: publish until both hear.
            while not (inbox_a.messages and inbox_b.messages):
                assert time.monotonic() < deadline
                await publisher.publish("t", "t", b'"probe"', 1)
                await asyncio.sleep(0.05)
            before = len(inbox_a.messages), len(inbox_b.messages)
            a.publish(b't {"from":"a"}')
            await both_get(max(before) + 1)
            out = await asyncio.to_thread(
                subprocess.run,
                [*QSSE, "publish", "t", '{"from":"cli"}'],
                env={**os.environ, "QSSE_REDIS_URL": redis_server.url},
                capture_output=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr.decode()
            topic, _, event_id = out.stdout.decode().strip().partition("\t")
            assert topic == "t" and int(event_id) > 0
            await inbox_a.wait_for(lambda: inbox_a.messages[-1].data == b'{"from":"cli"}')
            await inbox_b.wait_for(lambda: inbox_b.messages[-1].data == b'{"from":"cli"}')
    tail_a = [m.data for m in inbox_a.messages[before[0] :]]
    tail_b = [m.data for m in inbox_b.messages[before[1] :]]
    assert tail_a == tail_b == [b'{"from":"a"}', b'{"from":"cli"}']
    assert inbox_a.messages[-1].id == int(event_id)


async def test_a_subscriber_moves_to_the_other_node_when_its_node_is_killed(nodes, redis_server):
    """3,000 events at about 1,000/s; the subscriber's node is SIGKILLed three times; it gets
    every event exactly once and in order, from whichever node it is on."""
    total, kills_at = 3000, (500, 1250, 2000)
    a, b = nodes(), nodes()
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    by_port = {a.port: a, b.port: b}
    client = v2_client([a.address, b.address], idle_timeout=1.0)
    inbox = Inbox(client)
    ports: list[int] = []
    client.on_state(
        lambda change: ports.append(client.port) if change.state.value == "connected" else None
    )
    async with client:
        async with RedisBroker(redis_server.url) as publisher:
            # The node holds the subscription once an event published now reaches it.
            while not inbox.messages:
                await publisher.publish("t", "t", b"-1", 1)
                await inbox.wait_for(lambda: bool(inbox.messages), timeout=30)
            first = inbox.messages[-1].id
            assert first is not None

            async def publish_all() -> None:
                for i in range(total):
                    publisher.publish_nowait("t", "t", b"%d" % i, 1)
                    if i % 10 == 9:
                        await asyncio.sleep(0.01)
                await publisher.flush()

            async def kill_three_times() -> None:
                for mark in kills_at:
                    await inbox.wait_for(lambda m=mark: len(inbox.messages) > m, timeout=60)
                    node = by_port[client.port]
                    await asyncio.to_thread(node.kill)
                    # Back up for the next time the client moves over.
                    await asyncio.to_thread(node.start)

            await asyncio.gather(publish_all(), kill_three_times())
            await inbox.wait_for(lambda: len(inbox.messages) >= total + 1, timeout=90)
    received = inbox.messages[1:]
    assert [m.data for m in received] == [b"%d" % i for i in range(total)]
    assert [m.id for m in received] == list(range(first + 1, first + total + 1))
    assert inbox.gaps == []
    assert len(ports) >= 4 and all(p != q for p, q in itertools.pairwise(ports))


async def publish_retrying(broker: RedisBroker, data: bytes, timeout: float = 60) -> int:
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await broker.publish("t", "t", data, 1)
            except BrokerError:
                await asyncio.sleep(0.05)


async def test_redis_restarted_mid_stream_loses_nothing_within_history(nodes, redis_server):
    node = nodes()
    await asyncio.to_thread(node.start)
    client = v2_client(node.address, idle_timeout=5.0)
    inbox = Inbox(client)
    states: list[str] = []
    client.on_state(lambda change: states.append(change.state.value))
    async with client:
        async with RedisBroker(redis_server.url, timeout=2.0) as publisher:
            while not inbox.messages:
                await publisher.publish("t", "t", b"-1", 1)
                await inbox.wait_for(lambda: bool(inbox.messages), timeout=30)
            stored = []
            for i in range(300):
                if i == 100:
                    await asyncio.to_thread(redis_server.restart)  # data kept on disk
                stored.append(await publish_retrying(publisher, b"%d" % i))
                if i % 10 == 9:
                    await asyncio.sleep(0.01)
            await inbox.wait_for(lambda: inbox.messages[-1].id == stored[-1], timeout=60)
    ids = [m.id for m in inbox.messages]
    # Every event Redis stored, once and in order (a publish retried after a lost reply may
    # have been stored twice; both copies are then delivered, each once).
    assert ids == list(range(ids[0], stored[-1] + 1))
    assert {b"%d" % i for i in range(300)} <= {m.data for m in inbox.messages}
    assert inbox.gaps == []
    # The node kept its QUIC client through Redis's restart: one connection, never lost.
    assert states.count("connected") == 1 and "lost" not in states, states


async def test_redis_data_flushed_is_an_explicit_gap(nodes, redis_server):
    node = nodes()
    await asyncio.to_thread(node.start)
    client = v2_client(node.address)
    inbox = Inbox(client)
    async with client:
        async with RedisBroker(redis_server.url) as publisher:
            while not inbox.messages:
                await publisher.publish("t", "t", b"old", 1)
                await inbox.wait_for(lambda: bool(inbox.messages), timeout=30)
            last_old = inbox.messages[-1].id
            redis_server.command("FLUSHALL")
            for i in range(3):
                await publish_retrying(publisher, b"new %d" % i)
            await inbox.wait_for(lambda: inbox.messages[-1].data == b"new 2", timeout=30)
    assert inbox.gaps == [Gap("t", last_old + 1, None, "the server's history started over", "t")]
    news = [m for m in inbox.messages if m.data.startswith(b"new")]
    assert [(m.id, m.data) for m in news] == [(1, b"new 0"), (2, b"new 1"), (3, b"new 2")]


PUBLISHER = textwrap.dedent(
    """
    import asyncio, datetime, sys
    from generated import rides
    from qsse_core import RedisBroker

    async def main():
        async with RedisBroker(sys.argv[1]) as broker:
            publisher = rides.RidesPublisher(broker)
            for ride_id in (1, 2, 3):
                publisher.ride_status(
                    rides.RideStatus(
                        state=rides.RideState.ARRIVING,
                        eta_seconds=ride_id,
                        changed_at=datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC),
                    ),
                    ride_id=ride_id,
                )
            await publisher.flush()
            # Refused before anything is queued: the schema says eta_seconds >= 0.
            try:
                publisher.ride_status(
                    rides.RideStatus(
                        state=rides.RideState.ARRIVING,
                        eta_seconds=-1,
                        changed_at=datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC),
                    ),
                    ride_id=4,
                )
            except Exception as exc:
                print(type(exc).__name__)

    asyncio.run(main())
    """
)


async def test_a_typed_publisher_on_a_broker_alone_reaches_another_process(nodes, redis_server):
    from generated import rides

    node = nodes(topics=rides.TOPICS)
    await asyncio.to_thread(node.start)
    client = v2_client(node.address, topics=["ride.*.status"])
    subscriber = rides.RidesSubscriber(client)
    got: list[tuple[int, rides.RideStatus]] = []
    changed = asyncio.Event()

    @subscriber.on_ride_status_with_params
    def _(params: rides.RideStatusParams, event: rides.RideStatus) -> None:
        got.append((params.ride_id, event))
        changed.set()

    async with client:
        # The node must hold the subscription before the publisher runs.
        async with RedisBroker(redis_server.url) as probe:
            async with asyncio.timeout(30):
                while not got:
                    await probe.publish(
                        "ride.*.status",
                        "ride.0.status",
                        b'{"state":"requested","changed_at":"2024-05-01T00:00:00Z"}',
                        1,
                    )
                    await asyncio.sleep(0.05)
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", PUBLISHER, redis_server.url],
            capture_output=True,
            timeout=60,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode().split() == ["ValidationError"]
        async with asyncio.timeout(30):
            while len([g for g in got if g[0]]) < 3:
                changed.clear()
                await changed.wait()
    typed = [(ride_id, event.eta_seconds) for ride_id, event in got if ride_id]
    assert typed == [(1, 1), (2, 2), (3, 3)]


async def test_workers_share_one_port_and_one_broker(nodes, redis_server):
    node = nodes(workers=2)
    await asyncio.to_thread(node.start)
    clients = [v2_client(node.address) for _ in range(6)]
    inboxes = [Inbox(c) for c in clients]
    try:
        for c in clients:
            await c.connect()
        async with asyncio.timeout(30):
            # Every worker holds its subscriptions once a probe reaches every client.
            while not all(i.messages for i in inboxes):
                node.publish(b't "probe"')
                await asyncio.sleep(0.1)
        node.publish(b't "all"')
        for inbox in inboxes:
            await inbox.wait_for(lambda i=inbox: i.messages[-1].data == b'"all"')
    finally:
        for c in clients:
            await c.close()
    # Two workers listening on the store's channel (the parent only publishes).
    listing = redis_server.command("CLIENT", "LIST")
    assert isinstance(listing, bytes) and listing.count(b" sub=1 ") == 2, listing
