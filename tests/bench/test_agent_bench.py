"""The agent benchmark and the OpenAI load generator against a real built-in daemon (HTTP front door)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoglm_client.loadgen import make_requests
from autoglm_server.bench import agent_bench, openai_load, processes
from autoglm_server.bench.agent import AgentWorkload, run_agent
from tests.helpers.daemon import Daemon, running_daemon

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon("--model", "builtin:tiny", "--dtype", "float32", "--auth", "disabled") as running:
        yield running


async def test_history_grows_every_step_and_every_reply_has_its_length(daemon: Daemon) -> None:
    workload = AgentWorkload(sessions=2, steps=3, system_chars=200, reply_tokens=4)
    outcome = await run_agent(daemon.http_url, workload)
    steps = outcome["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert all(s["sessions"] == 2 for s in steps)
    # system + k user messages + (k - 1) kept replies
    assert [s["messages"] for s in steps] == [2, 4, 6]
    prompts = [s["prompt_tokens_mean"] for s in steps]
    assert prompts[0] > 200  # the system prompt is in every request
    assert prompts[0] < prompts[1] < prompts[2]
    assert all(s["completion_tokens_mean"] == 4 for s in steps)
    # Read from the usage chunk: the built-in engine's prefix cache serves the shared system prompt
    # (to the session that comes second) and each session's history from step 2 on.
    cached = [s["cached_prompt_tokens_mean"] for s in steps]
    assert 0 <= cached[0] < prompts[0]
    assert 200 < cached[1] < cached[2] < prompts[2]
    assert all(sample["cached_prompt_tokens"] % 32 == 0 for sample in outcome["samples"])
    for sample in outcome["samples"]:
        assert 0 < sample["ttft_ms"] <= sample["e2e_ms"]
    assert len(outcome["samples"]) == 6


async def test_openai_load_counts_every_token_of_every_request(daemon: Daemon) -> None:
    client = openai_load.make_client(daemon.http_url)
    try:
        model = openai_load.served_model(await client.models.list())
    finally:
        await client.close()
    requests = make_requests(5, prompt_tokens=(8, 8), max_new_tokens=(6, 6), vocab_size=256, seed=0)
    report = await openai_load.run_openai_load(daemon.http_url, requests, concurrency=2, model=model)
    assert report.errors == {}
    assert report.completed == 5
    assert report.generated_tokens == 30
    assert report.tokens_per_s > 0
    assert report.ttft_ms.count == 5
    assert report.ttft_ms.p50 > 0
    assert report.itl_ms.count > 0


async def test_openai_load_counts_refusals_by_status(daemon: Daemon) -> None:
    requests = make_requests(2, prompt_tokens=(4, 4), max_new_tokens=(2, 2), vocab_size=256, seed=0)
    report = await openai_load.run_openai_load(daemon.http_url, requests, concurrency=1, model="no-such-model")
    assert report.completed == 0
    assert sum(report.errors.values()) == 2
    assert all(name.startswith("HTTP 4") for name in report.errors)


def test_the_cli_runs_the_builtin_agent_workload_and_writes_its_report(tmp_path: Path) -> None:
    argv = [
        "--agent", "--model", "builtin:tiny", "--dtype", "float32", "--output-dir", str(tmp_path),
        "--sessions", "2", "--steps", "2", "--system-chars", "120", "--reply-tokens", "3", "--prefix-caching", "on",
    ]  # fmt: skip
    assert agent_bench.main(argv) == 0  # the cache on only: no on / off target applies
    data = json.loads((tmp_path / "agent.json").read_text())
    on = agent_bench.BUILTIN_ON
    assert list(data["runs"]) == [on]
    assert len(data["runs"][on]) == 1
    summary = data["summary"][on]
    assert [row["step"] for row in summary] == [1, 2]
    assert summary[0]["prompt_tokens_mean"] < summary[1]["prompt_tokens_mean"]
    assert summary[0]["cached_prompt_tokens_mean"] < summary[1]["cached_prompt_tokens_mean"]
    assert data["targets"] == []
    table = (tmp_path / "agent.md").read_text()
    assert f"| step | prompt tokens | {on}: cached share | {on} TTFT | {on} TTFT p95 | {on} e2e |" in table
    assert "| 2 | " in table
    assert "Generated tokens/s" in table


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_stop_leaves_no_child_of_the_server_behind(tmp_path: Path) -> None:
    # A stand-in for vLLM's server: a leader that spawns a worker (as vLLM spawns its engine core);
    # SIGTERM ends the leader only, so stop() must reach the worker through the process group.
    pid_file = tmp_path / "child.pid"
    script = (
        "import pathlib, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    process = processes.spawn([sys.executable, "-c", script], tmp_path / "log")
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, (tmp_path / "log").read_text()
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert _alive(child)
    processes.stop(process)
    assert process.poll() is not None
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
