"""Error codes shared by error events and QUIC application CONNECTION_CLOSE frames."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ErrorCode"]


class ErrorCode(IntEnum):
    """Codes 1 to 5 are Go qsse's and keep their meaning; qsse's own start at 0x100 so that
    codes Go may add later cannot collide with them."""

    #: Graceful close by the application (QUIC's NO_ERROR).
    NO_ERROR = 0
    #: Authentication failed (connection close) or a topic was refused (error event).
    NOT_AUTHORIZED = 1
    #: A requested topic is not declared by the server.
    TOPIC_NOT_AVAILABLE = 2
    FAILED_TO_CREATE_STREAM = 3
    FAILED_TO_SEND_OFFER = 4
    UNKNOWN = 5

    #: The server is shutting down; reconnecting later is expected to work.
    GOING_AWAY = 0x100
    #: The offer was not a JSON object of the expected shape, or had no newline.
    MALFORMED_OFFER = 0x101
    #: The offer exceeded the server's size limit.
    OFFER_TOO_LARGE = 0x102
    #: The offer did not arrive within the server's time limit.
    OFFER_TIMEOUT = 0x103
    #: The peer opened or wrote a stream the protocol gives it no use for.
    UNEXPECTED_STREAM = 0x104
    #: The server already holds its maximum number of connections.
    TOO_MANY_CONNECTIONS = 0x105
    #: The subscriber fell further behind than the server's queue bound allows.
    SLOW_CONSUMER = 0x106
    #: A frame from the server could not be decoded (reported to error handlers).
    MALFORMED_FRAME = 0x107
    #: A payload did not decode as its topic's declared type (typed subscribers).
    INVALID_PAYLOAD = 0x108
    #: A frame exceeded the receiver's size limit.
    FRAME_TOO_LARGE = 0x109
    #: Events were dropped for a slow subscriber (qsse/1 gap notice; data names the range).
    EVENTS_DROPPED = 0x10A
    #: The connection already holds the server's maximum of subscriptions (qsse/2).
    TOO_MANY_SUBSCRIPTIONS = 0x10B
