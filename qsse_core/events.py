"""Events the sans-I/O connections hand to the layer above.

Each is a small frozen fact. Don't subclass these: code matches on the concrete classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ConnectionClosed",
    "ErrorReceived",
    "EventReceived",
    "FrameDropped",
    "GapReceived",
    "HandshakeDone",
    "HelloReceived",
    "OfferReceived",
    "ProtocolViolation",
    "QsseEvent",
    "SubscribeRequested",
    "SubscriptionAnswered",
    "SubscriptionStarted",
    "UnsubscribeRequested",
    "UnsubscriptionAnswered",
    "Welcomed",
]


class QsseEvent:
    """Base class of qsse protocol events."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class HandshakeDone(QsseEvent):
    """The QUIC handshake completed and the qsse protocol is chosen."""

    #: the ALPN protocol the peers agreed on.
    alpn_protocol: str


@dataclass(frozen=True, slots=True)
class OfferReceived(QsseEvent):
    """Server side: the client sent its subscription offer."""

    #: the client's token ("" when it sent none).
    token: str
    #: the topics it asked for, in order; a topic listed twice is subscribed twice, as in Go.
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventReceived(QsseEvent):
    """Client side: an event arrived."""

    #: the concrete topic the event was published on.
    topic: str
    #: the payload.
    data: bytes
    #: its id within the topic, on protocols that carry ids.
    id: int | None = None
    #: qsse/2: the payload's content type code (see ``ContentType``).
    content_type: int | None = None
    #: qsse/2: the subscription whose stream carried it.
    subscription_id: int | None = None


@dataclass(frozen=True, slots=True)
class ErrorReceived(QsseEvent):
    """Client side: the server sent an error event (Go's ``{"code":..,"data":..}``)."""

    #: the error code, see :class:`qsse_core.ErrorCode`.
    code: int
    #: details, e.g. ``{"topic": "ride.unknown"}``.
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FrameDropped(QsseEvent):
    """Client side: a frame could not be used and was skipped; later frames still count."""

    #: MALFORMED_FRAME or FRAME_TOO_LARGE.
    code: int
    #: what was wrong with it.
    reason: str
    #: the start of the offending bytes, for diagnosis (at most 200 bytes).
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class ProtocolViolation(QsseEvent):
    """The peer broke the protocol and the connection is being closed with this code."""

    #: the application error code sent in CONNECTION_CLOSE.
    error_code: int
    #: the reason phrase sent with it.
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed(QsseEvent):
    """The QUIC connection ended."""

    #: the error code of the CONNECTION_CLOSE.
    error_code: int
    #: its reason phrase.
    reason: str
    #: True for an application close (the code is an :class:`~qsse_core.ErrorCode`), False
    #: for a QUIC transport error or an idle timeout (the code is a QUIC transport code).
    application: bool


@dataclass(frozen=True, slots=True)
class HelloReceived(QsseEvent):
    """Server side, qsse/2: the client introduced itself with its token."""

    token: str


@dataclass(frozen=True, slots=True)
class SubscribeRequested(QsseEvent):
    """Server side, qsse/2: the client asks for a subscription."""

    request_id: int
    topic: str
    #: resume after this event id (None: live events only).
    last_id: int | None
    #: the history epoch ``last_id`` belongs to.
    epoch: int | None


@dataclass(frozen=True, slots=True)
class UnsubscribeRequested(QsseEvent):
    """Server side, qsse/2: the client ends a subscription."""

    request_id: int
    subscription_id: int


@dataclass(frozen=True, slots=True)
class Welcomed(QsseEvent):
    """Client side, qsse/2: the server accepted the token."""

    #: names the server's event-id sequence.
    epoch: int


@dataclass(frozen=True, slots=True)
class SubscriptionAnswered(QsseEvent):
    """Client side, qsse/2: the result of a subscribe request."""

    request_id: int
    #: a ``SubscribeStatus`` code.
    status: int
    topic: str
    subscription_id: int
    #: the newest event id when the subscription started.
    position: int
    reason: str


@dataclass(frozen=True, slots=True)
class UnsubscriptionAnswered(QsseEvent):
    """Client side, qsse/2: the result of an unsubscribe request."""

    request_id: int
    subscription_id: int
    status: int


@dataclass(frozen=True, slots=True)
class GapReceived(QsseEvent):
    """Client side, qsse/2: events of ``topic`` were lost to this subscription."""

    subscription_id: int
    #: the declared topic whose events were lost.
    topic: str
    #: the first lost id.
    first_id: int
    #: the last lost id, or None when unknown (the server's history started over).
    last_id: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class SubscriptionStarted(QsseEvent):
    """Client side, qsse/2: a subscription's stream opened."""

    subscription_id: int
    topic: str
    #: the epoch of the event ids the stream carries.
    epoch: int
