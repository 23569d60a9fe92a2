"""Hand-written hostile GenerateRequests, each with the precise status it must get.

Cases are raw bytes on the wire, so that they can carry what the protobuf library refuses to
build (invalid UTF-8, corrupt framing), plus the metadata to send with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_server.config import ServerSettings

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
VOCAB = 259  # builtin:tiny (byte-level)
LIMIT = 32  # the daemon's --max-new-tokens-limit in these tests
# The daemon's default --max-message-bytes (a Chat with its images must fit under it).
MAX_MESSAGE: int = ServerSettings.model_fields["max_message_bytes"].default

BAD = grpc.StatusCode.INVALID_ARGUMENT
OK = grpc.StatusCode.OK
FULL = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass(frozen=True)
class Case:
    name: str
    payload: bytes
    code: grpc.StatusCode
    field: str = ""  # the message must name this field (INVALID_ARGUMENT)
    metadata: tuple[tuple[str, str], ...] = ()


def _req(**fields: object) -> bytes:
    fields.setdefault("max_new_tokens", 4)
    if "token_ids" not in fields:
        fields.setdefault("text", "hostile")
    return pb.GenerateRequest(**fields).SerializeToString()  # type: ignore[arg-type]


def _sampling(**fields: object) -> bytes:
    return _req(sampling=pb.SamplingParams(**fields))  # type: ignore[arg-type]


def _string_field(number: int, raw: bytes) -> bytes:
    """A length-delimited field with arbitrary (e.g. invalid UTF-8) bytes."""
    assert len(raw) < 128
    return bytes([number << 3 | 2, len(raw)]) + raw


def cases() -> list[Case]:
    nan, inf = float("nan"), float("inf")
    good = _req()
    return [
        Case("baseline", good, OK),
        Case("empty request", b"", BAD, "prompt"),
        Case("empty text", _req(text=""), BAD, "text"),
        Case("prompt over the context", _req(text="a" * 100_000), BAD, "text"),
        Case("message over the size limit", _req(text="a" * (MAX_MESSAGE + 1024)), FULL),
        Case("invalid UTF-8 in text", _string_field(1, b"\xff\xfe") + b"\x18\x04", BAD),
        Case("invalid UTF-8 in stop", good + _string_field(5, b"\xc3\x28"), BAD),
        Case("invalid UTF-8 in request_id", good + _string_field(7, b"\xed\xa0\x80"), BAD),
        Case("corrupt protobuf", b"\xff\xff\xff\xff\xff", BAD),
        Case("truncated protobuf", good[:-1], BAD),
        Case("unknown field is ignored", good + b"\xa8\x06\x01", OK),
        Case("temperature NaN", _sampling(temperature=nan), BAD, "sampling.temperature"),
        Case("temperature inf", _sampling(temperature=inf), BAD, "sampling.temperature"),
        Case("temperature negative", _sampling(temperature=-1.0), BAD, "sampling.temperature"),
        Case("top_p NaN", _sampling(temperature=1.0, top_p=nan), BAD, "sampling.top_p"),
        Case("top_p zero", _sampling(temperature=1.0, top_p=0.0), BAD, "sampling.top_p"),
        Case("top_p above one", _sampling(temperature=1.0, top_p=1.5), BAD, "sampling.top_p"),
        Case("top_k negative", _sampling(temperature=1.0, top_k=-5), BAD, "sampling.top_k"),
        Case("top_k absurd", _sampling(temperature=1.0, top_k=INT32_MAX), OK),
        Case("repetition_penalty NaN", _sampling(repetition_penalty=nan), BAD, "sampling.repetition_penalty"),
        Case("repetition_penalty zero", _sampling(repetition_penalty=0.0), BAD, "sampling.repetition_penalty"),
        Case("repetition_penalty -inf", _sampling(repetition_penalty=-inf), BAD, "sampling.repetition_penalty"),
        Case("seed uint64 max", _sampling(temperature=1.0, seed=2**64 - 1), OK),
        Case("max_new_tokens 0", _req(max_new_tokens=0), BAD, "max_new_tokens"),
        Case("max_new_tokens -1", _req(max_new_tokens=-1), BAD, "max_new_tokens"),
        Case("max_new_tokens int32 max", _req(max_new_tokens=INT32_MAX), BAD, "max_new_tokens"),
        Case("max_new_tokens int32 min", _req(max_new_tokens=INT32_MIN), BAD, "max_new_tokens"),
        Case("max_new_tokens over the cap", _req(max_new_tokens=LIMIT + 1), BAD, "max_new_tokens"),
        Case("thousands of stop strings", _req(stop=["x"] * 5000), BAD, "stop"),
        Case("empty stop string", _req(stop=[""]), BAD, "stop[0]"),
        Case("stop string too long", _req(stop=["é" * 129]), BAD, "stop[0]"),
        Case("stop token id negative", _req(stop_token_ids=[-1]), BAD, "stop_token_ids[0]"),
        Case("stop token id past vocab", _req(stop_token_ids=[VOCAB]), BAD, "stop_token_ids[0]"),
        Case("stop token id int32 max", _req(stop_token_ids=[1, INT32_MAX]), BAD, "stop_token_ids[1]"),
        Case("prompt ids empty", _req(token_ids=pb.TokenIds(ids=[])), BAD, "token_ids"),
        Case("prompt id negative", _req(token_ids=pb.TokenIds(ids=[5, -1])), BAD, "token_ids.ids[1]"),
        Case("prompt id past vocab", _req(token_ids=pb.TokenIds(ids=[VOCAB])), BAD, "token_ids.ids[0]"),
        Case("prompt id int32 min", _req(token_ids=pb.TokenIds(ids=[INT32_MIN])), BAD, "token_ids.ids[0]"),
        Case("prompt ids over the context", _req(token_ids=pb.TokenIds(ids=[7] * 5000)), BAD, "token_ids"),
        Case("top_logprobs too many", _req(logprobs=True, top_logprobs=21), BAD, "top_logprobs"),
        Case("top_logprobs negative", _req(logprobs=True, top_logprobs=-1), BAD, "top_logprobs"),
        Case("top_logprobs without logprobs", _req(top_logprobs=3), BAD, "top_logprobs"),
        Case("request_id too long", _req(request_id="r" * 129), BAD, "request_id"),
        Case("request_id huge", _req(request_id="r" * 1_000_000), BAD, "request_id"),
        Case("request_id control chars", _req(request_id="a\nb\x00"), BAD, "request_id"),
        Case("priority int32 extremes", _req(priority=INT32_MIN), OK),
        Case("metadata over the limit", good, FULL, metadata=(("x-big", "a" * 20_000),)),
        Case("thousands of metadata keys", good, FULL, metadata=tuple((f"x-k{i}", "v") for i in range(2000))),
        # With --auth disabled a token is not looked at: garbage must not break anything.
        Case("garbage bearer token ignored", good, OK, metadata=(("authorization", "Bearer not.a." + "A" * 5000),)),
    ]


def extreme_sampling_cases() -> list[Case]:
    """Valid requests whose numbers push the sampler to overflow: each must be served, never kill the engine."""
    whole_vocab = pb.TokenIds(ids=list(range(VOCAB)))
    return [
        Case("temperature huge", _sampling(temperature=3e38), OK),
        Case("temperature denormal", _sampling(temperature=1e-45), OK),
        Case("temperature tiny", _sampling(temperature=1e-30, top_k=5), OK),
        Case("top_p denormal", _sampling(temperature=1.0, top_p=1e-45), OK),
        Case("repetition_penalty huge", _sampling(repetition_penalty=3e38), OK),
        Case("repetition_penalty denormal, sampled", _sampling(temperature=1.0, repetition_penalty=1e-45), OK),
        Case(
            "repetition_penalty huge over the whole vocabulary, sampled",
            _req(token_ids=whole_vocab, sampling=pb.SamplingParams(temperature=1.0, repetition_penalty=3e38)),
            OK,
        ),
    ]
