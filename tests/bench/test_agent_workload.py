"""The agent workload's messages and the benchmark's routing, without a server."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from autoglm_server.bench import agent, routing, screens


def test_system_prompt_has_the_asked_length_and_is_stable() -> None:
    prompt = agent.system_prompt(2500)
    assert len(prompt) == 2500
    assert prompt == agent.system_prompt(2500)
    assert prompt.isascii()


def test_a_vision_step_carries_one_new_screenshot_first_and_the_history_drops_it() -> None:
    workload = agent.AgentWorkload(sessions=2, steps=2, vision=True)
    urls = agent.screenshots(workload)
    assert set(urls) == {(0, 1), (0, 2), (1, 1), (1, 2)}
    assert len(set(urls.values())) == 4  # no two screens alike: no multimodal-cache hits
    message = agent.user_message(workload, 0, 1, urls[(0, 1)])
    image_part, text_part = message["content"]
    assert image_part["type"] == "image_url"
    assert text_part["type"] == "text"
    assert agent.task(0) in text_part["text"]
    png = base64.b64decode(image_part["image_url"]["url"].removeprefix("data:image/png;base64,"))
    assert Image.open(io.BytesIO(png)).size == screens.SCREEN_SIZE
    kept = agent.without_images(message)
    assert kept["content"] == [text_part]
    assert message["content"][0] is image_part  # the sent message itself is left as it was


def test_a_text_step_is_plain_text_and_later_steps_carry_screen_info() -> None:
    workload = agent.AgentWorkload(sessions=1, steps=2)
    assert agent.screenshots(workload) == {}
    later = agent.user_message(workload, 0, 2, None)
    assert isinstance(later["content"], str)
    assert later["content"].startswith("** Screen Info **")
    assert agent.without_images(later) == later


def test_runs_differ_so_that_one_run_cannot_hit_another_runs_cache() -> None:
    assert agent.task(0, run_id=0) != agent.task(0, run_id=1)
    assert screens.screenshot_png(0, 1, (64, 128)) != screens.screenshot_png(1000, 1, (64, 128))


@pytest.mark.parametrize("name", ["sessions", "steps", "system_chars", "reply_tokens"])
def test_sizes_below_one_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        agent.AgentWorkload(**{name: 0})  # type: ignore[arg-type]


def test_routing_sends_agent_and_vllm_runs_to_their_modules() -> None:
    from autoglm_server.bench import agent_bench

    assert routing.alternative(["--agent", "--model", "m", "--output-dir", "o"]) is agent_bench.main
    assert routing.alternative(["--model", "builtin:tiny", "--output-dir", "o"]) is None
    vllm_entry = routing.alternative(["--engine", "vllm", "--model", "m"])
    assert vllm_entry is not None
    assert vllm_entry.__module__ == "autoglm_server.bench.vllm_bench"
    assert routing.alternative(["--engine=tgi"]) is not None
    assert routing.alternative(["--engine=tgi"])(["--engine=tgi"]) == 2  # type: ignore[misc]
