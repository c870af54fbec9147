"""An app with two mistakes mypy must catch; the expected report is negative.expected."""

from __future__ import annotations

from generated import rides
from qsse_core import Client, Server


def publish(server: Server, cancel: rides.PassengerCancel) -> None:
    rides.RidesPublisher(server).passenger_start(cancel)


def subscribe(client: Client) -> None:
    subscriber = rides.RidesSubscriber(client)

    @subscriber.on_passenger_start
    def on_start(event: rides.PassengerCancel) -> None: ...
