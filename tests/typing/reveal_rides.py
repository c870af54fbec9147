"""What mypy infers for the generated rides SDK: each ``# R:`` line holds the exact type that
mypy must reveal on the line after it."""

from __future__ import annotations

from typing import reveal_type

from generated import rides
from qsse_core import Client, Server


async def check(server: Server, client: Client, event: rides.RideStatus) -> None:
    publisher = rides.RidesPublisher(server)
    # R: int
    reveal_type(publisher.ride_status(event, ride_id=1))
    # R: qsse_core.asyncio._server.Server
    reveal_type(rides.RidesPublisher.create_server(port=0))
    # R: qsse_core.typed.Topic[generated.rides.RideStatusParams, generated.rides.RideStatus]
    reveal_type(rides.RIDE_STATUS)
    # R: generated.rides.RideStatusParams
    reveal_type(rides.RIDE_STATUS.parse("ride.1.status"))
    # R: None
    reveal_type(rides.PASSENGER_START.parse("ride.passenger.start"))
    # R: int | None
    reveal_type(event.eta_seconds)
    # R: generated.rides.RideState
    reveal_type(event.state)
    # R: bool
    reveal_type(event.state.known)
    # R: def (generated.rides.RideStatus, str) -> bytes
    reveal_type(rides.RIDE_STATUS.encode)
    # R: qsse_core.typed.EventSink
    reveal_type(publisher.server)

    subscriber = rides.RidesSubscriber(client)

    @subscriber.on_ride_status
    async def on_status(event: rides.RideStatus) -> None: ...

    # The decorator hands the function back, callable as before.
    # R: def (generated.rides.RideStatus) -> typing.Coroutine[Any, Any, None]
    reveal_type(on_status)

    def on_start(event: rides.PassengerStart) -> None: ...

    # R: def (generated.rides.PassengerStart)
    reveal_type(subscriber.on_passenger_start(on_start))

    # A lambda's parameter gets the event type, and its result may be anything.
    # R: def (generated.rides.PassengerStart) -> int
    reveal_type(subscriber.on_passenger_start(lambda e: e.ride_id))
    # R: generated.rides.PassengerStart
    subscriber.on_passenger_start(lambda e: reveal_type(e))
    # R: tuple[int, generated.rides.RideState]
    subscriber.on_ride_status_with_params(lambda p, e: reveal_type((p.ride_id, e.state)))

    async for received in subscriber:
        # R: qsse_core.typed.Received[None, generated.rides.PassengerStart] | qsse_core.typed.Received[None, generated.rides.PassengerCancel] | qsse_core.typed.Received[None, generated.rides.DriverLocation] | qsse_core.typed.Received[generated.rides.RideStatusParams, generated.rides.RideStatus] | qsse_core.typed.Received[None, generated.rides.Receipt]
        reveal_type(received)
        match received.event:
            case rides.RideStatus():
                # R: qsse_core.typed.Received[generated.rides.RideStatusParams, generated.rides.RideStatus]
                reveal_type(received)
                # R: int
                reveal_type(received.params.ride_id)
            case rides.PassengerStart():
                # R: None
                reveal_type(received.params)
