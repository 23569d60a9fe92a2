"""Per-RPC values that every log line of that RPC carries: request id and subject.

grpc.aio runs each RPC in its own asyncio task, and a task runs in its own copy of the contextvars
context, so a value set here by the servicer or the auth interceptor is seen by every log line of
that RPC and by no other. Nothing needs resetting: the copy goes away with the task.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from opentelemetry import trace

ENDUSER_ID = "enduser.id"

_request_id: ContextVar[str] = ContextVar("autoglm_request_id", default="")
_subject: ContextVar[str] = ContextVar("autoglm_subject", default="")
_summary: ContextVar[CallSummary | None] = ContextVar("autoglm_call_summary", default=None)


@dataclass(slots=True)
class CallSummary:
    """What the access log line of one RPC reports beyond its method, status and duration.

    The access-log interceptor creates one per RPC; the servicer's observer fills it in.
    """

    request_id: str = ""
    subject: str = ""
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    finish_reason: str = ""
    rejection: str = ""
    session_id: str = ""


def set_request_id(request_id: str) -> None:
    """Tag the rest of this RPC's log lines (and its access log line) with a request id."""
    _request_id.set(request_id)
    summary = _summary.get()
    if summary is not None:
        summary.request_id = request_id


def set_subject(subject: str) -> None:
    """Tag the rest of this RPC's log lines with the authenticated subject (the JWT `sub`), and its
    span with enduser.id (the OpenTelemetry convention for the caller's identity)."""
    _subject.set(subject)
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(ENDUSER_ID, subject)
    summary = _summary.get()
    if summary is not None:
        summary.subject = subject


def request_id() -> str:
    return _request_id.get()


def subject() -> str:
    return _subject.get()


def begin_call_summary() -> CallSummary:
    """Start the summary of the RPC running in this task (called by the access-log interceptor)."""
    summary = CallSummary(request_id=_request_id.get(), subject=_subject.get())
    _summary.set(summary)
    return summary


def call_summary() -> CallSummary | None:
    """The summary of the RPC running in this task, if an access-log interceptor started one."""
    return _summary.get()
