"""The asyncio layer: the only part of qsse that touches sockets, clocks or the event loop."""

from ._client import Client, ErrorHandler, GapHandler, MessageHandler, StateHandler
from ._server import Server

__all__ = ["Client", "ErrorHandler", "GapHandler", "MessageHandler", "Server", "StateHandler"]
