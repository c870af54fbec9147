"""Scenario 4: what checking a typed event costs next to encoding it bare.

In-process timing with ``time.perf_counter_ns`` over a fixed number of calls, best of several
rounds per repeat (the minimum is the least disturbed by a noisy machine).
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["typed_cases"]


class _StubServer:
    """Just enough of a Server for a publisher: declares everything, publish does nothing."""

    topics = ("*", "*.*", "*.*.*")

    class metrics:
        @staticmethod
        def validation_rejected(pattern: str) -> None:
            pass

    @staticmethod
    def publish(topic: str, data: bytes) -> int:
        return 1


def _ns_per_call(fn: Callable[[], Any], calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def typed_cases(calls: int = 20_000, rounds: int = 5) -> list[dict[str, Any]]:
    """ns per event for each way of producing the payload, for two events of the schema."""
    try:
        from generated import rides
    except ImportError as exc:  # generated/ is built by qsse-gen; report rather than fail
        return [{"case": "unavailable", "error": str(exc)}]
    now = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
    location = rides.Location(lat=52.52, lng=13.405)
    events: dict[str, tuple[Any, Any, Callable[[Any, Any], Any]]] = {
        "DriverLocation": (
            rides.DriverLocation(
                driver_id=uuid.UUID(int=7), location=location, heading=90.0, speed_kmh=31.5
            ),
            rides.DRIVER_LOCATION,
            lambda pub, ev: pub.driver_location(ev),
        ),
        "RideStatus (20-point route)": (
            rides.RideStatus(
                state=next(iter(rides.RideState)),
                driver_id=uuid.UUID(int=9),
                eta_seconds=240,
                route=[rides.Location(lat=52.5 + i / 1000, lng=13.4) for i in range(20)],
                changed_at=now,
            ),
            rides.RIDE_STATUS,
            lambda pub, ev: pub.ride_status(ev, ride_id=42),
        ),
    }
    publisher = rides.RidesPublisher(_StubServer())  # type: ignore[arg-type]
    encoder = msgspec.json.Encoder()
    out: list[dict[str, Any]] = []
    for name, (event, topic, publish) in events.items():
        concrete = topic.template.replace("{ride_id}", "42")
        size = len(encoder.encode(event))
        cases: dict[str, Callable[[], Any]] = {
            "msgspec.json.encode": lambda ev=event: msgspec.json.encode(ev),
            "Encoder().encode (reused)": lambda ev=event: encoder.encode(ev),
            "Topic.encode (validate + encode)": lambda ev=event, t=topic, c=concrete: t.encode(
                ev, c
            ),
            "RidesPublisher method (publish stubbed)": lambda ev=event, p=publish: p(publisher, ev),
        }
        timings = {case: _ns_per_call(fn, calls, rounds) for case, fn in cases.items()}
        bare = timings["msgspec.json.encode"]
        for case, ns in timings.items():
            out.append(
                {"event": name, "bytes": size, "case": case, "ns": ns, "ratio_to_bare": ns / bare}
            )
    return out
