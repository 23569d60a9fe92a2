"""`autoglm-server bench --agent`: the agent workload per step with prefix caching on and off, on the
built-in engine (`--engine builtin`) or on vLLM with the built-in engine (its default settings, cache
on) as the baseline, on one model (a text model, or GLM-4.1V with a screenshot per step: both
engines serve it).

Every server under test is started once and kept up for the whole run; each round runs the workload
against every server in turn (so a pair sees the same load from elsewhere on a shared machine), and
the target is the median over rounds of the step-10 TTFT ratio within a round.

Every server reports per request how many prompt tokens its prefix cache served (OpenAI's
usage.prompt_tokens_details.cached_tokens), so the report shows the cached share of each step's
prompt with the cache on, and the floor that share puts under the TTFT ratio: with a fraction c of
the prompt cached, the server still prefills 1 - c of it, so TTFT on / off cannot fall much below
1 - c (fixed per-request costs and attention over the cached context only raise the ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from autoglm_server.bench import vllm_options
from autoglm_server.bench.agent import AgentWorkload, run_agent
from autoglm_server.bench.processes import Server, running_daemon, start_all

log = logging.getLogger("autoglm_server.bench")

BUILTIN = "builtin"  # the baseline of --engine vllm: the built-in engine as the daemon defaults it
PREFIX_ON = "vllm prefix cache on"
PREFIX_OFF = "vllm prefix cache off"
BUILTIN_ON = "builtin prefix cache on"
BUILTIN_OFF = "builtin prefix cache off"
# Each engine's (cache on, cache off) pair of runs: a target where both ran.
PAIRS = ((PREFIX_ON, PREFIX_OFF), (BUILTIN_ON, BUILTIN_OFF))
TTFT_TARGET = 0.3  # step-10 TTFT with prefix caching / without, at most (text histories)
# With a new screenshot per step the cache can hold only what precedes it (Open-AutoGLM drops the
# previous screenshot), so the floor is 1 - cached share (~0.5): the target is that caching never costs.
TTFT_TARGET_SCREENSHOTS = 1.0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoglm-server bench --agent",
        description="Agent sessions re-sending their growing history: TTFT and end-to-end per step.",
    )
    parser.add_argument("--agent", action="store_true", required=True, help="run the agent benchmark")
    vllm_options.add_vllm_options(parser)
    parser.add_argument(
        "--engine",
        default=BUILTIN,
        choices=[BUILTIN, "vllm"],
        help="builtin: the built-in engine only; vllm: vLLM and the builtin baseline (see --prefix-caching)",
    )
    parser.add_argument(
        "--prefix-caching",
        default="both",
        choices=["on", "off", "both"],
        help="the runs of the engine under test (--engine): prefix cache on, off, or both side by side",
    )
    parser.add_argument(
        "--vllm-target",
        default="daemon",
        choices=["daemon", "server"],
        help="daemon: this daemon with --engine vllm; server: vLLM's own OpenAI server",
    )
    parser.add_argument("--no-baseline", action="store_true", help="with --engine vllm, skip the builtin run")
    parser.add_argument("--vision", default="auto", choices=["auto", "on", "off"], help="screenshots per step")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--system-chars", type=int, default=2500, help="length of the system prompt")
    parser.add_argument("--reply-tokens", type=int, default=64, help="tokens of every reply (ignore_eos)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the workload on every server")
    return parser


def main(argv: list[str]) -> int:
    """Run the agent benchmark; 0 when the targets are met (or none applies), 1 if missed, 2 on errors."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    vllm_options.quiet_http_logs()
    try:
        result = run(args)
    except (RuntimeError, ValueError) as exc:
        print(f"autoglm-server bench --agent: {exc}", file=sys.stderr)
        return 2
    for path in write(result, args.output_dir):
        print(f"wrote {path}")
    print(markdown(result))
    return 0 if all(t["met"] for t in result["targets"]) else 1


def workload_of(args: argparse.Namespace, run_id: int = 0) -> AgentWorkload:
    vision = vllm_options.is_vision_model(args.model) if args.vision == "auto" else args.vision == "on"
    return AgentWorkload(
        sessions=args.sessions,
        steps=args.steps,
        system_chars=args.system_chars,
        reply_tokens=args.reply_tokens,
        vision=vision,
        run_id=run_id,
    )


def _runs(args: argparse.Namespace) -> list[str]:
    on, off = PAIRS[0] if args.engine == "vllm" else PAIRS[1]
    names = [BUILTIN] if args.engine == "vllm" and not args.no_baseline else []
    return names + {"on": [on], "off": [off], "both": [on, off]}[args.prefix_caching]


@contextlib.contextmanager
def _server(args: argparse.Namespace, name: str, max_running: int) -> Iterator[Server]:
    if name in (BUILTIN, BUILTIN_ON, BUILTIN_OFF):
        flags = vllm_options.daemon_args(
            args, engine=BUILTIN, max_running=max_running, prefix_caching=name != BUILTIN_OFF
        )
        with running_daemon(name, sys.executable, args.model, flags) as server:
            yield server
        return
    prefix = name == PREFIX_ON
    env = vllm_options.vllm_env(args)
    python = vllm_options.vllm_python(args)
    if args.vllm_target == "server":
        from autoglm_server.bench.peer import running_vllm_server

        peer = vllm_options.peer_args(args, max_running=max_running, prefix_caching=prefix)
        with running_vllm_server(name, python, args.model, peer, env) as server:
            yield server
        return
    flags = vllm_options.daemon_args(args, engine="vllm", max_running=max_running, prefix_caching=prefix)
    with running_daemon(name, python, args.model, flags, env) as server:
        yield server


def run(args: argparse.Namespace) -> dict[str, Any]:
    from autoglm_server.bench import report

    names = _runs(args)
    workload = workload_of(args)
    info = report.machine()
    result: dict[str, Any] = {
        "model": args.model,
        "dtype": args.dtype,
        "device": args.device,
        "vllm_target": args.vllm_target,
        "workload": asdict(workload),
        "rounds": args.rounds,
        "runs": {name: [] for name in names},
        "started_s": {},
    }
    with contextlib.ExitStack() as stack:
        servers = start_all(stack, {name: _server(args, name, max(32, args.sessions)) for name in names})
        result["started_s"] = {name: server.started_s for name, server in servers.items()}
        for round_ in range(max(1, args.rounds)):
            for name in names:
                log.info("round %d: %s", round_ + 1, name)
                outcome = asyncio.run(run_agent(servers[name].http_url, workload_of(args, run_id=round_)))
                result["runs"][name].append(outcome)
    info["load_average_1m_at_end"] = os.getloadavg()[0]
    result["machine"] = info
    result["summary"] = {name: summarize(rounds) for name, rounds in result["runs"].items()}
    result["tokens_per_s"] = {
        name: round(statistics.median(r.get("tokens_per_s", 0.0) for r in rounds), 1)
        for name, rounds in result["runs"].items()
    }
    result["targets"] = targets(result)
    result["cache_bound"] = cache_bound(result["summary"])
    return result


def _median_known(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarize(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per step, the median over rounds of the sessions' TTFT p50, e2e p50, prompt length and cached
    prompt tokens (None when the server never reported them)."""
    steps = len(rounds[0]["steps"])
    rows = []
    for index in range(steps):
        per_round = [r["steps"][index] for r in rounds]
        rows.append(
            {
                "step": index + 1,
                "ttft_p50_ms": statistics.median(s["ttft_ms"]["p50"] for s in per_round),
                "ttft_p95_ms": _median_known([s.get("ttft_p95_ms") for s in per_round]),
                "ttft_max_ms": statistics.median(s["ttft_ms"]["p99"] for s in per_round),
                "e2e_p50_ms": statistics.median(s["e2e_ms"]["p50"] for s in per_round),
                "prompt_tokens_mean": statistics.median(s["prompt_tokens_mean"] for s in per_round),
                "cached_prompt_tokens_mean": _median_known([s.get("cached_prompt_tokens_mean") for s in per_round]),
                "messages": per_round[0]["messages"],
            }
        )
    return rows


def _cache_on_run(summary: dict[str, Any]) -> str | None:
    """The run whose cache figures the report shows: vLLM's prefix-on run, else the built-in one's."""
    return next((name for name in (PREFIX_ON, BUILTIN_ON) if name in summary), None)


def cached_shares(summary: dict[str, list[dict[str, Any]]], name: str | None = None) -> list[float | None] | None:
    """Per step, cached / prompt tokens of a prefix-on run (`name`, else the one the report shows);
    None without that run."""
    name = name or _cache_on_run(summary)
    rows = summary.get(name) if name is not None else None
    if rows is None:
        return None
    shares: list[float | None] = []
    for row in rows:
        cached, prompt = row.get("cached_prompt_tokens_mean"), row["prompt_tokens_mean"]
        shares.append(cached / prompt if cached is not None and prompt > 0 else None)
    return shares


def cache_bound(summary: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The last step's cached share with the cache on, and the TTFT ratio floor it implies."""
    shares = cached_shares(summary)
    if not shares or shares[-1] is None:
        return None
    return {
        "step": len(shares),
        "cached_share": round(shares[-1], 3),
        "ttft_ratio_floor": round(1.0 - shares[-1], 3),
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per engine whose cache ran both on and off: the last step's TTFT p50 on / off."""
    runs = result["runs"]
    out = []
    for on_name, off_name in PAIRS:
        if on_name not in runs or off_name not in runs:
            continue
        ratios = [
            on["steps"][-1]["ttft_ms"]["p50"] / off["steps"][-1]["ttft_ms"]["p50"]
            for on, off in zip(runs[on_name], runs[off_name], strict=True)
        ]
        ratio = round(statistics.median(ratios), 3)  # judged as shown
        steps = result["workload"]["steps"]
        maximum = TTFT_TARGET_SCREENSHOTS if result["workload"].get("vision") else TTFT_TARGET
        engine = "" if on_name == PREFIX_ON else "builtin "
        out.append(
            {
                "target": f"step-{steps} TTFT p50, {engine}prefix cache on / off",
                "ratio": ratio,
                "rounds": [round(r, 3) for r in ratios],
                "maximum": maximum,
                "met": ratio <= maximum,
            }
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    names = list(result["summary"])
    workload = result["workload"]
    shares = cached_shares(result["summary"])
    share_column = shares is not None and any(s is not None for s in shares)
    share_name = _cache_on_run(result["summary"])
    lines = [
        f"### agent: {result['model']} ({result['dtype']}, {'screenshots' if workload['vision'] else 'text only'})",
        "",
        f"{workload['sessions']} sessions x {workload['steps']} steps, system prompt {workload['system_chars']} "
        f"characters, replies of {workload['reply_tokens']} tokens; median of {result['rounds']} round(s); "
        f"vLLM as `{result['vllm_target']}`. TTFT p50 / p95 and end-to-end p50 over the sessions, in ms.",
        "",
        "| step | prompt tokens | "
        + (f"{share_name}: cached share | " if share_column else "")
        + " | ".join(f"{n} TTFT | {n} TTFT p95 | {n} e2e" for n in names)
        + " |",
        "|---:|---:|" + ("---:|" if share_column else "") + "---:|---:|---:|" * len(names),
    ]
    first = result["summary"][names[0]]
    for index, row in enumerate(first):
        cells = [str(row["step"]), f"{row['prompt_tokens_mean']:.0f}"]
        if share_column:
            assert shares is not None
            share = shares[index]
            cells.append("n/a" if share is None else f"{share:.0%}")
        for name in names:
            step = result["summary"][name][index]
            p95 = step.get("ttft_p95_ms")
            cells += [f"{step['ttft_p50_ms']:.1f}", "n/a" if p95 is None else f"{p95:.1f}", f"{step['e2e_p50_ms']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    started = ", ".join(f"{n} {s:.1f} s" for n, s in result["started_s"].items())
    rates = ", ".join(f"{n} {v:.1f}" for n, v in result.get("tokens_per_s", {}).items())
    lines += ["", f"Start-up to healthy: {started}.", "", f"Generated tokens/s (all sessions, wall time): {rates}."]
    load = result.get("machine", {}).get("load_average_1m_at_end")
    if load is not None:
        lines += ["", f"1-minute load average at the end: {load:.1f}."]
    if result["targets"]:
        lines += ["", "| target | ratio | rounds | maximum | met |", "|---|---:|---|---:|---|"]
        for t in result["targets"]:
            rounds = ", ".join(f"{r:.2f}" for r in t["rounds"])
            lines.append(
                f"| {t['target']} | {t['ratio']:.2f} | {rounds} | {t['maximum']} | {'yes' if t['met'] else 'NO'} |"
            )
    bound = cache_bound(result["summary"])
    if bound is not None:
        lines += [
            "",
            f"At step {bound['step']} the prefix cache served {bound['cached_share']:.0%} of the prompt, so "
            f"{bound['ttft_ratio_floor']:.0%} of it is still prefilled: TTFT on / off cannot go much below "
            f"{bound['ttft_ratio_floor']:.2f} there.",
        ]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], output_dir: Path) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "agent.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path = output_dir / "agent.md"
    md_path.write_text(markdown(result))
    return [json_path, md_path]
