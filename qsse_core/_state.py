"""Client connection states and the messages a client delivers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["ConnectionState", "Gap", "Message", "StateChange"]


@dataclass(frozen=True, slots=True)
class Message:
    """An event as a client hands it to handlers and iterators."""

    #: the concrete topic it was published on.
    topic: str
    #: the payload.
    data: bytes
    #: its id within the topic, on protocols that carry ids (None on qsse/1).
    id: int | None = None
    #: qsse/2: the payload's ``ContentType`` code (None on qsse/1).
    content_type: int | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """Events a subscription will never receive, said out loud instead of skipped silently."""

    #: the declared topic whose events were lost.
    topic: str
    #: the first lost event id.
    first_id: int
    #: the last lost id, or None when unknown (the server's history started over).
    last_id: int | None
    #: why they were lost.
    reason: str
    #: the subscription (topic as subscribed) that lost them.
    subscription: str


class ConnectionState(Enum):
    """Where a client's connection stands."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    #: the path looked dead (a probe went unanswered, a socket error) or a rebind was asked
    #: for: the connection moves to a new local socket and probes the server (RFC 9000
    #: section 9). ``reason`` says why. Events keep flowing in if the old path still works.
    PROBING = "probing"
    #: the server answered on the new socket: the same connection goes on, with no handshake
    #: and nothing to resume. ``reason`` says why it moved. A connected state, like CONNECTED.
    MIGRATED = "migrated"
    LOST = "lost"
    RETRYING = "retrying"
    GAVE_UP = "gave_up"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class StateChange:
    """A client's connection changed state."""

    #: the new state.
    state: ConnectionState
    #: the retry number within the current outage (0 outside retries).
    attempt: int = 0
    #: seconds until the retry, for RETRYING.
    delay: float = 0.0
    #: why, for LOST and GAVE_UP: the close code and reason or the dial error; for PROBING
    #: and MIGRATED, why the connection moved.
    reason: str = ""
    #: the application close code, for LOST when the peer gave one.
    error_code: int | None = None
