"""Every Python name a schema derives is checked before anything is generated: two schema keys
deriving one name, a name shadowing the runtime base classes, and reserved wire topics are
refused with one message per problem naming both keys. Each case generated a broken module
(exit 0) before."""

from __future__ import annotations

import ast

import pytest

from qsse_codegen import SchemaError, _names, generate, parse_schema

HEAD = """[schema]
package = "shop"
version = "1"
doc = "Shop."

[records.Order]
doc = "An order."
fields.id = { type = "int", doc = "Id." }
"""


def topic(name: str, wire: str, *params: str) -> str:
    lines = [f"\n[topics.{name}]", f'topic = "{wire}"', 'event = "Order"', 'doc = "T."']
    lines += [f'params.{p} = {{ type = "int", doc = "P." }}' for p in params]
    return "\n".join(lines) + "\n"


def problems(source: str) -> list[str]:
    with pytest.raises(SchemaError) as caught:
        parse_schema(source, "shop.toml")
    return str(caught.value).splitlines()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            HEAD + topic("ride_1", "ride.{id}.a", "id") + topic("ride1", "ride.{id}.b", "id"),
            [
                "shop.toml:16: topics.ride1: its parameters class 'Ride1Params' collides with the parameters class of topics.ride_1; rename one of them",
            ],
            id="params_class",
        ),
        pytest.param(
            HEAD + topic("a", "a.{id}", "id") + topic("a_with_params", "b"),
            [
                "shop.toml:16: topics.a_with_params: its subscriber method 'on_a_with_params' collides with the subscriber method of topics.a; rename one of them",
            ],
            id="with_params_method",
        ),
        pytest.param(
            HEAD + topic("gap", "gap"),
            [
                "shop.toml:10: topics.gap: its subscriber method 'on_gap' would shadow TypedSubscriber.on_gap of the runtime; choose another name",
            ],
            id="runtime_subscriber_member",
        ),
        pytest.param(
            HEAD + topic("server", "s"),
            [
                "shop.toml:10: topics.server: its publisher method 'server' would shadow TypedPublisher.server of the runtime; choose another name",
            ],
            id="runtime_publisher_member",
        ),
        pytest.param(
            HEAD + topic("schema_version", "v"),
            [
                "shop.toml:10: topics.schema_version: its topic constant 'SCHEMA_VERSION' would replace the generated schema version constant; choose another name",
            ],
            id="fixed_constant",
        ),
        pytest.param(
            HEAD.replace("records.Order", "records.PLACED").replace("fields.id", "fields.x")
            + topic("placed", "p").replace('"Order"', '"PLACED"'),
            [
                "shop.toml:10: topics.placed: its topic constant 'PLACED' collides with the class of records.PLACED; rename one of them",
            ],
            id="constant_and_record",
        ),
        pytest.param(
            HEAD + topic("failures", "error"),
            [
                "shop.toml:11: topics.failures.topic: topic 'error' is the reserved topic 'error': qsse/1 sends error events on it (as Go qsse does), so servers refuse to declare it",
            ],
            id="reserved_wire_topic",
        ),
        pytest.param(
            HEAD
            + topic("anything", "{kind}").replace(
                'doc = "T."', 'doc = "T."\nparams.kind = { type = "str", doc = "K." }'
            ),
            [
                "shop.toml:11: topics.anything.topic: topic '{kind}' matches the reserved topic 'error': qsse/1 sends error events on it (as Go qsse does), so servers refuse to declare it",
            ],
            id="wire_topic_matching_reserved",
        ),
    ],
)
def test_name_problem(source: str, expected: list[str]) -> None:
    assert problems(source) == expected


def test_a_record_named_like_a_parameters_class() -> None:
    source = HEAD.replace("records.Order", "records.Ride1Params")
    source += topic("ride1", "r.{id}", "id").replace('"Order"', '"Ride1Params"')
    assert problems(source) == [
        "shop.toml:10: topics.ride1: its parameters class 'Ride1Params' collides with the class of records.Ride1Params; rename one of them",
    ]


def test_every_name_the_generator_emits_is_covered_by_the_check() -> None:
    # Generate a schema using every construct and compare its module-level and method names
    # with what the check collects: a name the generator adds later must be added to both.
    source = (
        HEAD
        + '\n[enums.Size]\ndoc = "S."\nvalues = ["s"]\n'
        + topic("placed", "p.{id}", "id")
        + topic("old", "o").replace('doc = "T."', 'doc = "T."\ndeprecated = true')
    )
    schema, text = generate(source, "shop.toml")
    tree = ast.parse(text)
    defined: dict[str, set[str]] = {"module": set(), "publisher": set(), "subscriber": set()}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            defined["module"].add(node.name)
            namespace = {"ShopPublisher": "publisher", "ShopSubscriber": "subscriber"}.get(
                node.name
            )
            if namespace:
                defined[namespace] |= {
                    n.name for n in node.body if isinstance(n, ast.FunctionDef)
                } | {
                    t.id
                    for n in node.body
                    if isinstance(n, ast.Assign | ast.AnnAssign)
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                    if isinstance(t, ast.Name)
                }
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined["module"].add(node.target.id)
        elif isinstance(node, ast.Assign):
            defined["module"] |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    defined["module"] -= {"__all__"}
    defined["publisher"] -= {"__slots__", "topics", "create_server"}
    defined["subscriber"] -= {"__slots__", "topics", "__aiter__"}
    emitted = _names.module_names(
        schema.package,
        [("enums.Size", "Size"), ("records.Order", "Order")],
        [(t.name, bool(t.params)) for t in schema.topics],
    )
    collected: dict[str, set[str]] = {"module": set(), "publisher": set(), "subscriber": set()}
    for item in emitted:
        collected[item.namespace].add(item.name)
    assert collected == defined
