"""The agent workload: phone-agent sessions whose whole history is sent again at every step.

It follows how Open-AutoGLM's PhoneAgent talks to its model server (OpenAI chat completions,
streaming): the first message is a long system prompt; every step adds a user message (on a vision
model a new screenshot, then the task on the first step and the screen info as JSON); the reply is
kept in the history as the assistant's message; once a step is answered, its screenshot is removed
from the history, so only the newest step carries an image. Sampling is Open-AutoGLM's (temperature
0, top_p 0.85, frequency_penalty 0.2), with `ignore_eos` so that every reply has the same length on
every engine and histories grow alike.

Such a workload is what prefix caching is for: the prompt of step k starts with the prompt of step
k-1 up to its last user message, so a server that caches prefixes prefills only the new tail.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import openai

from autoglm_client.loadgen import Percentiles
from autoglm_server.bench import openai_load, screens

SAMPLING: dict[str, Any] = {"temperature": 0.0, "top_p": 0.85, "frequency_penalty": 0.2}

_APPS = ("Settings", "WeChat", "Maps", "Calendar", "Camera", "Clock", "Files", "Browser")

_RULES = (
    "You are a phone-operating agent. Each turn you see the current screen and decide on one action.",
    "Think step by step inside <think></think>, then give exactly one action inside <answer></answer>.",
    'Actions: do(action="Launch", app="NAME"); do(action="Tap", element=[x,y]); do(action="Type", text="...");',
    'do(action="Swipe", start=[x1,y1], end=[x2,y2]); do(action="Back"); do(action="Home"); finish(message="...").',
    "Coordinates run from [0,0] at the top left to [999,999] at the bottom right of the screen.",
    "Before typing, tap the input field first. If a page is still loading, wait and look again.",
    "If an action had no visible effect, try a different element instead of repeating the same tap.",
    "Never pay, delete data or send a message unless the task asks for it; ask the user if unsure.",
    "When the task is complete, answer with finish and a one-sentence summary of what was done.",
)


def system_prompt(chars: int) -> str:
    """A system prompt of exactly `chars` ASCII characters: numbered agent rules, repeated as needed."""
    lines: list[str] = []
    total = 0
    number = 0
    while total < chars:
        line = f"{number + 1}. {_RULES[number % len(_RULES)]}\n"
        lines.append(line)
        total += len(line)
        number += 1
    return "".join(lines)[:chars]


@dataclass(frozen=True)
class AgentWorkload:
    """Sizes of the agent benchmark (defaults: issue 11's 8 sessions x 10 steps, 2,500 characters)."""

    sessions: int = 8
    steps: int = 10
    system_chars: int = 2500
    reply_tokens: int = 64
    vision: bool = False
    screen_size: tuple[int, int] = screens.SCREEN_SIZE
    # Varies the tasks and screens between runs on one server, so that a later run cannot hit the
    # prefix cache left by an earlier one beyond what every run shares (the system prompt).
    run_id: int = 0

    def __post_init__(self) -> None:
        for name in ("sessions", "steps", "system_chars", "reply_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def task(session: int, run_id: int = 0) -> str:
    app = _APPS[session % len(_APPS)]
    return f"Task {run_id}.{session + 1}: open {app}, find the most recent item and share it with the first contact."


def screenshots(workload: AgentWorkload) -> dict[tuple[int, int], str]:
    """Every (session, step)'s screenshot as a data URL, made before the clock starts (PNG encoding
    a 1080x2400 screen takes the client's CPU, which must not delay the other sessions' streams)."""
    if not workload.vision:
        return {}
    return {
        (session, step): screens.data_url(
            screens.screenshot_png(workload.run_id * 1000 + session, step, workload.screen_size)
        )
        for session in range(workload.sessions)
        for step in range(1, workload.steps + 1)
    }


def user_message(workload: AgentWorkload, session: int, step: int, screen_url: str | None) -> dict[str, Any]:
    """Step `step` (1-based) of `session`: screen info (and the task on step 1), and the screenshot if any."""
    info = json.dumps({"current_app": _APPS[(session + step) % len(_APPS)]})
    text = f"{task(session, workload.run_id)}\n\n{info}" if step == 1 else f"** Screen Info **\n\n{info}"
    if screen_url is None:
        return {"role": "user", "content": text}
    url = screen_url
    return {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
    }


def without_images(message: dict[str, Any]) -> dict[str, Any]:
    """The message with its image parts removed (what the history keeps of an answered step)."""
    content = message["content"]
    if isinstance(content, str):
        return message
    return {**message, "content": [part for part in content if part.get("type") != "image_url"]}


@dataclass(frozen=True)
class StepSample:
    session: int
    step: int
    ttft_ms: float
    e2e_ms: float
    prompt_tokens: int
    completion_tokens: int
    messages: int  # how many messages the request carried
    error: str | None = None  # why the step failed (then its latencies are not counted)
    cached_prompt_tokens: int | None = None  # from the usage chunk; None when the server does not say


async def run_session(
    client: Any, model: str, workload: AgentWorkload, session: int, screens_by_step: dict[tuple[int, int], str]
) -> list[StepSample]:
    history: list[dict[str, Any]] = [{"role": "system", "content": system_prompt(workload.system_chars)}]
    samples = []
    for step in range(1, workload.steps + 1):
        message = user_message(workload, session, step, screens_by_step.get((session, step)))
        history.append(message)
        try:
            result = await openai_load.stream_chat(
                client,
                model=model,
                messages=history,
                max_tokens=workload.reply_tokens,
                sampling=SAMPLING,
                extra_body={"ignore_eos": True},
            )
        except openai.OpenAIError as exc:
            # The session goes on as an agent would after a failed call: the step stays unanswered.
            samples.append(StepSample(session, step, 0.0, 0.0, 0, 0, len(history), openai_load.error_name(exc)))
            history[-1] = without_images(message)
            continue
        samples.append(
            StepSample(
                session,
                step,
                result.ttft_ms,
                result.e2e_ms,
                result.prompt_tokens,
                result.completion_tokens,
                len(history),
                cached_prompt_tokens=result.cached_prompt_tokens,
            )
        )
        history[-1] = without_images(message)
        history.append({"role": "assistant", "content": result.text})
    return samples


def _mean_cached(samples: Sequence[StepSample]) -> float | None:
    known = [s.cached_prompt_tokens for s in samples if s.cached_prompt_tokens is not None]
    return sum(known) / len(known) if known else None


def _quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile with linear interpolation between order statistics (None without values)."""
    if not values:
        return None
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def per_step(samples: Sequence[StepSample], steps: int) -> list[dict[str, Any]]:
    """For each step: TTFT and end-to-end percentiles over the sessions, the prompt's size, and how
    much of it the server's prefix cache served (None when the server does not report it)."""
    rows = []
    for step in range(1, steps + 1):
        failed = [s for s in samples if s.step == step and s.error is not None]
        mine = [s for s in samples if s.step == step and s.error is None]
        rows.append(
            {
                "step": step,
                "sessions": len(mine),
                "errors": len(failed),
                "ttft_ms": Percentiles.of([s.ttft_ms for s in mine]).to_dict(),
                "ttft_p95_ms": _quantile([s.ttft_ms for s in mine], 0.95),
                "e2e_ms": Percentiles.of([s.e2e_ms for s in mine]).to_dict(),
                "prompt_tokens_mean": sum(s.prompt_tokens for s in mine) / len(mine) if mine else 0.0,
                "completion_tokens_mean": sum(s.completion_tokens for s in mine) / len(mine) if mine else 0.0,
                "cached_prompt_tokens_mean": _mean_cached(mine),
                "messages": max((s.messages for s in mine), default=0),
            }
        )
    return rows


async def run_agent(base_url: str, workload: AgentWorkload, *, api_key: str = "unused") -> dict[str, Any]:
    """All sessions at once against one server; returns the per-step table and the raw samples."""
    screens_by_step = screenshots(workload)
    client = openai_load.make_client(base_url, api_key=api_key)
    try:
        model = openai_load.served_model(await client.models.list())
        # One untimed short chat, so that first-request costs (compilation, caches) stay out of step 1.
        await openai_load.stream_chat(
            client, model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=2, sampling=SAMPLING
        )
        start = time.perf_counter()
        per_session = await asyncio.gather(
            *(run_session(client, model, workload, session, screens_by_step) for session in range(workload.sessions))
        )
        duration = time.perf_counter() - start
    finally:
        await client.close()
    samples = [sample for session in per_session for sample in session]
    return {
        "model": model,
        "duration_s": duration,
        # Generated tokens of all sessions over the run's wall time (prefill time included).
        "tokens_per_s": sum(sample.completion_tokens for sample in samples) / duration if duration > 0 else 0.0,
        "steps": per_step(samples, workload.steps),
        "samples": [asdict(s) for s in samples],
    }
