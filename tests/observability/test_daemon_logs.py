"""The JSON logs of a real daemon: ids on every request line, prompts only under --log-prompts,
and never a bearer token (auth on, with a local JWKS file)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from tests.auth.local_keys import LocalKey, claims, write_jwks
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.otlp_receiver import OtlpReceiver, otlp_receiver

GENERATE = "/autoglm.v1.GenerationService/Generate"
SERVER_KIND = 2  # OTLP Span.SpanKind SPAN_KIND_SERVER
PROMPT = "zebra marmalade quartz"  # words no log line has for another reason


def log_lines(daemon: Daemon) -> list[dict[str, Any]]:
    lines = []
    for raw in daemon.log().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def generate(daemon: Daemon, request: pb.GenerateRequest, token: str | None) -> list[pb.GenerateResponse]:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    with grpc.insecure_channel(daemon.target) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)  # type: ignore[no-untyped-call]
        return list(stub.Generate(request, metadata=metadata, timeout=60))


def access_line(lines: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    (line,) = [line for line in lines if line["logger"] == "autoglm_server.access" and line["request_id"] == request_id]
    return line


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def key() -> LocalKey:
    return LocalKey.generate("logs:v1")


def daemon_with(key: LocalKey, receiver: OtlpReceiver, workdir: Path, *flags: str) -> Any:
    jwks = workdir / "jwks.json"
    write_jwks(jwks, key)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    args = ("--key-source", "jwks-file", "--jwks-file", str(jwks), "--log-format", "json", *flags)
    return running_daemon(*args, env=env)


@pytest.mark.parametrize("log_prompts", [False, True], ids=["default", "log-prompts"])
def test_request_lines_carry_ids_prompts_only_when_asked_and_no_token(
    log_prompts: bool, key: LocalKey, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    token = key.sign(claims(sub="alice"))
    forged = token[:-8] + "AAAAAAAA"  # a bad signature: refused, and must not be logged either
    flags = ("--log-prompts",) if log_prompts else ()
    with daemon_with(key, receiver, tmp_path, *flags) as daemon:
        messages = generate(daemon, pb.GenerateRequest(text=PROMPT, max_new_tokens=4, request_id="logged-1"), token)
        ids = pb.GenerateRequest(token_ids=pb.TokenIds(ids=[3, 4, 5]), max_new_tokens=2, request_id="logged-2")
        generate(daemon, ids, token)
        with pytest.raises(grpc.RpcError) as refused:
            generate(daemon, pb.GenerateRequest(text=PROMPT, max_new_tokens=2), forged)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        output = "".join(m.chunk.text for m in messages if m.WhichOneof("kind") == "chunk")
        daemon.signal(signal.SIGTERM)  # every line written and flushed before reading
        assert daemon.wait(60) == 0
        log = daemon.log()
        lines = log_lines(daemon)

    assert token not in log
    assert forged.rsplit(".", 1)[-1] not in log  # not even the forged signature
    line = access_line(lines, "logged-1")
    assert line["grpc_code"] == "OK"
    assert line["subject"] == "alice"
    assert len(line["trace_id"]) == 32
    assert len(line["span_id"]) == 16
    assert line["generated_tokens"] == 4
    (span,) = receiver.wait_for_spans(1, lambda s: s.trace_id == line["trace_id"] and s.kind == SERVER_KIND)
    assert span.attributes["enduser.id"] == "alice"
    assert span.attributes["autoglm.request_id"] == "logged-1"
    (refused_line,) = [x for x in lines if x.get("grpc_method") == GENERATE and x.get("grpc_code") == "UNAUTHENTICATED"]
    assert len(refused_line["trace_id"]) == 32  # a refused call is traced and logged too

    texts = [x for x in lines if x["logger"] == "autoglm_server.prompts"]
    if not log_prompts:
        assert PROMPT not in log
        assert texts == []
        return
    by_request = {x["request_id"]: x for x in texts}
    assert by_request["logged-1"]["prompt_text"] == PROMPT
    assert by_request["logged-1"]["output_text"] == output
    assert by_request["logged-1"]["trace_id"] == line["trace_id"]
    assert by_request["logged-2"]["prompt_token_ids"] == [3, 4, 5]
