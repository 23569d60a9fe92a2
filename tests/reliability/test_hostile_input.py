"""Scenario 7: hostile input. Hand-written nasty requests and hypothesis-generated ones, against
the live daemon: every case gets its precise status, the daemon never crashes or hangs, and its
memory and open file descriptors do not grow.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from tests.helpers.daemon import Daemon, running_daemon
from tests.helpers.procstats import sample
from tests.reliability import hostile_cases
from tests.reliability.checks import BASE_ARGS
from tests.reliability.sizes import Sizes

GENERATE = "/autoglm.v1.GenerationService/Generate"
TOKENIZE = "/autoglm.v1.GenerationService/Tokenize"
CALL_TIMEOUT_S = 30.0
# Slack for lazily created buffers, gRPC's thread pool and allocator arenas: a leak per request
# would exceed it many times over.
FD_SLACK = 8
RSS_GROWTH_BOUND_MIB = 96.0


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon(*BASE_ARGS, "--max-new-tokens-limit", str(hostile_cases.LIMIT)) as running:
        yield running


@pytest.fixture(scope="module")
def channel(daemon: Daemon) -> Iterator[grpc.Channel]:
    options = [("grpc.enable_retries", 0), ("grpc.max_send_message_length", 64 * 2**20)]
    with grpc.insecure_channel(daemon.target, options=options) as opened:
        yield opened


def call_raw(
    channel: grpc.Channel, payload: bytes, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[grpc.StatusCode, str, list[pb.GenerateResponse]]:
    method = channel.unary_stream(
        GENERATE, request_serializer=None, response_deserializer=pb.GenerateResponse.FromString
    )
    try:
        replies = list(method(payload, timeout=CALL_TIMEOUT_S, metadata=metadata or None))
    except grpc.RpcError as error:
        return error.code(), error.details() or "", []
    return grpc.StatusCode.OK, "", replies


def _well_formed(replies: list[pb.GenerateResponse]) -> bool:
    kinds = [r.WhichOneof("kind") for r in replies]
    return len(kinds) >= 2 and kinds[0] == "started" and kinds[-1] == "finished" and set(kinds[1:-1]) <= {"chunk"}


def test_hand_written_cases_get_precise_statuses(
    daemon: Daemon, channel: grpc.Channel, sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    call_raw(channel, hostile_cases.cases()[0].payload)  # warm the connection before measuring
    before = sample(daemon.process.pid)
    wrong: list[str] = []
    counts: dict[str, int] = {}
    for _ in range(sizes.rounds):
        for case in hostile_cases.cases():
            code, message, replies = call_raw(channel, case.payload, case.metadata)
            counts[code.name] = counts.get(code.name, 0) + 1
            if code != case.code:
                wrong.append(f"{case.name}: {code.name} {message[:160]!r}, expected {case.code.name}")
            elif case.field and not message.startswith(case.field):
                wrong.append(f"{case.name}: message {message[:160]!r} does not name {case.field}")
            elif code == grpc.StatusCode.OK and not _well_formed(replies):
                wrong.append(f"{case.name}: malformed stream {[r.WhichOneof('kind') for r in replies]}")
            elif "Traceback" in message or "<class" in message:
                wrong.append(f"{case.name}: internals leaked to the client: {message[:160]!r}")
    assert daemon.process.poll() is None, "the daemon died"
    assert daemon.health() == health_pb2.HealthCheckResponse.SERVING
    after = sample(daemon.process.pid)
    figures.append(
        {
            "scenario": "7 hostile input (hand-written)",
            "mode": sizes.name,
            "sent": sum(counts.values()),
            "by_code": counts,
            "wrong_status": len(wrong),
            # A wrong status is a request not accounted for; a dead daemon loses everything.
            "lost": len(wrong) if daemon.process.poll() is None else sum(counts.values()),
            "rss_before_mib": round(before.rss_mib, 1),
            "rss_after_mib": round(after.rss_mib, 1),
            "peak_rss_mib": round(after.peak_rss_mib, 1),
            "fds_before": before.open_fds,
            "fds_after": after.open_fds,
        }
    )
    assert not wrong, f"{len(wrong)} cases got the wrong answer:\n" + "\n".join(wrong)
    assert after.open_fds <= before.open_fds + FD_SLACK, f"fds {before.open_fds} -> {after.open_fds}"
    assert (after.rss_bytes - before.rss_bytes) / 2**20 < RSS_GROWTH_BOUND_MIB


def test_extreme_sampling_values_never_kill_the_engine() -> None:
    """One request's numbers must never take the whole daemon down (a restart drops every stream)."""
    killers: list[str] = []
    wrong: list[str] = []
    with contextlib.ExitStack() as stack:
        daemon = stack.enter_context(running_daemon(*BASE_ARGS, "--max-new-tokens-limit", str(hostile_cases.LIMIT)))
        for case in hostile_cases.extreme_sampling_cases():
            with grpc.insecure_channel(daemon.target, options=[("grpc.enable_retries", 0)]) as channel:
                code, message, replies = call_raw(channel, case.payload)
            if _dead_within(daemon, 1.0):
                killers.append(f"{case.name}: daemon exited {daemon.process.returncode} ({code.name} {message!r})")
                stack.close()
                daemon = stack.enter_context(
                    running_daemon(*BASE_ARGS, "--max-new-tokens-limit", str(hostile_cases.LIMIT))
                )
            elif code != case.code or not _well_formed(replies):
                wrong.append(f"{case.name}: {code.name} {message[:160]!r}")
    assert not killers, "requests that killed the daemon:\n" + "\n".join(killers)
    assert not wrong, "\n".join(wrong)


def _dead_within(daemon: Daemon, seconds: float) -> bool:
    try:
        daemon.process.wait(seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_duplicate_request_ids_in_flight_get_a_clear_status(channel: grpc.Channel) -> None:
    """A caller-chosen request_id that is already running must be refused cleanly, not crash the call."""
    payload = pb.GenerateRequest(
        text="dup", max_new_tokens=32, ignore_eos=True, request_id="same-id"
    ).SerializeToString()
    results: list[tuple[grpc.StatusCode, str, list[pb.GenerateResponse]]] = []
    threads = [threading.Thread(target=lambda: results.append(call_raw(channel, payload))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INVALID_ARGUMENT}
    assert [code for code, _, _ in results].count(grpc.StatusCode.OK) >= 1
    assert all(code in allowed for code, _, _ in results), [(c.name, m) for c, m, _ in results]


def test_abusive_keepalive_pings_are_cut_off_and_others_unaffected(daemon: Daemon, channel: grpc.Channel) -> None:
    abusive_options = [
        ("grpc.keepalive_time_ms", 10),
        ("grpc.keepalive_timeout_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 0),
    ]
    payload = pb.GenerateRequest(text="ping", max_new_tokens=32, ignore_eos=True).SerializeToString()
    codes: list[grpc.StatusCode] = []
    with grpc.insecure_channel(daemon.target, options=abusive_options) as abusive:
        for _ in range(10):
            codes.append(call_raw(abusive, payload)[0])
            time.sleep(0.2)
    # The server answers ping floods with GOAWAY (ENHANCE_YOUR_CALM); calls on that connection may
    # fail with UNAVAILABLE, never with anything else, and the daemon keeps serving everyone else.
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert daemon.process.poll() is None
    code, _, replies = call_raw(channel, payload)
    assert code == grpc.StatusCode.OK
    assert _well_formed(replies)


def test_a_huge_tokenize_does_not_stall_other_streams(daemon: Daemon, channel: grpc.Channel) -> None:
    """A request-sized text is refused before tokenizing; the largest allowed one runs off the event loop."""
    info = pb_grpc.GenerationServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=CALL_TIMEOUT_S)
    largest_allowed = info.model_info.max_context_length * 32
    tokenize = channel.unary_unary(
        TOKENIZE, request_serializer=None, response_deserializer=pb.TokenizeResponse.FromString
    )
    huge = pb.TokenizeRequest(text="a" * (3 * 2**20)).SerializeToString()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as refused:
        tokenize(huge, timeout=CALL_TIMEOUT_S)
    refused_s = time.monotonic() - started
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert str(largest_allowed) in (refused.value.details() or "")

    allowed = pb.TokenizeRequest(text="ab " * (largest_allowed // 3)).SerializeToString()
    stream_payload = pb.GenerateRequest(text="steady", max_new_tokens=hostile_cases.LIMIT, ignore_eos=True)
    gaps: list[float] = []

    def read_stream() -> None:
        method = channel.unary_stream(
            GENERATE,
            request_serializer=pb.GenerateRequest.SerializeToString,
            response_deserializer=pb.GenerateResponse.FromString,
        )
        for _ in range(4):
            last = time.monotonic()
            for _reply in method(stream_payload, timeout=CALL_TIMEOUT_S):
                now = time.monotonic()
                gaps.append(now - last)
                last = now

    reader = threading.Thread(target=read_stream)
    reader.start()
    time.sleep(0.05)
    started = time.monotonic()
    for _ in range(5):
        tokenize(allowed, timeout=CALL_TIMEOUT_S)
    tokenize_s = time.monotonic() - started
    reader.join()
    worst = max(gaps)
    print(
        f"huge Tokenize refused in {refused_s * 1000:.1f} ms; 5 largest allowed took {tokenize_s:.2f} s; "
        f"worst gap in another stream {worst * 1000:.1f} ms"
    )
    assert worst < 1.0, f"Tokenize ({tokenize_s:.1f} s) stalled another stream for {worst:.1f} s"


# ----------------------------------------------------------------------------- hypothesis

_floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32))
_int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_small_text = st.text(st.characters(codec="utf-8"), max_size=40)


_valid_float = st.floats(min_value=0.0, max_value=3.4028234663852886e38, width=32, allow_subnormal=True)
_valid_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)


@st.composite
def hostile_requests(draw: st.DrawFn) -> pb.GenerateRequest:
    """Any value in every field: mostly invalid requests."""
    request = pb.GenerateRequest()
    if draw(st.booleans()):
        request.text = draw(_small_text)
    else:
        request.token_ids.ids.extend(draw(st.lists(st.one_of(st.integers(-3, 300), _int32), max_size=12)))
    if draw(st.booleans()):
        request.max_new_tokens = draw(st.one_of(st.integers(-2, hostile_cases.LIMIT + 2), _int32))
    for name in ("temperature", "top_p", "repetition_penalty"):
        value = draw(_floats)
        if value is not None:
            setattr(request.sampling, name, value)
    if draw(st.booleans()):
        request.sampling.top_k = draw(_int32)
    if draw(st.booleans()):
        request.sampling.seed = draw(st.integers(0, 2**64 - 1))
    request.stop.extend(draw(st.lists(_small_text, max_size=20)))
    request.stop_token_ids.extend(draw(st.lists(st.one_of(st.integers(-2, 300), _int32), max_size=4)))
    request.request_id = draw(st.one_of(st.just(""), st.text(max_size=140)))
    request.priority = draw(_int32)
    request.logprobs = draw(st.booleans())
    request.top_logprobs = draw(st.one_of(st.integers(-2, 22), _int32))
    request.ignore_eos = draw(st.booleans())
    return request


@st.composite
def extreme_valid_requests(draw: st.DrawFn) -> pb.GenerateRequest:
    """Every field valid, often at the edge of its range: each must be served."""
    request = pb.GenerateRequest()
    if draw(st.booleans()):
        request.text = draw(_valid_text)
    else:
        request.token_ids.ids.extend(draw(st.lists(st.integers(0, hostile_cases.VOCAB - 1), min_size=1, max_size=12)))
    # Short outputs keep the run quick; the limits of max_new_tokens are hand-written cases.
    request.max_new_tokens = draw(st.integers(1, 8))
    if draw(st.booleans()):
        request.sampling.temperature = draw(_valid_float)
    if draw(st.booleans()):
        request.sampling.top_p = draw(st.floats(0.0, 1.0, width=32, exclude_min=True))
    if draw(st.booleans()):
        request.sampling.top_k = draw(st.integers(0, 2**31 - 1))
    if draw(st.booleans()):
        request.sampling.repetition_penalty = draw(_valid_float.filter(lambda x: x > 0))
    if draw(st.booleans()):
        request.sampling.seed = draw(st.integers(0, 2**64 - 1))
    request.stop.extend(draw(st.lists(_valid_text, max_size=16)))
    request.stop_token_ids.extend(draw(st.lists(st.integers(0, hostile_cases.VOCAB - 1), max_size=4)))
    request.request_id = draw(st.text(st.characters(codec="ascii", min_codepoint=32, max_codepoint=126), max_size=128))
    request.priority = draw(_int32)
    request.logprobs = draw(st.booleans())
    request.top_logprobs = draw(st.integers(0, 20)) if request.logprobs else 0
    request.ignore_eos = draw(st.booleans())
    return request


generate_requests = st.one_of(hostile_requests(), extreme_valid_requests())


def broken_fields(request: pb.GenerateRequest) -> set[str]:
    """The fields this request breaks, by the rules documented in generation.proto (empty: valid)."""
    broken: set[str] = set()
    rid = request.request_id
    if len(rid) > 128 or (rid and not rid.isprintable()):
        broken.add("request_id")
    if request.HasField("max_new_tokens") and not 1 <= request.max_new_tokens <= hostile_cases.LIMIT:
        broken.add("max_new_tokens")
    s = request.sampling
    if s.HasField("temperature") and not (math.isfinite(s.temperature) and s.temperature >= 0):
        broken.add("sampling.temperature")
    if s.HasField("top_p") and not (math.isfinite(s.top_p) and 0 < s.top_p <= 1):
        broken.add("sampling.top_p")
    if s.HasField("top_k") and s.top_k < 0:
        broken.add("sampling.top_k")
    if s.HasField("repetition_penalty") and not (math.isfinite(s.repetition_penalty) and s.repetition_penalty > 0):
        broken.add("sampling.repetition_penalty")
    if len(request.stop) > 16 or any(not x or len(x.encode()) > 256 for x in request.stop):
        broken.add("stop")
    if any(not 0 <= t < hostile_cases.VOCAB for t in request.stop_token_ids):
        broken.add("stop_token_ids")
    if not 0 <= request.top_logprobs <= 20 or (request.top_logprobs and not request.logprobs):
        broken.add("top_logprobs")
    if request.WhichOneof("prompt") == "text" and not request.text:
        broken.add("text")
    if request.WhichOneof("prompt") == "token_ids":
        ids = request.token_ids.ids
        if not ids or any(not 0 <= t < hostile_cases.VOCAB for t in ids):
            broken.add("token_ids")
    if request.WhichOneof("prompt") is None:
        broken.add("prompt")
    return broken


# Soak mode fuzzes 2000 requests against the live daemon: longer than the suite's 300 s default.
@pytest.mark.timeout(1800)
def test_fuzzed_requests_get_precise_statuses(
    daemon: Daemon, channel: grpc.Channel, sizes: Sizes, figures: list[dict[str, Any]]
) -> None:
    before = sample(daemon.process.pid)
    counts: dict[str, int] = {}

    @settings(
        max_examples=sizes.fuzz_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(generate_requests)
    def check(request: pb.GenerateRequest) -> None:
        if killers:
            return  # the daemon is gone: nothing more to learn (and no shrinking against a dead server)
        if daemon.process.poll() is not None:
            killers.append(f"after {previous[-1]!r}: the daemon exited {daemon.process.returncode}")
            return
        previous.append(request)
        code, message, replies = call_raw(channel, request.SerializeToString())
        dying = code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
        if _dead_within(daemon, 5.0 if dying else 0.2):
            killers.append(f"{request!r} -> {code.name} {message!r}; the daemon exited {daemon.process.returncode}")
            return
        counts[code.name] = counts.get(code.name, 0) + 1
        broken = broken_fields(request)
        if broken:
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, message, broken)
            assert any(message.startswith(name) for name in broken), (message, broken)
        else:
            # A duplicate of a random request_id cannot be in flight: calls here are sequential.
            assert code == grpc.StatusCode.OK, (code, message)
            assert _well_formed(replies)
            finished = replies[-1].finished
            generated = sum(len(r.chunk.token_ids) for r in replies if r.WhichOneof("kind") == "chunk")
            assert finished.usage.completion_tokens == generated
            assert finished.finish_reason != pb.FINISH_REASON_UNSPECIFIED

    killers: list[str] = []
    previous: list[pb.GenerateRequest] = [pb.GenerateRequest()]
    check()
    alive = daemon.process.poll() is None
    after = sample(daemon.process.pid) if alive else None
    figures.append(
        {
            "scenario": "7 hostile input (hypothesis)",
            "mode": sizes.name,
            "sent": sum(counts.values()),
            "by_code": counts,
            "lost": len(killers),  # the request that killed the daemon got INTERNAL
            "daemon_killed_by": len(killers),
            "rss_before_mib": round(before.rss_mib, 1),
            "rss_after_mib": round(after.rss_mib, 1) if after else None,
            "fds_before": before.open_fds,
            "fds_after": after.open_fds if after else None,
        }
    )
    assert not killers, "a request killed the daemon:\n" + killers[0]
    assert after is not None
    assert daemon.health() == health_pb2.HealthCheckResponse.SERVING
    assert after.open_fds <= before.open_fds + FD_SLACK
