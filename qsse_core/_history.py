"""Recent events per declared topic, so qsse/2 clients can resume without loss.

Event ids come from one sequence per store: they order events within every topic (and across
topics). A store carries an ``epoch``; a client whose position belongs to another epoch (the
server started over with an empty store) is told its gap is unknown instead of being handed
ids that mean something else.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import msgspec

__all__ = ["HistoryPolicy", "HistoryStore", "MemoryHistory", "StoredEvent"]


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much of one topic's past a store keeps; the first bound reached evicts."""

    #: events kept.
    max_events: int = 1000
    #: payload bytes kept.
    max_bytes: int = 1024 * 1024
    #: seconds an event is kept, or None for no age limit.
    max_age: float | None = None

    def __post_init__(self) -> None:
        if self.max_events < 0 or self.max_bytes < 0:
            raise ValueError("HistoryPolicy bounds must be >= 0")
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError(f"HistoryPolicy.max_age must be positive, got {self.max_age!r}")


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """One retained event (a msgspec Struct: made once per publish, it must be cheap)."""

    id: int
    topic: str
    data: bytes
    content_type: int
    time: float


class HistoryStore(Protocol):
    """What a server needs of a history store.

    Calls are synchronous because ``publish`` never blocks; a shared, durable engine (several
    servers behind one store) serves reads from a local window and writes through in the
    background, keeping this interface.
    """

    @property
    def epoch(self) -> int:
        """Names this store's id sequence."""
        ...

    @property
    def last_id(self) -> int:
        """The id of the newest event appended (0 when none)."""
        ...

    def append(self, label: str, topic: str, data: bytes, content_type: int, now: float) -> int:
        """Keep an event of declared topic ``label``; return its new id."""
        ...

    def since(self, label: str, after: int, now: float) -> tuple[list[StoredEvent], int]:
        """Events of ``label`` with ids above ``after``, oldest first, and the id of the newest
        event of ``label`` evicted so far (0 when none)."""
        ...


class _Topic:
    __slots__ = ("bytes", "events", "evicted", "policy")

    def __init__(self, policy: HistoryPolicy) -> None:
        self.policy = policy
        self.events: deque[StoredEvent] = deque()
        self.bytes = 0
        self.evicted = 0

    def trim(self, now: float) -> None:
        policy, events = self.policy, self.events
        horizon = None if policy.max_age is None else now - policy.max_age
        while events and (
            len(events) > policy.max_events
            or self.bytes > policy.max_bytes
            or (horizon is not None and events[0].time < horizon)
        ):
            old = events.popleft()
            self.bytes -= len(old.data)
            self.evicted = old.id


class MemoryHistory:
    """A history store in this process's memory; bounded per topic by :class:`HistoryPolicy`.

    :param default: the policy of topics not named in ``topics``.
    :param topics: policies per declared topic.
    :param epoch: the id sequence's name; random by default.
    """

    def __init__(
        self,
        default: HistoryPolicy | None = None,
        topics: Mapping[str, HistoryPolicy] | None = None,
        *,
        epoch: int | None = None,
    ) -> None:
        self.default = default or HistoryPolicy()
        self.policies = dict(topics or {})
        self._epoch = epoch if epoch is not None else random.getrandbits(62) + 1
        self._last_id = 0
        self._topics: dict[str, _Topic] = {}

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def last_id(self) -> int:
        return self._last_id

    def _topic(self, label: str) -> _Topic:
        topic = self._topics.get(label)
        if topic is None:
            topic = self._topics[label] = _Topic(self.policies.get(label, self.default))
        return topic

    def append(self, label: str, topic: str, data: bytes, content_type: int, now: float) -> int:
        self._last_id += 1
        entry = self._topic(label)
        entry.events.append(StoredEvent(self._last_id, topic, data, content_type, now))
        entry.bytes += len(data)
        entry.trim(now)
        return self._last_id

    def since(self, label: str, after: int, now: float) -> tuple[list[StoredEvent], int]:
        entry = self._topics.get(label)
        if entry is None:
            return [], 0
        entry.trim(now)
        events = entry.events
        if not events or events[-1].id <= after:
            return [], entry.evicted
        # Ids grow along the deque: walk back from the newest to the first one wanted.
        start = len(events)
        while start > 0 and events[start - 1].id > after:
            start -= 1
        return [events[i] for i in range(start, len(events))], entry.evicted
