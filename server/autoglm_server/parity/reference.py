"""The reference run: transformers' own preprocessing and `generate`, greedy, with the logits kept.

It deliberately shares no code with the engines: the chat template is applied to plain dicts, each
image placeholder is expanded in the text the way Glm4vProcessor does (grid t*h*w over merge_size
squared), and the model computes its own 3-D positions inside `generate`. Glm4vProcessor itself
cannot be built without torchvision (its video processor needs it), so its two parts are used:
the tokenizer and the image processor, both loaded from the model directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image


@dataclass(frozen=True)
class Step:
    """One agent step: a system prompt, then a user turn with a screenshot and text."""

    system: str
    text: str
    image: Image.Image | None

    def messages(self) -> list[dict[str, Any]]:
        """The step as OpenAI-style dicts (what a client sends, and what a chat template takes)."""
        content: list[dict[str, Any]] = [{"type": "image"}] if self.image is not None else []
        content.append({"type": "text", "text": self.text})
        return [{"role": "system", "content": self.system}, {"role": "user", "content": content}]


@dataclass(frozen=True)
class Run:
    """A greedy run: prompt ids, chosen tokens, their logprobs and each step's full logits."""

    prompt_ids: list[int]
    tokens: list[int]
    logprobs: list[float]
    logits: torch.Tensor | None = None  # [steps, vocab] float32, the reference keeps them
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None


def prepare(model: Any, tokenizer: Any, image_processor: Any, step: Step, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The forward inputs for `step`, made the way transformers' processor makes them."""
    text = tokenizer.apply_chat_template(step.messages(), tokenize=False, add_generation_prompt=True)
    inputs: dict[str, Any] = {}
    if step.image is not None:
        features = image_processor(images=[step.image], return_tensors="pt", **kwargs)
        merge = int(image_processor.merge_size)
        count = int(features["image_grid_thw"][0].prod()) // (merge * merge)
        placeholder = tokenizer.convert_ids_to_tokens(int(model.config.image_token_id))
        text = text.replace(placeholder, placeholder * count, 1)
        inputs["pixel_values"] = features["pixel_values"].to(model.dtype)
        inputs["image_grid_thw"] = features["image_grid_thw"]
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)], dtype=torch.long)
    inputs["input_ids"] = ids
    inputs["attention_mask"] = torch.ones_like(ids)
    if step.image is not None:
        inputs["mm_token_type_ids"] = (ids == int(model.config.image_token_id)).int()
    return inputs


def generate(model: Any, inputs: dict[str, Any], max_new_tokens: int) -> Run:
    """Greedy `generate` for exactly max_new_tokens (EOS ignored), keeping each step's logits."""
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    prompt = inputs["input_ids"][0].tolist()
    tokens = out.sequences[0, len(prompt) :].tolist()
    logits = torch.stack([step[0] for step in out.logits]).float()
    chosen = logits.log_softmax(-1).gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1)
    return Run(
        prompt,
        tokens,
        chosen.tolist(),
        logits,
        inputs.get("pixel_values"),
        inputs.get("image_grid_thw"),
    )
