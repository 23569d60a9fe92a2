"""Client and AsyncClient against a real gRPC server: streams, results, deadlines, cancel, metadata, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from autoglm_client import (
    AsyncClient,
    Chunk,
    Client,
    DeadlineExceededError,
    Finished,
    FinishReason,
    HealthStatus,
    Started,
    StaticToken,
    TlsConfig,
    TokenError,
    UnavailableError,
)
from tests.client.certs import Pki, make_pki
from tests.client.scripted_server import MODEL_ID, ScriptedServer, running_scripted_server


def test_generate_streams_started_chunks_finished(scripted: ScriptedServer) -> None:
    with Client(scripted.target, timeout=10) as client:
        events = list(client.generate([5, 7], max_new_tokens=3, request_id="r-1", logprobs=True))
    assert events[0] == Started(request_id="r-1", prompt_tokens=2, model_id=MODEL_ID)
    assert [e.token_ids for e in events[1:-1] if isinstance(e, Chunk)] == [(8,), (9,), (10,)]
    assert all(isinstance(e, Chunk) and e.logprobs[0].logprob == -0.5 for e in events[1:-1])
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason is FinishReason.LENGTH
    assert str(finished.finish_reason) == "length"  # a str enum
    assert finished.usage.completion_tokens == 3


def test_generate_text_joins_the_stream(scripted: ScriptedServer) -> None:
    with Client(scripted.target, timeout=10) as client:
        result = client.generate_text([1], max_new_tokens=4)
    assert result.text == "2 3 4 5 "
    assert result.token_ids == (2, 3, 4, 5)
    assert result.finish_reason is FinishReason.LENGTH
    assert result.usage.prompt_tokens == 1
    assert result.request_id == "req-1"


def test_tokenize_info_and_health(scripted: ScriptedServer) -> None:
    with Client(scripted.target, timeout=10) as client:
        assert client.tokenize("hé") == (104, 195, 169)
        assert client.tokenize("a", add_special_tokens=True) == (999, 97)
        info = client.model_info()
        assert info.model_id == MODEL_ID
        assert info.eos_token_ids == (2,)
        assert info.warnings == ("scripted",)
        assert client.health() is HealthStatus.SERVING
        assert client.health("autoglm.v1.GenerationService") is HealthStatus.NOT_SERVING
        assert client.health("no.such.Service") is HealthStatus.SERVICE_UNKNOWN


def test_prompt_must_be_text_or_ids(scripted: ScriptedServer) -> None:
    with Client(scripted.target) as client, pytest.raises(TypeError, match="bytes"):
        client.generate(b"raw")


async def test_async_client_streams_and_answers(scripted: ScriptedServer) -> None:
    async with AsyncClient(scripted.target, timeout=10) as client:
        events = [e async for e in client.generate([1], max_new_tokens=2)]
        assert isinstance(events[0], Started)
        assert [e.text for e in events if isinstance(e, Chunk)] == ["2 ", "3 "]
        result = await client.generate_text([10], max_new_tokens=2, seed=3)
        assert result.text == "11 12 "
        assert await client.tokenize("a") == (97,)
        assert (await client.model_info()).vocab_size > 0
        assert await client.health() is HealthStatus.SERVING


def _wait_for(condition: object, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


def test_closing_a_stream_early_cancels_the_call(slow_scripted: ScriptedServer) -> None:
    with Client(slow_scripted.target, timeout=10) as client:
        stream = client.generate([1], max_new_tokens=500)
        for item in stream:
            if isinstance(item, Chunk):
                break
        stream.close()
        # Checked while the channel is still open: the close of the stream itself cancelled the call.
        assert _wait_for(lambda: slow_scripted.recorder.cancelled == 1)


async def test_async_early_exit_with_aclosing_cancels(slow_scripted: ScriptedServer) -> None:
    async with AsyncClient(slow_scripted.target, timeout=10) as client:
        async with contextlib.aclosing(client.generate([1], max_new_tokens=500)) as stream:
            async for item in stream:
                if isinstance(item, Chunk):
                    break
        for _ in range(250):  # the channel is still open: leaving aclosing cancelled the call
            if slow_scripted.recorder.cancelled == 1:
                break
            await asyncio.sleep(0.02)
        assert slow_scripted.recorder.cancelled == 1


def test_deadline_applies_per_call_and_by_default(slow_scripted: ScriptedServer) -> None:
    with Client(slow_scripted.target, timeout=0.2) as client:
        with pytest.raises(DeadlineExceededError):
            client.generate_text([1], max_new_tokens=100)
        # The per-call timeout wins over the client's default.
        assert client.generate_text([1], max_new_tokens=15, timeout=10).usage.completion_tokens == 15
    with Client(slow_scripted.target) as client, pytest.raises(DeadlineExceededError):
        client.generate_text([1], max_new_tokens=100, timeout=0.2)


def test_bearer_token_is_sent_on_every_call(scripted: ScriptedServer) -> None:
    tokens = iter(["one", "two", "three"])
    with Client(scripted.target, timeout=10, token_provider=lambda: next(tokens)) as client:
        client.model_info()
        client.tokenize("x")
        client.generate_text([1], max_new_tokens=1)
    seen = [m.get("authorization") for m in scripted.recorder.metadata[-3:]]
    assert seen == ["Bearer one", "Bearer two", "Bearer three"]


def test_a_failing_token_provider_raises_its_own_error(scripted: ScriptedServer) -> None:
    def broken() -> str:
        raise TokenError("token file gone")

    before = len(scripted.recorder.metadata)
    with Client(scripted.target, timeout=10, token_provider=broken) as client, pytest.raises(TokenError):
        client.model_info()
    assert len(scripted.recorder.metadata) == before  # nothing was sent


def test_trace_context_is_propagated_when_a_span_is_current(scripted: ScriptedServer) -> None:
    tracer = TracerProvider().get_tracer("autoglm-client-test")
    with Client(scripted.target, timeout=10) as client:
        client.model_info()
        assert "traceparent" not in scripted.recorder.metadata[-1]
        with tracer.start_as_current_span("caller") as span:
            client.model_info()
        trace_id = format(span.get_span_context().trace_id, "032x")
        assert scripted.recorder.metadata[-1]["traceparent"].split("-")[1] == trace_id


def test_trace_propagation_can_be_switched_off(scripted: ScriptedServer) -> None:
    tracer = TracerProvider().get_tracer("autoglm-client-test")
    with (
        Client(scripted.target, timeout=10, propagate_trace=False) as client,
        tracer.start_as_current_span("caller"),
    ):
        client.model_info()
    assert "traceparent" not in scripted.recorder.metadata[-1]


# --- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[ScriptedServer]:
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.ca.read_bytes(),
        require_client_auth=True,
    )
    with running_scripted_server(credentials=credentials) as server:
        yield server


def test_tls_with_root_ca_and_server_name(pki: Pki, tmp_path: Path) -> None:
    credentials = grpc.ssl_server_credentials([(pki.server_key.read_bytes(), pki.server_cert.read_bytes())])
    with running_scripted_server(credentials=credentials) as server:
        tls = TlsConfig(root_ca=pki.ca, server_name="autoglm.test")
        with Client(server.target, tls=tls, timeout=10, token_provider=StaticToken("secret")) as client:
            assert client.model_info().model_id == MODEL_ID
        assert server.recorder.metadata[-1]["authorization"] == "Bearer secret"
        # The system trust store does not know the test CA: the handshake fails.
        with Client(server.target, tls=True, timeout=5, retry=None) as client, pytest.raises(UnavailableError):
            client.model_info()


def test_mtls_needs_the_client_certificate(pki: Pki, mtls_server: ScriptedServer) -> None:
    full = TlsConfig(root_ca=pki.ca, client_cert=pki.client_cert, client_key=pki.client_key)
    with Client(mtls_server.target, tls=full, timeout=10) as client:
        assert client.tokenize("ok") == (111, 107)
    without = TlsConfig(root_ca=pki.ca)
    with Client(mtls_server.target, tls=without, timeout=5, retry=None) as client, pytest.raises(UnavailableError):
        client.tokenize("no")


async def test_async_client_over_mtls(pki: Pki, mtls_server: ScriptedServer) -> None:
    tls = TlsConfig(root_ca=pki.ca, client_cert=pki.client_cert, client_key=pki.client_key)
    async with AsyncClient(mtls_server.target, tls=tls, timeout=10) as client:
        assert (await client.generate_text([1], max_new_tokens=2)).token_ids == (2, 3)
