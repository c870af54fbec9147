"""The asyncio layer: the only part of qsse that touches sockets, clocks or the event loop."""

from ._broker import BrokerPublisher, MemoryBroker
from ._client import Client, ErrorHandler, GapHandler, MessageHandler, StateHandler
from ._redis import RedisBroker
from ._server import Server

__all__ = [
    "BrokerPublisher",
    "Client",
    "ErrorHandler",
    "GapHandler",
    "MemoryBroker",
    "MessageHandler",
    "RedisBroker",
    "Server",
    "StateHandler",
]
