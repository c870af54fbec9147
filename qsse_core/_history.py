"""Recent events per declared topic, so qsse/2 clients can resume without loss.

Event ids come from one sequence per store: they order events within every topic (and across
topics). A store carries an ``epoch`` naming that sequence; a client whose position belongs to
another epoch, or lies beyond what the store ever issued, is told its gap is unknown instead of
being handed ids that mean something else (docs/protocol.md, "Event ids, history and resume").
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import msgspec

from ._topics import topic_matches

__all__ = [
    "EPOCH_MAX",
    "HistoryPolicy",
    "HistoryStore",
    "MemoryHistory",
    "StoredEvent",
    "new_epoch",
]

#: The largest epoch on the wire: epochs are 1 to 2**63 - 1, so they fit a signed 64-bit
#: integer in every MessagePack implementation (Go's ``int64`` among them).
EPOCH_MAX = 2**63 - 1

# Concrete topics whose newest evicted id a store remembers, per declared topic; past it the
# oldest entries fold into one conservative floor (a gap may then overstate, never understate).
_EVICTED_TOPICS = 1024


def new_epoch() -> int:
    """A fresh epoch, 1 to :data:`EPOCH_MAX`, from the operating system's random source.

    Not from :mod:`random`, whose state an application may seed: two stores given the same
    seed would share an epoch, and the second would silently reuse the first's ids.
    """
    return secrets.randbelow(EPOCH_MAX) + 1


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

    Rules every implementation keeps (the server's resume logic relies on them):

    * ids come from one increasing sequence per epoch, shared by every declared topic;
    * the epoch is unique per lifetime of the sequence: a store that may have lost events it
      issued ids for (a process restart of an in-memory store, a flushed database) must take
      a new epoch, and only a store that keeps its events and its sequence together may keep
      its epoch; epochs are 1 to :data:`EPOCH_MAX`;
    * :attr:`last_id` is never below an id the store returned from :meth:`append` in this
      epoch, so a resume position above it was never issued by this store.
    """

    @property
    def epoch(self) -> int:
        """Names this store's id sequence, 1 to :data:`EPOCH_MAX`."""
        ...

    @property
    def last_id(self) -> int:
        """The id of the newest event appended in this epoch (0 when none)."""
        ...

    def append(self, label: str, topic: str, data: bytes, content_type: int, now: float) -> int:
        """Keep an event of concrete topic ``topic`` under declared topic ``label``; return
        its new id. ``now`` is the publish time in seconds since the epoch (``time.time()``).

        The server calls it only for events it has already checked it can encode.
        """
        ...

    def since(
        self, label: str, subscription: str, after: int, now: float
    ) -> tuple[list[StoredEvent], int]:
        """What a subscription to ``subscription`` can replay from declared topic ``label``.

        :param subscription: the topic as subscribed, concrete or a pattern; only events whose
            concrete topic it matches (:func:`qsse_core.topic_matches`) count.
        :param after: the resume position: events with ids above it are returned.
        :param now: seconds since the epoch, for age bounds.
        :returns: the matching events with ids above ``after``, oldest first, and the newest
            id among matching events evicted so far (0 when none). The evicted id may
            overstate what the subscription lost (a store that forgot which topics it evicted
            may report the newest id it evicted of ``label``), never understate it.
        """
        ...


class _Topic:
    __slots__ = ("bytes", "events", "evicted", "floor", "newest_evicted", "policy")

    def __init__(self, policy: HistoryPolicy) -> None:
        self.policy = policy
        self.events: deque[StoredEvent] = deque()
        self.bytes = 0
        # Newest evicted id per concrete topic, oldest first (ids grow with insertion).
        self.evicted: dict[str, int] = {}
        # Newest evicted id of the topics folded out of ``evicted``.
        self.floor = 0
        self.newest_evicted = 0

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
            self.newest_evicted = old.id
            evicted = self.evicted
            if evicted.pop(old.topic, None) is None and len(evicted) >= _EVICTED_TOPICS:
                self.floor = evicted.pop(next(iter(evicted)))
            evicted[old.topic] = old.id

    def since(
        self, label: str, subscription: str, after: int, now: float
    ) -> tuple[list[StoredEvent], int]:
        """What :meth:`HistoryStore.since` answers for this topic's window."""
        self.trim(now)
        evicted = self.evicted_for(label, subscription)
        events = self.events
        if not events or events[-1].id <= after:
            return [], evicted
        # Ids grow along the deque: walk back from the newest to the first one wanted.
        start = len(events)
        while start > 0 and events[start - 1].id > after:
            start -= 1
        wanted = [events[i] for i in range(start, len(events))]
        if subscription != label:
            wanted = [e for e in wanted if topic_matches(subscription, e.topic)]
        return wanted, evicted

    def evicted_for(self, label: str, subscription: str) -> int:
        if subscription == label:
            # Everything kept under a declared topic matches that declared topic.
            return self.newest_evicted
        matched = [i for t, i in self.evicted.items() if topic_matches(subscription, t)]
        # Entries still tracked were evicted after everything folded into the floor.
        return max(matched, default=self.floor)


class MemoryHistory:
    """A history store in this process's memory; bounded per topic by :class:`HistoryPolicy`.

    :param default: the policy of topics not named in ``topics``.
    :param topics: policies per declared topic.

    Its epoch is drawn fresh (:func:`new_epoch`) for every instance: the events die with the
    instance, so a new one must never vouch for positions the old one issued. Pass the same
    instance to a restarted :class:`~qsse_core.Server` in one process to keep history.
    """

    def __init__(
        self,
        default: HistoryPolicy | None = None,
        topics: Mapping[str, HistoryPolicy] | None = None,
    ) -> None:
        self.default = default or HistoryPolicy()
        self.policies = dict(topics or {})
        self._epoch = new_epoch()
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

    def since(
        self, label: str, subscription: str, after: int, now: float
    ) -> tuple[list[StoredEvent], int]:
        entry = self._topics.get(label)
        if entry is None:
            return [], 0
        return entry.since(label, subscription, after, now)
