"""The broker seam: how servers (nodes) share one id sequence, one history and every event.

A :class:`Broker` assigns ids, keeps the history, and hands every event published anywhere to
every node listening (:class:`BrokerListener`). Two implementations exist:

- :class:`~qsse_core.asyncio.MemoryBroker`, the default: this process's memory, today's
  behaviour. Publishing is synchronous and the id is known at once.
- :class:`~qsse_core.asyncio.RedisBroker`: Redis streams and Pub/Sub (``docs/redis.md``).
  Publishing is a round trip: ``await broker.publish(...)`` returns the id Redis stored the
  event under; ``publish_nowait`` only queues it.

A node answers resumes from :attr:`Broker.history`, a synchronous :class:`HistoryStore`. A
remote broker serves it from a local replica of its streams (:class:`ReplicaHistory`), fed by
the same messages that reach the listeners, so a replay and the live events that follow it
never overlap or leave a hole.

This module holds no I/O; the implementations live in :mod:`qsse_core.asyncio`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from ._exceptions import LocalProtocolError
from ._history import HistoryPolicy, HistoryStore, StoredEvent, _Topic

__all__ = ["Broker", "BrokerListener", "Listeners", "ReplicaHistory"]


class BrokerListener(Protocol):
    """A node receiving what a broker carries. Called on the event loop, never concurrently."""

    def on_event(self, label: str, event: StoredEvent) -> None:
        """An event of declared topic ``label``, in id order, each once."""
        ...

    def on_gap(self, label: str, first_id: int, last_id: int) -> None:
        """Events ``first_id``-``last_id`` of ``label`` left the history before this node got
        them (it was cut off from the broker for longer than the history lasts)."""
        ...

    def on_epoch(self, epoch: int) -> None:
        """The broker's history started over (its data was lost): ids restart under ``epoch``,
        and positions of the old epoch mean nothing."""
        ...


class Broker(Protocol):
    """What a server needs of a broker; see the module docstring."""

    @property
    def history(self) -> HistoryStore:
        """The history resumes are answered from (for a remote broker, a local replica)."""
        ...

    @property
    def remote(self) -> bool:
        """True when publishing is a round trip: :meth:`publish_nowait` only queues, and the
        event reaches this node's listeners, like every node's, when the broker fans it out."""
        ...

    async def start(self, labels: Iterable[str] = ()) -> None:
        """Connect (once; calls are counted) and keep the history of ``labels`` (declared
        topics) for listeners. A publisher alone passes no labels.

        :raises BrokerError: when the broker cannot be reached.
        """
        ...

    async def close(self) -> None:
        """Undo one :meth:`start`; the last one disconnects."""
        ...

    def add_listener(self, listener: BrokerListener) -> None:
        """Hand every event of the started labels to ``listener`` from now on."""
        ...

    def remove_listener(self, listener: BrokerListener) -> None:
        """Stop handing events to ``listener``."""
        ...

    def publish_nowait(
        self,
        label: str,
        topic: str,
        data: bytes,
        content_type: int,
        now: float,
        origin: BrokerListener | None = None,
    ) -> int:
        """Publish without waiting: an in-process broker stores the event and returns its id
        (the ``origin`` listener, which delivers it itself, is skipped); a remote broker
        queues it in call order and returns 0, and :meth:`flush` reports whether it was
        stored.

        :param now: the time of publication, in seconds since the epoch (in-process only).
        :raises BrokerError: at once when a remote broker is known to be unreachable.
        """
        ...

    async def publish(self, label: str, topic: str, data: bytes, content_type: int) -> int:
        """Publish and wait until the broker has stored the event; returns its id.

        :raises BrokerError: when it was not stored (or the reply was lost).
        """
        ...

    async def flush(self) -> None:
        """Wait until every event queued by :meth:`publish_nowait` is stored.

        :raises BrokerError: naming how many queued events were not stored since the last
            flush.
        """
        ...

    async def sync(self, position: int) -> None:
        """Before a resume from ``position``: bring :attr:`history` up to the broker's newest
        id when it is behind ``position`` (another node issued it). Best effort, bounded."""
        ...


class Listeners:
    """The listener registry both brokers keep: each listener once, in the order added."""

    _listeners: list[BrokerListener]

    def add_listener(self, listener: BrokerListener) -> None:
        """Hand every event to ``listener`` from now on (once, however often added)."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener: BrokerListener) -> None:
        """Stop handing events to ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)


class ReplicaHistory:
    """A :class:`HistoryStore` holding a copy of a remote store, fed with ids assigned there.

    Events arrive through :meth:`put` in id order (a lower or equal id is a duplicate and is
    refused); each topic keeps what :class:`HistoryPolicy` allows, like the remote store.

    :param default: the policy of topics not named in ``topics``.
    :param topics: policies per declared topic.
    """

    def __init__(
        self,
        default: HistoryPolicy | None = None,
        topics: Mapping[str, HistoryPolicy] | None = None,
    ) -> None:
        self.default = default or HistoryPolicy()
        self.policies = dict(topics or {})
        self._epoch = 0
        self._last_id = 0
        self._windows: dict[str, _Topic] = {}

    @property
    def epoch(self) -> int:
        """The remote store's epoch (0 until known)."""
        return self._epoch

    @property
    def last_id(self) -> int:
        """The newest id of the remote store this replica has accounted for."""
        return self._last_id

    def policy(self, label: str) -> HistoryPolicy:
        """The policy of declared topic ``label``."""
        return self.policies.get(label, self.default)

    def reset(self, epoch: int) -> None:
        """Forget everything: the remote store started over as ``epoch``."""
        self._epoch = epoch
        self._last_id = 0
        self._windows.clear()

    def advance(self, last_id: int) -> None:
        """Account for ids up to ``last_id`` (events of topics this replica does not keep)."""
        self._last_id = max(self._last_id, last_id)

    def evicted(self, label: str, event_id: int) -> None:
        """The remote store evicted ``label``'s events up to ``event_id`` (which topics it
        does not say: every subscription of ``label`` is told so, which may overstate)."""
        window = self._window(label)
        if event_id > window.newest_evicted:
            window.newest_evicted = event_id
            window.evicted.clear()
            window.floor = event_id

    def put(self, label: str, event: StoredEvent) -> bool:
        """Keep ``event`` of declared topic ``label``; False (and nothing kept) when its id is
        not above :attr:`last_id`."""
        if event.id <= self._last_id:
            return False
        self._last_id = event.id
        window = self._window(label)
        window.events.append(event)
        window.bytes += len(event.data)
        window.trim(event.time)
        return True

    def newest(self, label: str) -> StoredEvent | None:
        """The newest event of ``label`` held, if any."""
        window = self._windows.get(label)
        return window.events[-1] if window is not None and window.events else None

    def append(self, label: str, topic: str, data: bytes, content_type: int, now: float) -> int:
        """Not supported: a replica's ids come from the remote store.

        :raises LocalProtocolError: always.
        """
        raise LocalProtocolError("a replica cannot assign ids: publish through its broker")

    def since(
        self, label: str, subscription: str, after: int, now: float
    ) -> tuple[list[StoredEvent], int]:
        # The same reading as MemoryHistory.since, over events kept with the remote ids.
        window = self._windows.get(label)
        if window is None:
            return [], 0
        return window.since(label, subscription, after, now)

    def _window(self, label: str) -> _Topic:
        window = self._windows.get(label)
        if window is None:
            window = self._windows[label] = _Topic(self.policy(label))
        return window
