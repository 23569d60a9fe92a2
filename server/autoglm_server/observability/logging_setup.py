"""stdlib logging for the daemon: JSON lines for machines, a compact text format for people.

Every record gets the trace and span id of the current OpenTelemetry span and the request id and
subject of the RPC it belongs to (observability.log_context). Anything that looks like a bearer
token or a JWT is blanked before it is written, whichever logger wrote it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any

from opentelemetry import trace

from autoglm_server.observability import log_context
from autoglm_server.observability.settings import ObservabilitySettings

# Attributes every LogRecord has; anything else on a record came from `extra=` and is written out.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_CONTEXT_FIELDS = ("trace_id", "span_id", "request_id", "subject")

# A JWT is three base64url segments, the first starting with eyJ ('{"'); bearer credentials in
# whatever form. Redaction is a backstop: no code should log a token in the first place.
_SECRET_PATTERNS = (
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)(bearer\s+)[^\s'\",]+"),
    re.compile(r"(?i)((?:x-vault-token|authorization|token)[\"']?\s*[:=]\s*[\"']?)[^\s'\",}]+"),
)


def redact(text: str) -> str:
    """Blank out anything that looks like a credential."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[REDACTED]", text)
    return text


class ContextFilter(logging.Filter):
    """Adds trace_id, span_id, request_id and subject to each record (unless `extra=` set them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = trace.format_trace_id(context.trace_id)
                record.span_id = trace.format_span_id(context.span_id)
            else:
                record.trace_id = ""
                record.span_id = ""
        if not hasattr(record, "request_id"):
            record.request_id = log_context.request_id()
        if not hasattr(record, "subject"):
            record.subject = log_context.subject()
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRS and key not in _CONTEXT_FIELDS
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context ids, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in _CONTEXT_FIELDS:
            entry[name] = getattr(record, name, "")
        # Extras are redacted too: under --log-prompts a prompt may quote a credential.
        entry.update(
            {key: redact(value) if isinstance(value, str) else value for key, value in _extras(record).items()}
        )
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger [request trace] message key=value ...` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        ids = [getattr(record, "request_id", ""), str(getattr(record, "trace_id", ""))[:8]]
        tag = f" [{' '.join(i for i in ids if i)}]" if any(ids) else ""
        extras = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        line = f"{stamp} {record.levelname:<7} {record.name}{tag} {record.getMessage()}"
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return redact(line)


def use_json(log_format: str, stream: IO[str]) -> bool:
    """auto means text when a person is watching (a TTY), JSON otherwise."""
    if log_format == "auto":
        return not stream.isatty()
    return log_format == "json"


def configure_logging(settings: ObservabilitySettings, stream: IO[str] | None = None) -> None:
    """Install one handler on the root logger, replacing any earlier one (called once, in main)."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if use_json(settings.log_format, out) else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # Libraries that are chatty at INFO; their warnings still come through.
    for name in ("urllib3", "hvac", "opentelemetry"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
