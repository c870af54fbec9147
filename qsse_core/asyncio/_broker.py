"""The in-process broker: today's single-process behaviour behind the broker seam."""

from __future__ import annotations

import time
from collections.abc import Iterable

from .._broker import BrokerListener
from .._history import HistoryStore, MemoryHistory, StoredEvent

__all__ = ["MemoryBroker"]


class MemoryBroker:
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

    def add_listener(self, listener: BrokerListener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener: BrokerListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

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
