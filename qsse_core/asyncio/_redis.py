"""Redis as the broker: one id sequence, a stream per declared topic, fan-out by Pub/Sub.

The data layout and the functions are in ``docs/redis.md`` and ``qsse_core/qsse.lua``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Iterable, Mapping
from importlib.resources import files
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .._broker import BrokerListener, Listeners, ReplicaHistory
from .._config import ReconnectPolicy
from .._exceptions import BrokerError, ConfigurationError
from .._history import HistoryPolicy, StoredEvent

try:
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
    from redis.retry import Retry
except ImportError:  # pragma: no cover - the optional extra is missing
    aioredis = None  # type: ignore[assignment]

__all__ = ["RedisBroker"]

logger = logging.getLogger("qsse.broker")

#: The Redis function library every node loads (FUNCTION LOAD REPLACE).
LIBRARY = files("qsse_core").joinpath("qsse.lua").read_text(encoding="utf-8")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _Pending:
    __slots__ = ("content_type", "data", "future", "label", "started", "topic")

    def __init__(
        self,
        label: str,
        topic: str,
        data: bytes,
        content_type: int,
        future: asyncio.Future[int] | None,
    ) -> None:
        self.label = label
        self.topic = topic
        self.data = data
        self.content_type = int(content_type)  # redis-py would spell an IntEnum by name
        self.future = future
        self.started = time.perf_counter()


class _BrokerMetrics:
    def __init__(self, registry: CollectorRegistry, ns: str) -> None:
        self.up = Gauge(
            "broker_up", "1 while the broker is reachable, else 0.", namespace=ns, registry=registry
        )
        self.publish_latency = Histogram(
            "broker_publish_seconds",
            "Seconds from publishing to the broker's confirmation that it stored the event.",
            namespace=ns,
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.errors = Counter(
            "broker_errors",
            "Broker failures, per operation (publish, subscribe, connect, decode).",
            ["operation"],
            namespace=ns,
            registry=registry,
        )
        self.reconnects = Counter(
            "broker_reconnects", "Connections to the broker re-established.", namespace=ns,
            registry=registry,
        )  # fmt: skip
        self.received = Counter(
            "broker_events_received",
            "Events received from the broker, live or caught up after an outage.",
            ["source"],
            namespace=ns,
            registry=registry,
        )
        self.gaps = Counter(
            "broker_gaps",
            "Gaps found after an outage: events evicted before this node received them.",
            namespace=ns,
            registry=registry,
        )


class RedisBroker(Listeners):
    """A :class:`~qsse_core.Broker` on Redis (7 or later): streams, Pub/Sub and a function.

    Every node (server process) and every publisher on the same Redis and ``prefix`` shares
    one id sequence, one epoch and one history. ``await publish(...)`` runs the function
    ``qsse_publish``, which assigns the id, appends to the topic's stream, trims it and
    publishes the event on the store's channel in one atomic step, and returns the id.

    A node that loses Redis keeps its QUIC clients, reconnects with ``reconnect``'s backoff
    and catches its listeners up from the streams, in id order, without duplicates; events
    evicted meanwhile are reported to listeners as gaps, and a change of epoch (Redis lost its
    data) as an epoch change. While Redis is unreachable, publishing raises
    :class:`~qsse_core.BrokerError`.

    :param url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS (TLS
        options as query parameters, e.g. ``?ssl_ca_certs=ca.pem``), or
        ``unix:///path/to/redis.sock``. The password is never logged.
    :param default: the history policy of declared topics not in ``topics``.
    :param topics: history policies per declared topic; nodes write them to Redis, where the
        function applies them on every publish. All nodes of a store should agree.
    :param prefix: names the store: every key is ``{prefix}:...``.
    :param registry: Prometheus registry for the ``qsse_broker_*`` metrics; a fresh one by
        default (a server's ``metrics.registry`` joins them to its own).
    :param metrics_namespace: prefix of every metric name.
    :param reconnect: backoff between reconnection attempts (``max_attempts`` is ignored: a
        node retries for as long as it runs).
    :param timeout: seconds a connection attempt or a command may take.
    :param max_batch: events sent to Redis in one pipeline.
    :raises ConfigurationError: when redis-py is not installed (``pip install 'qsse[redis]'``).
    """

    remote = True

    def __init__(
        self,
        url: str,
        *,
        default: HistoryPolicy | None = None,
        topics: Mapping[str, HistoryPolicy] | None = None,
        prefix: str = "qsse",
        registry: CollectorRegistry | None = None,
        metrics_namespace: str = "qsse",
        reconnect: ReconnectPolicy | None = None,
        timeout: float = 5.0,
        max_batch: int = 512,
    ) -> None:
        if aioredis is None:
            raise ConfigurationError("RedisBroker needs redis-py: pip install 'qsse[redis]'")
        if not prefix or any(c in prefix for c in "{}"):
            raise ConfigurationError(f"prefix must be non-empty without braces, got {prefix!r}")
        if timeout <= 0 or max_batch <= 0:
            raise ConfigurationError("timeout and max_batch must be positive")
        self.url = redact(url)
        self.prefix = prefix
        self.timeout = timeout
        self.max_batch = max_batch
        self.reconnect = reconnect or ReconnectPolicy(interval=0.05, max_interval=2.0)
        try:
            # No retries inside redis-py: a failure must surface as BrokerError, not stall.
            self._client: Any = aioredis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL {self.url!r}: {exc}") from None
        self._history = ReplicaHistory(default, topics)
        self.metrics_registry = registry or CollectorRegistry(auto_describe=True)
        self._metrics = _BrokerMetrics(self.metrics_registry, metrics_namespace)
        self._labels: set[str] = set()
        self._listeners: list[BrokerListener] = []
        self._starts = 0
        self._up = False
        self._last_ms = 0
        self._queue: deque[_Pending] = deque()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._wake = asyncio.Event()
        # _poke wakes the reader: on a failure elsewhere (_trouble) or to reload new topics.
        self._trouble = asyncio.Event()
        self._poke = asyncio.Event()
        self._attempt = 0
        self._closing = False
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._unconfirmed = 0
        self._last_error = ""
        self._writer: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RedisBroker({self.url!r}, prefix={self.prefix!r})"

    def _key(self, name: str) -> str:
        return f"{{{self.prefix}}}:{name}"

    # -- the seam ---------------------------------------------------------------------------

    @property
    def history(self) -> ReplicaHistory:
        return self._history

    @property
    def connected(self) -> bool:
        """Whether Redis answered the last command."""
        return self._up

    @property
    def pending(self) -> int:
        """Events queued or on their way to Redis, not yet confirmed or failed."""
        return len(self._queue) + self._inflight

    @property
    def epoch(self) -> int:
        """The store's epoch (0 before the first connection)."""
        return self._history.epoch

    async def declared_topics(self) -> list[str]:
        """The declared topics nodes of this store have registered, sorted.

        A publisher maps a concrete topic to the declared topic it falls under (its label)
        with them, as ``qsse publish`` does.

        :raises BrokerError: when Redis cannot be reached.
        """
        try:
            members = await self._client.smembers(self._key("labels"))
        except (RedisError, OSError) as exc:
            raise BrokerError(f"cannot reach Redis at {self.url}: {exc}") from None
        return sorted(m.decode() for m in members)

    async def __aenter__(self) -> RedisBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self, labels: Iterable[str] = ()) -> None:
        new = set(labels) - self._labels
        self._labels |= new
        if self._starts == 0:
            try:
                await self._prepare(self._labels)
            except (RedisError, OSError) as exc:
                self._labels -= new
                self._metrics.errors.labels(operation="connect").inc()
                raise BrokerError(f"cannot reach Redis at {self.url}: {exc}") from None
            self._set_up(True)
            self._writer = asyncio.create_task(self._write_loop())
            self._runner = asyncio.create_task(self._run())
        elif new:
            if self._listeners:
                self._labels -= new
                raise ConfigurationError(
                    f"cannot add topics {sorted(new)} to a broker that already has listeners"
                )
            try:
                await self._policies(new)
            except (RedisError, OSError) as exc:
                self._labels -= new
                raise BrokerError(f"cannot reach Redis at {self.url}: {exc}") from None
            # Nobody has received anything yet: reload every stream from the start.
            self._history.reset(self._history.epoch)
            self._last_ms = 0
            self._ready.clear()
            self._poke.set()
        self._starts += 1
        if self._labels:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._ready.wait()
            except TimeoutError:
                await self.close()
                raise BrokerError(f"Redis at {self.url} did not answer in time") from None

    async def close(self) -> None:
        if self._starts == 0:
            return
        self._starts -= 1
        if self._starts:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self._drain()
        except TimeoutError:
            pass
        tasks = [t for t in (self._writer, self._runner) if t is not None]
        # redis-py's reads with a timeout can swallow a cancellation: the flag ends the loop
        # within one read timeout even then.
        self._closing = True
        self._poke.set()
        self._wake.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._closing = False
        self._writer = self._runner = None
        self._fail_queued(BrokerError("the broker was closed"))
        self._set_up(False)
        self._ready.clear()
        await self._client.aclose()

    def publish_nowait(
        self,
        label: str,
        topic: str,
        data: bytes,
        content_type: int,
        now: float = 0.0,
        origin: BrokerListener | None = None,
    ) -> int:
        self._enqueue(_Pending(label, topic, data, content_type, None))
        return 0

    async def publish(self, label: str, topic: str, data: bytes, content_type: int) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(label, topic, data, content_type, future))
        return await future

    async def flush(self) -> None:
        await self._drain()
        if self._unconfirmed:
            count, self._unconfirmed = self._unconfirmed, 0
            raise BrokerError(f"{count} queued events were not stored: {self._last_error}")

    async def sync(self, position: int) -> None:
        if position <= self._history.last_id or not self._up:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self._catch_up()
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("could not catch up with Redis at %s: %s", self.url, exc)

    # -- publishing -------------------------------------------------------------------------

    def _enqueue(self, pending: _Pending) -> None:
        if self._writer is None:
            raise BrokerError("the broker is not started: await broker.start() first")
        if not self._up:
            self._metrics.errors.labels(operation="publish").inc()
            raise BrokerError(f"Redis at {self.url} is unreachable: {self._last_error}")
        if not isinstance(pending.data, bytes):
            raise TypeError(f"data must be bytes, got {type(pending.data).__name__}")
        self._queue.append(pending)
        self._idle.clear()
        self._wake.set()

    async def _drain(self) -> None:
        while self._queue or self._inflight:
            self._idle.clear()
            self._wake.set()
            await self._idle.wait()

    async def _write_loop(self) -> None:
        queue, key = self._queue, self.prefix
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                self._inflight = len(batch)
                pipe = self._client.pipeline(transaction=False)
                for p in batch:
                    pipe.fcall("qsse_publish", 0, key, p.label, p.topic, p.content_type, p.data)
                try:
                    results = await pipe.execute(raise_on_error=False)
                except (RedisError, OSError) as exc:
                    self._lost_connection("publish", exc)
                    results = [exc] * len(batch)
                end = time.perf_counter()
                observe = self._metrics.publish_latency.observe
                for p, result in zip(batch, results, strict=True):
                    if isinstance(result, BaseException):
                        self._metrics.errors.labels(operation="publish").inc()
                        self._last_error = str(result)
                        if "Function not found" in self._last_error and self._up:
                            # Redis came back empty (no persistence): reload the library.
                            self._lost_connection("publish", result)
                        error = BrokerError(f"Redis did not store the event: {result}")
                        if p.future is None:
                            self._unconfirmed += 1
                        elif not p.future.done():
                            p.future.set_exception(error)
                    else:
                        observe(end - p.started)
                        if p.future is not None and not p.future.done():
                            p.future.set_result(int(result))
                self._inflight = 0
                if not self._up:
                    self._fail_queued(BrokerError(f"Redis at {self.url} is unreachable"))
            self._idle.set()

    def _fail_queued(self, error: BrokerError) -> None:
        while self._queue:
            p = self._queue.popleft()
            self._metrics.errors.labels(operation="publish").inc()
            if p.future is None:
                self._unconfirmed += 1
            elif not p.future.done():
                p.future.set_exception(error)
        if not self._inflight:
            self._idle.set()

    # -- connection -------------------------------------------------------------------------

    def _set_up(self, up: bool) -> None:
        self._up = up
        self._metrics.up.set(1 if up else 0)

    def _lost_connection(self, operation: str, exc: BaseException) -> None:
        self._metrics.errors.labels(operation=operation).inc()
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._up:
            logger.warning("lost Redis at %s (%s): %s", self.url, operation, self._last_error)
        self._set_up(False)
        self._trouble.set()
        self._poke.set()

    async def _prepare(self, labels: Iterable[str]) -> None:
        await self._client.function_load(LIBRARY, replace=True)
        await self._policies(labels)
        await self._hello()

    async def _policies(self, labels: Iterable[str]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for label in labels:
            policy = self._history.policy(label)
            key = self._key(f"policy:{label}")
            pipe.hset(key, mapping={"max_events": policy.max_events, "max_bytes": policy.max_bytes})
            if policy.max_age is None:
                pipe.hdel(key, "max_age_ms")
            else:
                pipe.hset(key, "max_age_ms", round(policy.max_age * 1000))
            pipe.sadd(self._key("labels"), label)
            pipe.fcall("qsse_trim", 0, self.prefix, label)
        await pipe.execute()

    async def _hello(self) -> None:
        known = self._history.epoch
        epoch, _ = await self._client.fcall(
            "qsse_hello", 0, self.prefix, str(known) if known else "", self._history.last_id
        )
        if known == 0:
            self._history.reset(int(epoch))

    async def _run(self) -> None:
        prepare = False
        while not self._closing:
            try:
                if prepare:
                    await self._prepare(self._labels)
                    prepare = False
                    self._metrics.reconnects.inc()
                    logger.info("reconnected to Redis at %s", self.url)
                self._trouble.clear()
                self._poke.clear()
                if self._labels:
                    await self._listen()  # returns when asked to reload, raises on failure
                else:
                    self._set_up(True)
                    self._attempt = 0
                    await self._poke.wait()
                if self._trouble.is_set():
                    raise BrokerError(self._last_error)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, BrokerError) as exc:
                if self._closing:
                    return
                self._lost_connection("subscribe", exc)
                prepare = True
                self._attempt += 1
                await asyncio.sleep(self.reconnect.delay(self._attempt, random.random()))

    async def _listen(self) -> None:
        pubsub = self._client.pubsub()
        try:
            # Subscribe first, then read the streams: nothing falls between the two.
            await pubsub.subscribe(self._key("events"))
            await self._catch_up()
            self._set_up(True)
            self._attempt = 0
            self._ready.set()
            while not self._poke.is_set():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    await self._on_message(message["data"])
        finally:
            await pubsub.aclose()

    # -- receiving --------------------------------------------------------------------------

    async def _on_message(self, raw: bytes) -> None:
        try:
            header, _, rest = raw.partition(b"\n")
            epoch, event_id, ms, content_type, label_len, topic_len = map(int, header.split())
            label = rest[:label_len].decode()
            topic = rest[label_len : label_len + topic_len].decode()
            data = rest[label_len + topic_len :]
        except (ValueError, UnicodeDecodeError):
            # Not ours (someone else PUBLISHed here): if it hid one of our events, the next
            # id shows the hole and the streams fill it.
            self._metrics.errors.labels(operation="decode").inc()
            logger.warning("ignored a malformed message on %s", self._key("events"))
            return
        history = self._history
        if epoch != history.epoch or event_id > history.last_id + 1:
            await self._catch_up()
        if event_id <= history.last_id or epoch != history.epoch:
            return
        self._metrics.received.labels(source="live").inc()
        self._accept(label, StoredEvent(event_id, topic, data, content_type, ms / 1000), ms)

    def _accept(self, label: str, event: StoredEvent, ms: int) -> None:
        self._last_ms = max(self._last_ms, ms)
        if label not in self._labels:
            self._history.advance(event.id)
            return
        if self._history.put(label, event):
            for listener in self._listeners:
                try:
                    listener.on_event(label, event)
                except Exception:
                    logger.exception("a broker listener failed on event %d", event.id)

    async def _catch_up(self) -> None:
        """Read what this node missed from the streams, in one transaction, and deliver it."""
        async with self._lock:
            for _ in range(3):
                if await self._catch_up_once():
                    return
            raise BrokerError("the store kept changing epoch while catching up")

    async def _catch_up_once(self) -> bool:
        history = self._history
        labels = sorted(self._labels)
        start = f"{self._last_ms}-0" if history.last_id else "-"
        pipe = self._client.pipeline(transaction=True)
        pipe.get(self._key("epoch"))
        pipe.get(self._key("seq"))
        pipe.get(self._key("ms"))
        pipe.hgetall(self._key("evicted"))
        for label in labels:
            pipe.xrange(self._key(f"stream:{label}"), min=start, max="+")
        # The newest event held per topic must still be in Redis (or evicted there): if not,
        # Redis came back from an older copy and may have issued its id again.
        held = [(label, e) for label in labels if (e := history.newest(label)) is not None]
        for label, event in held:
            entry = f"{round(event.time * 1000)}-{event.id}"
            pipe.xrange(self._key(f"stream:{label}"), min=entry, max=entry)
        epoch_raw, seq_raw, ms_raw, evicted_raw, *rest = await pipe.execute()
        streams, checks = rest[: len(labels)], rest[len(labels) :]
        if epoch_raw is None:
            await self._hello()  # the data is gone: a new epoch, which the next pass reads
            return False
        epoch = int(epoch_raw)
        if epoch != history.epoch:
            old = history.epoch
            history.reset(epoch)
            self._last_ms = 0
            if old:
                logger.warning("Redis history started over: epoch %d -> %d", old, epoch)
                for listener in list(self._listeners):
                    listener.on_epoch(epoch)
            if start != "-":
                return False
        before = history.last_id
        evicted = {k.decode(): int(v) for k, v in evicted_raw.items()}
        for (label, event), found in zip(held, checks, strict=True):
            if not found and evicted.get(label, 0) < event.id:
                logger.warning(
                    "Redis no longer holds event %d of %r, which this node received: it came "
                    "back from an older copy; starting a new epoch",
                    event.id,
                    label,
                )
                await self._client.fcall("qsse_rotate", 0, self.prefix, str(epoch))
                return False
        for label in labels:
            newest = evicted.get(label, 0)
            if newest > before and before:
                self._metrics.gaps.inc()
                for listener in list(self._listeners):
                    listener.on_gap(label, before + 1, newest)
            if newest:
                history.evicted(label, newest)
        per_label = [
            [(_parse_entry(e), label) for e in entries]
            for label, entries in zip(labels, streams, strict=True)
        ]
        merged = heapq.merge(*per_label, key=lambda item: item[0][0].id)
        count = 0
        for (event, ms), label in merged:
            if event.id > history.last_id:
                count += 1
                self._accept(label, event, ms)
        if count:
            self._metrics.received.labels(source="streams").inc(count)
        history.advance(int(seq_raw or 0))
        self._last_ms = max(self._last_ms, int(ms_raw or 0))
        return True


def _parse_entry(entry: tuple[bytes, dict[bytes, bytes]]) -> tuple[StoredEvent, int]:
    stream_id, fields = entry
    ms, _, event_id = stream_id.partition(b"-")
    event = StoredEvent(
        int(event_id),
        fields[b"topic"].decode(),
        fields[b"data"],
        int(fields[b"ct"]),
        int(ms) / 1000,
    )
    return event, int(ms)
