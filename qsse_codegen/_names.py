"""Every Python name a generated module defines, derived in one place.

:mod:`qsse_codegen._ir` prints these names and :mod:`qsse_codegen._schema` checks, before
anything is generated, that no two schema keys derive the same name in one namespace and that
no derived name shadows a member of the runtime base classes in :mod:`qsse_core.typed`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

__all__ = [
    "BASE_MEMBERS",
    "Emitted",
    "camel",
    "module_names",
    "on_method",
    "on_with_params_method",
    "params_class",
    "publisher_class",
    "received_alias",
    "subscriber_class",
    "topic_const",
]

#: Module-level names the generated module defines whatever the schema says.
FIXED_MODULE_NAMES = {
    "SCHEMA_VERSION": "schema version constant",
    "TOPICS": "tuple of topic patterns",
}


def camel(snake: str) -> str:
    """``ride_status`` → ``RideStatus``."""
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def topic_const(topic: str) -> str:
    return topic.upper()


def params_class(topic: str) -> str:
    return f"{camel(topic)}Params"


def on_method(topic: str) -> str:
    return f"on_{topic}"


def on_with_params_method(topic: str) -> str:
    return f"on_{topic}_with_params"


def publisher_class(package: str) -> str:
    return f"{camel(package)}Publisher"


def subscriber_class(package: str) -> str:
    return f"{camel(package)}Subscriber"


def received_alias(package: str) -> str:
    return f"{camel(package)}Received"


def _public_members(cls: type) -> frozenset[str]:
    return frozenset(name for name in dir(cls) if not name.startswith("__"))


def _base_members() -> dict[str, frozenset[str]]:
    # Imported here: qsse_core is the runtime the generated code runs on, and its members
    # are what a generated method must not shadow.
    from qsse_core.typed import TypedPublisher, TypedSubscriber

    return {
        "publisher": _public_members(TypedPublisher) | {"create_server"},
        "subscriber": _public_members(TypedSubscriber),
    }


#: Members of the runtime base classes (plus ``create_server``, which generated publishers
#: add), by namespace; generated methods must not take these names.
BASE_MEMBERS = _base_members()


@dataclasses.dataclass(frozen=True, slots=True)
class Emitted:
    """One name the generated module defines: where, what, and the schema key it comes from."""

    namespace: str
    name: str
    what: str
    #: the schema key path deriving it, e.g. ``topics.ride_status``; "" for fixed names.
    key: str


def module_names(
    package: str,
    types: Iterable[tuple[str, str]],
    topics: Sequence[tuple[str, bool]],
) -> list[Emitted]:
    """Every name the module will define.

    :param types: ``(key, name)`` of each enum and record, e.g. ``("records.Order", "Order")``.
    :param topics: ``(name, has_params)`` of each topic.
    """
    schema_key = "schema.package"
    emitted = [Emitted("module", n, what, "") for n, what in FIXED_MODULE_NAMES.items()]
    emitted += [
        Emitted("module", publisher_class(package), "publisher class", schema_key),
        Emitted("module", subscriber_class(package), "subscriber class", schema_key),
        Emitted("module", received_alias(package), "received-event alias", schema_key),
    ]
    for key, name in types:
        emitted.append(Emitted("module", name, "class", key))
    for topic, has_params in topics:
        key = f"topics.{topic}"
        emitted.append(Emitted("module", topic_const(topic), "topic constant", key))
        emitted.append(Emitted("publisher", topic, "publisher method", key))
        emitted.append(Emitted("subscriber", on_method(topic), "subscriber method", key))
        if has_params:
            emitted.append(Emitted("module", params_class(topic), "parameters class", key))
            emitted.append(
                Emitted("subscriber", on_with_params_method(topic), "subscriber method", key)
            )
    return emitted
