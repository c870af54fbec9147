"""``qsse-gen breaking OLD NEW``: every change between two versions of a schema, classified.

In the spirit of ``buf breaking``: each change gets a rule id, the key path it concerns, and
which deployed side it breaks when the other side moves to the new schema:

- **old subscribers**: apps generated from OLD, receiving events from publishers on NEW;
- **old publishers**: apps generated from OLD, whose events subscribers on NEW receive.

A change that breaks neither side (an optional field or a topic added) is listed as safe.
The rules follow msgspec's schema evolution (unknown fields are ignored, missing fields take
their defaults) and qsse's open enums (an unknown enum value is delivered as an unknown
member, see :class:`qsse_core.typed.OpenEnum`). ``RULES`` documents each id.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterable, Iterator, Mapping

from . import _schema as s

__all__ = ["RULES", "Change", "compare", "load_version"]

OLD_SUBSCRIBERS = "old subscribers"
OLD_PUBLISHERS = "old publishers"

#: Rule id -> what it detects. Every rule is tested in tests/codegen/test_breaking.py.
RULES: dict[str, str] = {
    "TOPIC_REMOVED": "a topic is gone: old subscribers wait for it, old publishers publish it",
    "TOPIC_ADDED": "a new topic (safe)",
    "TOPIC_WIRE_CHANGED": "a topic's wire template changed",
    "TOPIC_PARAMS_CHANGED": "a topic's parameters (names or types) changed",
    "TOPIC_EVENT_CHANGED": "a topic carries another record type",
    "RECORD_REMOVED": "a record used by the old schema is gone",
    "ENUM_REMOVED": "an enum used by the old schema is gone",
    "FIELD_REMOVED": "a field is gone",
    "FIELD_RENAMED": "a field removed and one of the same type added: a likely rename",
    "FIELD_ADDED_REQUIRED": "a new field without a default",
    "FIELD_ADDED": "a new optional field or one with a default (safe)",
    "FIELD_TYPE_CHANGED": "a field's type changed",
    "FIELD_OPTIONAL_TO_REQUIRED": "a field may no longer be null",
    "FIELD_REQUIRED_TO_OPTIONAL": "a field may now be null",
    "CONSTRAINT_TIGHTENED": "a constraint refuses values it accepted",
    "CONSTRAINT_LOOSENED": "a constraint accepts values it refused",
    "CONSTRAINT_CHANGED": "a constraint changed in a way that both accepts and refuses more",
    "ENUM_VALUE_REMOVED": "an enum value is gone",
    "ENUM_VALUE_ADDED": "a new enum value (safe: old subscribers get an unknown member)",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One difference between the schemas."""

    rule: str
    #: the key path in the schema, e.g. ``records.Order.fields.total``.
    key: str
    message: str
    #: the deployed sides it breaks; empty for a safe change.
    breaks: tuple[str, ...] = ()

    def __str__(self) -> str:
        verdict = f"breaks {' and '.join(self.breaks)}" if self.breaks else "safe"
        return f"{self.key}: {self.rule}: {self.message} ({verdict})"


class VersionError(Exception):
    """A version cannot be read (no such file, no such revision)."""


def load_version(spec: str) -> s.Schema:
    """Read a schema from a file, or from git as ``REV:path`` (e.g. ``main:schemas/rides.toml``,
    ``HEAD~1:shop.toml``) when no file has that name.

    :raises VersionError: when git cannot show it.
    :raises SchemaError: when it is not a valid schema.
    """
    if os.path.exists(spec) or ":" not in spec:
        return s.load_schema(spec)
    try:
        done = subprocess.run(["git", "show", spec], capture_output=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VersionError(f"{spec}: cannot run git: {exc}") from None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip() or "git show failed"
        raise VersionError(f"{spec}: {reason}")
    try:
        source = done.stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VersionError(f"{spec}: schema is not UTF-8: {exc.reason}") from None
    return s.parse_schema(source, spec)


def compare(old: s.Schema, new: s.Schema) -> list[Change]:
    """Every change from ``old`` to ``new``, topics first, then types, in schema order."""
    changes = list(_topics(old, new))
    changes += _types(old, new)
    return changes


def _topics(old: s.Schema, new: s.Schema) -> Iterator[Change]:
    now = {t.name: t for t in new.topics}
    for topic in old.topics:
        key = f"topics.{topic.name}"
        current = now.get(topic.name)
        if current is None:
            yield Change(
                "TOPIC_REMOVED",
                key,
                f"topic {topic.wire!r} is gone: old subscribers never receive it again, and "
                "servers on the new schema refuse old publishers' events on it",
                (OLD_SUBSCRIBERS, OLD_PUBLISHERS),
            )
            continue
        if current.wire != topic.wire:
            yield Change(
                "TOPIC_WIRE_CHANGED",
                f"{key}.topic",
                f"wire topic {topic.wire!r} became {current.wire!r}: old subscribers listen on "
                "the old one, old publishers send there",
                (OLD_SUBSCRIBERS, OLD_PUBLISHERS),
            )
        was = [(p.name, p.type) for p in topic.params]
        became = [(p.name, p.type) for p in current.params]
        if was != became:
            yield Change(
                "TOPIC_PARAMS_CHANGED",
                f"{key}.params",
                f"parameters {_params(was)} became {_params(became)}: concrete topics of one "
                "side do not parse on the other",
                (OLD_SUBSCRIBERS, OLD_PUBLISHERS),
            )
        if current.event != topic.event:
            yield Change(
                "TOPIC_EVENT_CHANGED",
                f"{key}.event",
                f"event {topic.event!r} became {current.event!r}: each side decodes the "
                "other's events as the wrong record",
                (OLD_SUBSCRIBERS, OLD_PUBLISHERS),
            )
    before = {t.name for t in old.topics}
    for topic in new.topics:
        if topic.name not in before:
            yield Change("TOPIC_ADDED", f"topics.{topic.name}", f"new topic {topic.wire!r}")


def _params(params: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{n}: {t}" for n, t in params) + "}" if params else "none"


def _types(old: s.Schema, new: s.Schema) -> Iterator[Change]:
    records = {r.name: r for r in new.records}
    enums = {e.name: e for e in new.enums}
    used = _used_types(old)
    for enum in old.enums:
        key = f"enums.{enum.name}"
        current = enums.get(enum.name)
        if current is None:
            if enum.name in used:
                yield Change(
                    "ENUM_REMOVED",
                    key,
                    f"enum {enum.name!r} is gone",
                    (OLD_SUBSCRIBERS, OLD_PUBLISHERS),
                )
            continue
        yield from _enum_values(key, enum, current)
    for record in old.records:
        key = f"records.{record.name}"
        current_record = records.get(record.name)
        if current_record is None:
            if record.name in used:
                yield Change(
                    "RECORD_REMOVED",
                    key,
                    f"record {record.name!r} is gone",
                    (OLD_SUBSCRIBERS, OLD_PUBLISHERS),
                )
            continue
        yield from _fields(key, record, current_record)


def _used_types(schema: s.Schema) -> set[str]:
    """Names of the records and enums reachable from the schema's topics."""
    records = {r.name: r for r in schema.records}
    seen: set[str] = set()
    stack = [t.event for t in schema.topics]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for field in records[name].fields if name in records else ():
            stack.extend(s._type_names(field.type))
    return seen


def _enum_values(key: str, old: s.Enum, new: s.Enum) -> Iterator[Change]:
    for value in old.values:
        if value not in new.values:
            yield Change(
                "ENUM_VALUE_REMOVED",
                f"{key}.values",
                f"value {value!r} is gone: old publishers may still send it, and subscribers "
                "on the new schema receive it as an unknown member",
                (OLD_PUBLISHERS,),
            )
    for value in new.values:
        if value not in old.values:
            yield Change(
                "ENUM_VALUE_ADDED",
                f"{key}.values",
                f"new value {value!r}: old subscribers receive it as an unknown member of "
                f"{old.name} (the event is delivered; handle it in a default case)",
            )


def _required(field: s.Field) -> bool:
    return not field.optional and field.default is None


def _fields(key: str, old: s.Record, new: s.Record) -> Iterator[Change]:
    fields = {f.name: f for f in new.fields}
    before = {f.name: f for f in old.fields}
    removed = [f for f in old.fields if f.name not in fields]
    added = [f for f in new.fields if f.name not in before]
    renamed: dict[str, s.Field] = {}
    for field in removed:
        twin = next((a for a in added if a.type == field.type and a not in renamed.values()), None)
        if twin is not None:
            renamed[field.name] = twin

    for field in removed:
        fkey = f"{key}.fields.{field.name}"
        twin = renamed.get(field.name)
        if twin is not None:
            yield Change(
                "FIELD_RENAMED",
                fkey,
                f"field {field.name!r} seems renamed to {twin.name!r} (same type): JSON "
                "carries names, so each side drops the other's value"
                + ("" if _required(field) else " silently (it is optional)"),
                (OLD_SUBSCRIBERS, OLD_PUBLISHERS),
            )
        elif _required(field):
            yield Change(
                "FIELD_REMOVED",
                fkey,
                f"required field {field.name!r} is gone: old subscribers refuse every new event "
                "without it",
                (OLD_SUBSCRIBERS,),
            )
        else:
            yield Change(
                "FIELD_REMOVED",
                fkey,
                f"optional field {field.name!r} is gone: old subscribers silently get its "
                "default instead of the value, and old publishers' values are silently dropped",
                (OLD_SUBSCRIBERS, OLD_PUBLISHERS),
            )
    for field in added:
        if field in renamed.values():
            continue
        fkey = f"{key}.fields.{field.name}"
        if _required(field):
            yield Change(
                "FIELD_ADDED_REQUIRED",
                fkey,
                f"new required field {field.name!r}: subscribers on the new schema refuse "
                "every event of old publishers, which lack it; make it optional or give it a "
                "default",
                (OLD_PUBLISHERS,),
            )
        else:
            yield Change("FIELD_ADDED", fkey, f"new field {field.name!r} with a default")
    for field in old.fields:
        current = fields.get(field.name)
        if current is not None:
            yield from _field(f"{key}.fields.{field.name}", field, current)


def _field(key: str, old: s.Field, new: s.Field) -> Iterator[Change]:
    if old.type != new.type:
        was, now = s._describe(old.type), s._describe(new.type)
        widened = (was, now) == ("int", "float")
        yield Change(
            "FIELD_TYPE_CHANGED",
            f"{key}.type",
            f"type {was!r} became {now!r}: "
            + (
                "old subscribers refuse fractional values"
                if widened
                else "each side refuses or misreads the other's values"
            ),
            (OLD_SUBSCRIBERS,) if widened else (OLD_SUBSCRIBERS, OLD_PUBLISHERS),
        )
        return  # constraints of another type do not compare
    if old.optional and not new.optional:
        yield Change(
            "FIELD_OPTIONAL_TO_REQUIRED",
            f"{key}.optional",
            "the field may no longer be null: subscribers on the new schema refuse old "
            "publishers' events holding null",
            (OLD_PUBLISHERS,),
        )
    elif new.optional and not old.optional:
        yield Change(
            "FIELD_REQUIRED_TO_OPTIONAL",
            f"{key}.optional",
            "the field may now be null: old subscribers refuse new events holding null",
            (OLD_SUBSCRIBERS,),
        )
    yield from _constraints(key, dict(old.constraints), dict(new.constraints))


def _constraints(
    key: str, old: Mapping[str, object], new: Mapping[str, object]
) -> Iterator[Change]:
    for name, tighter, looser in _constraint_moves(old, new):
        spelled = {"lower": ("ge", "gt"), "upper": ("le", "lt")}.get(name, (name,))
        suffix = next((k for k in spelled if k in new), None) or next(
            (k for k in spelled if k in old), name
        )
        ckey = f"{key}.{suffix}"
        if tighter and looser:
            yield Change(
                "CONSTRAINT_CHANGED",
                ckey,
                f"{_show(name, old)} became {_show(name, new)}: each side may send values the "
                "other refuses",
                (OLD_SUBSCRIBERS, OLD_PUBLISHERS),
            )
        elif tighter:
            yield Change(
                "CONSTRAINT_TIGHTENED",
                ckey,
                f"{_show(name, old)} became {_show(name, new)}: subscribers on the new schema "
                "refuse old publishers' values that no longer fit",
                (OLD_PUBLISHERS,),
            )
        elif looser:
            yield Change(
                "CONSTRAINT_LOOSENED",
                ckey,
                f"{_show(name, old)} became {_show(name, new)}: old subscribers refuse new "
                "values outside the old constraint",
                (OLD_SUBSCRIBERS,),
            )


def _show(name: str, constraints: Mapping[str, object]) -> str:
    if name == "lower":
        found = [(k, constraints[k]) for k in ("ge", "gt") if k in constraints]
    elif name == "upper":
        found = [(k, constraints[k]) for k in ("le", "lt") if k in constraints]
    else:
        found = [(name, constraints[name])] if name in constraints else []
    if not found:
        return "no bound" if name in ("lower", "upper") else f"no {name}"
    return ", ".join(f"{k} = {_toml(v)}" for k, v in found)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _bound(
    constraints: Mapping[str, object], inclusive: str, exclusive: str
) -> tuple[float, bool] | None:
    if inclusive in constraints:
        value = constraints[inclusive]
        assert isinstance(value, int | float)
        return float(value), True
    if exclusive in constraints:
        value = constraints[exclusive]
        assert isinstance(value, int | float)
        return float(value), False
    return None


def _constraint_moves(
    old: Mapping[str, object], new: Mapping[str, object]
) -> Iterable[tuple[str, bool, bool]]:
    """``(name, tighter, looser)`` for each constraint that moved."""
    moves: list[tuple[str, bool, bool]] = []
    # Numeric bounds: compare the lowest (highest) value each side admits.
    for name, inclusive, exclusive, sign in (("lower", "ge", "gt", 1), ("upper", "le", "lt", -1)):
        a, b = _bound(old, inclusive, exclusive), _bound(new, inclusive, exclusive)
        if a == b:
            continue
        if a is None or b is None:
            moves.append((name, a is None, b is None))
            continue
        # Positive when the new bound admits less (a higher lower bound, a lower upper one).
        diff = (b[0] - a[0]) * sign
        if diff == 0:
            moves.append((name, a[1] and not b[1], b[1] and not a[1]))
        else:
            moves.append((name, diff > 0, diff < 0))
    for name, grows_tighter in (("min_length", True), ("max_length", False)):
        was, now = old.get(name), new.get(name)
        if was == now:
            continue
        if was is None or now is None:
            moves.append((name, was is None, now is None))
            continue
        assert isinstance(was, int) and isinstance(now, int)
        tighter = now > was if grows_tighter else now < was
        moves.append((name, tighter, not tighter))
    for name in ("pattern", "tz"):
        was, now = old.get(name), new.get(name)
        if was != now:
            moves.append((name, now is not None, was is not None))
    return moves
