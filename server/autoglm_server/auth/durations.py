"""Durations as operators write them: 15m, 1h30m, 45s, 500ms, 2d, or plain seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# "ms" before "m", so that 500ms is not read as 500 minutes followed by a stray "s".
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_HINT = "use e.g. 15m, 1h30m, 45s, 500ms or plain seconds"


def parse_duration(text: str) -> float:
    """Seconds in `text` (never negative); raises ValueError naming the text when it is not a duration."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = _parse_units(text)
    # float() also accepts "nan", "inf" and "-5": none of them is a duration an operator means.
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {text!r} ({_HINT})")
    return seconds


def _parse_units(text: str) -> float:
    pos, total = 0, 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            raise ValueError(f"not a duration: {text!r} ({_HINT})")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"not a duration: {text!r} ({_HINT})")
    return total
