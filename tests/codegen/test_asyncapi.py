"""``qsse-gen asyncapi``: every schema gives a document valid against the official AsyncAPI
3.0.0 JSON Schema (vendored from ``@asyncapi/specs``, see asyncapi/README.md), whose payload
schemas accept what the SDK publishes and refuse what it refuses."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from typer.testing import CliRunner

from generated import rides
from qsse_codegen import load_schema, parse_schema
from qsse_codegen._asyncapi import document
from qsse_codegen.cli import app

from ._load import CASES, ROOT

SPEC = Path(__file__).parent / "asyncapi" / "asyncapi-3.0.0.json.gz"
SPEC_SHA256 = "d4571a420e6ffb7fcc7066c95a6db1202f299a3c51daa103d0706bf30f95e626"
SCHEMAS = [
    "schemas/rides.toml",
    *sorted(
        f"tests/codegen/cases/{p.name}/schema.toml"
        for p in CASES.iterdir()
        if (p / "schema.toml").is_file()
    ),
]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    raw = gzip.decompress(SPEC.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == SPEC_SHA256
    spec = json.loads(raw)
    jsonschema.Draft7Validator.check_schema(spec)
    return jsonschema.Draft7Validator(spec)


@pytest.mark.parametrize("path", SCHEMAS)
def test_document_is_valid_asyncapi_3(validator: jsonschema.Draft7Validator, path: str) -> None:
    doc = document(load_schema(str(ROOT / path)))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert errors == [], [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def test_the_validator_refuses_a_broken_document(validator: jsonschema.Draft7Validator) -> None:
    doc = document(load_schema(str(ROOT / "schemas/rides.toml")))
    doc["operations"]["send_ride_status"]["action"] = "publish"  # AsyncAPI 2 wording
    assert not validator.is_valid(doc)


def test_channels_parameters_messages_and_docs() -> None:
    doc = document(load_schema(str(ROOT / "schemas/rides.toml")))
    status = doc["channels"]["ride_status"]
    assert status["address"] == "ride.{ride_id}.status"
    assert status["parameters"] == {
        "ride_id": {"description": "The ride whose status changed. (int; one topic segment)"}
    }
    assert status["messages"] == {"RideStatus": {"$ref": "#/components/messages/RideStatus"}}
    assert doc["channels"]["driver_position"]["x-qsse-deprecated"].startswith("subscribe to")
    assert doc["operations"]["send_ride_status"]["action"] == "send"
    message = doc["components"]["messages"]["RideStatus"]
    assert (message["contentType"], message["payload"]) == (
        "application/json",
        {"$ref": "#/components/schemas/RideStatus"},
    )
    location = doc["components"]["schemas"]["Location"]
    assert location["properties"]["lat"] == {
        "type": "number",
        "minimum": -90.0,
        "maximum": 90.0,
        "description": "Latitude in degrees.",
    }
    assert doc["info"] | {"description": ""} == {
        "title": "rides",
        "version": "1.1.0",
        "description": "",
    }


def _payload_validator(doc: dict[str, Any], event: str) -> jsonschema.Draft7Validator:
    root = {"$ref": f"#/components/schemas/{event}", "components": doc["components"]}
    return jsonschema.Draft7Validator(
        root, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


def test_payload_schemas_match_what_the_sdk_sends() -> None:
    doc = document(load_schema(str(ROOT / "schemas/rides.toml")))
    check = _payload_validator(doc, "DriverLocation")
    event = rides.DriverLocation(driver_id=uuid.UUID(int=1), location=rides.Location(lat=1, lng=2))
    assert check.is_valid(json.loads(rides.DRIVER_LOCATION.encode(event, "driver.location")))
    assert not check.is_valid(
        {"driver_id": str(uuid.UUID(int=1)), "location": {"lat": 91, "lng": 0}}
    )
    status = rides.RideStatus(
        state=rides.RideState.ARRIVING, changed_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    )
    check = _payload_validator(doc, "RideStatus")
    assert check.is_valid(msgspec.json.decode(rides.RIDE_STATUS.encode(status, "ride.1.status")))
    assert not check.is_valid({"state": "teleporting", "changed_at": "2024-01-01T00:00:00Z"})


def test_cli_prints_or_writes_the_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["asyncapi", "schemas/rides.toml"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == document(
        parse_schema(
            (ROOT / "schemas/rides.toml").read_text(encoding="utf-8"), "schemas/rides.toml"
        )
    )
    out = tmp_path / "rides.asyncapi.json"
    result = CliRunner().invoke(app, ["asyncapi", "schemas/rides.toml", "-o", str(out)])
    assert (result.exit_code, result.stdout) == (0, f"wrote {out.as_posix()}\n")
    assert json.loads(out.read_text(encoding="utf-8"))["asyncapi"] == "3.0.0"
    bad = tmp_path / "bad.toml"
    bad.write_text("[schema]\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["asyncapi", str(bad)])
    assert result.exit_code == 2
