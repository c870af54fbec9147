"""Defaults are checked against every constraint of their field, bounds that leave no value
are refused, and every scalar type takes a default."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from qsse_codegen import SchemaError, parse_schema

from ._load import load_source

HEAD = """[schema]
package = "shop"
version = "1"
doc = "Shop."

[topics.order_placed]
topic = "order.placed"
event = "Order"
doc = "Placed."

[records.Order]
doc = "An order."
fields.id = { type = "int", doc = "Id." }
"""


def field(spec: str) -> str:
    return HEAD + f'fields.x = {{ {spec}, doc = "X." }}\n'


def problems(source: str) -> list[str]:
    with pytest.raises(SchemaError) as caught:
        parse_schema(source, "shop.toml")
    return str(caught.value).splitlines()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            'type = "list[int]", min_length = 1, default = []',
            "default [] violates min_length = 1",
            id="list_min_length",
        ),
        pytest.param(
            'type = "map[str, int]", min_length = 2, default = {}',
            "default {} violates min_length = 2",
            id="map_min_length",
        ),
        pytest.param(
            'type = "str", min_length = 2, default = "a"',
            "default 'a' violates min_length = 2",
            id="str_min_length",
        ),
        pytest.param(
            'type = "str", pattern = "^[a-z]+$", default = "A"',
            "default 'A' violates pattern = '^[a-z]+$'",
            id="str_pattern",
        ),
        pytest.param(
            'type = "bytes", max_length = 2, default = "AAAA"',
            "default 'AAAA' violates max_length = 2",
            id="bytes_max_length",
        ),
        pytest.param(
            'type = "datetime", tz = true, default = 2024-01-01T00:00:00',
            "default 2024-01-01T00:00:00 violates tz = true",
            id="datetime_tz",
        ),
        pytest.param(
            'type = "float", default = nan',
            "expected a finite number (NaN and infinities are refused) for a 'float' default, got nan (a float)",
            id="float_nan",
        ),
        pytest.param(
            'type = "Decimal", default = "NaN"',
            "expected a finite decimal number as a string or integer, e.g. \"12.50\" for a 'Decimal' default, got 'NaN' (a string)",
            id="decimal_nan",
        ),
        pytest.param(
            'type = "Decimal", default = 1.5',
            "expected a finite decimal number as a string or integer, e.g. \"12.50\" for a 'Decimal' default, got 1.5 (a float)",
            id="decimal_float",
        ),
        pytest.param(
            'type = "UUID", default = "nope"',
            "expected a UUID string, e.g. \"00000000-0000-4000-8000-000000000000\" for a 'UUID' default, got 'nope' (a string)",
            id="uuid",
        ),
        pytest.param(
            'type = "bytes", default = "!!"',
            "expected a base64 string, as bytes travel in JSON for a 'bytes' default, got '!!' (a string)",
            id="bytes_not_base64",
        ),
        pytest.param(
            'type = "date", default = "2024-01-01"',
            "expected a TOML date, e.g. 2024-01-01 for a 'date' default, got '2024-01-01' (a string)",
            id="date_as_string",
        ),
        pytest.param(
            'type = "Order", optional = true, default = 1',
            "a field of record type 'Order' cannot have a default; leave it out (an optional field defaults to None)",
            id="record",
        ),
    ],
)
def test_bad_default(spec: str, expected: str) -> None:
    assert problems(field(spec)) == [f"shop.toml:14: records.Order.fields.x.default: {expected}"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            'type = "float", gt = 1.0, lt = 1.0',
            "lt: lt = 1.0 with gt = 1.0 leaves no float value that satisfies both",
            id="float_gt_lt_equal",
        ),
        pytest.param(
            'type = "float", ge = 1.0, lt = 1.0',
            "lt: lt = 1.0 with ge = 1.0 leaves no float value that satisfies both",
            id="float_ge_lt_equal",
        ),
        pytest.param(
            'type = "int", gt = 2, lt = 3',
            "lt: lt = 3 with gt = 2 leaves no int value that satisfies both",
            id="int_no_integer_between",
        ),
        pytest.param(
            'type = "str", min_length = 3, max_length = 2',
            "max_length: max_length = 2 is below min_length = 3; no value can satisfy both",
            id="lengths",
        ),
    ],
)
def test_empty_range(spec: str, expected: str) -> None:
    assert problems(field(spec)) == [f"shop.toml:14: records.Order.fields.x.{expected}"]


@pytest.mark.parametrize(
    "spec",
    [
        'type = "float", ge = 1.0, le = 1.0',
        'type = "int", ge = 2, lt = 3',
        'type = "float", gt = 2, lt = 3',
    ],
)
def test_narrow_but_satisfiable_ranges_pass(spec: str) -> None:
    parse_schema(field(spec), "shop.toml")


def test_every_scalar_type_takes_a_default_that_fits_its_constraints() -> None:
    module = load_source(
        HEAD
        + """fields.price = { type = "Decimal", default = "12.50", doc = "P." }
fields.count = { type = "Decimal", default = 3, doc = "C." }
fields.day = { type = "date", default = 2024-02-29, doc = "D." }
fields.at = { type = "datetime", tz = true, default = 2024-02-29T12:30:00.25+05:45, doc = "A." }
fields.utc = { type = "datetime", default = 2024-02-29T12:30:00Z, doc = "U." }
fields.local = { type = "datetime", tz = false, default = 2024-02-29T12:30:00, doc = "L." }
fields.ref = { type = "UUID", default = "00000000-0000-4000-8000-000000000001", doc = "R." }
fields.blob = { type = "bytes", max_length = 2, default = "AP8=", doc = "B." }
fields.ratio = { type = "float", gt = 0, le = 1, default = 1, doc = "F." }
""",
        "shop_defaults",
    )
    order = module.Order(id=1)
    assert order.price == decimal.Decimal("12.50")
    assert order.count == decimal.Decimal(3)
    assert order.day == dt.date(2024, 2, 29)
    offset = dt.timezone(dt.timedelta(hours=5, minutes=45))
    assert order.at == dt.datetime(2024, 2, 29, 12, 30, 0, 250000, tzinfo=offset)
    assert order.at.utcoffset() == dt.timedelta(hours=5, minutes=45)
    assert order.utc.tzinfo is dt.UTC
    assert order.local.tzinfo is None
    assert order.ref == uuid.UUID("00000000-0000-4000-8000-000000000001")
    assert order.blob == b"\x00\xff"
    assert order.ratio == 1.0
    # Each default passes the publisher's own check.
    module.ORDER_PLACED.encode(order, "order.placed")
