"""The migration benchmark runs end to end at a tiny size, so it cannot rot.

No speed is asserted; what must hold at any size is that the default server loses nothing
and never reconnects when the relay moves the connection.
"""

import pytest

from bench.migration import main


@pytest.mark.timeout(60)
def test_migration_bench_runs_and_loses_nothing(capsys):
    rows = main(
        [
            *("--runs", "1", "--seconds", "1", "--changes", "2", "--delays", "0"),
            *("--ways", "drop", "--server-backend", "aioquic"),
        ]
    )
    assert [(r["way"], r["lost"], r["reconnects"]) for r in rows] == [("drop", 0, 0)]
    assert "| 0 ms | drop |" in capsys.readouterr().out
