"""Every class of schema error, with the exact message a user sees."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from qsse_codegen import Problem, SchemaError, parse_schema
from qsse_codegen.cli import app

BASE = """[schema]
package = "shop"
version = "1"
doc = "Shop."

[records.Order]
doc = "An order."
fields.id = { type = "int", doc = "Id." }

[topics.order_placed]
topic = "order.placed"
event = "Order"
doc = "Placed."
"""


def problems(source: str) -> list[str]:
    with pytest.raises(SchemaError) as caught:
        parse_schema(source, "shop.toml")
    return str(caught.value).splitlines()


def test_base_schema_is_valid() -> None:
    assert parse_schema(BASE, "shop.toml").package == "shop"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            BASE.replace('type = "int"', 'type = "list[Ordr]"'),
            [
                "shop.toml:8: records.Order.fields.id.type: unknown type 'Ordr'; did you mean 'Order'?",
            ],
            id="unknown_type",
        ),
        pytest.param(
            BASE.replace(
                'doc = "Placed."',
                'doc = "Placed."\nhistory = { max_events = -1, max_bytes = "big", max_age = 0, keep = 1 }',
            ),
            [
                "shop.toml:14: topics.order_placed.history.keep: unknown key 'keep'",
                "shop.toml:14: topics.order_placed.history.max_events: expected an integer >= 0, got -1",
                "shop.toml:14: topics.order_placed.history.max_bytes: expected an integer >= 0, got 'big'",
                "shop.toml:14: topics.order_placed.history.max_age: expected a number of seconds > 0, got 0",
            ],
            id="bad_history",
        ),
        pytest.param(
            BASE.replace('doc = "Placed."', 'doc = "Placed."\nhistory = 10'),
            ["shop.toml:14: topics.order_placed.history: expected a table, got an integer"],
            id="history_not_a_table",
        ),
        pytest.param(
            BASE.replace('event = "Order"', 'event = "Ordre"'),
            [
                "shop.toml:12: topics.order_placed.event: unknown record 'Ordre'; did you mean 'Order'?",
            ],
            id="unknown_event",
        ),
        pytest.param(
            BASE.replace('doc = "Id." }', 'doc = "Id.", maxlength = 3 }'),
            [
                "shop.toml:8: records.Order.fields.id.maxlength: unknown key 'maxlength'; did you mean 'max_length'?",
            ],
            id="unknown_key",
        ),
        pytest.param(
            BASE + '\n[enums.Order]\ndoc = "x"\nvalues = ["a"]\n',
            [
                "shop.toml:6: records.Order: duplicate type name 'Order': already defined at enums.Order",
                "shop.toml:12: topics.order_placed.event: event type 'Order' must be a record",
            ],
            id="duplicate_type",
        ),
        pytest.param(
            BASE.replace("fields.id", "fields.class"),
            [
                "shop.toml:8: records.Order.fields.class: 'class' is a Python keyword; choose another field name",
            ],
            id="keyword_field",
        ),
        pytest.param(
            BASE.replace("fields.id", "fields.str"),
            [
                "shop.toml:8: records.Order.fields.str: field name 'str' would shadow the builtin 'str' the generated code uses",
            ],
            id="shadow_builtin",
        ),
        pytest.param(
            BASE + '\n[records.ShopPublisher]\ndoc = "x"\nfields.a = { type = "int", doc = "a" }\n',
            [
                "shop.toml:15: records.ShopPublisher: its class 'ShopPublisher' collides with the publisher class of schema.package; rename one of them",
            ],
            id="shadow_generated",
        ),
        pytest.param(
            BASE + '\n[records.None]\ndoc = "x"\nfields.a = { type = "int", doc = "a" }\n',
            [
                "shop.toml:15: records.None: 'None' is a Python keyword; choose another type name",
            ],
            id="keyword_type",
        ),
        pytest.param(
            BASE.replace("[topics.order_placed]", "[topics.create_server]"),
            [
                "shop.toml:10: topics.create_server: its publisher method 'create_server' would shadow TypedPublisher.create_server of the runtime; choose another name",
            ],
            id="reserved_topic",
        ),
        pytest.param(
            BASE.replace('topic = "order.placed"', 'topic = "order..placed*"'),
            [
                "shop.toml:11: topics.order_placed.topic: invalid topic 'order..placed*': segment '' is empty",
                "shop.toml:11: topics.order_placed.topic: invalid topic 'order..placed*': segment 'placed*' may only hold letters, digits, '_' and '-' or be a {parameter}",
            ],
            id="invalid_topic",
        ),
        pytest.param(
            BASE.replace(
                'topic = "order.placed"',
                'topic = "order.{order_id}.placed"\nparams.orderid = { type = "int", doc = "x" }',
            ),
            [
                "shop.toml:11: topics.order_placed.topic: topic 'order.{order_id}.placed' uses parameter 'order_id' that is not declared in params; did you mean 'orderid'?",
                "shop.toml:12: topics.order_placed.params.orderid: parameter 'orderid' does not appear in topic 'order.{order_id}.placed'",
            ],
            id="undeclared_param",
        ),
        pytest.param(
            BASE.replace(
                'topic = "order.placed"',
                'topic = "order.{order_id}.placed"\nparams.order_id = { type = "float", doc = "x" }',
            ),
            [
                "shop.toml:12: topics.order_placed.params.order_id.type: parameter type 'float' is not one of str, int, UUID",
            ],
            id="param_type",
        ),
        pytest.param(
            BASE.replace(
                'topic = "order.placed"',
                'topic = "order.{event}.placed"\nparams.event = { type = "int", doc = "x" }',
            ),
            [
                "shop.toml:12: topics.order_placed.params.event: parameter name 'event' is taken by the publisher method's own argument",
            ],
            id="param_reserved",
        ),
        pytest.param(
            BASE.replace('doc = "Id." }', 'doc = "Id.", pattern = "^a" }'),
            [
                "shop.toml:8: records.Order.fields.id.pattern: constraint 'pattern' does not apply to type 'int' (it applies to str)",
            ],
            id="constraint_type",
        ),
        pytest.param(
            BASE.replace('type = "int", doc = "Id." }', 'type = "Decimal", ge = 0, doc = "Id." }'),
            [
                "shop.toml:8: records.Order.fields.id.ge: constraint 'ge' does not apply to type 'Decimal' (it applies to int, float)",
            ],
            id="constraint_decimal",
        ),
        pytest.param(
            BASE.replace('doc = "Id." }', 'doc = "Id.", ge = 10, le = 1 }'),
            [
                "shop.toml:8: records.Order.fields.id.le: le = 1 with ge = 10 leaves no int value that satisfies both",
            ],
            id="constraint_bounds",
        ),
        pytest.param(
            BASE.replace(
                'type = "int", doc = "Id." }', 'type = "str", pattern = "([a-z", doc = "Id." }'
            ),
            [
                "shop.toml:8: records.Order.fields.id.pattern: invalid regular expression '([a-z': unterminated character set at position 1",
            ],
            id="bad_regex",
        ),
        pytest.param(
            BASE.replace('doc = "Id." }', 'doc = "Id.", ge = 1, default = 0 }'),
            [
                "shop.toml:8: records.Order.fields.id.default: default 0 violates ge = 1",
            ],
            id="default_violates",
        ),
        pytest.param(
            BASE
            + '\n[topics.order_any]\ntopic = "order.{kind}"\nevent = "Order"\ndoc = "x"\nparams.kind = { type = "str", doc = "k" }\n',
            [
                "shop.toml:16: topics.order_any.topic: topic 'order.{kind}' collides with 'order.placed' of topics.order_placed: a concrete topic (such as 'order.placed') would match both, so subscribers could not tell their events apart",
            ],
            id="colliding",
        ),
        pytest.param(
            BASE.replace(
                'topic = "order.placed"',
                'topic = "order.{id}.placed"\nparams.id = { type = "int", doc = "i" }',
            )
            + '\n[topics.order_in_city]\ntopic = "order.{city}.{id}.placed"\nevent = "Order"\ndoc = "x"\nparams.city = { type = "str", doc = "c" }\nparams.id = { type = "int", doc = "i" }\n',
            [
                "shop.toml:17: topics.order_in_city.topic: topic 'order.{city}.{id}.placed' collides with 'order.{id}.placed' of topics.order_placed: a concrete topic (such as 'order.x.x.placed') would match both, so subscribers could not tell their events apart",
            ],
            id="colliding_because_star_matches_dots",
        ),
        pytest.param(
            BASE.replace('version = "1"', "version = 1.2.3"),
            [
                "shop.toml:3: invalid TOML: Expected newline or end of document after a statement (at line 3, column 14)",
            ],
            id="toml_syntax",
        ),
        pytest.param(
            BASE.replace(
                'fields.id = { type = "int", doc = "Id." }', 'fields.id = { type = "int" }'
            ),
            [
                "shop.toml:8: records.Order.fields.id.doc: missing required key",
            ],
            id="missing_doc",
        ),
        pytest.param(
            BASE.replace(
                'fields.id = { type = "int", doc = "Id." }',
                'fields.next = { type = "Order", doc = "Next." }',
            ),
            [
                "shop.toml:6: records.Order: record 'Order' requires itself (Order -> Order, last via field 'next'); make a field on the cycle optional or a list",
            ],
            id="required_cycle",
        ),
        pytest.param(
            BASE.replace('type = "int"', 'type = "map[int, str]"'),
            [
                "shop.toml:8: records.Order.fields.id.type: map keys must be 'str' (JSON object keys), got 'int'",
            ],
            id="bad_map",
        ),
        pytest.param(
            BASE
            + '\n[enums.Color]\ndoc = "c"\nvalues = ["red", "blue"]\n\n[records.Paint]\ndoc = "p"\nfields.color = { type = "Color", default = "rde", doc = "c" }\n',
            [
                "shop.toml:21: records.Paint.fields.color.default: default 'rde' is not a value of enum 'Color'; did you mean 'red'?",
            ],
            id="enum_default",
        ),
        pytest.param(
            BASE.replace('version = "1"', "version = 1"),
            [
                "shop.toml:3: schema.version: expected a string, got an integer",
            ],
            id="wrong_value_type",
        ),
        pytest.param(
            BASE.split("[topics")[0],
            [
                "shop.toml: topics: a schema needs at least one topic",
            ],
            id="no_topics",
        ),
        pytest.param(
            BASE.replace('event = "Order"', 'event = "Color"')
            + '\n[enums.Color]\ndoc = "c"\nvalues = ["red"]\n',
            [
                "shop.toml:12: topics.order_placed.event: event type 'Color' must be a record",
            ],
            id="event_enum",
        ),
    ],
)
def test_bad_schema_message(source: str, expected: list[str]) -> None:
    assert problems(source) == expected


def test_duplicate_names_within_a_table() -> None:
    enum = '\n[enums.Color]\ndoc = "c"\nvalues = ["red", "blue", "red"]\n'
    assert problems(BASE + enum) == [
        "shop.toml:17: enums.Color.values[2]: duplicate enum value 'red'"
    ]
    # TOML itself refuses a key defined twice; the message keeps its line.
    twice = BASE.replace('doc = "Placed."', 'doc = "Placed."\ndoc = "Again."')
    assert problems(twice) == [
        "shop.toml:14: invalid TOML: Cannot overwrite a value (at line 14, column 15)"
    ]


def test_every_problem_is_reported_at_once() -> None:
    source = BASE.replace('type = "int"', 'type = "Int"').replace(
        'event = "Order"', 'event = "Ordr"'
    )
    assert problems(source) == [
        "shop.toml:8: records.Order.fields.id.type: unknown type 'Int'; did you mean 'int'?",
        "shop.toml:12: topics.order_placed.event: unknown record 'Ordr'; did you mean 'Order'?",
    ]


def test_problem_without_line_prints_file_and_key() -> None:
    assert str(Problem("a.toml", None, "topics", "m")) == "a.toml: topics: m"
    assert str(Problem("a.toml", 3, "", "m")) == "a.toml:3: m"


def test_cli_exits_2_and_writes_nothing_when_any_schema_is_bad(tmp_path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(BASE.replace('"shop"', '"good"'), encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE.replace('type = "int"', 'type = "Int"'), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(good), str(bad), "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"{bad}:8: records.Order.fields.id.type: unknown type 'Int'; did you mean 'int'?\n"
    )
    assert not out.exists()


def test_cli_reports_an_unreadable_schema(tmp_path) -> None:
    missing = tmp_path / "missing.toml"
    result = CliRunner().invoke(app, [str(missing)])
    assert result.exit_code == 2
    assert result.stderr == f"{missing}: cannot read schema: No such file or directory\n"
