"""The benchmark harness runs end to end at tiny sizes, so it cannot rot.

Nothing here asserts a speed: the figures of a tiny run mean nothing. It checks that every
scenario produces rows without failures and that the table, JSON and plot are written.
"""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("websockets")
pytest.importorskip("qh3")

from bench.cli import main


@pytest.mark.timeout(60)
def test_harness_runs_every_scenario_at_tiny_sizes(tmp_path):
    results = main(
        [
            "--smoke",
            "--scenarios",
            "fanout,paced,memory,typed,hol",
            "--targets",
            "qsse/1,qsse/2@qh3:light,websockets",
            "--fanout-n",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    rows = results["rows"]
    assert [r for r in rows if r["errors"]] == []
    seen = {(r["scenario"], r["target"]) for r in rows}
    for scenario in ("fanout", "paced", "memory", "hol"):
        assert (scenario, "qsse/1") in seen
        assert (scenario, "websockets") in seen
    fanout = next(r for r in rows if r["scenario"] == "fanout" and r["target"] == "qsse/1")
    assert fanout["summary"]["events_s"]["median"] > 0
    paced = next(r for r in rows if r["scenario"] == "paced" and r["target"] == "qsse/1")
    assert paced["summary"]["received"]["median"] == 1.0
    assert math.isfinite(paced["summary"]["p99_ms"]["median"])
    assert any(r["scenario"] == "typed" for r in rows)
    # qsse on qh3, read by the bare qsse/2 receiver.
    light = next(r for r in rows if r["scenario"] == "fanout" and r["target"] == "qsse/2@qh3:light")
    assert light["summary"]["events_s"]["median"] > 0

    assert json.loads((tmp_path / "results.json").read_text())["rows"]
    table = (tmp_path / "results.md").read_text()
    assert "### (1) Fan-out" in table and "### (5) Head-of-line" in table
    assert (tmp_path / "plot.png").stat().st_size > 0


@pytest.mark.timeout(120)
def test_memory_release_bench_runs_at_tiny_sizes():
    import subprocess
    import sys

    argv = [sys.executable, "-m", "bench.memory_release", "--backends", "aioquic"]
    argv += ["--subscribers", "3", "--events", "50", "--half-open", "5", "--offer-timeout", "1"]
    argv += ["--drain-limit", "10"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stderr.strip().splitlines()[-1])
    assert (row["connected"], row["received"], row["half_open"]["dialed"]) == (3, 150, 5)
    # Nothing of a subscriber is left once it is gone (QUIC may still be draining its
    # connection, so only qsse's own objects are asserted).
    held = row["held_left"]
    assert (held["_Session"], held["_Outbox"]) == (0, 0)
    assert "| aioquic |" in proc.stdout
