"""The passenger app: typed handlers for the rides it follows."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from generated import rides
from qsse_core import Client, ErrorCode


class RideTracker:
    """Follows one ride: prints each event and counts them.

    :param client: a client subscribed to the ride's topics.
    :param ride_id: the ride to follow.
    :param expected: how many events to wait for.
    """

    def __init__(self, client: Client, ride_id: int, expected: int) -> None:
        self.ride_id = ride_id
        self.expected = expected
        self.log: list[str] = []
        self.problems: list[str] = []
        self.done = asyncio.Event()

        subscriber = rides.RidesSubscriber(client)
        subscriber.on_passenger_start(self.started)
        subscriber.on_driver_location(self.driver_moved)
        subscriber.on_ride_status_with_params(self.status_changed)
        subscriber.on_ride_receipt(self.receipt)
        client.on_error(self.error)

    @staticmethod
    def topics(ride_id: int) -> list[str]:
        """The topics to subscribe to for one ride: its own status topic, not every ride's."""
        params = rides.RideStatusParams(ride_id=ride_id)
        return [
            rides.PASSENGER_START.pattern,
            rides.DRIVER_LOCATION.pattern,
            rides.RIDE_STATUS.topic(params),
            rides.RIDE_RECEIPT.pattern,
        ]

    def _record(self, line: str) -> None:
        print(line, flush=True)
        self.log.append(line)
        if len(self.log) >= self.expected:
            self.done.set()

    def started(self, event: rides.PassengerStart) -> None:
        quote = f"{event.quote.amount} {event.quote.currency}" if event.quote else "no quote"
        self._record(f"ride {event.ride_id} requested ({event.vehicle.value}, {quote})")

    async def driver_moved(self, event: rides.DriverLocation) -> None:
        # An async handler: a real app would update a map here.
        await asyncio.sleep(0)
        where = f"{event.location.lat:.4f},{event.location.lng:.4f}"
        self._record(f"driver at {where} doing {event.speed_kmh} km/h")

    def status_changed(self, params: rides.RideStatusParams, event: rides.RideStatus) -> None:
        eta = f", eta {event.eta_seconds} s" if event.eta_seconds is not None else ""
        self._record(f"ride {params.ride_id} is {event.state.value}{eta}")

    def receipt(self, event: rides.Receipt) -> None:
        parts = ", ".join(f"{name} {fare.amount}" for name, fare in sorted(event.breakdown.items()))
        self._record(f"receipt: {event.total.amount} {event.total.currency} ({parts})")

    def error(self, code: int, data: Mapping[str, Any]) -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = str(code)
        self.problems.append(f"{name}: {data.get('reason', data)}")
