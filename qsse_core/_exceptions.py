"""Exceptions raised by qsse.

The hierarchy::

    QsseError
    ├── ProtocolError                 the wire protocol was broken
    │   ├── LocalProtocolError        by this side: the caller misused the API
    │   └── RemoteProtocolError       by the peer: malformed or unexpected data
    ├── ValidationError               a typed payload failed its schema
    ├── ConfigurationError            invalid settings or topic declarations
    ├── BrokerError                   the broker (Redis) did not store or deliver events
    └── ConnectError                  a client could not connect, or gave up
        └── ConnectionClosedError     the peer closed the connection with a code

Neither aioquic's nor msgspec's exceptions cross the public API: they are translated into
these at the boundary, keeping the original as ``__cause__``.
"""

from __future__ import annotations

from ._codes import ErrorCode

__all__ = [
    "BrokerError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosedError",
    "LocalProtocolError",
    "ProtocolError",
    "QsseError",
    "RemoteProtocolError",
    "ValidationError",
]


class QsseError(Exception):
    """Root of every exception qsse raises."""


class ProtocolError(QsseError):
    """The qsse wire protocol was broken.

    :param reason: what was expected, what arrived and where.
    :param error_code: the code a connection closed for this error carries.
    """

    def __init__(self, reason: str, error_code: int = ErrorCode.UNKNOWN) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class ValidationError(QsseError):
    """A typed event does not match its declared type; nothing was sent.

    :param topic: the topic the event was meant for.
    :param path: where in the event the problem is, as ``$.field[0].sub``.
    :param reason: what was expected and what arrived.
    """

    def __init__(self, topic: str, path: str, reason: str) -> None:
        super().__init__(f"Invalid event for topic {topic!r}: {reason} - at `{path}`")
        self.topic = topic
        self.path = path
        self.reason = reason


class ConfigurationError(QsseError):
    """Settings or topic declarations that cannot work."""


class BrokerError(QsseError):
    """The broker could not take an event (unreachable, refused it, or lost the reply).

    Nothing raised with it was reported stored; an event whose reply was lost may still have
    been stored, so a retry can publish it twice.
    """


class ConnectError(QsseError):
    """A client could not establish a connection, or stopped retrying."""


class ConnectionClosedError(ConnectError):
    """The peer closed the connection.

    :param error_code: the QUIC application error code it gave.
    :param reason: the reason phrase it gave.
    """

    def __init__(self, error_code: int, reason: str) -> None:
        try:
            name = ErrorCode(error_code).name
        except ValueError:
            name = str(error_code)
        super().__init__(f"connection closed by peer: {name} ({error_code}) {reason!r}")
        self.error_code = error_code
        self.reason = reason
