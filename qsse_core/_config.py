"""Settings objects: plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._exceptions import ConfigurationError

__all__ = ["KEEPALIVE_FRACTION", "Limits", "ReconnectPolicy", "keepalive_interval"]

#: Keep-alive PINGs go out at this fraction of the negotiated idle timeout, so that two in a
#: row may be lost before the connection idles out.
KEEPALIVE_FRACTION = 1 / 3


def keepalive_interval(
    idle_timeout: float, peer_idle_timeout: float | None, configured: float | None = None
) -> float:
    """Seconds between keep-alive PINGs on one connection.

    The connection idles out after the smaller of the two peers' ``max_idle_timeout`` values
    (RFC 9000 section 10.1; a peer that sent none, or 0, has no timeout of its own), so the
    interval is :data:`KEEPALIVE_FRACTION` of that, or ``configured`` when it is shorter.

    :param idle_timeout: this side's idle timeout, in seconds.
    :param peer_idle_timeout: the peer's, in seconds, or None if it has none.
    :param configured: an explicit interval, in seconds, or None to derive it.
    """
    effective = idle_timeout if not peer_idle_timeout else min(idle_timeout, peer_idle_timeout)
    interval = effective * KEEPALIVE_FRACTION
    return interval if configured is None else min(configured, interval)


def check_keepalive(owner: str, idle_timeout: float, keepalive: float | None) -> None:
    """Reject an idle timeout and keep-alive interval that cannot keep a connection open.

    :raises ConfigurationError: naming the setting that is wrong.
    """
    if not idle_timeout > 0:
        raise ConfigurationError(f"{owner}.idle_timeout must be positive, got {idle_timeout!r}")
    if keepalive is None:
        return
    if not keepalive > 0:
        raise ConfigurationError(
            f"{owner}.keepalive_interval must be positive or None, got {keepalive!r}"
        )
    if keepalive >= idle_timeout:
        raise ConfigurationError(
            f"{owner}.keepalive_interval ({keepalive:g} s) must be shorter than "
            f"idle_timeout ({idle_timeout:g} s): the connection would idle out between PINGs; "
            "leave it None to derive it from the negotiated idle timeout"
        )


@dataclass(frozen=True, slots=True)
class Limits:
    """Server limits. Every one bounds what a single peer can cost the server.

    Go qsse's worker and queue settings have no counterpart because nothing here needs them:
    ``ClientAcceptorCount``/``QueueSize`` size goroutine pools that accept clients, while the
    event loop accepts every connection as its datagrams arrive; ``EventDistributorCount``/
    ``QueueSize`` size the pools that copy events to subscribers, while ``publish`` encodes an
    event once and appends it to each subscriber's buffer, written once per loop iteration;
    ``CleaningInterval`` polls for dead clients, while QUIC's idle timeout and
    keep-alive PINGs find them and the close event removes them at once.

    :raises ConfigurationError: (a ``ValueError``) naming a setting that cannot work.
    """

    #: the longest subscription offer accepted, in bytes.
    max_offer_size: int = 64 * 1024
    #: seconds a client has, after the handshake, to send its whole offer.
    offer_timeout: float = 10.0
    #: connections held at once; more are closed with TOO_MANY_CONNECTIONS.
    max_connections: int = 10_000
    #: QUIC idle timeout in seconds (the peers use the smaller of their two).
    idle_timeout: float = 60.0
    #: a connection the server wrote nothing to for this many seconds gets a QUIC PING, so
    #: that quiet topics never idle out (Go clients exit when theirs do, after 30 s). None,
    #: the default, derives it per connection: a third of the idle timeout negotiated with
    #: that peer (see :func:`keepalive_interval`). A value is used only where it is shorter,
    #: and must be shorter than ``idle_timeout``.
    keepalive_interval: float | None = None
    #: bytes written to QUIC and not yet acknowledged, per stream; further events wait in
    #: qsse's own queue. aioquic buffers without bound, so this is the send-side backpressure.
    write_window: int = 1024 * 1024
    #: bytes waiting in qsse's queue per stream (beyond ``write_window``); past it
    #: ``slow_consumer`` applies. A stalled subscriber costs at most the sum of the two.
    max_queued_bytes: int = 4 * 1024 * 1024
    #: what happens to a subscriber past ``max_queued_bytes``: ``"disconnect"`` closes it with
    #: SLOW_CONSUMER; ``"drop"`` drops its oldest queued events and sends it a gap notice.
    slow_consumer: Literal["disconnect", "drop"] = "disconnect"
    #: subscriptions one connection may hold: qsse/2 requests past it are answered
    #: LIMIT_REACHED; qsse/1 offer topics past it get a TOO_MANY_SUBSCRIPTIONS error event.
    max_subscriptions: int = 1000
    #: the largest qsse/2 control frame accepted from a client.
    max_frame_size: int = 64 * 1024
    #: seconds publishes are gathered before being written; 0 writes once per loop iteration.
    #: A few milliseconds fill packets at low rates, trading that latency for much less CPU.
    flush_interval: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "max_offer_size",
            "offer_timeout",
            "max_connections",
            "write_window",
            "max_queued_bytes",
            "max_subscriptions",
            "max_frame_size",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(
                    f"Limits.{name} must be positive, got {getattr(self, name)!r}"
                )
        check_keepalive("Limits", self.idle_timeout, self.keepalive_interval)
        if self.slow_consumer not in ("disconnect", "drop"):
            raise ConfigurationError(
                f"Limits.slow_consumer must be 'disconnect' or 'drop', got {self.slow_consumer!r}"
            )
        if self.flush_interval < 0:
            raise ConfigurationError(
                f"Limits.flush_interval must be >= 0, got {self.flush_interval!r}"
            )


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How a client retries: for the first dial and, unlike Go, for a connection lost later.

    The n-th retry of an outage waits ``min(interval * backoff**(n-1), max_interval)``,
    spread by ``±jitter`` of itself so that clients cut off together do not return together.
    An outage starts when a connection is lost, so even the first redial waits; a connection
    lost within ``stable_after`` seconds of being established (refused right after the
    handshake, say) counts as a failed retry of the same outage, so a server that accepts
    and then closes sees backoff and ``max_attempts`` apply, never a redial loop.

    :raises ConfigurationError: (a ``ValueError``) naming a setting that cannot work.
    """

    #: whether to retry at all (Go's ``Retry``).
    retry: bool = True
    #: retries per outage before giving up (Go's ``RetryTimes``); None retries forever.
    max_attempts: int | None = 5
    #: seconds before the first retry (Go's ``RetryInterval``, which Go keeps fixed).
    interval: float = 0.5
    #: factor applied to the wait after each failed retry.
    backoff: float = 2.0
    #: the longest wait between retries, in seconds.
    max_interval: float = 30.0
    #: the fraction of each wait drawn at random, from 0 to 1.
    jitter: float = 0.2
    #: seconds a connection must last for its loss to start a new outage (and reset the
    #: retry count); one lost sooner counts as a failed retry.
    stable_after: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ConfigurationError(
                f"max_attempts must be >= 0 or None, got {self.max_attempts!r}"
            )
        if self.interval < 0 or self.max_interval < 0:
            raise ConfigurationError("interval and max_interval must be >= 0")
        if self.backoff < 1:
            raise ConfigurationError(f"backoff must be >= 1, got {self.backoff!r}")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"jitter must be within [0, 1], got {self.jitter!r}")
        if self.stable_after < 0:
            raise ConfigurationError(f"stable_after must be >= 0, got {self.stable_after!r}")

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retry number ``attempt`` (from 1).

        :param rand: a uniform draw from [0, 1); passed in so the policy stays deterministic.
        """
        base = min(self.interval * self.backoff ** (attempt - 1), self.max_interval)
        return max(0.0, base * (1 + self.jitter * (2 * rand - 1)))

    def allows(self, attempt: int) -> bool:
        """Whether retry number ``attempt`` (from 1) may happen."""
        return self.retry and (self.max_attempts is None or attempt <= self.max_attempts)
