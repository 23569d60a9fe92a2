"""`autoglm-server check-parity`: one engine against transformers' own generate, on an agent step.

An operator runs it after upgrading torch, transformers or vLLM, on the real model and GPU: the step
is Open-AutoGLM-shaped (a system prompt, a screenshot, the task), greedy. It prints the prompt length
both sides saw, how many tokens agree, the largest chosen-token logprob gap, and on divergence the
first divergent position with the reference's top-5 logits and the engine's top-5 logprobs there.
Exit 0: same; 1: divergent; 2: bad arguments or a model that cannot load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoglm_server.errors import StartupError

SYSTEM_PROMPT = (
    "You are a phone-operating agent. Each turn you see the screen and the task; think, then answer with "
    'one action such as do(action="Tap", element=[500, 300]) or finish(message="...").'
)
TASK = 'Open the Settings app and turn on Wi-Fi\n\n** Screen Info **\n\n{"current_app": "System Home"}'


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoglm-server check-parity", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model directory (or builtin:glm4v-tiny)")
    parser.add_argument("--engine", choices=("builtin", "vllm"), default="builtin")
    parser.add_argument("--image", help="a PNG screenshot (default: a drawn 1080x2400 one)")
    parser.add_argument("--dtype", default="float32", help="the engine's dtype (default float32)")
    parser.add_argument("--reference-dtype", default="float32", help="transformers' dtype (default float32)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--max-pixels", type=int, default=0, help="Open-AutoGLM's max_pixels (0: the model's)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest chosen-token logprob gap allowed")
    parser.add_argument("--device", default="auto")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        return asyncio.run(_check(args))
    except (StartupError, OSError, ValueError) as error:
        print(f"check-parity: {error}", file=sys.stderr)
        return 2


def _image(path: str | None) -> Any:
    from PIL import Image

    if path:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    image = Image.new("RGB", (1080, 2400), (245, 245, 245))
    for row in range(0, 2400, 120):  # rows of "app icons", so the screenshot is not flat
        image.paste((30, 90 + row % 160, 200), (40, row + 20, 1040, row + 80))
    return image


async def _check(args: argparse.Namespace) -> int:
    from autoglm_server.engine import builtin_models

    with tempfile.TemporaryDirectory(prefix="autoglm-parity-") as scratch:
        directory = args.model
        if args.model in builtin_models.BUILTIN_MODELS:
            directory = str(builtin_models.save(args.model, Path(scratch)))
        elif not _is_dir(directory):
            raise StartupError(f"--model {directory!r} is not a directory")
        image = _image(args.image)
        kwargs_json = json.dumps({"max_pixels": args.max_pixels}) if args.max_pixels else ""
        engine_run, top = await _engine_run(args, directory, image, kwargs_json)
        reference_run = _reference_run(args, directory, image, kwargs_json)
    return _report(args, reference_run, engine_run, top)


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


def _reference_run(args: argparse.Namespace, directory: str, image: Any, kwargs_json: str) -> Any:
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    from autoglm_server.engine.vision_chat import mm_processor_kwargs
    from autoglm_server.parity import reference

    dtype = getattr(torch, args.reference_dtype)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    image_processor = AutoImageProcessor.from_pretrained(directory)  # type: ignore[no-untyped-call]
    model = AutoModelForImageTextToText.from_pretrained(directory, dtype=dtype).eval()  # type: ignore[no-untyped-call]
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        model = model.to("cuda")
    step = reference.Step(SYSTEM_PROMPT, TASK, image)
    inputs = reference.prepare(model, tokenizer, image_processor, step, mm_processor_kwargs(kwargs_json))
    inputs = {key: value.to(model.device) for key, value in inputs.items()}
    return reference.generate(model, inputs, args.max_new_tokens)


async def _engine_run(
    args: argparse.Namespace, directory: str, image: Any, kwargs_json: str
) -> tuple[Any, list[list[tuple[int, float]]]]:
    from autoglm_server.config import load_settings
    from autoglm_server.engine.types import ChatMessage, GenerationRequest, ImageInput, ImagePart, TextPart
    from autoglm_server.parity import reference

    flags = ["--model", directory, "--dtype", args.dtype, "--device", args.device, "--engine", args.engine]
    if kwargs_json:
        flags += ["--mm-processor-kwargs", kwargs_json]
    settings = load_settings(flags)
    engine: Any
    if args.engine == "vllm":
        from autoglm_server.engine.vllm.engine import create_engine as create_vllm_engine

        engine = create_vllm_engine(settings)
    else:
        from autoglm_server.engine.builtin.async_engine import create_engine

        engine = create_engine(settings)
    await engine.start()
    try:
        picture = ImageInput(image, "image/png", image.width, image.height, 0, "parity")
        messages = [
            ChatMessage("system", (TextPart(SYSTEM_PROMPT),)),
            ChatMessage("user", (ImagePart(picture), TextPart(TASK))),
        ]
        rendered = engine.render_chat(messages)
        request = GenerationRequest(
            request_id="check-parity",
            prompt_token_ids=rendered.token_ids,
            prompt_text=rendered.text,
            images=rendered.images,
            max_new_tokens=args.max_new_tokens,
            ignore_eos=True,
            logprobs=True,
            top_logprobs=5,
        )
        tokens: list[int] = []
        logprobs: list[float] = []
        top: list[list[tuple[int, float]]] = []
        async for delta in await engine.submit(request):
            tokens += delta.token_ids
            logprobs += [item.logprob for item in delta.logprobs]
            top += [list(item.top) for item in delta.logprobs]
    finally:
        await engine.shutdown()
    return reference.Run(list(rendered.token_ids), tokens, logprobs), top


def _report(args: argparse.Namespace, theirs: Any, ours: Any, top: list[list[tuple[int, float]]]) -> int:
    from autoglm_server.parity.compare import compare, top_logits

    verdict = compare(theirs, ours, args.tolerance)
    print(f"engine: {args.engine} ({args.dtype}) vs transformers generate ({args.reference_dtype})")
    print(f"prompt tokens: {verdict.prompt_tokens[1]} (engine), {verdict.prompt_tokens[0]} (reference)")
    print(f"tokens compared: {verdict.compared}; largest chosen-token logprob gap: {verdict.max_logprob_gap:.3g}")
    if verdict.ok:
        print(f"PARITY: {verdict.reason}")
        return 0
    at = verdict.first_divergence
    assert at is not None
    print(f"DIVERGENT at generated position {at}: {verdict.reason}")
    if theirs.logits is not None and at < len(theirs.logits):
        ref_top = ", ".join(f"{token}:{logit:.4f}" for token, logit in top_logits(theirs.logits, at))
        print(f"  reference top-5 logits (token:logit): {ref_top}")
    if at < len(top):
        ours_top = ", ".join(f"{token}:{logprob:.4f}" for token, logprob in top[at])
        print(f"  engine top-5 logprobs (token:logprob): {ours_top}")
    return 1
