"""The real daemon on 127.0.0.1:0, driven through the SDK: streaming, stops, seeds, bad input, cancel."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from autoglm_client import Chunk, Client, Finished, FinishReason, InvalidArgumentError, Started
from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from autoglm_server import names
from tests.helpers.daemon import Daemon, running_daemon

MAX_NEW_TOKENS_LIMIT = 64
# Long enough to still be running 0.3 s after SIGTERM on a fast machine.
LONG_STREAM_TOKENS = 1500


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon("--auth", "disabled", "--max-new-tokens-limit", str(MAX_NEW_TOKENS_LIMIT)) as running:
        yield running


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    with Client(daemon.target, timeout=60) as connected:
        yield connected


def test_stream_has_started_chunks_finished_and_text_matches_tokens(client: Client) -> None:
    events = list(client.generate("hello", max_new_tokens=32, ignore_eos=True))
    assert isinstance(events[0], Started)
    assert events[0].prompt_tokens > 0
    assert isinstance(events[-1], Finished)
    chunks = [event for event in events if isinstance(event, Chunk)]
    token_ids = [token for chunk in chunks for token in chunk.token_ids]
    assert len(token_ids) == 32
    assert events[-1].finish_reason is FinishReason.LENGTH
    assert events[-1].usage.completion_tokens == 32
    # generate_text joins the same deltas; a second greedy run gives the same text and tokens.
    text = "".join(chunk.text for chunk in chunks)
    again = client.generate_text("hello", max_new_tokens=32, ignore_eos=True)
    assert (again.text, list(again.token_ids)) == (text, token_ids)


def test_greedy_is_deterministic(client: Client) -> None:
    first = client.generate_text("The same prompt", max_new_tokens=24, ignore_eos=True)
    second = client.generate_text("The same prompt", max_new_tokens=24, ignore_eos=True)
    assert first.token_ids == second.token_ids
    assert first.text == second.text


def test_same_seed_same_text_other_seed_other_text(client: Client) -> None:
    def sample(seed: int) -> tuple[int, ...]:
        result = client.generate_text("Sampling", max_new_tokens=24, temperature=1.0, seed=seed, ignore_eos=True)
        return result.token_ids

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_stop_string_ends_generation_and_is_not_returned(client: Client) -> None:
    reference = client.generate_text("stop here", max_new_tokens=40, ignore_eos=True)
    assert len(reference.text) >= 6, "the model must produce some text for this test"
    stop = reference.text[3:5]
    result = client.generate_text("stop here", max_new_tokens=40, ignore_eos=True, stop=[stop])
    assert result.finish_reason is FinishReason.STOP_SEQUENCE
    assert result.matched_stop == stop
    assert stop not in result.text
    assert reference.text.startswith(result.text)
    assert result.text == reference.text[: reference.text.index(stop)]


def test_stop_token_id_ends_generation(client: Client) -> None:
    reference = client.generate_text("token stop", max_new_tokens=20, ignore_eos=True)
    stop_id = reference.token_ids[5]
    result = client.generate_text("token stop", max_new_tokens=20, ignore_eos=True, stop_token_ids=[stop_id])
    assert result.finish_reason is FinishReason.STOP_TOKEN
    # The stop token ends the ids (and counts in usage) but adds no text.
    end = reference.token_ids.index(stop_id) + 1
    assert result.token_ids == reference.token_ids[:end]
    assert result.usage.completion_tokens == end


def _bad_requests(vocab_size: int, context: int) -> dict[str, tuple[pb.GenerateRequest, str]]:
    return {
        "neither text nor ids": (pb.GenerateRequest(max_new_tokens=4), "prompt"),
        "empty text": (pb.GenerateRequest(text="", max_new_tokens=4), "text"),
        "empty ids": (pb.GenerateRequest(token_ids=pb.TokenIds(ids=[]), max_new_tokens=4), "token_ids.ids"),
        "max_new_tokens zero": (pb.GenerateRequest(text="a", max_new_tokens=0), "max_new_tokens"),
        "max_new_tokens negative": (pb.GenerateRequest(text="a", max_new_tokens=-5), "max_new_tokens"),
        "max_new_tokens above cap": (
            pb.GenerateRequest(text="a", max_new_tokens=MAX_NEW_TOKENS_LIMIT + 1),
            f"[1, {MAX_NEW_TOKENS_LIMIT}]",
        ),
        "prompt longer than context": (
            pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1] * context), max_new_tokens=4),
            "context",
        ),
        "negative temperature": (
            pb.GenerateRequest(text="a", sampling=pb.SamplingParams(temperature=-1)),
            "sampling.temperature",
        ),
        "nan temperature": (
            pb.GenerateRequest(text="a", sampling=pb.SamplingParams(temperature=math.nan)),
            "sampling.temperature",
        ),
        "top_p zero": (pb.GenerateRequest(text="a", sampling=pb.SamplingParams(top_p=0)), "(0, 1]"),
        "top_p above one": (pb.GenerateRequest(text="a", sampling=pb.SamplingParams(top_p=1.01)), "(0, 1]"),
        "top_k negative": (pb.GenerateRequest(text="a", sampling=pb.SamplingParams(top_k=-1)), "sampling.top_k"),
        "token id outside vocabulary": (
            pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, vocab_size])),
            f"[0, {vocab_size})",
        ),
        "too many stop strings": (pb.GenerateRequest(text="a", stop=[str(i) for i in range(17)]), "stop"),
        "stop string too long": (pb.GenerateRequest(text="a", stop=["x" * 257]), "stop[0]"),
    }


def test_every_bad_request_is_invalid_argument_naming_the_field(daemon: Daemon, client: Client) -> None:
    info = client.model_info()
    cases = _bad_requests(info.vocab_size, info.max_context_length)
    with grpc.insecure_channel(daemon.target) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        for name, (request, expected_text) in cases.items():
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.Generate(request, timeout=30))
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
            assert expected_text in caught.value.details(), (name, caught.value.details())


def test_sdk_raises_its_invalid_argument_error(client: Client) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.generate_text("a", max_new_tokens=0)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "max_new_tokens" in caught.value.message


def test_cancel_mid_stream_stops_generation_and_server_keeps_serving(daemon: Daemon, client: Client) -> None:
    with grpc.insecure_channel(daemon.target) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        call = stub.Generate(pb.GenerateRequest(text="long", max_new_tokens=MAX_NEW_TOKENS_LIMIT, ignore_eos=True))
        received = 0
        for message in call:
            if message.WhichOneof("kind") == "chunk":
                received += len(message.chunk.token_ids)
                if received >= 2:
                    call.cancel()
                    break
        assert call.code() is grpc.StatusCode.CANCELLED
    # The cancelled request's slot is free: a full-length request still completes.
    result = client.generate_text("after cancel", max_new_tokens=8, ignore_eos=True)
    assert len(result.token_ids) == 8


def test_tokenize_and_model_info(client: Client) -> None:
    tokens = client.tokenize("héllo", add_special_tokens=False)
    assert len(tokens) == len("héllo".encode())
    info = client.model_info()
    assert info.model_id == "builtin:tiny"
    assert info.max_new_tokens_limit == MAX_NEW_TOKENS_LIMIT
    assert not info.auth_enabled
    assert any("random weights" in warning for warning in info.warnings)
    assert any("authentication is disabled" in warning for warning in info.warnings)


def test_health_liveness_readiness_and_unknown_service(daemon: Daemon) -> None:
    assert daemon.health(names.LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert daemon.health(names.READINESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        daemon.health("no.such.Service")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_readiness_goes_serving_only_after_model_load_and_drops_on_sigterm() -> None:
    with running_daemon("--auth", "disabled", wait_ready=False) as daemon:
        seen: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                seen.append(daemon.health())
            except grpc.RpcError:
                continue
            if seen[-1] == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.02)
        assert seen[-1] == health_pb2.HealthCheckResponse.SERVING
        # Once SERVING, a call works at once: the model was loaded and warmed up before.
        with Client(daemon.target, timeout=30) as client:
            assert client.generate_text("warm", max_new_tokens=2, ignore_eos=True).usage.completion_tokens == 2
            stream = client.generate("long", max_new_tokens=LONG_STREAM_TOKENS, ignore_eos=True)
            next(stream)
            events: list[object] = []
            reader = threading.Thread(target=lambda: events.extend(stream))
            reader.start()
            daemon.signal(signal.SIGTERM)
            time.sleep(0.3)
            readiness = daemon.health()
            reader.join(60)
        assert readiness == health_pb2.HealthCheckResponse.NOT_SERVING
        # The in-flight stream ran to completion during the drain.
        assert isinstance(events[-1], Finished)
        assert events[-1].usage.completion_tokens == LONG_STREAM_TOKENS
        assert daemon.wait(60) == 0
        assert "Traceback" not in daemon.log()
