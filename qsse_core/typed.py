"""Runtime support for the typed SDKs that ``qsse-gen`` generates.

A generated module declares its topics as :class:`Topic` objects and subclasses
:class:`TypedPublisher` and :class:`TypedSubscriber` with one small method per topic; all the
machinery lives here, written once and fully typed.

Payloads are JSON (msgspec) so that subscribers in other languages can read them. Unknown
fields are ignored on decode: a subscriber generated from an older schema keeps reading events
from a publisher that added optional fields (see ``docs/schema.md``, "Evolving a schema").
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import keyword
import re
import string
import warnings
from collections.abc import AsyncIterator, Callable, Iterable
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Concatenate,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    final,
)

import msgspec

from ._codes import ErrorCode
from ._depth import MAX_DEPTH, json_depth_exceeds, msgpack_depth_exceeds
from ._exceptions import ConfigurationError, ValidationError
from ._framing2 import ContentType
from ._history import HistoryPolicy, MemoryHistory
from ._topics import topic_matches
from ._validate import compile_check, compile_encode, explain, has_datetime

if TYPE_CHECKING:
    from . import Broker, Client, GapHandler, Message

__all__ = [
    "EventSink",
    "Handler",
    "OpenEnum",
    "ParamsHandler",
    "R",
    "Received",
    "Topic",
    "TypedPublisher",
    "TypedSubscriber",
    "bind_topics",
]

P = TypeVar("P")
E = TypeVar("E", bound=msgspec.Struct)
#: What a handler returns. Generated ``on_`` methods take ``Callable[[Event], R]`` rather than
#: a TypeVar bound to :data:`Handler` so that a lambda's parameter gets the event type; an
#: awaitable result is awaited, anything else ignored.
R = TypeVar("R")
_Args = ParamSpec("_Args")

#: A handler of one topic's events; it may be a plain function or a coroutine function.
Handler = Callable[[E], object]
#: A handler that also receives the parameters parsed from the concrete topic.
ParamsHandler = Callable[[P, E], object]

_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
# msgspec ends validation messages with " - at `$.path`" when the problem is inside a value.
_AT_PATH = re.compile(r"\A(?P<reason>.*) - at `(?P<path>[^`]*)`\Z", re.DOTALL)
# One encoder serves every topic: encoding needs no type information.
_ENCODER = msgspec.json.Encoder()
_MSGPACK = msgspec.msgpack.Encoder()
# to_builtins keeps these as they are, so MessagePack still sends them natively.
_NATIVE = (bytes, bytearray, memoryview)


def _split_reason(error: msgspec.ValidationError, root: str) -> tuple[str, str]:
    """``(path, reason)`` from a msgspec message, with ``$`` replaced by ``root``."""
    found = _AT_PATH.match(str(error))
    if found is None:
        return root, str(error)
    return root + found.group("path")[1:], found.group("reason")


class OpenEnum(enum.Enum):
    """Base of generated enums: a value the schema does not declare (yet) is kept.

    A subscriber generated from an older schema receives a value added later as an *unknown
    member*: an instance of the enum whose ``value`` is the wire string, which is not any
    declared member (``known`` is false) and compares equal only to the same unknown value.
    The event is delivered instead of dropped; give ``match`` a default ``case _:``.
    Publishers refuse unknown members: a schema's publishers send only what it declares.

    Constructing one by value works the same way: ``RideState("scheduled")`` is an unknown
    member rather than a ``ValueError``; check ``known`` where a value comes from outside.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = object.__new__(cls)
        member._name_ = "_UNKNOWN"
        member._value_ = value
        return member

    @property
    def known(self) -> bool:
        """Whether this is a member the schema declares."""
        return type(self)._value2member_map_.get(self._value_) is self

    def __eq__(self, other: object) -> bool:
        if type(other) is type(self):
            return bool(self._value_ == other._value_)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value_)


class _Metrics(Protocol):
    def validation_rejected(self, topic: str) -> None: ...


class EventSink(Protocol):
    """What a typed publisher publishes to: a :class:`~qsse_core.Server`, or anything else
    with these members (a broker fanning events out to several servers, say).

    ``topics`` are the declared patterns the schema's topics must fall under; ``publish``
    takes a concrete topic, the JSON payload and optionally ``(content type, bytes)`` of a
    compact encoding, and returns the number of subscriptions reached.
    """

    @property
    def topics(self) -> tuple[str, ...]: ...

    @property
    def metrics(self) -> _Metrics: ...

    def publish(
        self, topic: str, data: bytes, *, compact: tuple[int, bytes] | None = None
    ) -> int: ...


def _cannot_encode(topic: str, exc: Exception) -> bytes:
    # The checks make this unreachable; it is here so that no raw error ever escapes.
    raise ValidationError(topic, "$", f"Cannot encode event: {exc}") from None


class _ParamValues(dict[str, str]):
    """``str.format_map`` view of a checked parameters struct: each value as its segment."""

    __slots__ = ("_params",)

    def __init__(self, params: object) -> None:
        super().__init__()
        self._params = params

    def __missing__(self, key: str) -> str:
        return str(getattr(self._params, key))


def _compile_format(template: str) -> Callable[[object], str]:
    """``params -> concrete topic``, exactly ``template.format_map(_ParamValues(params))``
    but as one generated concatenation (``"ride." + str(p.ride_id) + ".status"``): no view
    object and no ``__missing__`` call per placeholder on every publish."""
    pieces: list[str] = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        if literal:
            pieces.append(repr(literal))
        if field is None:
            continue
        if spec or conversion or not field.isidentifier() or keyword.iskeyword(field):
            return lambda params: template.format_map(_ParamValues(params))
        pieces.append(f"str(p.{field})")
    namespace: dict[str, Any] = {}
    exec(f"def format_topic(p, str=str):\n    return {' + '.join(pieces) or repr('')}", namespace)
    formatter: Callable[[object], str] = namespace["format_topic"]
    return formatter


@final
class Topic(Generic[P, E]):
    """One topic of a schema: its wire template, event type and parameter type.

    Generated modules create one per topic at import time, so that decoders and the topic
    parser are built once and reused for every event.

    :param name: the topic's Python name, e.g. ``ride_status``.
    :param template: the wire topic with placeholders, e.g. ``ride.{ride_id}.status``.
    :param event: the msgspec Struct carried on the topic.
    :param params: the Struct of the topic parameters, or ``None`` for a topic without any.
    :param deprecated: why and how to migrate, when the topic is deprecated.
    :param history: how much of the topic's past a server keeps for qsse/2 resume.
    """

    __slots__ = (
        "_check",
        "_check_params",
        "_compact_builtins",
        "_decoder",
        "_format",
        "_msgpack_decoder",
        "_params_type",
        "_regex",
        "deprecated",
        "encode",
        "event",
        "history",
        "name",
        "pattern",
        "template",
    )

    def __init__(
        self,
        *,
        name: str,
        template: str,
        event: type[E],
        params: type[P] | None,
        deprecated: str | None = None,
        history: HistoryPolicy | None = None,
    ) -> None:
        self.name = name
        self.template = template
        self.event = event
        self.deprecated = deprecated
        self.history = history
        #: The glob a server declares and a subscriber uses to receive every concrete topic.
        self.pattern = _PLACEHOLDER.sub("*", template)
        self._params_type = params
        self._decoder = msgspec.json.Decoder(event)
        self._msgpack_decoder = msgspec.msgpack.Decoder(event)
        self._check = compile_check(event)
        self.encode = compile_encode(event, _ENCODER.encode, self._refuse, _cannot_encode)
        self._check_params = None if params is None else compile_check(params)  # type: ignore[arg-type]
        self._format = _compile_format(template)
        # MessagePack's timestamp keeps the instant but not the UTC offset: datetimes go as
        # RFC 3339 strings, as in JSON, so both encodings decode to the same value.
        self._compact_builtins = has_datetime(event)
        regex = "".join(
            f"(?P<{part}>[^.]+)" if index % 2 else re.escape(part)
            for index, part in enumerate(_PLACEHOLDER.split(template))
        )
        self._regex = re.compile(regex + r"\Z")

    #: ``encode(event, topic) -> bytes``: check ``event`` fully, then encode it as JSON.
    #:
    #: The checks are the same for every encoding (see :mod:`qsse_core._validate`): exact
    #: types, integers within int64, finite floats and Decimals, valid Unicode, and the
    #: schema's constraints, nested records included. What passes decodes to an equal value
    #: at every subscriber built from the same schema, from JSON or MessagePack. It is one
    #: function generated per topic (check and encode fused), hence an attribute.
    #:
    #: Raises :class:`ValidationError` naming ``topic``, the field path
    #: (``$.stops[1].location.lat``, map keys as ``$.breakdown["tip"]``) and what was
    #: expected; nothing else escapes.
    encode: Callable[[E, str], bytes]

    def __repr__(self) -> str:
        return f"Topic({self.template!r}, event={self.event.__name__})"

    def topic(self, params: P) -> str:
        """The concrete topic for ``params``, e.g. ``ride.42.status``.

        Parameters are checked exactly as event fields are (a ``bool`` is not an ``int``, a
        ``str`` is not a ``UUID``), on every call: nothing cached can change the answer.

        :raises ValidationError: when a parameter value does not fit its declared type; the
            path names it in braces, e.g. ``{ride_id}``.
        """
        if self._check_params is None:
            return self.template
        if not self._check_params(params):
            path, reason = explain(self._params_type, params) or ("$", "invalid parameters")  # type: ignore[arg-type]
            name = path.removeprefix("$").lstrip(".")
            raise ValidationError(self.template, f"{{{name}}}", reason)
        return self._format(params)

    def parse(self, topic: str) -> P:
        """The parameters a concrete topic carries; the inverse of :meth:`topic`.

        :raises ValueError: when ``topic`` is not an instance of this topic's template, as
            :meth:`topic` writes it: ``ride.05.status`` and ``ride.5e2.status`` are not.
        """
        if self._params_type is None:
            if topic != self.template:
                raise ValueError(f"Expected topic {self.template!r}, got {topic!r}")
            return None  # type: ignore[return-value]  # P is None for topics without parameters
        found = self._regex.match(topic)
        if found is None:
            raise ValueError(f"Expected a topic of the form {self.template!r}, got {topic!r}")
        try:
            # strict=False parses the text of a segment as the parameter's type ("42" -> 42).
            params: P = msgspec.convert(found.groupdict(), self._params_type, strict=False)
        except msgspec.ValidationError as exc:
            path, reason = _split_reason(exc, "")
            raise ValueError(f"{reason} - at `{{{path.lstrip('.')}}}` of topic {topic!r}") from None
        # Lax parsing also reads "5e2" and "-0" as ints and UUIDs without hyphens: only the
        # form topic() writes is this topic, or one event would have two topics (and
        # subscribers to "ride.500.status" would miss what "ride.5e2.status" carries).
        assert self._check_params is not None
        if not self._check_params(params):
            path, reason = explain(self._params_type, params) or ("$", "invalid parameters")  # type: ignore[arg-type]
            name = path.removeprefix("$").lstrip(".")
            raise ValueError(f"{reason} - at `{{{name}}}` of topic {topic!r}")
        canonical = self._format(params)
        if canonical != topic:
            raise ValueError(f"Expected topic {canonical!r}, as publishers write it, got {topic!r}")
        return params

    def encode_compact(self, event: E, topic: str) -> bytes:
        """MessagePack of an event :meth:`encode` accepted (call that first).

        :raises ValidationError: never for a checked event; kept so nothing raw escapes.
        """
        try:
            if self._compact_builtins:
                return _MSGPACK.encode(msgspec.to_builtins(event, builtin_types=_NATIVE))
            return _MSGPACK.encode(event)
        except Exception as exc:
            raise ValidationError(topic, "$", f"Cannot encode event: {exc}") from None

    def _refuse(self, event: object, topic: str) -> bytes:
        problem = explain(self.event, event)
        path, reason = problem or ("$", f"Expected a valid `{self.event.__name__}`")
        raise ValidationError(topic, path, reason)

    def decode(self, data: bytes, content_type: int | None = None) -> E:
        """Decode a payload of this topic: JSON, or MessagePack when ``content_type`` says so.

        :raises ValueError: naming what was expected and where, when ``data`` does not fit
            (also when it nests deeper than ``MAX_DEPTH``, 64 levels).
        """
        msgpack = content_type == ContentType.MSGPACK
        if (msgpack_depth_exceeds if msgpack else json_depth_exceeds)(data):
            raise ValueError(f"payload nested deeper than {MAX_DEPTH} levels")
        decoder = self._msgpack_decoder if msgpack else self._decoder
        try:
            return decoder.decode(data)
        except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError: a DecodeError
            raise ValueError(str(exc)) from None


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Received(Generic[P, E]):
    """An event as typed iteration yields it.

    Matching on ``event`` narrows the whole object, ``params`` included::

        match received.event:
            case RideStatus():
                received.params.ride_id  # known to be RideStatusParams here
    """

    #: the concrete topic the event arrived on.
    topic: str
    #: the parameters parsed from ``topic`` (``None`` for topics without parameters).
    params: P
    #: the decoded event.
    event: E
    #: its id on qsse/2 (orders events within a topic; None on qsse/1).
    id: int | None = None


def bind_topics(
    factory: Callable[Concatenate[Iterable[str], _Args], R],
    topics: Iterable[Topic[Any, Any]],
) -> Callable[_Args, R]:
    """``factory`` with its first argument fixed to the patterns of ``topics``.

    Generated publishers use it as ``create_server = staticmethod(bind_topics(Server, topics))``
    so that ``RidesPublisher.create_server(port=0)`` declares exactly the schema's topics, and,
    unless the caller passes ``history=``, keeps each topic's past as its schema says.
    """
    fixed = tuple(topics)
    patterns = tuple(t.pattern for t in fixed)
    policies = {t.pattern: t.history for t in fixed if t.history is not None}

    def create(*args: _Args.args, **kwargs: _Args.kwargs) -> R:
        if policies and "history" not in kwargs:
            kwargs["history"] = MemoryHistory(topics=policies)
        return factory(patterns, *args, **kwargs)

    create.__doc__ = f"Create it declaring the topics {', '.join(patterns)}."
    return create


def _warn_deprecated(topic: Topic[Any, Any], depth: int) -> None:
    # ``depth`` counts the frames between this helper and the user's code, so the warning
    # points at the line that used the deprecated topic.
    warnings.warn(
        f"topic {topic.name!r} ({topic.template}) is deprecated: {topic.deprecated}",
        DeprecationWarning,
        stacklevel=depth + 2,
    )


class TypedPublisher:
    """Publishes a schema's events on a :class:`~qsse_core.Server`, checking each first.

    Generated subclasses set :attr:`topics` and add one method per topic.

    :param server: a server declaring (at least) every topic of the schema, or any other
        :class:`EventSink`, or a :class:`~qsse_core.Broker` alone: a service then publishes
        to the nodes of that broker without serving QUIC itself (through a
        :class:`~qsse_core.BrokerPublisher` on the schema's topics; :meth:`flush` confirms).
    :param compact: also send qsse/2 subscribers MessagePack, smaller and cheaper to decode
        than JSON; qsse/1 subscribers (Go peers) keep getting JSON.
    :raises ConfigurationError: when the server does not declare one of the schema's topics.
    """

    __slots__ = ("_compact", "_server")

    #: The schema's topics, set by the generated subclass.
    topics: ClassVar[tuple[Topic[Any, Any], ...]] = ()

    def __init__(self, server: EventSink | Broker, *, compact: bool = False) -> None:
        sink: EventSink
        if hasattr(server, "publish_nowait"):  # a broker alone: servers have no such method
            from .asyncio import BrokerPublisher

            sink = BrokerPublisher(cast("Broker", server), [t.pattern for t in self.topics])
        else:
            sink = server
        server = sink
        missing = [
            topic.pattern
            for topic in self.topics
            if not any(topic_matches(declared, topic.pattern) for declared in server.topics)
        ]
        if missing:
            raise ConfigurationError(
                f"{type(self).__name__} needs the server to declare {', '.join(missing)}; "
                f"it declares {', '.join(server.topics) or 'nothing'}"
            )
        self._server = server
        self._compact = compact

    @property
    def server(self) -> EventSink:
        """The server (or other sink) events are published on."""
        return self._server

    async def flush(self) -> None:
        """Wait until the broker has stored every event published so far: a remote broker
        (Redis) only queues them; with the in-memory default this returns at once.

        :raises BrokerError: naming how many events were not stored.
        """
        broker = getattr(self._server, "broker", None)
        if broker is not None:
            await broker.flush()

    def _publish(self, topic: Topic[P, E], event: E, params: P) -> int:
        if topic.deprecated is not None:
            _warn_deprecated(topic, depth=2)  # _publish, then the generated method
        try:
            concrete = topic.template if params is None else topic.topic(params)
            data = topic.encode(event, concrete)
            compact = topic.encode_compact(event, concrete) if self._compact else None
        except ValidationError:
            # Label by the declared pattern so topic parameters cannot grow the label set.
            self._server.metrics.validation_rejected(topic.pattern)
            raise
        if compact is not None:
            return self._server.publish(concrete, data, compact=(ContentType.MSGPACK, compact))
        return self._server.publish(concrete, data)


@dataclasses.dataclass(slots=True)
class _Route:
    topic: Topic[Any, Any]
    handlers: list[Callable[[Any, Any], object]]


class TypedSubscriber:
    """Receives a schema's events from a :class:`~qsse_core.Client`, decoded and typed.

    Register handlers with the generated ``on_<topic>`` methods, or iterate over the
    subscriber. A payload that does not decode as its topic's event type goes to the client's
    error handlers as :attr:`ErrorCode.INVALID_PAYLOAD` with ``{"topic", "data", "reason"}``,
    and receiving goes on.

    :param client: the client to receive from; subscribe it to the topics you want, e.g. the
        generated module's ``TOPICS`` or a concrete ``ride.42.status``.
    """

    __slots__ = ("_client", "_routes")

    #: The schema's topics, set by the generated subclass.
    topics: ClassVar[tuple[Topic[Any, Any], ...]] = ()

    def __init__(self, client: Client) -> None:
        self._client = client
        self._routes: dict[str, _Route] = {}

    @property
    def client(self) -> Client:
        """The client events are received from."""
        return self._client

    @property
    def last_event_ids(self) -> dict[str, int]:
        """qsse/2: the last event id seen per subscribed topic; the client resumes from these
        on every reconnect. Save them with :attr:`epoch` to resume in a later process."""
        return self._client.last_event_ids

    @property
    def epoch(self) -> int | None:
        """qsse/2: the server history epoch :attr:`last_event_ids` belong to."""
        return self._client.epoch

    def on_gap(self, handler: GapHandler) -> None:
        """Call ``handler`` with each :class:`~qsse_core.Gap`: events of a topic this
        subscriber will never receive (fell out of the server's history while it was away,
        or dropped because it fell behind). Gaps are never silent."""
        self._client.on_gap(handler)

    def _on(self, topic: Topic[Any, E], handler: Handler[E]) -> None:
        self._add(topic, lambda _params, event: handler(event))

    def _on_with_params(self, topic: Topic[P, E], handler: ParamsHandler[P, E]) -> None:
        self._add(topic, handler)

    def _add(self, topic: Topic[Any, Any], handler: Callable[[Any, Any], object]) -> None:
        if topic.deprecated is not None:
            _warn_deprecated(topic, depth=3)  # _add, _on or _on_with_params, generated method
        route = self._routes.get(topic.name)
        if route is None:
            route = self._routes[topic.name] = _Route(topic, [])
            self._client.on(topic.pattern, lambda message: self._dispatch(route, message))
        route.handlers.append(handler)

    async def _dispatch(self, route: _Route, message: Message) -> None:
        received = self._decode(route.topic, message)
        if received is None:
            return
        # Handlers run in registration order; an async one finishes before the next starts.
        for handler in route.handlers:
            result = handler(received.params, received.event)
            if inspect.isawaitable(result):
                await result

    def _decode(self, topic: Topic[Any, Any], message: Message) -> Received[Any, Any] | None:
        try:
            params = topic.parse(message.topic)
            event = topic.decode(message.data, message.content_type)
        except ValueError as exc:
            self._client.emit_error(
                ErrorCode.INVALID_PAYLOAD,
                {"topic": message.topic, "data": message.data, "reason": str(exc)},
            )
            return None
        return Received(message.topic, params, event, message.id)

    async def _iterate(self) -> AsyncIterator[Received[Any, Any]]:
        async for message in self._client:
            topic = next((t for t in self.topics if topic_matches(t.pattern, message.topic)), None)
            if topic is None:
                self._client.emit_error(
                    ErrorCode.INVALID_PAYLOAD,
                    {
                        "topic": message.topic,
                        "data": message.data,
                        "reason": f"topic {message.topic!r} is not in the schema",
                    },
                )
                continue
            received = self._decode(topic, message)
            if received is not None:
                yield received
