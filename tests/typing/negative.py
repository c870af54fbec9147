"""An app with mistakes mypy must catch; the expected report is negative.expected."""

from __future__ import annotations

from generated import rides
from qsse_core import Client, Server


def publish(server: Server, cancel: rides.PassengerCancel) -> None:
    rides.RidesPublisher(server).passenger_start(cancel)


def subscribe(client: Client) -> None:
    subscriber = rides.RidesSubscriber(client)

    @subscriber.on_passenger_start
    def on_start(event: rides.PassengerCancel) -> None: ...


def lambdas(client: Client) -> None:
    subscriber = rides.RidesSubscriber(client)
    subscriber.on_passenger_start(lambda e: e.ride_number)
    subscriber.on_ride_status_with_params(lambda p, e: p.ride)
    subscriber.on_ride_status(lambda e, extra: None)


def deprecated(server: Server, client: Client, event: rides.DriverLocation) -> None:
    rides.RidesPublisher(server).driver_position(event)
    rides.RidesSubscriber(client).on_driver_position(print)
