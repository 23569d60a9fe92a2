"""The vLLM comparison's targets and tables, from figures given here (no server runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autoglm_server.bench import agent_bench, vllm_bench


def _run(rate: float, ttft: float) -> dict[str, Any]:
    stats = {"p50": ttft, "p90": ttft, "p99": ttft * 2, "mean": ttft}
    return {"tokens_per_s": rate, "ttft_ms": stats, "itl_ms": {"p50": 5.0, "p99": 9.0}}


def test_targets_are_medians_of_per_round_ratios() -> None:
    samples = {
        vllm_bench.GRPC: [_run(110, 50), _run(90, 60), _run(100, 40)],
        vllm_bench.HTTP: [_run(90, 60), _run(95, 70), _run(93, 40)],
        vllm_bench.PEER: [_run(100, 50), _run(100, 50), _run(100, 50)],
    }
    by_name = {t["target"]: t for t in vllm_bench.targets(samples)}
    grpc = by_name["daemon gRPC / vLLM server, tokens/s"]
    assert grpc["rounds"] == [1.1, 0.9, 1.0]
    assert grpc["ratio"] == 1.0
    assert grpc["met"]
    http = by_name["daemon HTTP / vLLM server, tokens/s"]
    assert http["ratio"] == 0.93
    assert not http["met"]
    ttft = by_name["daemon HTTP / vLLM server, TTFT p50"]
    assert ttft["ratio"] == 1.2
    assert not ttft["met"]
    assert by_name["daemon gRPC / vLLM server, TTFT p50"]["met"]


def test_the_report_lists_every_run_and_target(tmp_path: Path) -> None:
    samples = {name: [_run(100, 50)] for name in (vllm_bench.GRPC, vllm_bench.HTTP, vllm_bench.PEER)}
    result = {
        "model": "m",
        "dtype": "bfloat16",
        "concurrency": 32,
        "prompt_tokens": 64,
        "max_new_tokens": 64,
        "runs": {name: vllm_bench._best(reports) for name, reports in samples.items()},
        "targets": vllm_bench.targets(samples),
        "started_s": {"daemon": 3.0, "vLLM server": 40.0},
    }
    written = vllm_bench.write(result, tmp_path)
    assert json.loads(written[0].read_text())["runs"][vllm_bench.PEER]["samples"] == [100]
    table = written[1].read_text()
    assert f"| {vllm_bench.GRPC} | 100.0 | 100.0 | 50.0 | 100.0 | 5.0 | 9.0 |" in table
    assert table.count("| yes |") == 4


def _agent_round(ttft_last: float) -> dict[str, Any]:
    step = {"ttft_ms": {"p50": ttft_last, "p99": ttft_last}, "e2e_ms": {"p50": 1.0}, "prompt_tokens_mean": 9}
    return {"steps": [{**step, "messages": 2}]}


def test_the_agent_target_compares_the_last_step_with_and_without_the_prefix_cache() -> None:
    result = {
        "workload": {"steps": 1},
        "runs": {
            agent_bench.PREFIX_ON: [_agent_round(20.0), _agent_round(40.0)],
            agent_bench.PREFIX_OFF: [_agent_round(100.0), _agent_round(100.0)],
        },
    }
    (target,) = agent_bench.targets(result)
    assert target["rounds"] == [0.2, 0.4]
    assert target["ratio"] == 0.3
    assert target["met"]
    assert agent_bench.targets({"workload": {"steps": 1}, "runs": {agent_bench.BUILTIN: []}}) == []
