"""Validation of GenerateRequest: every bad field is named with its allowed range."""

from __future__ import annotations

import dataclasses
import math

import pytest

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_server.engine.types import FinishReason, GenerationDelta, ModelDescription, Usage
from autoglm_server.errors import InvalidRequestError
from autoglm_server.frontends.grpc import convert

MODEL = ModelDescription(
    model_id="test",
    revision="",
    architecture="LlamaForCausalLM",
    max_context_length=64,
    vocab_size=100,
    eos_token_ids=(2,),
    dtype="float32",
    device="cpu",
)
LIMITS = convert.RequestLimits(
    max_new_tokens_limit=50, default_max_new_tokens=16, max_stop_strings=2, max_stop_string_bytes=8
)


def _tokenize(text: str) -> list[int]:
    return [b % 100 for b in text.encode()]


def _convert(message: pb.GenerateRequest) -> object:
    return convert.to_generation_request(
        message, model=MODEL, limits=LIMITS, tokenize=_tokenize, call=convert.CallContext(tenant="t1")
    )


def test_valid_request_keeps_every_setting() -> None:
    message = pb.GenerateRequest(
        text="hi",
        max_new_tokens=5,
        sampling=pb.SamplingParams(temperature=0.5, top_p=0.9, top_k=3, repetition_penalty=1.2, seed=7),
        stop=["\n"],
        stop_token_ids=[9],
        request_id="abc",
        priority=3,
        logprobs=True,
        top_logprobs=2,
    )
    request = convert.to_generation_request(
        message, model=MODEL, limits=LIMITS, tokenize=_tokenize, call=convert.CallContext(tenant="t1")
    )
    assert request.prompt_token_ids == (4, 5)
    assert request.max_new_tokens == 5
    assert request.sampling.temperature == pytest.approx(0.5)
    assert request.sampling.seed == 7
    assert request.stop_strings == ("\n",)
    assert request.stop_token_ids == frozenset({9})
    assert (request.request_id, request.priority, request.tenant) == ("abc", 3, "t1")
    assert request.top_logprobs == 2


def test_defaults_are_greedy_with_server_default_length() -> None:
    request = convert.to_generation_request(
        pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 2])),
        model=MODEL,
        limits=LIMITS,
        tokenize=_tokenize,
        call=convert.CallContext(),
    )
    assert request.sampling.greedy
    assert request.max_new_tokens == 16
    assert len(request.request_id) == 32


BAD_REQUESTS = {
    "no prompt": (pb.GenerateRequest(), "prompt"),
    "empty text": (pb.GenerateRequest(text=""), "text"),
    "empty ids": (pb.GenerateRequest(token_ids=pb.TokenIds()), "token_ids.ids"),
    "zero max_new_tokens": (pb.GenerateRequest(text="a", max_new_tokens=0), "max_new_tokens"),
    "negative max_new_tokens": (pb.GenerateRequest(text="a", max_new_tokens=-1), "max_new_tokens"),
    "max_new_tokens over cap": (pb.GenerateRequest(text="a", max_new_tokens=51), "max_new_tokens"),
    "prompt too long": (pb.GenerateRequest(text="a" * 64), "text"),
    "negative temperature": (
        pb.GenerateRequest(text="a", sampling=pb.SamplingParams(temperature=-0.1)),
        "sampling.temperature",
    ),
    "nan temperature": (
        pb.GenerateRequest(text="a", sampling=pb.SamplingParams(temperature=math.nan)),
        "sampling.temperature",
    ),
    "top_p zero": (pb.GenerateRequest(text="a", sampling=pb.SamplingParams(top_p=0.0)), "sampling.top_p"),
    "top_p above one": (pb.GenerateRequest(text="a", sampling=pb.SamplingParams(top_p=1.5)), "sampling.top_p"),
    "negative top_k": (pb.GenerateRequest(text="a", sampling=pb.SamplingParams(top_k=-1)), "sampling.top_k"),
    "zero repetition penalty": (
        pb.GenerateRequest(text="a", sampling=pb.SamplingParams(repetition_penalty=0.0)),
        "sampling.repetition_penalty",
    ),
    "id outside vocabulary": (pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 100])), "token_ids.ids[1]"),
    "negative id": (pb.GenerateRequest(token_ids=pb.TokenIds(ids=[-1])), "token_ids.ids[0]"),
    "too many stop strings": (pb.GenerateRequest(text="a", stop=["x", "y", "z"]), "stop"),
    "stop string too long": (pb.GenerateRequest(text="a", stop=["123456789"]), "stop[0]"),
    "empty stop string": (pb.GenerateRequest(text="a", stop=[""]), "stop[0]"),
    "stop token outside vocabulary": (pb.GenerateRequest(text="a", stop_token_ids=[100]), "stop_token_ids[0]"),
    "top_logprobs without logprobs": (pb.GenerateRequest(text="a", top_logprobs=1), "top_logprobs"),
    "top_logprobs too many": (pb.GenerateRequest(text="a", logprobs=True, top_logprobs=21), "top_logprobs"),
    "request id too long": (pb.GenerateRequest(text="a", request_id="x" * 129), "request_id"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_names_the_field(case: str) -> None:
    message, field = BAD_REQUESTS[case]
    with pytest.raises(InvalidRequestError) as caught:
        _convert(message)
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")


def test_finished_message_carries_usage_and_reason() -> None:
    delta = GenerationDelta(
        finish_reason=FinishReason.STOP_SEQUENCE,
        matched_stop="\n",
        usage=Usage(
            prompt_tokens=3, completion_tokens=4, queue_time_s=0.5, time_to_first_token_s=0.25, cached_prompt_tokens=2
        ),
    )
    finished = convert.finished_message(delta).finished
    assert finished.finish_reason == pb.FINISH_REASON_STOP_SEQUENCE
    assert finished.matched_stop == "\n"
    assert (finished.usage.prompt_tokens, finished.usage.completion_tokens) == (3, 4)
    assert finished.usage.queue_time_ms == pytest.approx(500.0)
    assert finished.usage.cached_prompt_tokens == 2


def test_model_info_warns_about_random_weights_and_disabled_auth() -> None:
    model = dataclasses.replace(MODEL, random_weights=True)
    info = convert.model_info_message(model, model_version="v2", max_new_tokens_limit=50, auth_enabled=False)
    warnings = " ".join(info.model_info.warnings)
    assert "random weights" in warnings
    assert "authentication is disabled" in warnings
    assert info.model_info.model_version == "v2"
