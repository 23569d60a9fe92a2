"""Print p95 TTFT and queue-depth spread per routing policy over N daemons (docs/benchmarks.md).

    .venv/bin/python -m tests.routing.bench_routing [--pods 3] [--sessions 12] [--seed 1]

Starts N daemons (built-in engine, builtin:tiny, --max-running 2) on 127.0.0.1 and plays the same
skewed agent workload through each policy of tests/routing/harness.py in turn: the llm-d router's
default scoring (a harness of its published behaviour, not a router we ship), round-robin and the
session hash. Figures depend on the machine; the table is what docs/benchmarks.md records.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from contextlib import ExitStack

from tests.helpers.daemon import running_daemon
from tests.routing.harness import (
    LoadPrefixScorer,
    Policy,
    RoundRobin,
    RunResult,
    SessionHash,
    Step,
    agent_workload,
    percentile,
    run_policy,
)

MODEL = "builtin:tiny"


def row(result: RunResult) -> str:
    spread = result.queue_spread or [0.0]
    p50, p95 = (percentile(result.ttft_s, q) * 1000 for q in (0.50, 0.95))
    return (
        f"| {result.policy} | {p50:.0f} | {p95:.0f}"
        f" | {statistics.fmean(spread):.2f} | {percentile(spread, 0.95):.0f} | {max(spread):.0f}"
        f" | {'/'.join(str(n) for n in result.per_pod)} | {result.affinity:.2f} | {len(result.failures)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--hot", type=int, default=3, help="busy sessions: many steps, long answers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-running", type=int, default=2)
    args = parser.parse_args()
    sessions = agent_workload(args.sessions, args.seed, hot_steps=10, cold_steps=3, hot=args.hot)
    with ExitStack() as stack:
        daemons = [
            stack.enter_context(running_daemon("--auth", "disabled", "--max-running", str(args.max_running)))
            for _ in range(args.pods)
        ]
        roots = [f"http://127.0.0.1:{d.http_port}" for d in daemons]
        policies: list[Policy] = [LoadPrefixScorer(args.pods, args.seed), RoundRobin(args.pods), SessionHash(args.pods)]
        results = [asyncio.run(_run(policy, roots, sessions)) for policy in policies]
    steps = sum(len(s) for s in sessions)
    print(f"{args.pods} daemons ({MODEL}, --max-running {args.max_running}), {args.sessions} sessions"
          f" ({args.hot} hot), {steps} steps, seed {args.seed}")  # fmt: skip
    print("| policy | TTFT p50 ms | TTFT p95 ms | queue spread mean | spread p95 | spread max | steps per pod"
          " | same pod as previous step | failures |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for result in results:
        print(row(result))


async def _run(policy: Policy, roots: list[str], sessions: list[list[Step]]) -> RunResult:
    return await run_policy(policy, roots, MODEL, sessions)


if __name__ == "__main__":
    main()
