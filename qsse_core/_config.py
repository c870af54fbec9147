"""Settings objects: plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Limits", "ReconnectPolicy"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Server limits. Every one bounds what a single peer can cost the server.

    Go qsse's worker and queue settings have no counterpart because nothing here needs them:
    ``ClientAcceptorCount``/``QueueSize`` size goroutine pools that accept clients, while the
    event loop accepts every connection as its datagrams arrive; ``EventDistributorCount``/
    ``QueueSize`` size the pools that copy events to subscribers, while ``publish`` encodes an
    event once and appends it to each subscriber's buffer, written once per loop iteration;
    ``CleaningInterval`` polls for dead clients, while QUIC's idle timeout and
    ``keepalive_interval`` find them and the close event removes them at once.
    """

    #: the longest subscription offer accepted, in bytes.
    max_offer_size: int = 64 * 1024
    #: seconds a client has, after the handshake, to send its whole offer.
    offer_timeout: float = 10.0
    #: connections held at once; more are closed with TOO_MANY_CONNECTIONS.
    max_connections: int = 10_000
    #: QUIC idle timeout in seconds (the peers use the smaller of their two).
    idle_timeout: float = 60.0
    #: a connection that sent nothing for this many seconds gets a QUIC PING, so that peers
    #: with short idle timeouts (Go clients exit after 30 s) stay connected on quiet topics.
    keepalive_interval: float = 10.0
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
            "idle_timeout",
            "keepalive_interval",
            "write_window",
            "max_queued_bytes",
            "max_subscriptions",
            "max_frame_size",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")
        if self.slow_consumer not in ("disconnect", "drop"):
            raise ValueError(
                f"Limits.slow_consumer must be 'disconnect' or 'drop', got {self.slow_consumer!r}"
            )
        if self.flush_interval < 0:
            raise ValueError(f"Limits.flush_interval must be >= 0, got {self.flush_interval!r}")


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How a client retries: for the first dial and, unlike Go, for a connection lost later.

    The n-th retry of an outage waits ``min(interval * backoff**(n-1), max_interval)``,
    spread by ``±jitter`` of itself so that clients cut off together do not return together.
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

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError(f"max_attempts must be >= 0 or None, got {self.max_attempts!r}")
        if self.interval < 0 or self.max_interval < 0:
            raise ValueError("interval and max_interval must be >= 0")
        if self.backoff < 1:
            raise ValueError(f"backoff must be >= 1, got {self.backoff!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter!r}")

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retry number ``attempt`` (from 1).

        :param rand: a uniform draw from [0, 1); passed in so the policy stays deterministic.
        """
        base = min(self.interval * self.backoff ** (attempt - 1), self.max_interval)
        return max(0.0, base * (1 + self.jitter * (2 * rand - 1)))

    def allows(self, attempt: int) -> bool:
        """Whether retry number ``attempt`` (from 1) may happen."""
        return self.retry and (self.max_attempts is None or attempt <= self.max_attempts)
