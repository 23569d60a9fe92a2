"""The benchmark's report: the keys bench.json promises, the targets, the table. No model runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autoglm_server.bench import report


def fake_result() -> dict[str, Any]:
    def run(concurrency: int, rate: float) -> dict[str, Any]:
        stats = {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.5}
        return {"concurrency": concurrency, "tokens_per_s": rate, "ttft_ms": stats, "itl_ms": stats}

    result: dict[str, Any] = {
        "model": "builtin:tiny",
        "dtype": "float32",
        "device": "cpu",
        "torch_threads": 1,
        "ceiling": {"tokens_per_s": 1000.0},
        "serial": {"tokens_per_s": 100.0},
        "padded": {"tokens_per_s": 500.0},
        "daemon": [run(1, 95.0), run(8, 600.0), run(32, 850.0)],
        "mixed": run(32, 560.0),
        "machine": {"cpu": "test"},
    }
    result["targets"] = report.targets(result)
    return result


def test_targets_compare_the_right_runs() -> None:
    by_name = {t["target"]: t for t in fake_result()["targets"]}
    assert by_name["daemon at 32 vs ceiling"]["ratio"] == 0.85
    assert not by_name["daemon at 32 vs ceiling"]["met"]
    assert by_name["daemon at 1 vs serial"]["met"]
    assert by_name["mixed vs padded"]["ratio"] == 1.12
    assert by_name["mixed vs padded"]["met"]


def test_write_produces_json_markdown_and_chart(tmp_path: Path) -> None:
    written = report.write(fake_result(), tmp_path)
    data = json.loads((tmp_path / "bench.json").read_text())
    for key in ("ceiling", "serial", "padded", "mixed"):
        assert data[key]["tokens_per_s"] > 0
    assert [d["concurrency"] for d in data["daemon"]] == [1, 8, 32]
    assert {"p50", "p99"} <= set(data["daemon"][0]["ttft_ms"])
    assert {"p50", "p99"} <= set(data["daemon"][0]["itl_ms"])
    table = (tmp_path / "bench.md").read_text()
    assert "| daemon at 32 | 850.0 |" in table
    assert "| daemon at 32 vs ceiling | 0.85 | 0.85 | 0.9 | NO |" in table
    assert tmp_path / "bench.png" in written
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")
