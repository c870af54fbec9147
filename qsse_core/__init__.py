"""qsse: typed server-sent events over QUIC, wire-compatible with Go qsse."""

from ._broker import Broker, BrokerListener, ReplicaHistory
from ._codes import ErrorCode
from ._config import Limits, ReconnectPolicy
from ._exceptions import (
    BrokerError,
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    HandshakeError,
    LocalProtocolError,
    NoCommonProtocolError,
    ProtocolError,
    QsseError,
    RemoteProtocolError,
    TLSError,
    ValidationError,
    VersionNegotiationError,
)
from ._framing2 import ContentType, SubscribeStatus
from ._history import EPOCH_MAX, HistoryPolicy, HistoryStore, MemoryHistory, StoredEvent, new_epoch
from ._hooks import Authenticator, Authorizer
from ._metrics import Metrics
from ._quic import BACKEND as QUIC_BACKEND
from ._state import ConnectionState, Gap, Message, StateChange
from ._topics import is_pattern, topic_matches
from .asyncio import (
    BrokerPublisher,
    Client,
    ErrorHandler,
    GapHandler,
    MemoryBroker,
    MessageHandler,
    RedisBroker,
    Server,
    StateHandler,
)

__version__ = "0.1.0"

__all__ = [
    "Authenticator",
    "Authorizer",
    "Broker",
    "BrokerError",
    "BrokerListener",
    "BrokerPublisher",
    "Client",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosedError",
    "ConnectionState",
    "ContentType",
    "EPOCH_MAX",
    "ErrorCode",
    "ErrorHandler",
    "Gap",
    "GapHandler",
    "HandshakeError",
    "HistoryPolicy",
    "HistoryStore",
    "Limits",
    "LocalProtocolError",
    "MemoryBroker",
    "MemoryHistory",
    "Message",
    "MessageHandler",
    "Metrics",
    "NoCommonProtocolError",
    "ProtocolError",
    "QUIC_BACKEND",
    "QsseError",
    "ReconnectPolicy",
    "RedisBroker",
    "RemoteProtocolError",
    "ReplicaHistory",
    "Server",
    "StateChange",
    "StateHandler",
    "StoredEvent",
    "SubscribeStatus",
    "TLSError",
    "ValidationError",
    "VersionNegotiationError",
    "is_pattern",
    "new_epoch",
    "topic_matches",
]
