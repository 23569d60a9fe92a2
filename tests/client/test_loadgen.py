"""The load generator: seeded request sets, percentiles, and runs against a real gRPC server."""

from __future__ import annotations

import io
import math
import random

import pytest

from autoglm_client import loadgen
from autoglm_client.progress import ProgressLine
from tests.client.scripted_server import VOCAB, ScriptedServer


def test_make_requests_is_reproducible_and_within_ranges() -> None:
    kwargs = {"prompt_tokens": (16, 128), "max_new_tokens": (4, 8), "vocab_size": 50, "seed": 7}
    first = loadgen.make_requests(200, **kwargs)  # type: ignore[arg-type]
    assert first == loadgen.make_requests(200, **kwargs)  # type: ignore[arg-type]
    assert first != loadgen.make_requests(200, **{**kwargs, "seed": 8})  # type: ignore[arg-type]
    lengths = {len(r.prompt_token_ids) for r in first}
    new_tokens = {r.max_new_tokens for r in first}
    assert min(lengths) >= 16
    assert max(lengths) <= 128
    assert new_tokens == {4, 5, 6, 7, 8}  # inclusive at both ends
    assert all(0 <= i < 50 for r in first for i in r.prompt_token_ids)


def test_fixed_lengths() -> None:
    requests = loadgen.make_requests(5, prompt_tokens=(64, 64), max_new_tokens=(32, 32), vocab_size=10, seed=0)
    assert [(len(r.prompt_token_ids), r.max_new_tokens) for r in requests] == [(64, 32)] * 5
    assert isinstance(requests[0].prompt_token_ids, tuple)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt_tokens": (0, 4)},
        {"prompt_tokens": (8, 4)},
        {"max_new_tokens": (0, 0)},
        {"vocab_size": 0},
    ],
)
def test_make_requests_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"prompt_tokens": (1, 2), "max_new_tokens": (1, 2), "vocab_size": 5, "seed": 0}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        loadgen.make_requests(3, **{**arguments, **kwargs})  # type: ignore[arg-type]


def test_percentiles_interpolate_like_numpy_linear() -> None:
    samples = [float(v) for v in range(1, 101)]
    random.Random(0).shuffle(samples)
    result = loadgen.Percentiles.of(samples)
    # numpy.percentile(range(1, 101), [50, 90, 99]) == [50.5, 90.1, 99.01]
    assert (result.p50, result.p90, result.p99) == pytest.approx((50.5, 90.1, 99.01))
    assert result.mean == pytest.approx(50.5)
    assert result.count == 100
    single = loadgen.Percentiles.of([3.0])
    assert (single.p50, single.p99) == (3.0, 3.0)


def test_empty_percentiles_are_nan_and_null_in_json() -> None:
    empty = loadgen.Percentiles.of([])
    assert math.isnan(empty.p50)
    assert empty.to_dict() == {"p50": None, "p90": None, "p99": None, "mean": None, "count": 0}


async def test_closed_loop_run_measures_every_request(scripted: ScriptedServer) -> None:
    requests = loadgen.make_requests(12, prompt_tokens=(2, 9), max_new_tokens=(3, 6), vocab_size=VOCAB, seed=3)
    report = await loadgen.run_load(scripted.target, requests, concurrency=4, timeout=30)
    assert report.completed == 12
    assert report.errors == {}
    assert report.generated_tokens == sum(r.max_new_tokens for r in requests)
    assert report.tokens_per_s == pytest.approx(report.generated_tokens / report.duration_s)
    assert report.ttft_ms.count == 12
    assert report.e2e_ms.count == 12
    assert report.itl_ms.count == report.generated_tokens - 12  # every token after each first one
    assert report.e2e_ms.p50 >= report.ttft_ms.p50 > 0
    document = report.to_dict()
    assert set(document) >= {"completed", "errors", "duration_s", "generated_tokens", "tokens_per_s"}
    assert set(document["ttft_ms"]) >= {"p50", "p90", "p99"}


async def test_open_loop_run_with_a_rate(scripted: ScriptedServer) -> None:
    requests = loadgen.make_requests(6, prompt_tokens=(4, 4), max_new_tokens=(2, 2), vocab_size=VOCAB, seed=1)
    report = await loadgen.run_load(scripted.target, requests, concurrency=2, rate=200.0, seed=5)
    assert report.completed == 6
    assert report.rate == 200.0
    assert report.generated_tokens == 12


async def test_failures_are_counted_by_status_code() -> None:
    requests = loadgen.make_requests(3, prompt_tokens=(1, 1), max_new_tokens=(1, 1), vocab_size=2, seed=0)
    report = await loadgen.run_load("127.0.0.1:1", requests, concurrency=2, timeout=5)
    assert report.completed == 0
    assert report.errors == {"UNAVAILABLE": 3}
    assert report.generated_tokens == 0
    assert report.ttft_ms.count == 0


async def test_run_load_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await loadgen.run_load("127.0.0.1:1", [], concurrency=0)
    with pytest.raises(ValueError, match="rate"):
        await loadgen.run_load("127.0.0.1:1", [], concurrency=1, rate=0.0)


def test_progress_line_renders_counts() -> None:
    stream = io.StringIO()
    bar = ProgressLine(10, lambda: (4, 1, 100), stream)
    bar.finish()
    line = stream.getvalue()
    assert line.startswith("\r[###############---------------] 5/10 requests  1 errors")
    assert line.endswith("\n")
