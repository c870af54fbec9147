"""The ride service: publishes one scripted ride as typed events."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal

from generated import rides

DRIVER = uuid.UUID("6f1c1c36-5d5a-4b5e-9a59-3a2c1fb9e001")
PASSENGER = uuid.UUID("0b7e4a0c-2c1d-4a8f-8f57-9d5d3c4be002")
RIDE_ID = 42
START = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)

HOME = rides.Location(lat=52.5200, lng=13.4050)
OFFICE = rides.Location(lat=52.5310, lng=13.3847)


def _at(minutes: int) -> dt.datetime:
    return START + dt.timedelta(minutes=minutes)


def _status(state: rides.RideState, minutes: int, eta: int | None = None) -> rides.RideStatus:
    return rides.RideStatus(
        state=state,
        driver_id=DRIVER,
        eta_seconds=eta,
        route=[HOME, OFFICE],
        changed_at=_at(minutes),
    )


def script(publisher: rides.RidesPublisher) -> Iterator[int]:
    """Publish one ride, event by event; yields what each publish returned."""
    yield publisher.passenger_start(
        rides.PassengerStart(
            ride_id=RIDE_ID,
            passenger_id=PASSENGER,
            pickup=rides.Place(location=HOME, label="Home"),
            stops=[rides.Place(location=OFFICE, label="Office")],
            vehicle=rides.VehicleClass.COMFORT,
            quote=rides.Fare(amount=Decimal("14.90"), currency="EUR"),
            requested_at=_at(0),
        )
    )
    yield publisher.driver_location(
        rides.DriverLocation(driver_id=DRIVER, location=HOME, heading=90.0, speed_kmh=32.5)
    )
    for minutes, state, eta in (
        (1, rides.RideState.DRIVER_ASSIGNED, 240),
        (5, rides.RideState.ARRIVING, 30),
        (6, rides.RideState.IN_PROGRESS, 600),
        (16, rides.RideState.COMPLETED, None),
    ):
        yield publisher.ride_status(_status(state, minutes, eta), ride_id=RIDE_ID)
    yield publisher.ride_receipt(
        rides.Receipt(
            ride_id=RIDE_ID,
            service_date=START.date(),
            total=rides.Fare(amount=Decimal("14.90"), currency="EUR"),
            breakdown={
                "base": rides.Fare(amount=Decimal("3.50"), currency="EUR"),
                "distance": rides.Fare(amount=Decimal("11.40"), currency="EUR"),
            },
            signature=bytes(64),
        )
    )


#: How many events :func:`script` publishes; the subscriber waits for this many.
EVENT_COUNT = 7
