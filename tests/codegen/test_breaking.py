"""``qsse-gen breaking OLD NEW``: one case per rule, the exit status, git revisions, and the
open-enum rule old subscribers follow for values added later."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qsse_codegen import parse_schema
from qsse_codegen._breaking import RULES, compare
from qsse_codegen.cli import app

from ._load import load_source

V1 = """[schema]
package = "shop"
version = "1"
doc = "Shop."

[enums.Size]
doc = "Size."
values = ["s", "m", "l"]

[records.Item]
doc = "An item."
fields.sku = { type = "str", max_length = 10, doc = "SKU." }
fields.size = { type = "Size", doc = "Size." }
fields.quantity = { type = "int", ge = 1, le = 10, doc = "How many." }
fields.note = { type = "str", optional = true, doc = "Note." }
fields.price = { type = "float", gt = 0, doc = "Price." }
fields.placed = { type = "datetime", doc = "When." }

[records.Order]
doc = "An order."
fields.id = { type = "int", doc = "Id." }
fields.items = { type = "list[Item]", doc = "Items." }

[topics.order_placed]
topic = "shop.{store}.order"
event = "Order"
doc = "Placed."
params.store = { type = "str", doc = "Store." }

[topics.order_shipped]
topic = "shop.shipped"
event = "Order"
doc = "Shipped."
"""


def changes(new: str, old: str = V1) -> list[str]:
    return [str(c) for c in compare(parse_schema(old, "v1.toml"), parse_schema(new, "v2.toml"))]


ITEM = "records.Item.fields"


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        pytest.param(
            V1.replace(
                '[topics.order_shipped]\ntopic = "shop.shipped"\nevent = "Order"\ndoc = "Shipped."\n',
                "",
            ),
            "topics.order_shipped: TOPIC_REMOVED: topic 'shop.shipped' is gone: old subscribers never receive it again, and servers on the new schema refuse old publishers' events on it (breaks old subscribers and old publishers)",
            id="TOPIC_REMOVED",
        ),
        pytest.param(
            V1 + '\n[topics.order_paid]\ntopic = "shop.paid"\nevent = "Order"\ndoc = "Paid."\n',
            "topics.order_paid: TOPIC_ADDED: new topic 'shop.paid' (safe)",
            id="TOPIC_ADDED",
        ),
        pytest.param(
            V1.replace('"shop.shipped"', '"shop.sent"'),
            "topics.order_shipped.topic: TOPIC_WIRE_CHANGED: wire topic 'shop.shipped' became 'shop.sent': old subscribers listen on the old one, old publishers send there (breaks old subscribers and old publishers)",
            id="TOPIC_WIRE_CHANGED",
        ),
        pytest.param(
            V1.replace('params.store = { type = "str"', 'params.store = { type = "int"'),
            "topics.order_placed.params: TOPIC_PARAMS_CHANGED: parameters {store: str} became {store: int}: concrete topics of one side do not parse on the other (breaks old subscribers and old publishers)",
            id="TOPIC_PARAMS_CHANGED",
        ),
        pytest.param(
            V1.replace('event = "Order"\ndoc = "Shipped."', 'event = "Item"\ndoc = "Shipped."'),
            "topics.order_shipped.event: TOPIC_EVENT_CHANGED: event 'Order' became 'Item': each side decodes the other's events as the wrong record (breaks old subscribers and old publishers)",
            id="TOPIC_EVENT_CHANGED",
        ),
        pytest.param(
            V1.replace('fields.note = { type = "str", optional = true, doc = "Note." }\n', ""),
            f"{ITEM}.note: FIELD_REMOVED: optional field 'note' is gone: old subscribers silently get its default instead of the value, and old publishers' values are silently dropped (breaks old subscribers and old publishers)",
            id="FIELD_REMOVED-optional",
        ),
        pytest.param(
            V1.replace('fields.placed = { type = "datetime", doc = "When." }\n', ""),
            f"{ITEM}.placed: FIELD_REMOVED: required field 'placed' is gone: old subscribers refuse every new event without it (breaks old subscribers)",
            id="FIELD_REMOVED-required",
        ),
        pytest.param(
            V1.replace("fields.note =", "fields.remark ="),
            f"{ITEM}.note: FIELD_RENAMED: field 'note' seems renamed to 'remark' (same type): JSON carries names, so each side drops the other's value silently (it is optional) (breaks old subscribers and old publishers)",
            id="FIELD_RENAMED",
        ),
        pytest.param(
            V1.replace(
                'fields.id = { type = "int", doc = "Id." }',
                'fields.id = { type = "int", doc = "Id." }\nfields.total = { type = "float", doc = "Total." }',
            ),
            "records.Order.fields.total: FIELD_ADDED_REQUIRED: new required field 'total': subscribers on the new schema refuse every event of old publishers, which lack it; make it optional or give it a default (breaks old publishers)",
            id="FIELD_ADDED_REQUIRED",
        ),
        pytest.param(
            V1.replace(
                'fields.id = { type = "int", doc = "Id." }',
                'fields.id = { type = "int", doc = "Id." }\nfields.total = { type = "float", default = 0.0, doc = "Total." }',
            ),
            "records.Order.fields.total: FIELD_ADDED: new field 'total' with a default (safe)",
            id="FIELD_ADDED",
        ),
        pytest.param(
            V1.replace('fields.id = { type = "int"', 'fields.id = { type = "str"'),
            "records.Order.fields.id.type: FIELD_TYPE_CHANGED: type 'int' became 'str': each side refuses or misreads the other's values (breaks old subscribers and old publishers)",
            id="FIELD_TYPE_CHANGED",
        ),
        pytest.param(
            V1.replace('fields.id = { type = "int"', 'fields.id = { type = "float"'),
            "records.Order.fields.id.type: FIELD_TYPE_CHANGED: type 'int' became 'float': old subscribers refuse fractional values (breaks old subscribers)",
            id="FIELD_TYPE_CHANGED-widened",
        ),
        pytest.param(
            V1.replace(
                'fields.note = { type = "str", optional = true,', 'fields.note = { type = "str",'
            ),
            f"{ITEM}.note.optional: FIELD_OPTIONAL_TO_REQUIRED: the field may no longer be null: subscribers on the new schema refuse old publishers' events holding null (breaks old publishers)",
            id="FIELD_OPTIONAL_TO_REQUIRED",
        ),
        pytest.param(
            V1.replace(
                'fields.placed = { type = "datetime",',
                'fields.placed = { type = "datetime", optional = true,',
            ),
            f"{ITEM}.placed.optional: FIELD_REQUIRED_TO_OPTIONAL: the field may now be null: old subscribers refuse new events holding null (breaks old subscribers)",
            id="FIELD_REQUIRED_TO_OPTIONAL",
        ),
        pytest.param(
            V1.replace("le = 10,", "le = 5,"),
            f"{ITEM}.quantity.le: CONSTRAINT_TIGHTENED: le = 10 became le = 5: subscribers on the new schema refuse old publishers' values that no longer fit (breaks old publishers)",
            id="CONSTRAINT_TIGHTENED-upper",
        ),
        pytest.param(
            V1.replace("gt = 0,", "ge = 0,"),
            f"{ITEM}.price.ge: CONSTRAINT_LOOSENED: gt = 0 became ge = 0: old subscribers refuse new values outside the old constraint (breaks old subscribers)",
            id="CONSTRAINT_LOOSENED-inclusive",
        ),
        pytest.param(
            V1.replace(
                'max_length = 10, doc = "SKU."',
                'max_length = 10, pattern = "^[A-Z]+$", doc = "SKU."',
            ),
            f"{ITEM}.sku.pattern: CONSTRAINT_TIGHTENED: no pattern became pattern = '^[A-Z]+$': subscribers on the new schema refuse old publishers' values that no longer fit (breaks old publishers)",
            id="CONSTRAINT_TIGHTENED-pattern",
        ),
        pytest.param(
            V1.replace("max_length = 10,", "max_length = 20,"),
            f"{ITEM}.sku.max_length: CONSTRAINT_LOOSENED: max_length = 10 became max_length = 20: old subscribers refuse new values outside the old constraint (breaks old subscribers)",
            id="CONSTRAINT_LOOSENED-length",
        ),
        pytest.param(
            V1.replace(
                'fields.placed = { type = "datetime",',
                'fields.placed = { type = "datetime", tz = true,',
            ),
            f"{ITEM}.placed.tz: CONSTRAINT_TIGHTENED: no tz became tz = true: subscribers on the new schema refuse old publishers' values that no longer fit (breaks old publishers)",
            id="CONSTRAINT_TIGHTENED-tz",
        ),
        pytest.param(
            V1.replace('values = ["s", "m", "l"]', 'values = ["s", "m"]'),
            "enums.Size.values: ENUM_VALUE_REMOVED: value 'l' is gone: old publishers may still send it, and subscribers on the new schema receive it as an unknown member (breaks old publishers)",
            id="ENUM_VALUE_REMOVED",
        ),
        pytest.param(
            V1.replace('values = ["s", "m", "l"]', 'values = ["s", "m", "l", "xl"]'),
            "enums.Size.values: ENUM_VALUE_ADDED: new value 'xl': old subscribers receive it as an unknown member of Size (the event is delivered; handle it in a default case) (safe)",
            id="ENUM_VALUE_ADDED",
        ),
    ],
)
def test_rule(new: str, expected: str) -> None:
    assert changes(new) == [expected]


def test_constraint_changed_both_ways() -> None:
    old = V1.replace("max_length = 10,", 'pattern = "^a",')
    new = V1.replace("max_length = 10,", 'pattern = "^b",')
    assert changes(new, old) == [
        f"{ITEM}.sku.pattern: CONSTRAINT_CHANGED: pattern = '^a' became pattern = '^b': each side may send values the other refuses (breaks old subscribers and old publishers)"
    ]


def test_removed_record_and_enum() -> None:
    new = (
        V1.replace('fields.size = { type = "Size", doc = "Size." }\n', "")
        .replace('[enums.Size]\ndoc = "Size."\nvalues = ["s", "m", "l"]\n', "")
        .replace(
            'fields.items = { type = "list[Item]", doc = "Items." }\n',
            'fields.items = { type = "list[str]", doc = "Items." }\n',
        )
    )
    new = new[: new.index("[records.Item]")] + new[new.index("[records.Order]") :]
    assert [c.split(":")[0:2] for c in changes(new)] == [
        ["enums.Size", " ENUM_REMOVED"],
        ["records.Item", " RECORD_REMOVED"],
        ["records.Order.fields.items.type", " FIELD_TYPE_CHANGED"],
    ]


def test_every_rule_is_documented_and_tested() -> None:
    tested = {
        "TOPIC_REMOVED", "TOPIC_ADDED", "TOPIC_WIRE_CHANGED", "TOPIC_PARAMS_CHANGED",
        "TOPIC_EVENT_CHANGED", "RECORD_REMOVED", "ENUM_REMOVED", "FIELD_REMOVED",
        "FIELD_RENAMED", "FIELD_ADDED_REQUIRED", "FIELD_ADDED", "FIELD_TYPE_CHANGED",
        "FIELD_OPTIONAL_TO_REQUIRED", "FIELD_REQUIRED_TO_OPTIONAL", "CONSTRAINT_TIGHTENED",
        "CONSTRAINT_LOOSENED", "CONSTRAINT_CHANGED", "ENUM_VALUE_REMOVED", "ENUM_VALUE_ADDED",
    }  # fmt: skip
    assert set(RULES) == tested


def test_cli_exits_1_on_breaking_changes_0_on_safe_ones(tmp_path: Path) -> None:
    old, new, safe = tmp_path / "v1.toml", tmp_path / "v2.toml", tmp_path / "v2safe.toml"
    old.write_text(V1, encoding="utf-8")
    new.write_text(V1.replace("le = 10,", "le = 5,"), encoding="utf-8")
    safe.write_text(V1.replace('"s", "m", "l"]', '"s", "m", "l", "xl"]'), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["breaking", str(old), str(new)])
    assert result.exit_code == 1
    assert result.stdout.count("CONSTRAINT_TIGHTENED") == 1
    assert result.stderr == f"1 breaking change(s) from {old} to {new}\n"
    result = runner.invoke(app, ["breaking", str(old), str(safe)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["breaking", str(old), str(old)])
    assert (result.exit_code, result.stdout) == (0, f"no changes from {old} to {old}\n")
    result = runner.invoke(app, ["breaking", str(old), str(tmp_path / "missing.toml")])
    assert result.exit_code == 2


def test_cli_reads_a_git_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, timeout=60)

    git("init", "-q")
    (tmp_path / "shop.toml").write_text(V1, encoding="utf-8")
    git("add", "shop.toml")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "v1")
    (tmp_path / "shop.toml").write_text(V1.replace("le = 10,", "le = 5,"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["breaking", "HEAD:shop.toml", "shop.toml"])
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith(f"{ITEM}.quantity.le: CONSTRAINT_TIGHTENED")
    result = CliRunner().invoke(app, ["breaking", "nope:shop.toml", "shop.toml"])
    assert result.exit_code == 2
    assert result.stderr.startswith("nope:shop.toml: fatal:")


def test_old_subscribers_keep_events_with_enum_values_added_later() -> None:
    old = load_source(V1, "shop_v1_enums")
    new = load_source(V1.replace('"s", "m", "l"]', '"s", "m", "l", "xl"]'), "shop_v2_enums")
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    item = new.Item(sku="a", size=new.Size.XL, quantity=1, price=1.0, placed=when)
    data = new.ORDER_SHIPPED.encode(new.Order(id=1, items=[item]), "shop.shipped")
    received = old.ORDER_SHIPPED.decode(data)  # delivered, not dropped
    size = received.items[0].size
    assert type(size) is old.Size
    assert (size.value, size.known) == ("xl", False)
    assert size == old.Size("xl") and size != old.Size.L
    assert old.Size.L.known
    # An old publisher does not send what its schema does not declare.
    publisher_check = old.ORDER_SHIPPED._check
    assert not publisher_check(received)
