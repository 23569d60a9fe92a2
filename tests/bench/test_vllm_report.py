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


def test_with_screenshots_the_agent_target_is_that_the_cache_never_costs() -> None:
    runs = {agent_bench.PREFIX_ON: [_agent_round(70.0)], agent_bench.PREFIX_OFF: [_agent_round(100.0)]}
    (met,) = agent_bench.targets({"workload": {"steps": 1, "vision": True}, "runs": runs})
    assert (met["ratio"], met["maximum"], met["met"]) == (0.7, 1.0, True)
    (text,) = agent_bench.targets({"workload": {"steps": 1, "vision": False}, "runs": runs})
    assert (text["maximum"], text["met"]) == (0.3, False)
    slower = {agent_bench.PREFIX_ON: [_agent_round(110.0)], agent_bench.PREFIX_OFF: [_agent_round(100.0)]}
    (missed,) = agent_bench.targets({"workload": {"steps": 1, "vision": True}, "runs": slower})
    assert not missed["met"]


def _agent_result(
    runs: dict[str, Any], summary: dict[str, Any], target: str, *, sessions: int, steps: int, rounds: int
) -> dict[str, Any]:
    return {
        "model": "m",
        "dtype": "bfloat16",
        "vllm_target": target,
        "workload": {"sessions": sessions, "steps": steps, "system_chars": 100, "reply_tokens": 4, "vision": False},
        "rounds": rounds,
        "runs": runs,
        "summary": summary,
        "targets": [],
        "started_s": {},
    }


def _agent_steps(ttft: float, prompts: list[int], cached: list[float | None]) -> dict[str, Any]:
    return {
        "steps": [
            {
                "ttft_ms": {"p50": ttft, "p99": ttft},
                "e2e_ms": {"p50": ttft * 2},
                "prompt_tokens_mean": prompt,
                "cached_prompt_tokens_mean": hit,
                "messages": 2 * index + 2,
            }
            for index, (prompt, hit) in enumerate(zip(prompts, cached, strict=True))
        ]
    }


def test_the_agent_report_shows_the_cached_share_and_the_floor_it_puts_under_the_ratio() -> None:
    prompts = [400, 800]
    runs = {
        agent_bench.BUILTIN: [_agent_steps(90.0, prompts, [0, 0])],
        # The median over rounds: 0 and 512 at step 1, 640 and 704 at step 2 (one round did not say).
        agent_bench.PREFIX_ON: [
            _agent_steps(20.0, prompts, [0, 640]),
            _agent_steps(30.0, prompts, [None, 704]),
            _agent_steps(25.0, prompts, [512, None]),
        ],
        agent_bench.PREFIX_OFF: [_agent_steps(100.0, prompts, [0, 0]) for _ in range(3)],
    }
    summary = {name: agent_bench.summarize(rounds) for name, rounds in runs.items()}
    assert [row["cached_prompt_tokens_mean"] for row in summary[agent_bench.PREFIX_ON]] == [256, 672]
    assert agent_bench.cached_shares(summary) == [0.64, 0.84]
    bound = agent_bench.cache_bound(summary)
    assert bound == {"step": 2, "cached_share": 0.84, "ttft_ratio_floor": 0.16}
    table = agent_bench.markdown(_agent_result(runs, summary, "server", sessions=2, steps=2, rounds=3))
    assert f"| step | prompt tokens | {agent_bench.PREFIX_ON}: cached share | builtin TTFT |" in table
    assert "| 1 | 400 | 64% | 90.0 |" in table
    assert "| 2 | 800 | 84% | 90.0 |" in table
    assert "TTFT on / off cannot go much below 0.16 there." in table


def test_without_cache_figures_the_agent_report_has_no_share_column() -> None:
    # A prefix-on server that never reported cached tokens: no made-up 0% column, no floor.
    runs = {agent_bench.PREFIX_ON: [_agent_steps(20.0, [400], [None])]}
    summary = {name: agent_bench.summarize(rounds) for name, rounds in runs.items()}
    assert agent_bench.cache_bound(summary) is None
    table = agent_bench.markdown(_agent_result(runs, summary, "daemon", sessions=1, steps=1, rounds=1))
    assert "cached share" not in table
    assert "cannot go much below" not in table


def test_each_engine_runs_its_cache_on_and_off_and_vllm_keeps_the_builtin_baseline() -> None:
    def runs(*argv: str) -> list[str]:
        return agent_bench._runs(
            agent_bench.parser().parse_args(["--agent", "--model", "m", "--output-dir", "out", *argv])
        )

    assert runs() == [agent_bench.BUILTIN_ON, agent_bench.BUILTIN_OFF]
    assert runs("--prefix-caching", "off") == [agent_bench.BUILTIN_OFF]
    assert runs("--engine", "vllm") == [agent_bench.BUILTIN, agent_bench.PREFIX_ON, agent_bench.PREFIX_OFF]
    assert runs("--engine", "vllm", "--no-baseline", "--prefix-caching", "on") == [agent_bench.PREFIX_ON]


def test_the_builtin_pair_gets_its_own_target_and_share_column() -> None:
    runs = {agent_bench.BUILTIN_ON: [_agent_round(60.0)], agent_bench.BUILTIN_OFF: [_agent_round(100.0)]}
    (target,) = agent_bench.targets({"workload": {"steps": 1, "vision": True}, "runs": runs})
    assert target["target"] == "step-1 TTFT p50, builtin prefix cache on / off"
    assert (target["ratio"], target["met"]) == (0.6, True)
    prompts = [400, 800]
    steps = {
        agent_bench.BUILTIN_ON: [_agent_steps(20.0, prompts, [0, 384])],
        agent_bench.BUILTIN_OFF: [_agent_steps(30.0, prompts, [0, 0])],
    }
    summary = {name: agent_bench.summarize(rounds) for name, rounds in steps.items()}
    assert agent_bench.cached_shares(summary) == [0.0, 0.48]
    table = agent_bench.markdown(_agent_result(steps, summary, "daemon", sessions=2, steps=2, rounds=1))
    assert f"| step | prompt tokens | {agent_bench.BUILTIN_ON}: cached share |" in table
    assert "| 2 | 800 | 48% |" in table
