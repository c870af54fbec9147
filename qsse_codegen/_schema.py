"""TOML schema → checked schema model.

:func:`load_schema` parses one schema file and checks everything that can be checked without
generating code. It collects every problem instead of stopping at the first, and raises
:class:`SchemaError` holding one :class:`Problem` per issue. Each problem names the file as
given, the key path and, where the TOML source shows it, the line.

The model is plain frozen dataclasses in schema terms (type expressions, wire topics); Python
names and annotations are computed later by :mod:`qsse_codegen._ir`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import decimal
import difflib
import keyword
import math
import os
import pathlib
import re
import tomllib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any, TypeAlias

from . import _names

__all__ = [
    "SCALAR_TYPES",
    "Enum",
    "Field",
    "ListType",
    "MapType",
    "NamedType",
    "Param",
    "Problem",
    "Record",
    "Schema",
    "SchemaError",
    "Topic",
    "TypeExpr",
    "load_schema",
    "parse_schema",
]

#: Scalar type names a schema may use, in the order docs/schema.md lists them.
SCALAR_TYPES = ("str", "int", "float", "bool", "bytes", "datetime", "date", "UUID", "Decimal")

#: Types a topic parameter may have: they print without dots, so a concrete topic parses back.
_PARAM_TYPES = ("str", "int", "UUID")

_TYPE_NAME = re.compile(r"[A-Z][A-Za-z0-9]*\Z")
_SNAKE_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_ENUM_VALUE = re.compile(r"[a-z][a-z0-9_]*\Z")
_PACKAGE_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+\Z")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}\Z")

#: Builtins the generated module refers to by bare name in annotations. A field of that name
#: would shadow the builtin inside the class body, where msgspec resolves annotations.
_SHADOWED_BUILTINS = frozenset({"bool", "bytes", "dict", "float", "int", "list", "str"})

#: Wire topics the protocol keeps for itself (Go qsse sends qsse/1 error events on ``error``).
_RESERVED_WIRE_TOPICS = ("error",)

#: Keyword parameters of every publisher method besides the topic parameters.
_RESERVED_PARAM_NAMES = frozenset({"event", "self"})

_NUMERIC_CONSTRAINTS = ("ge", "gt", "le", "lt")
_LENGTH_CONSTRAINTS = ("min_length", "max_length")
_CONSTRAINTS = (*_NUMERIC_CONSTRAINTS, *_LENGTH_CONSTRAINTS, "pattern", "tz")

_FIELD_KEYS = ("type", "doc", "optional", "default", *_CONSTRAINTS)
_RECORD_KEYS = ("doc", "fields")
_ENUM_KEYS = ("doc", "values")
_TOPIC_KEYS = ("topic", "event", "doc", "params", "deprecated", "history")
_HISTORY_KEYS = ("max_events", "max_bytes", "max_age")
_PARAM_KEYS = ("type", "doc")
_SCHEMA_KEYS = ("package", "version", "doc")
_TOP_KEYS = ("schema", "enums", "records", "topics")


# --- model --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class NamedType:
    """A scalar (``int``), an enum or a record, by its schema name."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class ListType:
    """``list[item]``."""

    item: TypeExpr


@dataclasses.dataclass(frozen=True, slots=True)
class MapType:
    """``map[str, value]``: JSON objects only have string keys."""

    value: TypeExpr


TypeExpr: TypeAlias = NamedType | ListType | MapType
Number: TypeAlias = int | float
Default: TypeAlias = (
    str
    | int
    | float
    | bool
    | bytes
    | decimal.Decimal
    | datetime.date
    | datetime.datetime
    | uuid.UUID
    | list[Any]
    | dict[str, Any]
)


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One field of a record."""

    name: str
    type: TypeExpr
    doc: str
    optional: bool
    #: ``None`` when the field has no default (an optional field then defaults to ``None``).
    default: Default | None
    constraints: tuple[tuple[str, Number | str | bool], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    name: str
    doc: str
    fields: tuple[Field, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Enum:
    name: str
    doc: str
    values: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str
    doc: str


@dataclasses.dataclass(frozen=True, slots=True)
class Topic:
    """A topic: ``wire`` is the template, e.g. ``ride.{ride_id}.status``."""

    name: str
    wire: str
    event: str
    doc: str
    params: tuple[Param, ...]
    #: The deprecation note, or ``None`` when the topic is current.
    deprecated: str | None
    #: How much of the topic's past a server keeps for qsse/2 resume, or ``None`` for the
    #: server's default.
    history: History | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    """A topic's ``history`` table: the bounds of its retained events."""

    max_events: int | None
    max_bytes: int | None
    max_age: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Schema:
    """A checked schema. ``path`` is the file name exactly as the user gave it."""

    path: str
    package: str
    version: str
    doc: str
    enums: tuple[Enum, ...]
    records: tuple[Record, ...]
    topics: tuple[Topic, ...]


# --- errors -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a schema."""

    path: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class SchemaError(Exception):
    """A schema has problems; ``str()`` lists one per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = tuple(problems)


def _suggest(word: str, candidates: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


# --- locating keys in the TOML source -----------------------------------------------------

_HEADER = re.compile(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?\Z")
_ASSIGN = re.compile(
    r"\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=(.*)\Z"
)
_INLINE_KEY = re.compile(r"[{,]\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*=")


def _split_dotted(key: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", key)
    return tuple(a or b or c for a, b, c in parts)


def _index_lines(source: str) -> dict[tuple[str, ...], int]:
    """Map key paths to the line defining them.

    tomllib reports no positions for valid documents, so this reads the common shapes
    (headers, dotted keys, one-line inline tables) well enough to point at the line.
    Multi-line strings are skipped so their contents are not mistaken for keys.
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string: str | None = None
    for number, text in enumerate(source.splitlines(), start=1):
        if in_string is not None:
            if text.count(in_string) % 2 == 1:
                in_string = None
            continue
        header = _HEADER.match(text)
        if header is not None:
            table = _split_dotted(header.group(1))
            lines.setdefault(table, number)
            continue
        assign = _ASSIGN.match(text)
        if assign is None:
            continue
        key = (*table, *_split_dotted(assign.group(1)))
        lines.setdefault(key, number)
        value = assign.group(2)
        for quote in ('"""', "'''"):
            if value.count(quote) % 2 == 1:
                in_string = quote
        if value.lstrip().startswith("{"):
            for inner in _INLINE_KEY.findall(value):
                lines.setdefault((*key, inner.strip('"')), number)
    return lines


# --- checking -----------------------------------------------------------------------------

_TOML_TYPE_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    list: "an array",
    dict: "a table",
}


def _toml_type(value: object) -> str:
    for kind, name in _TOML_TYPE_NAMES.items():
        if type(value) is kind:
            return name
    return "a date or time"


class _Checker:
    def __init__(self, path: str, source: str) -> None:
        self.path = path
        self.lines = _index_lines(source)
        self.problems: list[Problem] = []

    def report(self, key: tuple[str, ...], message: str) -> None:
        line = None
        # Array items (``values[2]``) are on the line of their array.
        bare = tuple(re.sub(r"\[\d+\]\Z", "", part) for part in key)
        for end in range(len(bare), 0, -1):
            line = self.lines.get(bare[:end])
            if line is not None:
                break
        self.problems.append(Problem(self.path, line, ".".join(key), message))

    # Helpers that read one key of a table, reporting a problem and returning None if bad.

    def table(self, value: object, key: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.report(key, f"expected a table, got {_toml_type(value)}")
            return None
        return value

    def known_keys(
        self, table: Mapping[str, Any], allowed: Sequence[str], key: tuple[str, ...]
    ) -> None:
        for name in table:
            if name not in allowed:
                self.report((*key, name), f"unknown key {name!r}{_suggest(name, allowed)}")

    def string(
        self, table: Mapping[str, Any], name: str, key: tuple[str, ...], *, required: bool = True
    ) -> str | None:
        if name not in table:
            if required:
                self.report((*key, name), "missing required key")
            return None
        value = table[name]
        if not isinstance(value, str):
            self.report((*key, name), f"expected a string, got {_toml_type(value)}")
            return None
        return value

    def doc(self, table: Mapping[str, Any], key: tuple[str, ...]) -> str:
        doc = self.string(table, "doc", key)
        if doc is not None and not doc.strip():
            self.report((*key, "doc"), "doc must not be empty")
        return (doc or "").strip()

    def name(self, name: str, pattern: re.Pattern[str], what: str, key: tuple[str, ...]) -> bool:
        if keyword.iskeyword(name):
            self.report(key, f"{name!r} is a Python keyword; choose another {what} name")
            return False
        if pattern.match(name) is None:
            shape = {
                _TYPE_NAME.pattern: "CapWords ([A-Z][A-Za-z0-9]*)",
                _SNAKE_NAME.pattern: "snake_case ([a-z][a-z0-9_]*)",
            }[pattern.pattern]
            self.report(key, f"{what} name {name!r} must be {shape}")
            return False
        return True


class _TypeSyntaxError(Exception):
    pass


def _parse_type(text: str) -> TypeExpr:
    """Parse ``int``, ``list[T]``, ``map[str, T]``; raise :class:`_TypeSyntaxError`."""
    tokens: list[str] = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|[\[\],]|\S", text)
    position = 0

    def take() -> str:
        nonlocal position
        if position >= len(tokens):
            raise _TypeSyntaxError(f"type {text!r} ends early")
        position += 1
        return tokens[position - 1]

    def expect(token: str) -> None:
        got = take()
        if got != token:
            raise _TypeSyntaxError(f"expected {token!r} in type {text!r}, got {got!r}")

    def parse() -> TypeExpr:
        name = take()
        if not re.match(r"[A-Za-z_]", name):
            raise _TypeSyntaxError(f"expected a type name in {text!r}, got {name!r}")
        if name == "list":
            expect("[")
            item = parse()
            expect("]")
            return ListType(item)
        if name == "map":
            expect("[")
            key = take()
            if key != "str":
                raise _TypeSyntaxError(f"map keys must be 'str' (JSON object keys), got {key!r}")
            expect(",")
            value = parse()
            expect("]")
            return MapType(value)
        return NamedType(name)

    result = parse()
    if position != len(tokens):
        raise _TypeSyntaxError(f"unexpected {tokens[position]!r} in type {text!r}")
    return result


def _type_names(expr: TypeExpr) -> Iterable[str]:
    if isinstance(expr, NamedType):
        yield expr.name
    elif isinstance(expr, ListType):
        yield from _type_names(expr.item)
    else:
        yield from _type_names(expr.value)


def _describe(expr: TypeExpr) -> str:
    if isinstance(expr, NamedType):
        return expr.name
    if isinstance(expr, ListType):
        return f"list[{_describe(expr.item)}]"
    return f"map[str, {_describe(expr.value)}]"


def _constraint_targets(name: str) -> tuple[str, ...]:
    if name in _NUMERIC_CONSTRAINTS:
        return ("int", "float")
    if name in _LENGTH_CONSTRAINTS:
        return ("str", "bytes", "list", "map")
    if name == "pattern":
        return ("str",)
    return ("datetime",)


def _kind(expr: TypeExpr) -> str:
    if isinstance(expr, ListType):
        return "list"
    if isinstance(expr, MapType):
        return "map"
    return expr.name


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _wire_segments(wire: str) -> list[str]:
    return wire.split(".")


def _glob(wire: str) -> str:
    return ".".join("*" if _PLACEHOLDER.match(s) else s for s in _wire_segments(wire))


def _globs_overlap(a: str, b: str) -> bool:
    """Whether some topic matches both patterns, ``*`` matching any run of characters."""

    @cache
    def go(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        # A star either matches nothing more or swallows one more character of the other side.
        if i < len(a) and a[i] == "*" and (go(i + 1, j) or (j < len(b) and go(i, j + 1))):
            return True
        if j < len(b) and b[j] == "*" and (go(i, j + 1) or (i < len(a) and go(i + 1, j))):
            return True
        return i < len(a) and j < len(b) and a[i] == b[j] and a[i] != "*" and go(i + 1, j + 1)

    return go(0, 0)


def _overlap_example(a: str, b: str) -> str | None:
    """A topic matching both patterns, stars standing for ``x`` or for the other side's
    characters (``ride.*.status``, ``ride.*.*.status`` → ``ride.x.x.status``); None if there
    is none without empty segments."""

    @cache
    def go(i: int, j: int) -> str | None:
        if i == len(a) and j == len(b):
            return ""
        star_a = i < len(a) and a[i] == "*"
        star_b = j < len(b) and b[j] == "*"
        options: list[tuple[str, int, int]] = []
        if star_a and star_b:
            options += [("x", i + 1, j + 1), ("x", i, j + 1), ("x", i + 1, j)]
        if star_a:
            options.append(("", i + 1, j))
            if j < len(b) and not star_b:
                options.append((b[j], i, j + 1))
        if star_b:
            options.append(("", i, j + 1))
            if i < len(a) and not star_a:
                options.append((a[i], i + 1, j))
        if i < len(a) and j < len(b) and a[i] == b[j] and not star_a:
            options.append((a[i], i + 1, j + 1))
        for text, ni, nj in options:
            rest = go(ni, nj)
            if rest is not None and ".." not in text + rest:
                return text + rest
        return None

    found = go(0, 0)
    if found is None or found.startswith(".") or found.endswith(".") or ".." in found:
        return None
    return found


def parse_schema(source: str, path: str) -> Schema:
    """Check a schema given as TOML text; ``path`` only names it in messages and output.

    :raises SchemaError: listing every problem found.
    """
    try:
        document = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(found.group(1)) if found else None
        raise SchemaError([Problem(path, line, "", f"invalid TOML: {message}")]) from None
    return _check(document, _Checker(path, source))


def display_path(path: str) -> str:
    """``path`` as messages and generated headers name it: normalised (``./shop.toml`` and
    ``shop.toml`` are one file), with ``/`` separators, and relative when it lies under the
    current directory, so output does not depend on how the path was spelled."""
    normal = os.path.normpath(path)
    if os.path.isabs(normal):
        try:
            relative = os.path.relpath(normal)
        except ValueError:  # another drive, on Windows
            relative = normal
        if not relative.startswith(".."):
            normal = relative
    return pathlib.PurePath(normal).as_posix()


def load_schema(path: str) -> Schema:
    """Read and check the schema file at ``path``, named as :func:`display_path` says.

    :raises SchemaError: when the file cannot be read or the schema has problems.
    """
    try:
        with open(path, encoding="utf-8") as file:
            source = file.read()
    except OSError as exc:
        raise SchemaError(
            [Problem(path, None, "", f"cannot read schema: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise SchemaError([Problem(path, None, "", f"schema is not UTF-8: {exc.reason}")]) from None
    return parse_schema(source, display_path(path))


def _check(document: dict[str, Any], c: _Checker) -> Schema:
    c.known_keys(document, _TOP_KEYS, ())

    package = version = ""
    doc = ""
    header = c.table(document.get("schema", {}), ("schema",))
    if "schema" not in document:
        c.report(("schema",), "missing required table [schema]")
    elif header is not None:
        c.known_keys(header, _SCHEMA_KEYS, ("schema",))
        package = c.string(header, "package", ("schema",)) or ""
        version = c.string(header, "version", ("schema",)) or ""
        doc = c.doc(header, ("schema",))
        if package and _PACKAGE_NAME.match(package) is None:
            c.report(
                ("schema", "package"), f"package {package!r} must be snake_case ([a-z][a-z0-9_]*)"
            )
        elif package and keyword.iskeyword(package):
            c.report(
                ("schema", "package"),
                f"{package!r} is a Python keyword; choose another package name",
            )

    enums_table = c.table(document.get("enums", {}), ("enums",)) or {}
    records_table = c.table(document.get("records", {}), ("records",)) or {}
    topics_table = c.table(document.get("topics", {}), ("topics",)) or {}

    # Names first, so types can refer to any of them regardless of order.
    owners: dict[str, str] = {}
    for section, table in (("enums", enums_table), ("records", records_table)):
        for name in table:
            key = (section, name)
            if not c.name(name, _TYPE_NAME, "type", key):
                continue
            if name in SCALAR_TYPES or name in ("list", "map"):
                c.report(key, f"type name {name!r} is a built-in type")
            elif name in owners:
                c.report(key, f"duplicate type name {name!r}: already defined at {owners[name]}")
            else:
                owners[name] = ".".join(key)
    enum_names = {n for n, where in owners.items() if where.startswith("enums.")}
    record_names = {n for n, where in owners.items() if where.startswith("records.")}
    known_types = (*SCALAR_TYPES, *sorted(owners))

    enums = tuple(
        e for e in (_check_enum(c, name, value) for name, value in enums_table.items()) if e
    )
    enum_values = {e.name: e.values for e in enums}
    records = tuple(
        r
        for r in (
            _check_record(c, name, value, known_types, enum_values)
            for name, value in records_table.items()
        )
        if r
    )
    _check_required_cycles(c, records)
    topics = tuple(
        t
        for t in (
            _check_topic(c, name, value, record_names, enum_names, known_types)
            for name, value in topics_table.items()
        )
        if t
    )
    _check_collisions(c, topics)
    _check_names(c, package, owners, topics_table)
    if not topics_table:
        c.report(("topics",), "a schema needs at least one topic")

    if c.problems:
        raise SchemaError(c.problems)
    return Schema(c.path, package, version, doc, enums, records, topics)


def _check_names(
    c: _Checker, package: str, owners: Mapping[str, str], topics: Mapping[str, Any]
) -> None:
    """Refuse two schema keys deriving one Python name, and names shadowing the runtime's.

    One problem per pair of keys (or key and fixed name), listing every name they share.
    """
    types = sorted(((key, name) for name, key in owners.items()), key=lambda kv: kv[1])
    valid = [
        (name, isinstance(value, dict) and bool(value.get("params")))
        for name, value in topics.items()
        if _SNAKE_NAME.match(name) and not keyword.iskeyword(name)
    ]
    emitted = _names.module_names(package, types, valid)
    first: dict[tuple[str, str], _names.Emitted] = {}
    clashes: dict[tuple[str, str], list[tuple[_names.Emitted, _names.Emitted]]] = {}
    for item in emitted:
        base = _names.BASE_MEMBERS.get(item.namespace, frozenset())
        if item.name in base:
            cls = "TypedPublisher" if item.namespace == "publisher" else "TypedSubscriber"
            c.report(
                tuple(item.key.split(".")),
                f"its {item.what} {item.name!r} would shadow {cls}.{item.name} of the runtime; "
                "choose another name",
            )
            continue
        earlier = first.setdefault((item.namespace, item.name), item)
        if earlier is not item:
            clashes.setdefault((item.key, earlier.key), []).append((item, earlier))
    for (key, other), pairs in clashes.items():
        if not key:
            continue  # two fixed names never clash
        mine = " and ".join(f"{item.what} {item.name!r}" for item, _ in pairs)
        theirs = " and ".join(dict.fromkeys(e.what for _, e in pairs))
        if not other:
            message = f"its {mine} would replace the generated {theirs}; choose another name"
        else:
            verb = "collides" if len(pairs) == 1 else "collide"
            message = f"its {mine} {verb} with the {theirs} of {other}; rename one of them"
        c.report(tuple(key.split(".")), message)


def _check_enum(c: _Checker, name: str, value: object) -> Enum | None:
    key = ("enums", name)
    table = c.table(value, key)
    if table is None:
        return None
    c.known_keys(table, _ENUM_KEYS, key)
    doc = c.doc(table, key)
    values = table.get("values")
    if values is None:
        c.report((*key, "values"), "missing required key")
        return None
    if not isinstance(values, list) or not values:
        c.report(
            (*key, "values"), f"expected a non-empty array of strings, got {_toml_type(values)}"
        )
        return None
    checked: list[str] = []
    for index, item in enumerate(values):
        item_key = (*key, f"values[{index}]")
        if not isinstance(item, str):
            c.report(item_key, f"expected a string, got {_toml_type(item)}")
        elif _ENUM_VALUE.match(item) is None:
            c.report(item_key, f"enum value {item!r} must be snake_case ([a-z][a-z0-9_]*)")
        elif item in checked:
            c.report(item_key, f"duplicate enum value {item!r}")
        else:
            checked.append(item)
    return Enum(name, doc, tuple(checked))


def _check_record(
    c: _Checker,
    name: str,
    value: object,
    known_types: Sequence[str],
    enum_values: Mapping[str, tuple[str, ...]],
) -> Record | None:
    key = ("records", name)
    table = c.table(value, key)
    if table is None:
        return None
    c.known_keys(table, _RECORD_KEYS, key)
    doc = c.doc(table, key)
    fields_table = c.table(table.get("fields", {}), (*key, "fields"))
    if fields_table is None:
        return None
    if not fields_table:
        c.report((*key, "fields"), "a record needs at least one field")
    fields = []
    for field_name, field_value in fields_table.items():
        field = _check_field(
            c, (*key, "fields", field_name), field_name, field_value, known_types, enum_values
        )
        if field is not None:
            fields.append(field)
    return Record(name, doc, tuple(fields))


def _check_field(
    c: _Checker,
    key: tuple[str, ...],
    name: str,
    value: object,
    known_types: Sequence[str],
    enum_values: Mapping[str, tuple[str, ...]],
) -> Field | None:
    ok = c.name(name, _SNAKE_NAME, "field", key)
    if ok and name in _SHADOWED_BUILTINS:
        c.report(
            key, f"field name {name!r} would shadow the builtin {name!r} the generated code uses"
        )
        ok = False
    table = c.table(value, key)
    if table is None:
        return None
    c.known_keys(table, _FIELD_KEYS, key)
    doc = c.doc(table, key)
    type_text = c.string(table, "type", key)
    optional = table.get("optional", False)
    if not isinstance(optional, bool):
        c.report((*key, "optional"), f"expected a boolean, got {_toml_type(optional)}")
        ok = False
    if type_text is None:
        return None
    try:
        expr = _parse_type(type_text)
    except _TypeSyntaxError as exc:
        c.report((*key, "type"), str(exc))
        return None
    for used in _type_names(expr):
        if used not in known_types:
            c.report((*key, "type"), f"unknown type {used!r}{_suggest(used, known_types)}")
            ok = False
    if not ok:
        return None

    kind = _kind(expr)
    constraints: list[tuple[str, Number | str | bool]] = []
    for constraint in _CONSTRAINTS:
        if constraint not in table:
            continue
        bound = table[constraint]
        ckey = (*key, constraint)
        targets = _constraint_targets(constraint)
        if kind not in targets:
            fits = ", ".join(targets)
            c.report(
                ckey,
                f"constraint {constraint!r} does not apply to type {_describe(expr)!r} "
                f"(it applies to {fits})",
            )
            continue
        if constraint in _NUMERIC_CONSTRAINTS:
            allowed: tuple[type, ...] = (int,) if kind == "int" else (int, float)
            if type(bound) not in allowed or (
                isinstance(bound, float) and not math.isfinite(bound)
            ):
                want = "an integer" if kind == "int" else "a finite number"
                c.report(ckey, f"expected {want}, got {_toml_type(bound)}")
                continue
        elif constraint in _LENGTH_CONSTRAINTS:
            if type(bound) is not int or bound < 0:
                c.report(ckey, f"expected a non-negative integer, got {bound!r}")
                continue
        elif constraint == "pattern":
            if not isinstance(bound, str):
                c.report(ckey, f"expected a string, got {_toml_type(bound)}")
                continue
            try:
                _compiled(bound)
            except re.error as exc:
                c.report(ckey, f"invalid regular expression {bound!r}: {exc}")
                continue
        elif not isinstance(bound, bool):
            c.report(ckey, f"expected a boolean, got {_toml_type(bound)}")
            continue
        constraints.append((constraint, bound))
    bounds = dict(constraints)
    _check_ranges(c, key, kind, bounds)

    default: Default | None = None
    if "default" in table:
        default = _check_default(c, (*key, "default"), table["default"], expr, enum_values, bounds)
        if default is None:
            return None
    return Field(name, expr, doc, optional, default, tuple(constraints))


def _check_ranges(
    c: _Checker, key: tuple[str, ...], kind: str, bounds: Mapping[str, Number | str | bool]
) -> None:
    """Refuse bounds no value can satisfy, e.g. ``gt = 1.0, lt = 1.0`` or ``ge = 2, lt = 3``
    on an ``int`` (which leaves 2) is fine but ``gt = 2, lt = 3`` is not."""
    for low, high in (("ge", "le"), ("ge", "lt"), ("gt", "le"), ("gt", "lt")):
        lo, hi = bounds.get(low), bounds.get(high)
        if not isinstance(lo, int | float) or not isinstance(hi, int | float):
            continue
        if kind == "int":
            # Integers: the smallest and largest values the bounds allow.
            first = lo + 1 if low == "gt" else lo
            last = hi - 1 if high == "lt" else hi
            empty = first > last
        else:
            empty = lo > hi or (lo == hi and (low == "gt" or high == "lt"))
        if empty:
            c.report(
                (*key, high),
                f"{high} = {hi!r} with {low} = {lo!r} leaves no {kind} value that satisfies both",
            )
    lo, hi = bounds.get("min_length"), bounds.get("max_length")
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        c.report(
            (*key, "max_length"),
            f"max_length = {hi!r} is below min_length = {lo!r}; no value can satisfy both",
        )


def _scalar_default(kind: str, value: object) -> tuple[Default | None, str]:
    """``(value as Python, "")``, or ``(None, what was expected)`` when ``value`` does not fit.

    TOML has no Decimal, UUID or bytes, so those are written as strings: a decimal number, a
    canonical UUID, and base64 (as in JSON). Dates and date-times are TOML's own.
    """
    if kind == "str":
        return (value, "") if isinstance(value, str) else (None, "a string")
    if kind == "bool":
        return (value, "") if isinstance(value, bool) else (None, "a boolean")
    if kind == "int":
        return (value, "") if type(value) is int else (None, "an integer")
    if kind == "float":
        if type(value) not in (int, float):
            return None, "a number"
        assert isinstance(value, int | float)
        if not math.isfinite(value):
            return None, "a finite number (NaN and infinities are refused)"
        return float(value), ""
    if kind == "Decimal":
        want = 'a finite decimal number as a string or integer, e.g. "12.50"'
        if type(value) is int or isinstance(value, str):
            try:
                number = decimal.Decimal(value)
            except decimal.InvalidOperation:
                return None, want
            return (number, "") if number.is_finite() else (None, want)
        return None, want
    if kind == "UUID":
        if isinstance(value, str):
            try:
                return uuid.UUID(value), ""
            except ValueError:
                pass
        return None, 'a UUID string, e.g. "00000000-0000-4000-8000-000000000000"'
    if kind == "bytes":
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True), ""
            except binascii.Error:
                pass
        return None, "a base64 string, as bytes travel in JSON"
    if kind == "datetime":
        if type(value) is datetime.datetime:
            return value, ""
        return None, "a TOML date-time, e.g. 2024-01-01T00:00:00Z"
    if kind == "date":
        if type(value) is datetime.date:
            return value, ""
        return None, "a TOML date, e.g. 2024-01-01"
    raise AssertionError(kind)


def _show(value: object) -> str:
    """A default as the schema author wrote it (TOML-ish), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return repr(value)


def _check_default(
    c: _Checker,
    key: tuple[str, ...],
    value: object,
    expr: TypeExpr,
    enum_values: Mapping[str, tuple[str, ...]],
    bounds: Mapping[str, Number | str | bool],
) -> Default | None:
    kind = _kind(expr)
    checked: Default | None
    if kind in ("list", "map"):
        empty: list[Any] | dict[str, Any] = [] if kind == "list" else {}
        if value != empty or type(value) is not type(empty):
            c.report(key, f"a {kind} default must be {'[]' if kind == 'list' else '{}'}")
            return None
        checked = empty
    elif kind in enum_values:
        if not isinstance(value, str) or value not in enum_values[kind]:
            values = enum_values[kind]
            hint = _suggest(value, values) if isinstance(value, str) else ""
            c.report(key, f"default {_show(value)} is not a value of enum {kind!r}{hint}")
            return None
        return value
    elif kind in SCALAR_TYPES:
        checked, expected = _scalar_default(kind, value)
        if checked is None:
            c.report(
                key,
                f"expected {expected} for a {kind!r} default, got {_show(value)} "
                f"({_toml_type(value)})",
            )
            return None
    else:
        c.report(
            key,
            f"a field of record type {kind!r} cannot have a default; "
            "leave it out (an optional field defaults to None)",
        )
        return None
    violated = _violated(checked, bounds)
    if violated:
        c.report(key, f"default {_show(value)} violates {violated}")
        return None
    return checked


def _violated(value: Default, bounds: Mapping[str, Number | str | bool]) -> str:
    """The first constraint ``value`` breaks, as ``name = bound``, or ""."""
    for name, bound in sorted(bounds.items()):
        if name in _LENGTH_CONSTRAINTS and isinstance(value, str | bytes | list | dict):
            assert isinstance(bound, int)
            if (name == "min_length" and len(value) < bound) or (
                name == "max_length" and len(value) > bound
            ):
                return f"{name} = {bound}"
        elif name == "pattern" and isinstance(value, str) and isinstance(bound, str):
            if not _compiled(bound).search(value):
                return f"pattern = {bound!r}"
        elif name == "tz" and isinstance(value, datetime.datetime):
            if (value.tzinfo is not None) != bound:
                return "tz = true" if bound else "tz = false"
        elif (
            name in _NUMERIC_CONSTRAINTS
            and isinstance(value, int | float)
            and isinstance(bound, int | float)
        ):
            failed = {
                "ge": value < bound,
                "gt": value <= bound,
                "le": value > bound,
                "lt": value >= bound,
            }[name]
            if failed:
                return f"{name} = {bound!r}"
    return ""


def _check_required_cycles(c: _Checker, records: Sequence[Record]) -> None:
    """A record that needs itself through required record fields can never be built."""
    required = {
        r.name: [
            (f.name, f.type.name)
            for f in r.fields
            if isinstance(f.type, NamedType) and not f.optional
        ]
        for r in records
    }
    for record in records:
        stack: list[tuple[str, tuple[str, ...]]] = [(record.name, (record.name,))]
        seen: set[str] = set()
        while stack:
            current, trail = stack.pop()
            for field_name, target in required.get(current, []):
                if target == record.name:
                    via = " -> ".join((*trail, target))
                    c.report(
                        ("records", record.name),
                        f"record {record.name!r} requires itself ({via}, last via field "
                        f"{field_name!r}); make a field on the cycle optional or a list",
                    )
                    stack.clear()
                    break
                if target in required and target not in seen:
                    seen.add(target)
                    stack.append((target, (*trail, target)))


def _check_topic(
    c: _Checker,
    name: str,
    value: object,
    record_names: set[str],
    enum_names: set[str],
    known_types: Sequence[str],
) -> Topic | None:
    key = ("topics", name)
    problems_before = len(c.problems)
    ok = c.name(name, _SNAKE_NAME, "topic", key)
    table = c.table(value, key)
    if table is None:
        return None
    c.known_keys(table, _TOPIC_KEYS, key)
    doc = c.doc(table, key)
    wire = c.string(table, "topic", key)
    event = c.string(table, "event", key)
    deprecated_value = table.get("deprecated", False)
    deprecated: str | None = None
    if isinstance(deprecated_value, str) and deprecated_value.strip():
        deprecated = deprecated_value.strip()
    elif deprecated_value is True:
        deprecated = f"topic {name!r} is deprecated"
    elif deprecated_value is not False:
        c.report(
            (*key, "deprecated"),
            f"expected a boolean or a non-empty string, got {deprecated_value!r}",
        )

    history = _history(c, table.get("history"), (*key, "history"))

    if event is not None and event not in record_names:
        if event in enum_names or event in SCALAR_TYPES:
            c.report((*key, "event"), f"event type {event!r} must be a record")
        else:
            c.report(
                (*key, "event"),
                f"unknown record {event!r}{_suggest(event, record_names or known_types)}",
            )
        ok = False

    params_table = c.table(table.get("params", {}), (*key, "params")) or {}
    params: list[Param] = []
    for param_name, param_value in params_table.items():
        pkey = (*key, "params", param_name)
        if not c.name(param_name, _SNAKE_NAME, "parameter", pkey):
            ok = False
            continue
        if param_name in _RESERVED_PARAM_NAMES:
            c.report(
                pkey,
                f"parameter name {param_name!r} is taken by the publisher method's own argument",
            )
            ok = False
            continue
        ptable = c.table(param_value, pkey)
        if ptable is None:
            ok = False
            continue
        c.known_keys(ptable, _PARAM_KEYS, pkey)
        pdoc = c.doc(ptable, pkey)
        ptype = c.string(ptable, "type", pkey)
        if ptype is None:
            ok = False
            continue
        if ptype not in _PARAM_TYPES:
            allowed = ", ".join(_PARAM_TYPES)
            c.report(
                (*pkey, "type"),
                f"parameter type {ptype!r} is not one of {allowed}{_suggest(ptype, _PARAM_TYPES)}",
            )
            ok = False
            continue
        params.append(Param(param_name, ptype, pdoc))

    if wire is None:
        return None
    if not _check_wire(c, (*key, "topic"), wire, list(params_table)):
        return None
    for reserved in _RESERVED_WIRE_TOPICS:
        if _globs_overlap(_glob(wire), reserved):
            what = "is" if wire == reserved else "matches"
            c.report(
                (*key, "topic"),
                f"topic {wire!r} {what} the reserved topic {reserved!r}: qsse/1 sends error "
                "events on it (as Go qsse does), so servers refuse to declare it",
            )
            return None
    if not ok or len(c.problems) > problems_before:
        return None
    # Parameters keep the order of their placeholders in the wire topic.
    order = [m.group(1) for s in _wire_segments(wire) if (m := _PLACEHOLDER.match(s))]
    params.sort(key=lambda p: order.index(p.name))
    return Topic(name, wire, event or "", doc, tuple(params), deprecated, history)


def _history(c: _Checker, value: object, key: tuple[str, ...]) -> History | None:
    if value is None:
        return None
    table = c.table(value, key)
    if table is None:
        return None
    c.known_keys(table, _HISTORY_KEYS, key)
    bounds: dict[str, int | None] = {}
    for name in ("max_events", "max_bytes"):
        bound = table.get(name)
        if bound is not None and (
            isinstance(bound, bool) or not isinstance(bound, int) or bound < 0
        ):
            c.report((*key, name), f"expected an integer >= 0, got {bound!r}")
            bound = None
        bounds[name] = bound
    age = table.get("max_age")
    if age is not None and (
        isinstance(age, bool) or not isinstance(age, int | float) or not age > 0
    ):
        c.report((*key, "max_age"), f"expected a number of seconds > 0, got {age!r}")
        age = None
    return History(bounds["max_events"], bounds["max_bytes"], None if age is None else float(age))


def _check_wire(c: _Checker, key: tuple[str, ...], wire: str, declared: Sequence[str]) -> bool:
    ok = True
    used: list[str] = []
    for segment in _wire_segments(wire):
        placeholder = _PLACEHOLDER.match(segment)
        if placeholder is not None:
            param = placeholder.group(1)
            if param in used:
                c.report(key, f"parameter {param!r} appears twice in topic {wire!r}")
                ok = False
            elif param not in declared:
                c.report(
                    key,
                    f"topic {wire!r} uses parameter {param!r} that is not declared in params"
                    f"{_suggest(param, declared)}",
                )
                ok = False
            used.append(param)
        elif _SEGMENT.match(segment) is None:
            why = (
                "is empty"
                if not segment
                else "may only hold letters, digits, '_' and '-' or be a {parameter}"
            )
            c.report(key, f"invalid topic {wire!r}: segment {segment!r} {why}")
            ok = False
    for param in declared:
        if param not in used:
            c.report(
                (*key[:-1], "params", param),
                f"parameter {param!r} does not appear in topic {wire!r}",
            )
            ok = False
    return ok


def _check_collisions(c: _Checker, topics: Sequence[Topic]) -> None:
    seen: list[Topic] = []
    for topic in topics:
        for earlier in seen:
            if _globs_overlap(_glob(topic.wire), _glob(earlier.wire)):
                example = _overlap_example(_glob(topic.wire), _glob(earlier.wire))
                such = f" (such as {example!r})" if example else ""
                c.report(
                    ("topics", topic.name, "topic"),
                    f"topic {topic.wire!r} collides with {earlier.wire!r} of "
                    f"topics.{earlier.name}: a concrete topic{such} would match both, so "
                    "subscribers could not tell their events apart",
                )
                break
        seen.append(topic)
