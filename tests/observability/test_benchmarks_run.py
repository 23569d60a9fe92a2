"""The observability benchmarks still run end to end (tiny sizes; the figures are not checked)."""

from __future__ import annotations

import pytest

from tests.observability import bench_observer_cost, bench_overhead


def test_overhead_benchmark_runs_and_its_checks_pass(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--rounds", "2", "--requests", "3", "--concurrency", "2", "--max-new-tokens", "2"]
    assert bench_overhead.main(argv) == 0  # 0 also means every span arrived and every call was counted
    out = capsys.readouterr().out
    assert "on/off ratio: median" in out
    # (2 rounds x 3 requests + 2 warm-up) calls, each with its RPC span and three phase spans
    assert "32 spans received, 8 OK counted" in out


def test_observer_cost_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_observer_cost.main(["--requests", "20", "--tokens", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "160 spans received" in out  # 20 calls x 4 spans, in the two configurations with tracing
