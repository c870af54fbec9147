"""mypy's view of the generated SDK: exact revealed types, and both mistakes of negative.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
REVEALED = re.compile(r'^(?P<file>[^:]+):(?P<line>\d+): note: Revealed type is "(?P<type>.*)"$')


def run_mypy(path: Path) -> tuple[str, int]:
    # mypy reports PEP 702 deprecations only with this error code enabled; pyright by default.
    args = ["--strict", "--enable-error-code=deprecated", str(path.relative_to(ROOT))]
    stdout, stderr, status = api.run(args)
    assert stderr == ""
    return stdout, status


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_revealed_types() -> None:
    source = HERE / "reveal_rides.py"
    expected = {
        number + 1: line.split("# R: ", 1)[1]
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1)
        if line.lstrip().startswith("# R: ")
    }
    stdout, status = run_mypy(source)
    revealed = {
        int(m.group("line")): m.group("type")
        for m in map(REVEALED.match, stdout.splitlines())
        if m is not None
    }
    assert revealed == expected
    assert status == 0, stdout


def test_negative_app_reports_each_mistake() -> None:
    stdout, status = run_mypy(HERE / "negative.py")
    assert status == 1
    assert stdout == (HERE / "negative.expected").read_text(encoding="utf-8")
