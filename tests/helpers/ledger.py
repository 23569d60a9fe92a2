"""A ledger of every request a reliability scenario sends, and the check that none was lost.

Each call is recorded once, when it ends (or when the test gives up on it: a hang). A scenario
states, per label, which outcomes are acceptable; `verify` lists every request that was not
accounted for: never recorded, hung past its deadline, ended with an unexpected status, or
"completed" without its full output.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from autoglm_client.v1 import generation_pb2 as pb

OK = grpc.StatusCode.OK


@dataclass
class Outcome:
    """How one Generate call ended, as the client saw it."""

    label: str
    sent_at: float
    ended_at: float = 0.0
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    message: str = ""
    started: bool = False
    finished: bool = False
    finish_reason: int = pb.FINISH_REASON_UNSPECIFIED
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    completion_tokens: int = -1  # from the Finished message's usage
    chunk_times: list[float] = field(default_factory=list)
    max_new_tokens: int | None = None
    deadline_s: float | None = None
    hung: bool = False
    cancelled_by_client: bool = False
    retry_after_s: float | None = None
    # HTTP calls only (tests/helpers/http_calls.py): the response status (None: no response, e.g.
    # connection refused) and its Retry-After header in whole seconds; `code` is the gRPC code of
    # the same failure, as the daemon's requests metric counts it.
    http_status: int | None = None
    retry_after_header: str | None = None

    @property
    def latency_s(self) -> float:
        return self.ended_at - self.sent_at

    @property
    def inter_token_s(self) -> list[float]:
        times = self.chunk_times
        return [b - a for a, b in itertools.pairwise(times)]


@dataclass(frozen=True)
class Expectation:
    """What a label's requests may end with."""

    codes: Collection[grpc.StatusCode]
    finish_reasons: Collection[int] = (pb.FINISH_REASON_LENGTH,)
    # When set, an OK outcome must carry exactly this many tokens (ignore_eos + LENGTH).
    exact_tokens: bool = True


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN when there are no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Ledger:
    """Sends are counted when made; outcomes when they end. Both must agree."""

    def __init__(self) -> None:
        self.sent = 0
        self.opened: list[Outcome] = []  # every call made, in order, ended or not
        self.outcomes: list[Outcome] = []  # the calls that ended, in the order they ended

    def open(self, outcome: Outcome) -> Outcome:
        self.sent += 1
        self.opened.append(outcome)
        return outcome

    def close(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def by_code(self, label: str | None = None) -> dict[str, int]:
        counter = collections.Counter(o.code.name for o in self.outcomes if label is None or o.label == label)
        return dict(sorted(counter.items()))

    def with_label(self, label: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.label == label]

    def problems(self, expectations: Mapping[str, Expectation]) -> list[str]:
        """Every request not accounted for, one line each (empty when nothing is lost)."""
        found: list[str] = []
        if len(self.outcomes) != self.sent:
            found.append(f"{self.sent} sent but {len(self.outcomes)} recorded")
        for index, outcome in enumerate(self.outcomes):
            problem = _problem(outcome, expectations.get(outcome.label))
            if problem:
                found.append(f"#{index} [{outcome.label}] {problem}")
        return found

    def lost(self, expectations: Mapping[str, Expectation]) -> int:
        problems = self.problems(expectations)
        return len([p for p in problems if p.startswith("#")]) + max(0, self.sent - len(self.outcomes))

    def verify(self, expectations: Mapping[str, Expectation]) -> None:
        problems = self.problems(expectations)
        assert not problems, f"{len(problems)} requests not accounted for:\n" + "\n".join(problems[:40])

    def figures(self, scenario: str, expectations: Mapping[str, Expectation], **extra: Any) -> dict[str, Any]:
        """The row of docs/reliability.md for this scenario."""
        completed = [o.latency_s * 1000 for o in self.outcomes if o.code == OK]
        rejected = [o.latency_s * 1000 for o in self.outcomes if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
        ttft = [(o.chunk_times[0] - o.sent_at) * 1000 for o in self.outcomes if o.code == OK and o.chunk_times]
        return {
            "scenario": scenario,
            "sent": self.sent,
            "completed": sum(1 for o in self.outcomes if o.code == OK),
            "by_code": {k: v for k, v in self.by_code().items() if k != "OK"},
            "lost": self.lost(expectations),
            "reject_ms_p50": _rounded(rejected, 50, 2),
            "reject_ms_p99": _rounded(rejected, 99, 2),
            "complete_ms_p50": _rounded(completed, 50, 1),
            "complete_ms_p99": _rounded(completed, 99, 1),
            "ttft_ms_p50": _rounded(ttft, 50, 1),
            **extra,
        }


def _rounded(values: list[float], q: float, digits: int) -> float | None:
    """A percentile for the figures table: None (JSON null) when there is nothing to measure."""
    return round(percentile(values, q), digits) if values else None


def _problem(outcome: Outcome, expectation: Expectation | None) -> str:
    if expectation is None:
        return "no expectation for this label"
    if outcome.hung:
        return f"hung: no end {outcome.latency_s:.1f} s after sending (deadline {outcome.deadline_s})"
    if outcome.code not in expectation.codes:
        return f"ended with {outcome.code.name} ({outcome.message!r}), expected one of " + ", ".join(
            sorted(c.name for c in expectation.codes)
        )
    if outcome.code != OK:
        return ""
    if not (outcome.started and outcome.finished):
        return f"OK without Started/Finished (started={outcome.started}, finished={outcome.finished})"
    if outcome.finish_reason not in expectation.finish_reasons:
        return f"finish reason {pb.FinishReason.Name(outcome.finish_reason)}"
    if outcome.completion_tokens != len(outcome.token_ids):
        return f"usage says {outcome.completion_tokens} tokens, the stream carried {len(outcome.token_ids)}"
    if (
        expectation.exact_tokens
        and outcome.max_new_tokens is not None
        and outcome.finish_reason == pb.FINISH_REASON_LENGTH
        and len(outcome.token_ids) != outcome.max_new_tokens
    ):
        return f"LENGTH with {len(outcome.token_ids)} tokens, asked for {outcome.max_new_tokens}"
    return ""
