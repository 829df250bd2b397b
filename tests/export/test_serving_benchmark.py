"""`benchmarks/serving.py` end to end with tiny settings: both servers start, every level answers."""

import pytest

from benchmarks import serving

pytestmark = pytest.mark.slow  # two `keras-vit serve` subprocesses


def test_benchmark_runs_bounded_with_batching_off_and_on():
    report = serving.run(clients=[1, 3], seconds=0.5, max_requests=30, depth=1)
    assert [(r["batching"], r["clients"]) for r in report["rows"]] == [("off", 1), ("off", 3), ("on", 1), ("on", 3)]
    for row in report["rows"]:
        assert row["errors"] == 0 and 0 < row["requests"] <= 30
        assert row["requests_per_second"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    table = serving.markdown(report)
    assert table.count("\n") == 1 + len(report["rows"]) and "| on | 3 |" in table
