"""The README's demo, ``python -m examples.rides``, runs end to end over QUIC and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_rides_demo_delivers_every_event() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.rides"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    *events, summary = done.stdout.splitlines()
    assert summary == "subscriber received all 7 events"
    # Topics travel on separate QUIC streams, so only each topic's own order is guaranteed.
    assert sorted(events) == sorted(
        [
            "ride 42 requested (comfort, 14.90 EUR)",
            "driver at 52.5200,13.4050 doing 32.5 km/h",
            "ride 42 is driver_assigned, eta 240 s",
            "ride 42 is arriving, eta 30 s",
            "ride 42 is in_progress, eta 600 s",
            "ride 42 is completed",
            "receipt: 14.90 EUR (base 3.50, distance 11.40)",
        ]
    )
    statuses = [line for line in events if line.startswith("ride 42 is")]
    assert [line.split()[3].rstrip(",") for line in statuses] == [
        "driver_assigned",
        "arriving",
        "in_progress",
        "completed",
    ]


def test_quickstart_trusts_the_dev_certificate_and_follows_one_ride() -> None:
    # docs/schema.md, "Getting started", walks through this file.
    done = subprocess.run(
        [sys.executable, "-m", "examples.quickstart"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ride 42 is arriving\n"
