"""The in-process broker: today's single-process behaviour behind the broker seam."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry

from .._broker import Broker, BrokerListener, Listeners
from .._exceptions import ConfigurationError, LocalProtocolError
from .._framing2 import ContentType
from .._history import HistoryStore, MemoryHistory, StoredEvent
from .._metrics import Metrics
from .._topics import TopicTable

__all__ = ["BrokerPublisher", "MemoryBroker"]


class MemoryBroker(Listeners):
    """A :class:`~qsse_core.Broker` in this process's memory, the default of every server.

    Ids and history come from ``history``; every server listening on the same broker (in this
    process) receives every event published on any of them. Publishing is synchronous.

    :param history: the store; a fresh :class:`~qsse_core.MemoryHistory` by default.
    """

    remote = False

    def __init__(self, history: HistoryStore | None = None) -> None:
        self._history: HistoryStore = history if history is not None else MemoryHistory()
        self._listeners: list[BrokerListener] = []

    @property
    def history(self) -> HistoryStore:
        return self._history

    async def start(self, labels: Iterable[str] = ()) -> None:
        return None

    async def close(self) -> None:
        return None

    def publish_nowait(
        self,
        label: str,
        topic: str,
        data: bytes,
        content_type: int,
        now: float,
        origin: BrokerListener | None = None,
    ) -> int:
        event_id = self._history.append(label, topic, data, content_type, now)
        if len(self._listeners) > (origin is not None):
            event = StoredEvent(event_id, topic, data, content_type, now)
            for listener in self._listeners:
                if listener is not origin:
                    listener.on_event(label, event)
        return event_id

    async def publish(self, label: str, topic: str, data: bytes, content_type: int) -> int:
        return self.publish_nowait(label, topic, data, content_type, time.time())

    async def flush(self) -> None:
        return None

    async def sync(self, position: int) -> None:
        return None


class BrokerPublisher:
    """Publishes on a broker alone, with no QUIC server in this process.

    A service that only produces events (``RidesPublisher(broker)`` binds a typed publisher
    to one of these) publishes on the declared topics the nodes serve; the nodes deliver.

    :param broker: the broker of the nodes, started by the caller (or by the first publish
        after ``await broker.start()``).
    :param topics: the declared topics (as the nodes declare them); a published topic maps to
        the declared topic it falls under, as :meth:`Server.publish` does.
    :param registry: Prometheus registry for :attr:`metrics`; a fresh one by default.
    :param metrics_namespace: prefix of every metric name.
    :raises ConfigurationError: on an invalid topic declaration.
    """

    def __init__(
        self,
        broker: Broker,
        topics: Iterable[str],
        *,
        registry: CollectorRegistry | None = None,
        metrics_namespace: str = "qsse",
    ) -> None:
        try:
            self._table = TopicTable(topics)
        except ValueError as exc:
            raise ConfigurationError(f"invalid topic declaration: {exc}") from None
        self.broker = broker
        #: typed publishers count rejected events here (``qsse_validation_rejections_total``).
        self.metrics = Metrics(registry, metrics_namespace)

    @property
    def topics(self) -> tuple[str, ...]:
        """The declared topics."""
        return self._table.declared

    def publish(
        self,
        topic: str,
        data: bytes,
        *,
        content_type: int = ContentType.JSON,
        compact: tuple[int, bytes] | None = None,
    ) -> int:
        """Queue ``data`` on ``topic`` for the broker, in call order, without waiting.

        Nothing is reported stored here: :meth:`flush` waits for the broker and raises if it
        did not store something queued. ``compact``, when given, is what is published (the
        nodes give qsse/1 subscribers MessagePack transcoded to JSON).

        :returns: the number of events queued (one per declared topic ``topic`` falls under).
        :raises BrokerError: at once when the broker is known to be unreachable.
        :raises LocalProtocolError: when ``topic`` matches no declared topic.
        """
        v2_type, v2_data = (content_type, data) if compact is None else compact
        try:
            targets = self._table.publish_targets(topic)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
        if not targets:
            raise LocalProtocolError(
                f"topic {topic!r} matches no declared topic (declared: {list(self.topics)})"
            )
        now = time.time()
        for concrete, label in targets:
            self.broker.publish_nowait(label, concrete, v2_data, v2_type, now)
        return len(targets)

    async def flush(self) -> None:
        """Wait until the broker has stored every event queued so far.

        :raises BrokerError: naming how many were not stored.
        """
        await self.broker.flush()
