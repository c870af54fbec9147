"""Checking typed events before they are sent, the same way whatever the encoding.

One set of rules decides whether an event is sent (docs/schema.md, "What publishing checks"):

- every value has exactly its declared Python type: a ``bool`` is not an ``int``, a ``str`` is
  not a ``UUID``, a ``datetime`` is not a ``date``; only an ``int`` may stand for a ``float``;
- integers (and ints given for floats) fit in int64, what Go peers and MessagePack read;
- an int given for a float meets the bounds as the float subscribers decode it to;
- an aware datetime's UTC offset is whole minutes, all RFC 3339 can write;
- floats and Decimals are finite: JSON has no NaN or infinity, and Go cannot parse them;
- strings (and map keys) are valid Unicode, so they encode as UTF-8 (no lone surrogates);
- the schema's constraints (bounds, lengths, patterns, ``tz``) hold.

Both JSON and MessagePack carry exactly what passes, so every subscriber decodes the same
value. :func:`compile_check` builds, per record type, a straight-line predicate from
``msgspec.inspect`` (generated source, compiled once), which is what publishing runs;
:func:`explain` walks the value the slow way to say what is wrong and where, and only runs
once the predicate has refused. Tests check the two agree with a decode-based reference.
"""

from __future__ import annotations

import builtins
import datetime
import decimal
import enum
import math
import operator
import re
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import inspect as mi

__all__ = ["INT64_MAX", "INT64_MIN", "compile_check", "compile_encode", "explain", "has_datetime"]

#: The integer range every peer reads: Go's int64 and MessagePack's signed integers.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_INF = math.inf


def _offset(value: datetime.datetime) -> int:
    """1 when ``value`` is aware with an offset RFC 3339 can write (whole minutes), 0 when it
    is naive (``utcoffset()`` is None, whatever its ``tzinfo``), -1 when its offset cannot
    travel: seconds (local mean time before 1900, say) would be cut off, shifting the instant,
    and a ``tzinfo`` that raises cannot be encoded at all."""
    try:
        offset = value.utcoffset()
    except Exception:
        return -1
    if offset is None:
        return 0
    return -1 if offset.seconds % 60 or offset.microseconds else 1


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Compiler:
    """Writes the source of one predicate per record type reachable from a root type."""

    def __init__(self) -> None:
        self.names: dict[str, object] = {
            "_utf8": _utf8,
            "_dt": datetime.datetime,
            "_UTC": datetime.UTC,
            "_offset": _offset,
            "_date": datetime.date,
            "_UUID": uuid.UUID,
            "_Decimal": decimal.Decimal,
        }
        self.functions: dict[type, str] = {}
        #: (name, body lines) of each function, the root last.
        self.sources: list[tuple[str, list[str]]] = []
        #: Out-of-line checks of an int given for a float, by bounds (name, body lines).
        self.int_floats: dict[tuple[str, str], tuple[str, list[str]]] = {}
        #: Writing the fast path: floats must be floats (see _build).
        self.fast = False
        self.counter = 0

    def constant(self, value: object, prefix: str) -> str:
        self.counter += 1
        name = f"_{prefix}{self.counter}"
        self.names[name] = value
        return name

    def function(self, info: mi.StructType) -> str:
        name = self.functions.get(info.cls)
        if name is not None:
            return name
        name = self.functions[info.cls] = f"check_{len(self.functions)}"
        body = [*self.record(info, "v", 1, (info.cls,)), "    return True"]
        self.sources.append((name, body))
        return name

    def record(
        self, info: mi.StructType, var: str, depth: int, stack: tuple[type, ...]
    ) -> list[str]:
        """Statements checking the record in ``var``: its class, then one combined
        condition over its scalar fields and scalar-only records (fewer jumps, no stores),
        then its containers and other records."""
        pad = "    " * depth
        conditions = [f"type({var}) is {self.constant(info.cls, 'T')}"]
        loads: list[str] = []
        nested: list[str] = []
        for field in info.fields:
            # Unique per function: "{var}_{field}" would make field a_b of a record and field
            # b of its field a one variable, and check one value in place of the other.
            self.counter += 1
            inner = f"f{self.counter}_{field.name}"
            condition = self.simple(field.type, inner, (*stack, info.cls))
            if condition is not None:
                conditions.append(f"({_load_first(condition, inner, var, field.name)})")
            else:
                loads.append(f"{pad}{inner} = {var}.{field.name}")
                nested.extend(self.statements(field.type, inner, depth, (*stack, info.cls)))
        return [f"{pad}if not ({' and '.join(conditions)}): return False", *loads, *nested]

    def inline(self, info: mi.StructType, var: str, stack: tuple[type, ...]) -> str | None:
        """One condition for a record whose fields are all scalars or such records (a
        ``Location`` of two floats), so that it joins its parent's condition; None otherwise."""
        if info.cls in stack or len(stack) > 6:
            return None
        conditions = [f"type({var}) is {self.constant(info.cls, 'T')}"]
        for field in info.fields:
            self.counter += 1
            inner = f"f{self.counter}_{field.name}"
            condition = self.simple(field.type, inner, (*stack, info.cls))
            if condition is None:
                return None
            conditions.append(f"({_load_first(condition, inner, var, field.name)})")
        return " and ".join(conditions)

    def simple(self, info: mi.Type, var: str, stack: tuple[type, ...]) -> str | None:
        """The condition for a scalar, an enum or a scalar-only record, optional or not;
        None for anything else."""
        if isinstance(info, mi.UnionType):
            others = [t for t in info.types if not isinstance(t, mi.NoneType)]
            if len(others) == 1 and len(others) < len(info.types):
                inner = self.simple(others[0], var, stack)
                return None if inner is None else f"{var} is None or {inner}"
            return None
        if isinstance(info, mi.StructType):
            return self.inline(info, var, stack)
        if isinstance(info, mi.ListType | mi.DictType):
            return None
        return self.condition(info, var)

    def statements(self, info: mi.Type, var: str, depth: int, stack: tuple[type, ...]) -> list[str]:
        pad = "    " * depth
        if isinstance(info, mi.UnionType):
            others = [t for t in info.types if not isinstance(t, mi.NoneType)]
            if len(others) != 1 or len(others) == len(info.types):
                raise TypeError(f"unsupported union {info!r}")
            inner = self.statements(others[0], var, depth + 1, stack)
            return [f"{pad}if {var} is not None:", *inner]
        if isinstance(info, mi.StructType):
            if info.cls in stack or depth > 6:
                return [f"{pad}if not {self.function(info)}({var}): return False"]
            return self.record(info, var, depth, stack)
        if isinstance(info, mi.ListType):
            item = f"i{depth}"
            return [
                f"{pad}if type({var}) is not list{self.length(info, var)}: return False",
                f"{pad}for {item} in {var}:",
                *self.statements(info.item_type, item, depth + 1, stack),
            ]
        if isinstance(info, mi.DictType):
            key, value = f"k{depth}", f"w{depth}"
            return [
                f"{pad}if type({var}) is not dict{self.length(info, var)}: return False",
                f"{pad}for {key}, {value} in {var}.items():",
                f"{pad}    if type({key}) is not str or not ({key}.isascii() or _utf8({key})):"
                " return False",
                *self.statements(info.value_type, value, depth + 1, stack),
            ]
        return [f"{pad}if not ({self.condition(info, var)}): return False"]

    def length(self, info: Any, var: str) -> str:
        parts = []
        if info.min_length is not None:
            parts.append(f" or len({var}) < {info.min_length}")
        if info.max_length is not None:
            parts.append(f" or len({var}) > {info.max_length}")
        return "".join(parts)

    def condition(self, info: mi.Type, var: str) -> str:
        if isinstance(info, mi.IntType):
            low, high = _int_range(info)
            return f"type({var}) is int and {var} >= {low} and {var} <= {high}"
        if isinstance(info, mi.FloatType):
            # Floats first: the common case is one type test and two comparisons, which
            # also refuse NaN (it compares false) and the infinities. Two plain comparisons,
            # not a chained one: each is followed by a jump, so CPython (3.11+) specialises
            # it for floats, and a float bounds check costs about half as much.
            # An int may stand for a float.
            lower, upper = (">", _literal(-_INF)), ("<", _literal(_INF))
            if info.gt is not None:
                lower = (">", _literal(info.gt))
            if info.ge is not None:
                lower = (">=", _literal(info.ge))
            if info.lt is not None:
                upper = ("<", _literal(info.lt))
            if info.le is not None:
                upper = ("<=", _literal(info.le))
            above, below = f"{lower[0]} {lower[1]}", f"{upper[0]} {upper[1]}"
            # An int is compared as the float subscribers decode it to: 2**60 - 1 < 2.0**60
            # holds, but it arrives as 2.0**60, which does not.
            # That rarer case is a call, out of line: the common path stays short, with no
            # long jumps (EXTENDED_ARG) over code it never runs.
            if self.fast:
                return f"type({var}) is float and {var} {above} and {var} {below}"
            helper = self.int_floats.get((above, below))
            if helper is None:
                helper = (
                    f"int_float_{len(self.int_floats)}",
                    [
                        f"    return type(v) is int and {INT64_MIN} <= v <= {INT64_MAX} "
                        f"and float(v) {above} and float(v) {below}"
                    ],
                )
                self.int_floats[above, below] = helper
            return f"type({var}) is float and {var} {above} and {var} {below} or {helper[0]}({var})"
        if isinstance(info, mi.BoolType):
            # Two identity tests, no call: True and False are the only bools.
            return f"{var} is True or {var} is False"
        if isinstance(info, mi.StrType):
            text = f"type({var}) is str and ({var}.isascii() or _utf8({var}))"
            text += self.length(info, var).replace(" or ", " and not ")
            if info.pattern is not None:
                regex = self.constant(re.compile(info.pattern), "re")
                text += f" and {regex}.search({var}) is not None"
            return text
        if isinstance(info, mi.BytesType):
            return f"type({var}) is bytes" + self.length(info, var).replace(" or ", " and not ")
        if isinstance(info, mi.DateTimeType):
            # The common cases (naive, UTC) cost no call; see _offset for the rest.
            tz = {
                True: f"{var}.tzinfo is _UTC or _offset({var}) == 1",
                False: f"{var}.tzinfo is None or _offset({var}) == 0",
                None: f"{var}.tzinfo is None or {var}.tzinfo is _UTC or _offset({var}) >= 0",
            }[info.tz]
            return f"type({var}) is _dt and ({tz})"
        if isinstance(info, mi.DateType):
            return f"type({var}) is _date"
        if isinstance(info, mi.UUIDType):
            return f"type({var}) is _UUID"
        if isinstance(info, mi.DecimalType):
            return f"type({var}) is _Decimal and {var}.is_finite()"
        if isinstance(info, mi.EnumType):
            # Only declared members: an unknown one (see OpenEnum) is received, never sent.
            values = frozenset(m.value for m in info.cls)
            return (
                f"type({var}) is {self.constant(info.cls, 'E')} "
                f"and {var}._value_ in {self.constant(values, 'V')}"
            )
        raise TypeError(f"unsupported type {info!r}")


def _load_first(condition: str, name: str, var: str, field: str) -> str:
    """``condition`` with its first use of ``name`` loading it from ``var.field``: each field
    is read once, after its record's type is known."""
    first = condition.index(name)
    return f"{condition[:first]}({name} := {var}.{field}){condition[first + len(name) :]}"


def _literal(bound: float) -> str:
    """Source for a bound: ``1e999`` is the literal for infinity (a constant, no lookup)."""
    if bound == _INF:
        return "1e999"
    if bound == -_INF:
        return "-1e999"
    return repr(bound)


def _int_range(info: mi.IntType) -> tuple[int, int]:
    low, high = INT64_MIN, INT64_MAX
    if info.ge is not None:
        low = max(low, info.ge)
    if info.gt is not None:
        low = max(low, info.gt + 1)
    if info.le is not None:
        high = min(high, info.le)
    if info.lt is not None:
        high = min(high, info.lt - 1)
    return low, high


def compile_check(cls: type[msgspec.Struct]) -> Callable[[object], bool]:
    """A predicate telling whether a value is a valid ``cls`` by the rules above.

    It only answers yes or no, as fast as Python allows (one straight-line function per
    record type, nested records inlined); :func:`explain` says why not.

    :raises TypeError: for a type a schema cannot declare (unions other than ``T | None``).
    """
    check: Callable[[object], bool] = _build(cls, None)
    return check


def compile_encode(
    cls: type[msgspec.Struct],
    encode: Callable[[Any], bytes],
    refuse: Callable[[Any, str], bytes],
    failed: Callable[[str, Exception], bytes],
) -> Callable[[Any, str], bytes]:
    """``(event, topic) -> bytes``: the check of :func:`compile_check` fused with ``encode``
    in one function, saving a call per publish.

    It returns ``encode(event)`` when the event passes, else ``refuse(event, topic)`` (which
    is expected to raise); an exception from ``encode`` goes to ``failed(topic, exc)``.
    """
    fused: Callable[[Any, str], bytes] = _build(cls, (encode, refuse, failed))
    return fused


#: Builtins the generated code uses, bound as keyword-only defaults: fast locals, not globals.
_BUILTINS = ("type", "int", "float", "str", "bool", "bytes", "list", "dict", "len")


def _build(cls: type[msgspec.Struct], fuse: tuple[Any, Any, Any] | None) -> Any:
    compiler = _Compiler()
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    root = compiler.function(info)
    fast: list[str] = []
    if fuse is not None:
        # The fused encode first tries a narrower check, the same but with every float
        # field holding a float (no alternative for an int in its place): fewer jumps on
        # the path nearly every event takes. Anything it does not accept goes to the full
        # check, which alone decides, so what is accepted does not change.
        compiler.fast = True
        fast = compiler.record(info, "v", 1, (info.cls,))
        compiler.fast = False
    namespace: dict[str, Any] = dict(compiler.names)
    names = [*compiler.names, *_BUILTINS]
    helpers = list(compiler.int_floats.values())
    functions = list(compiler.sources)
    if fuse is not None:
        # The root function was written last; its copies fail and succeed differently.
        namespace["_encode"], namespace["_refuse"], namespace["_failed"] = fuse
        names += ["_encode", "_refuse", "_failed"]

        def fused(checks: list[str], failure: str) -> list[str]:
            return [
                "    try:",
                *(
                    "    " + line.replace(": return False", f": return {failure}")
                    for line in checks
                ),
                # A record made to contain itself (force_setattr) recurses without end.
                "    except RecursionError as exc:",
                "        return _failed(topic, exc)",
                "    try:",
                "        return _encode(v)",
                "    except Exception as exc:",
                "        return _failed(topic, exc)",
            ]

        functions.append(("encode_checked", fused(functions[-1][1][:-1], "_refuse(v, topic)")))
        functions.append(("encode_event", fused(fast, "encode_checked(v, topic)")))
        root = "encode_event"
    # Every name is a parameter of one factory, so the checks read them as closure cells,
    # as fast as locals, with nothing to fill in per call.
    lines = [f"def _factory({', '.join(names)}):"]
    for name, body in [*helpers, *functions]:
        args = "v, topic" if name.startswith("encode_") else "v"
        lines += [f"    def {name}({args}):", *(f"    {line}" for line in body)]
    lines.append(f"    return {root}")
    exec("\n".join(lines), namespace)
    values = {**namespace, **{b: getattr(builtins, b) for b in _BUILTINS}}
    return namespace["_factory"](*(values[n] for n in names))


def has_datetime(cls: type[msgspec.Struct]) -> bool:
    """Whether ``cls`` can hold a ``datetime`` anywhere (MessagePack then needs care)."""
    seen: set[type] = set()

    def walk(info: mi.Type) -> bool:
        if isinstance(info, mi.DateTimeType):
            return True
        if isinstance(info, mi.StructType):
            if info.cls in seen:
                return False
            seen.add(info.cls)
            return any(walk(f.type) for f in info.fields)
        if isinstance(info, mi.UnionType):
            return any(walk(t) for t in info.types)
        if isinstance(info, mi.ListType):
            return walk(info.item_type)
        if isinstance(info, mi.DictType):
            return walk(info.value_type)
        return False

    return walk(mi.type_info(cls))


# --- explaining ---------------------------------------------------------------------------

_NAMES: dict[type, str] = {
    mi.IntType: "int",
    mi.FloatType: "float",
    mi.BoolType: "bool",
    mi.StrType: "str",
    mi.BytesType: "bytes",
    mi.DateTimeType: "datetime",
    mi.DateType: "date",
    mi.UUIDType: "UUID",
    mi.DecimalType: "Decimal",
    mi.ListType: "list",
    mi.DictType: "dict",
}


def _expected(info: mi.Type) -> str:
    if isinstance(info, mi.StructType | mi.EnumType):
        return info.cls.__name__
    if isinstance(info, mi.UnionType):
        return " | ".join(_expected(t) for t in info.types)
    if isinstance(info, mi.NoneType):
        return "None"
    return _NAMES[type(info)]


def _got(value: object) -> str:
    return "None" if value is None else type(value).__name__


def _key(key: str) -> str:
    # JSON string syntax: readable, and unambiguous for keys holding quotes or dots.
    return "[" + msgspec.json.encode(key).decode() if _utf8(key) else f"[{key!r}"


class _Problem(Exception):
    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason


def explain(cls: type[msgspec.Struct], value: object) -> tuple[str, str] | None:
    """``(path, reason)`` of the first rule ``value`` breaks as a ``cls``, or ``None``.

    Paths are msgspec's, with map keys shown: ``$.breakdown["tip"].amount``. Reasons say
    what was expected and what arrived, e.g. ``Expected `float` <= 90.0, got `91.5```.
    """
    try:
        _walk(mi.type_info(cls), value, "$")
    except _Problem as problem:
        return problem.path, problem.reason
    return None


def _walk(info: mi.Type, value: object, path: str) -> None:
    if isinstance(info, mi.UnionType):
        if value is None and any(isinstance(t, mi.NoneType) for t in info.types):
            return
        (inner,) = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if value is None:
            raise _Problem(path, f"Expected `{_expected(inner)}`, got `None`")
        _walk(inner, value, path)
        return
    if isinstance(info, mi.StructType):
        if type(value) is not info.cls:
            raise _Problem(path, f"Expected `{info.cls.__name__}`, got `{_got(value)}`")
        for field in info.fields:
            _walk(field.type, getattr(value, field.name), f"{path}.{field.encode_name}")
        return
    if isinstance(info, mi.ListType | mi.DictType):
        kind = list if isinstance(info, mi.ListType) else dict
        if type(value) is not kind:
            raise _Problem(path, f"Expected `{kind.__name__}`, got `{_got(value)}`")
        assert isinstance(value, list | dict)
        _length(info, value, path, kind.__name__)
        if isinstance(value, list):
            assert isinstance(info, mi.ListType)
            for index, item in enumerate(value):
                _walk(info.item_type, item, f"{path}[{index}]")
        else:
            assert isinstance(info, mi.DictType)
            for key, item in value.items():
                if type(key) is not str:
                    raise _Problem(f"{path}[{key!r}]", f"Expected a `str` key, got `{_got(key)}`")
                if not _utf8(key):
                    raise _Problem(f"{path}{_key(key)}]", _surrogate(key, "key"))
                _walk(info.value_type, item, f"{path}{_key(key)}]")
        return
    if isinstance(info, mi.EnumType):
        if type(value) is not info.cls:
            raise _Problem(path, f"Expected `{info.cls.__name__}`, got `{_scalar(value)}`")
        assert isinstance(value, enum.Enum)
        if value.value not in {m.value for m in info.cls}:
            declared = ", ".join(repr(m.value) for m in info.cls)
            raise _Problem(
                path,
                f"Expected a declared `{info.cls.__name__}` ({declared}), got the unknown "
                f"value {value.value!r}",
            )
        return
    _scalar_check(info, value, path)


def _scalar(value: object) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, float | decimal.Decimal | int) and not isinstance(value, bool):
        return repr(value)
    return _got(value)


def _surrogate(text: str, what: str) -> str:
    index = next(i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF)
    return (
        f"Expected a {what} of valid Unicode (UTF-8 encodable), got a lone surrogate "
        f"{text[index]!r} at index {index}"
    )


def _length(info: Any, value: Any, path: str, kind: str) -> None:
    if info.min_length is not None and len(value) < info.min_length:
        raise _Problem(
            path, f"Expected `{kind}` of length >= {info.min_length}, got length {len(value)}"
        )
    if info.max_length is not None and len(value) > info.max_length:
        raise _Problem(
            path, f"Expected `{kind}` of length <= {info.max_length}, got length {len(value)}"
        )


def _bounds(
    info: mi.IntType | mi.FloatType, value: float, path: str, kind: str, compared: float
) -> None:
    for name, op, holds in (
        ("ge", ">=", operator.ge),
        ("gt", ">", operator.gt),
        ("le", "<=", operator.le),
        ("lt", "<", operator.lt),
    ):
        bound = getattr(info, name)
        if bound is not None and not holds(compared, bound):
            raise _Problem(path, f"Expected `{kind}` {op} {bound!r}, got `{value!r}`")


def _scalar_check(info: mi.Type, value: object, path: str) -> None:
    expected = _expected(info)
    if isinstance(info, mi.FloatType):
        if type(value) is not float and type(value) is not int:
            raise _Problem(path, f"Expected `float`, got `{_got(value)}`")
        assert isinstance(value, int | float)
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            raise _Problem(path, _int64(value, "float"))
        if not math.isfinite(value):
            raise _Problem(path, f"Expected a finite `float`, got `{value!r}`")
        _bounds(info, value, path, "float", float(value))
        return
    if (
        type(value)
        is not {
            mi.IntType: int,
            mi.BoolType: bool,
            mi.StrType: str,
            mi.BytesType: bytes,
            mi.DateTimeType: datetime.datetime,
            mi.DateType: datetime.date,
            mi.UUIDType: uuid.UUID,
            mi.DecimalType: decimal.Decimal,
        }[type(info)]
    ):
        raise _Problem(path, f"Expected `{expected}`, got `{_got(value)}`")
    if isinstance(info, mi.IntType):
        assert isinstance(value, int)
        if not INT64_MIN <= value <= INT64_MAX:
            raise _Problem(path, _int64(value, "int"))
        _bounds(info, value, path, "int", value)
    elif isinstance(info, mi.DecimalType):
        assert isinstance(value, decimal.Decimal)
        if not value.is_finite():
            raise _Problem(path, f"Expected a finite `Decimal`, got `{value!r}`")
    elif isinstance(info, mi.StrType):
        assert isinstance(value, str)
        if not _utf8(value):
            raise _Problem(path, _surrogate(value, "string"))
        _length(info, value, path, "str")
        if info.pattern is not None and re.search(info.pattern, value) is None:
            raise _Problem(path, f"Expected `str` matching regex {info.pattern!r}, got {value!r}")
    elif isinstance(info, mi.BytesType):
        _length(info, value, path, "bytes")
    elif isinstance(info, mi.DateTimeType):
        assert isinstance(value, datetime.datetime)
        kind = _offset(value)
        if kind < 0:
            raise _Problem(path, _bad_offset(value))
        if info.tz is not None and bool(kind) != info.tz:
            want = "with a timezone" if info.tz else "without a timezone"
            got = "an aware" if kind else "a naive"
            raise _Problem(path, f"Expected `datetime` {want}, got {got} `datetime`")


def _bad_offset(value: datetime.datetime) -> str:
    try:
        offset = value.utcoffset()
    except Exception as exc:
        return (
            f"Expected a `datetime` whose tzinfo gives its UTC offset, got "
            f"{type(exc).__name__} from utcoffset(): {exc}"
        )
    return (
        f"Expected a `datetime` whose UTC offset is whole minutes (RFC 3339 cannot carry "
        f"seconds), got offset {offset}"
    )


def _int64(value: int, kind: str) -> str:
    # Past 4300 digits Python refuses to print an int at all; say how big it is instead.
    shown = f"{value}" if value.bit_length() <= 256 else f"an integer of {value.bit_length()} bits"
    return (
        f"Expected `{kind}` within int64 ({INT64_MIN} to {INT64_MAX}), what every peer can "
        f"read, got `{shown}`"
    )
