"""Exceptions raised by qsse.

The hierarchy::

    QsseError
    ├── ProtocolError                 the wire protocol was broken
    │   ├── LocalProtocolError        by this side: the caller misused the API
    │   └── RemoteProtocolError       by the peer: malformed or unexpected data
    ├── ValidationError               a typed payload failed its schema
    ├── ConfigurationError            invalid settings or topic declarations (also a ValueError)
    ├── BrokerError                   the broker (Redis) did not store or deliver events
    └── ConnectError                  a client could not connect, or gave up
        ├── HandshakeError            the QUIC handshake was ended by a close
        │   ├── TLSError              a TLS alert: certificate refused, no common cipher...
        │   ├── NoCommonProtocolError no ALPN protocol both sides speak
        │   └── VersionNegotiationError no QUIC version both sides speak
        └── ConnectionClosedError     the peer closed the connection with a code

``ConnectError.retryable`` says whether another attempt could succeed: a client's reconnect
policy never retries a TLS, ALPN or version failure, nor a close such as ``NOT_AUTHORIZED``
(Go qsse does not retry a wrong token either).

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
    "HandshakeError",
    "NoCommonProtocolError",
    "LocalProtocolError",
    "ProtocolError",
    "QsseError",
    "RemoteProtocolError",
    "TLSError",
    "ValidationError",
    "VersionNegotiationError",
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


class ConfigurationError(QsseError, ValueError):
    """Settings or topic declarations that cannot work."""


class BrokerError(QsseError):
    """The broker could not take an event (unreachable, refused it, or lost the reply).

    Nothing raised with it was reported stored; an event whose reply was lost may still have
    been stored, so a retry can publish it twice.
    """


class ConnectError(QsseError):
    """A client could not establish a connection, or stopped retrying."""

    #: whether another attempt may succeed; the reconnect policy skips the rest if not.
    retryable: bool = True


# QUIC CRYPTO_ERROR codes are 0x100 plus the TLS alert (RFC 9001 section 4.8).
_CRYPTO_ERROR = 0x100
_TLS_ALERTS = {
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    116: "certificate_required",
    120: "no_application_protocol",
}


class HandshakeError(ConnectError):
    """A QUIC CONNECTION_CLOSE ended the handshake, sent by the peer or by this side's TLS.

    :param error_code: the QUIC transport error code (RFC 9000 section 20.1).
    :param reason: the reason phrase that came with it.
    :param where: ``host:port`` dialled.
    """

    def __init__(self, error_code: int, reason: str, where: str) -> None:
        cause = self._cause(error_code)
        super().__init__(f"cannot connect to {where}: handshake failed: {cause}: {reason!r}")
        self.error_code = error_code
        self.reason = reason
        self.where = where

    @staticmethod
    def _cause(error_code: int) -> str:
        if error_code == 0x2:
            return "connection refused by the server (CONNECTION_REFUSED)"
        return f"QUIC error 0x{error_code:x}"

    @staticmethod
    def from_close(error_code: int, reason: str, where: str) -> HandshakeError:
        """The most specific error for a close received before the handshake completed."""
        alert = error_code - _CRYPTO_ERROR
        if alert == 120 or (0 <= alert < 0x100 and "alpn" in reason.lower()):
            # qh3 sends handshake_failure (40) where RFC 7301 says no_application_protocol.
            return NoCommonProtocolError(error_code, reason, where)
        if 0 <= alert < 0x100:
            return TLSError(error_code, reason, where)
        if "version" in reason.lower():
            # Neither QUIC library gives the cause another way than this phrase.
            return VersionNegotiationError(error_code, reason, where)
        return HandshakeError(error_code, reason, where)


class TLSError(HandshakeError):
    """TLS failed: the certificate was refused (by either side) or nothing else agreed.

    :attr:`alert` is the TLS alert number (RFC 8446 section 6), e.g. 42 ``bad_certificate``.
    """

    retryable = False

    @property
    def alert(self) -> int:
        """The TLS alert number."""
        return self.error_code - _CRYPTO_ERROR

    @staticmethod
    def _cause(error_code: int) -> str:
        alert = error_code - _CRYPTO_ERROR
        return f"TLS alert {alert} ({_TLS_ALERTS.get(alert, 'unknown')})"


class NoCommonProtocolError(TLSError):
    """The two sides share no ALPN protocol (TLS alert 120, ``no_application_protocol``)."""

    @staticmethod
    def _cause(error_code: int) -> str:
        return "no common application protocol (ALPN)"


class VersionNegotiationError(HandshakeError):
    """The server speaks no QUIC version this client does (RFC 9000 section 6)."""

    retryable = False

    @staticmethod
    def _cause(error_code: int) -> str:
        return "no common QUIC version"


#: Close codes that another attempt cannot fix: retrying would only repeat them.
FATAL_CODES = frozenset(
    {
        ErrorCode.NOT_AUTHORIZED,
        ErrorCode.MALFORMED_OFFER,
        ErrorCode.OFFER_TOO_LARGE,
        ErrorCode.UNEXPECTED_STREAM,
    }
)


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
        self.retryable = error_code not in FATAL_CODES
