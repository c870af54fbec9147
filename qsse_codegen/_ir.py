"""Checked schema → intermediate representation of the generated module.

The IR holds everything the templates print, already as Python text: names, annotations,
default expressions, wrapped doc lines, signatures and the sorted import list. Templates only
loop over it. It is frozen and acyclic: nothing refers back to its parent.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import re
import textwrap
import uuid
from collections.abc import Iterable, Mapping, Sequence

from . import _names
from . import _schema as s

__all__ = [
    "EnumIR",
    "FieldIR",
    "MemberIR",
    "MethodIR",
    "ModuleIR",
    "RecordIR",
    "TopicIR",
    "lower",
]

#: Generated lines stay within this width, so the output passes ruff's E501 at the default 100.
LINE_WIDTH = 100

_SCALARS = {
    "str": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "bytes": "bytes",
    "datetime": "_datetime.datetime",
    "date": "_datetime.date",
    "UUID": "_uuid.UUID",
    "Decimal": "_decimal.Decimal",
}

# Module aliases are underscored so schema names cannot shadow them (see _schema).
_IMPORTS = {
    "_datetime.": "import datetime as _datetime",
    "_decimal.": "import decimal as _decimal",
    "_uuid.": "import uuid as _uuid",
}

#: Topic parameters of type str must be one topic segment, so the concrete topic parses back.
#: ``\Z``, not ``$``: Python's ``$`` also matches before a final newline ("ride\n").
PARAM_SEGMENT = "^[A-Za-z0-9_-]+\\Z"


@dataclasses.dataclass(frozen=True, slots=True)
class FieldIR:
    name: str
    #: the doc comment and the declaration, indented for a class body.
    lines: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class RecordIR:
    name: str
    docstring: tuple[str, ...]
    fields: tuple[FieldIR, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class MemberIR:
    name: str
    value: str


@dataclasses.dataclass(frozen=True, slots=True)
class EnumIR:
    name: str
    docstring: tuple[str, ...]
    members: tuple[MemberIR, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class MethodIR:
    """A method: its decorators, ``def`` line(s), docstring and body, indented for a class."""

    decorators: tuple[str, ...]
    signature: tuple[str, ...]
    docstring: tuple[str, ...]
    body: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class TopicIR:
    name: str
    #: module constant holding the runtime ``Topic``.
    const: str
    comment: tuple[str, ...]
    #: ``NAME: Final[...] = _typed.Topic(``, split when too long.
    const_head: tuple[str, ...]
    #: keyword arguments of the ``_typed.Topic(...)`` call, indented, one per line.
    const_args: tuple[str, ...]
    #: the glob servers declare, as a literal, e.g. ``"ride.*.status"``.
    pattern: str
    publish: MethodIR
    #: the ``on_`` method(s) registering handlers.
    handlers: tuple[MethodIR, ...]
    received: str


@dataclasses.dataclass(frozen=True, slots=True)
class ModuleIR:
    header: tuple[str, ...]
    docstring: tuple[str, ...]
    imports_stdlib: tuple[str, ...]
    imports_third_party: tuple[str, ...]
    imports_first_party: tuple[str, ...]
    all_names: tuple[str, ...]
    version: str
    enums: tuple[EnumIR, ...]
    records: tuple[RecordIR, ...]
    params: tuple[RecordIR, ...]
    topics: tuple[TopicIR, ...]
    publisher: str
    publisher_docstring: tuple[str, ...]
    subscriber: str
    subscriber_docstring: tuple[str, ...]
    received: str
    received_comment: tuple[str, ...]
    #: the union's members, one per line: ``    _typed.Received[...]``, ``    | ...``.
    received_members: tuple[str, ...]


def _literal(text: str) -> str:
    # JSON string syntax is valid Python string syntax, and always uses double quotes.
    return json.dumps(text, ensure_ascii=False)


def _number(value: int | float) -> str:
    return repr(value)


def _wrap(text: str, width: int, *, hanging: str = "") -> list[str]:
    """Wrap each paragraph of ``text``; blank lines between paragraphs are kept."""
    lines: list[str] = []
    for paragraph in text.strip().split("\n\n"):
        if lines:
            lines.append("")
        lines.extend(
            textwrap.wrap(
                " ".join(paragraph.split()),
                width=width,
                subsequent_indent=hanging,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return lines


def _indent(lines: Iterable[str], indent: int) -> tuple[str, ...]:
    pad = " " * indent
    return tuple(pad + line if line else "" for line in lines)


def _docstring(
    text: str, indent: int, fields: Sequence[str] = (), *, note: str | None = None
) -> tuple[str, ...]:
    """A docstring, quotes included, for code indented by ``indent``.

    ``note`` is a paragraph set after the text; ``fields`` are reST lines (``:param x: ...``)
    set last, wrapped with a hanging indent.
    """
    width = LINE_WIDTH - indent - 3  # room for the opening quotes on the first line
    body = _wrap(_escape_docstring(text), width)
    if note is not None:
        body.append("")
        body.extend(_wrap(_escape_docstring(note), width))
    if fields:
        body.append("")
        for field in fields:
            body.extend(_wrap(_escape_docstring(field), width, hanging="    "))
    if body[-1].endswith('"'):
        body[-1] = body[-1][:-1] + '\\"'
    if len(body) == 1 and indent + len(body[0]) + 6 <= LINE_WIDTH:
        return _indent([f'"""{body[0]}"""'], indent)
    return _indent([f'"""{body[0]}', *body[1:], '"""'], indent)


def _escape_docstring(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def _comment(text: str, indent: int) -> tuple[str, ...]:
    lines = _wrap(text, LINE_WIDTH - indent - 3)
    return _indent([f"#: {line}" if line else "#:" for line in lines], indent)


def _annotation(expr: s.TypeExpr) -> str:
    if isinstance(expr, s.ListType):
        return f"list[{_annotation(expr.item)}]"
    if isinstance(expr, s.MapType):
        return f"dict[str, {_annotation(expr.value)}]"
    return _SCALARS.get(expr.name, expr.name)


def _meta(constraints: Sequence[tuple[str, int | float | str | bool]]) -> str:
    args = []
    for name, value in constraints:
        if isinstance(value, bool):
            text = repr(value)
        elif isinstance(value, str):
            text = _literal(value)
        else:
            text = _number(value)
        args.append(f"{name}={text}")
    return f"_msgspec.Meta({', '.join(args)})"


def _datetime_args(value: datetime.date) -> str:
    if not isinstance(value, datetime.datetime):
        return f"{value.year}, {value.month}, {value.day}"
    args = [value.year, value.month, value.day, value.hour, value.minute, value.second]
    text = ", ".join(map(str, args))
    if value.microsecond:
        text += f", {value.microsecond}"
    offset = value.utcoffset()
    if offset is None:
        return text
    if not offset:
        return f"{text}, tzinfo=_datetime.timezone.utc"
    seconds = int(offset.total_seconds())
    return f"{text}, tzinfo=_datetime.timezone(_datetime.timedelta(seconds={seconds}))"


def _default(field: s.Field, enums: Mapping[str, s.Enum]) -> str:
    value = field.default
    if value is None:
        return " = None" if field.optional else ""
    if isinstance(field.type, s.NamedType) and field.type.name in enums:
        assert isinstance(value, str)
        return f" = {field.type.name}.{value.upper()}"
    if isinstance(value, bool):
        return f" = {value!r}"
    if isinstance(value, str):
        return f" = {_literal(value)}"
    if isinstance(value, int | float):
        return f" = {_number(value)}"
    if isinstance(value, bytes):
        return f" = {value!r}"
    if isinstance(value, decimal.Decimal):
        return f" = _decimal.Decimal({_literal(str(value))})"
    if isinstance(value, uuid.UUID):
        return f" = _uuid.UUID({_literal(str(value))})"
    if isinstance(value, datetime.datetime):
        return f" = _datetime.datetime({_datetime_args(value)})"
    if isinstance(value, datetime.date):
        return f" = _datetime.date({_datetime_args(value)})"
    # A factory makes the fresh-container-per-instance behaviour visible to readers.
    factory = "list" if isinstance(value, list) else "dict"
    return f" = _msgspec.field(default_factory={factory})"


def _declaration(
    name: str,
    base: str,
    constraints: Sequence[tuple[str, int | float | str | bool]],
    optional: bool,
    default: str,
) -> tuple[str, ...]:
    """``name: annotation = default`` for a class body, split over lines when too long."""
    suffix = (" | None" if optional else "") + default
    if not constraints:
        return _indent([f"{name}: {base}{suffix}"], 4)
    meta = _meta(constraints)
    one_line = f"{name}: _typing.Annotated[{base}, {meta}]{suffix}"
    if 4 + len(one_line) <= LINE_WIDTH:
        return _indent([one_line], 4)
    return _indent([f"{name}: _typing.Annotated[", f"    {base},", f"    {meta},", f"]{suffix}"], 4)


def _field(field: s.Field, enums: Mapping[str, s.Enum]) -> FieldIR:
    annotation = _annotation(field.type)
    declaration = _declaration(
        field.name, annotation, field.constraints, field.optional, _default(field, enums)
    )
    return FieldIR(field.name, (*_comment(field.doc, 4), *declaration))


def _signature(name: str, args: Sequence[str], returns: str) -> tuple[str, ...]:
    one_line = f"def {name}({', '.join(args)}) -> {returns}:"
    if 4 + len(one_line) <= LINE_WIDTH:
        return _indent([one_line], 4)
    return _indent([f"def {name}(", *(f"    {arg}," for arg in args), f") -> {returns}:"], 4)


def _deprecated(note: str | None) -> tuple[str, ...]:
    """PEP 702 ``@deprecated`` for type checkers; ``category=None`` because the runtime warns
    itself (``qsse_core.typed``), naming the topic, once per use."""
    if note is None:
        return ()
    line = f"@_typing_extensions.deprecated({_literal(note)}, category=None)"
    if 4 + len(line) <= LINE_WIDTH:
        return _indent([line], 4)
    pieces = textwrap.wrap(note, LINE_WIDTH - 16, drop_whitespace=False)
    return _indent(
        [
            "@_typing_extensions.deprecated(",
            "    (",
            *(f"        {_literal(piece)}" for piece in pieces),
            "    ),",
            "    category=None,",
            ")",
        ],
        4,
    )


def _keyword(name: str, text: str) -> list[str]:
    """``name="text",`` at indent 4, as implicitly joined pieces when one line is too long."""
    line = f"{name}={_literal(text)},"
    if 4 + len(line) <= LINE_WIDTH:
        return [line]
    pieces = textwrap.wrap(text, LINE_WIDTH - 12, drop_whitespace=False)
    return [f"{name}=(", *(f"    {_literal(piece)}" for piece in pieces), "),"]


def _history(history: s.History) -> list[str]:
    bounds = [
        f"{name}={value!r}"
        for name, value in (
            ("max_events", history.max_events),
            ("max_bytes", history.max_bytes),
            ("max_age", history.max_age),
        )
        if value is not None
    ]
    line = f"history=_qsse_core.HistoryPolicy({', '.join(bounds)}),"
    if 4 + len(line) <= LINE_WIDTH:
        return [line]
    return ["history=_qsse_core.HistoryPolicy(", *(f"    {b}," for b in bounds), "),"]


def _glob(wire: str) -> str:
    return re.sub(r"\{[^{}]*\}", "*", wire)


def _const_head(const: str, annotation: str) -> tuple[str, ...]:
    line = f"{const}: _typing.Final[{annotation}] = _typed.Topic("
    if len(line) <= LINE_WIDTH:
        return (line,)
    return (f"{const}: _typing.Final[", f"    {annotation}", "] = _typed.Topic(")


def _topic(topic: s.Topic) -> TopicIR:
    params_class = _names.params_class(topic.name) if topic.params else "None"
    const = _names.topic_const(topic.name)
    wire = f"``{topic.wire}``"
    deprecation = f"**Deprecated:** {topic.deprecated}" if topic.deprecated else None

    const_args = [
        f"name={_literal(topic.name)},",
        f"template={_literal(topic.wire)},",
        f"event={topic.event},",
        f"params={params_class},",
    ]
    if topic.deprecated is not None:
        const_args.extend(_keyword("deprecated", topic.deprecated))
    if topic.history is not None:
        const_args.extend(_history(topic.history))

    args = ["self", f"event: {topic.event}"]
    if topic.params:
        args.append("*")
        args.extend(f"{p.name}: {_SCALARS[p.type]}" for p in topic.params)
    body: tuple[str, ...] = (f"        return self._publish({const}, event, None)",)
    if topic.params:
        keywords = ", ".join(f"{p.name}={p.name}" for p in topic.params)
        call = f"        params = {params_class}({keywords})"
        if len(call) > LINE_WIDTH:
            call = "\n".join(
                [
                    f"        params = {params_class}(",
                    *(f"            {p.name}={p.name}," for p in topic.params),
                    "        )",
                ]
            )
        body = (*call.split("\n"), f"        return self._publish({const}, event, params)")
    decorators = _deprecated(topic.deprecated)
    publish = MethodIR(
        decorators,
        _signature(topic.name, args, "int"),
        _docstring(
            f"Publish on {wire}: {topic.doc}",
            8,
            [
                ":param event: the event; it is checked fully before anything is sent.",
                *(f":param {p.name}: {p.doc}" for p in topic.params),
                ":returns: the number of subscriptions the event was queued for.",
                ":raises qsse_core.ValidationError: when the event or a parameter does not fit "
                "the schema; nothing is sent.",
            ],
            note=deprecation,
        ),
        body,
    )

    on = _names.on_method(topic.name)
    handler = f"_typing.Callable[[{topic.event}], _typed.R]"
    handlers = [
        MethodIR(
            decorators,
            _signature(on, ["self", f"handler: {handler}", "/"], handler),
            _docstring(
                f"Handle each event on {wire}: {topic.doc}\n\nUse it as a decorator "
                f"(``@subscriber.{on}``) or call it with the handler.",
                8,
                [
                    f":param handler: called with each :class:`{topic.event}`; when it returns "
                    "an awaitable (a coroutine function), that is awaited before the next "
                    "handler runs, and any other return value is ignored.",
                    ":returns: ``handler``, unchanged.",
                ],
                note=deprecation,
            ),
            (f"        self._on({const}, handler)", "        return handler"),
        )
    ]
    if topic.params:
        params_handler = f"_typing.Callable[[{params_class}, {topic.event}], _typed.R]"
        handlers.append(
            MethodIR(
                decorators,
                _signature(
                    _names.on_with_params_method(topic.name),
                    ["self", f"handler: {params_handler}", "/"],
                    params_handler,
                ),
                _docstring(
                    f"Like :meth:`{on}`, also passing the parameters of the concrete "
                    "topic each event arrived on.",
                    8,
                    [
                        f":param handler: called with a :class:`{params_class}` and a "
                        f":class:`{topic.event}`; an awaitable it returns is awaited.",
                        ":returns: ``handler``, unchanged.",
                    ],
                    note=deprecation,
                ),
                (f"        self._on_with_params({const}, handler)", "        return handler"),
            )
        )
    return TopicIR(
        name=topic.name,
        const=const,
        comment=_comment(f"{topic.doc} (``{topic.wire}``)", 0),
        const_head=_const_head(const, f"_typed.Topic[{params_class}, {topic.event}]"),
        const_args=_indent(const_args, 4),
        pattern=_literal(_glob(topic.wire)),
        publish=publish,
        handlers=tuple(handlers),
        received=f"_typed.Received[{params_class}, {topic.event}]",
    )


def _params_record(topic: s.Topic) -> RecordIR:
    fields = []
    for param in topic.params:
        constraints: tuple[tuple[str, str], ...] = (
            (("pattern", PARAM_SEGMENT),) if param.type == "str" else ()
        )
        declaration = _declaration(param.name, _SCALARS[param.type], constraints, False, "")
        fields.append(FieldIR(param.name, (*_comment(param.doc, 4), *declaration)))
    return RecordIR(
        _names.params_class(topic.name),
        _docstring(f"Parameters of topic ``{topic.wire}``.", 4),
        tuple(fields),
    )


def _imports(code: Iterable[str]) -> set[str]:
    text = "\n".join(code)
    return {line for marker, line in _IMPORTS.items() if marker in text}


def lower(schema: s.Schema) -> ModuleIR:
    """Lower a checked schema to the IR of its generated module."""
    enums = {e.name: e for e in schema.enums}
    enum_irs = tuple(
        EnumIR(
            e.name,
            _docstring(e.doc, 4),
            tuple(MemberIR(v.upper(), _literal(v)) for v in e.values),
        )
        for e in schema.enums
    )
    record_irs = tuple(
        RecordIR(r.name, _docstring(r.doc, 4), tuple(_field(f, enums) for f in r.fields))
        for r in schema.records
    )
    params_irs = tuple(_params_record(t) for t in schema.topics if t.params)
    topic_irs = tuple(_topic(t) for t in schema.topics)

    code = [line for r in (*record_irs, *params_irs) for f in r.fields for line in f.lines]
    stdlib = {"import typing as _typing", *_imports(code)}

    publisher, subscriber, received = (
        _names.publisher_class(schema.package),
        _names.subscriber_class(schema.package),
        _names.received_alias(schema.package),
    )
    all_names = {
        "SCHEMA_VERSION",
        "TOPICS",
        publisher,
        subscriber,
        received,
        *enums,
        *(r.name for r in schema.records),
        *(p.name for p in params_irs),
        *(t.const for t in topic_irs),
    }
    topics = ", ".join(f"``{t.wire}``" for t in schema.topics)
    return ModuleIR(
        header=(
            f"# Generated by qsse-gen from {schema.path}. DO NOT EDIT!",
            "# Change the schema and run qsse-gen again instead.",
            "# @" + "generated",  # split so this generator's own source is not marked generated
        ),
        docstring=_docstring(
            f"{schema.doc}\n\nSchema ``{schema.package}`` version {schema.version}; "
            f"topics {topics}.",
            0,
        ),
        imports_stdlib=tuple(sorted(stdlib)),
        imports_third_party=(
            "import msgspec as _msgspec",
            *(
                ("import typing_extensions as _typing_extensions",)
                if any(t.deprecated for t in schema.topics)
                else ()
            ),
        ),
        imports_first_party=(
            "import qsse_core as _qsse_core",
            "from qsse_core import typed as _typed",
        ),
        all_names=tuple(sorted(all_names)),
        version=_literal(schema.version),
        enums=enum_irs,
        records=record_irs,
        params=params_irs,
        topics=topic_irs,
        publisher=publisher,
        publisher_docstring=_docstring(
            f"Publishes ``{schema.package}`` events on a :class:`qsse_core.Server`, checking "
            "each fully first; rejected events raise :class:`qsse_core.ValidationError` and "
            "count in ``qsse_validation_rejections_total``.\n\n"
            f"``{publisher}.create_server(...)`` takes the arguments of "
            ":class:`qsse_core.Server` but its topics, and declares exactly :data:`TOPICS`.",
            4,
        ),
        subscriber=subscriber,
        subscriber_docstring=_docstring(
            f"Receives ``{schema.package}`` events from a :class:`qsse_core.Client`: register "
            f"handlers with the ``on_`` methods, or ``async for`` over it to get "
            f":data:`{received}` values. Subscribe the client to :data:`TOPICS` for all "
            "events, or to concrete topics.\n\n"
            "Payloads that do not decode go to the client's error handlers as "
            "``ErrorCode.INVALID_PAYLOAD``, and receiving goes on.",
            4,
        ),
        received=received,
        received_comment=_comment(
            "What iterating over the subscriber yields; match on ``.event`` to narrow it.", 0
        ),
        received_members=tuple(
            f"    {'| ' if index else ''}{received}"
            for index, received in enumerate(dict.fromkeys(t.received for t in topic_irs))
        ),
    )
