"""The metric names NVIDIA's DCGM exporter exports by default, read from ../shared/schemas/dcgm/METRICS.md.

That file summarises the exporter's default counter set (name, type, unit, labels) from its source; the
table under "Metrics exported by default" is the list. Commented-out counters and the exporter's own
DCGM_EXP_* series are described there in prose, not in the table, so they are not accepted here: a rule
that needs one must ship its own counters file first.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Metrics exported by default"


def metrics_file() -> Path:
    default = REPO.parent / "shared" / "schemas" / "dcgm" / "METRICS.md"
    return Path(os.environ.get("AUTOGLM_DCGM_METRICS", str(default)))


@cache
def parse(text: str) -> frozenset[str]:
    """The first-column names of the default-metrics table in TEXT."""
    start = text.index(SECTION) + len(SECTION)
    end = text.find("\n## ", start)
    section = text[start : end if end >= 0 else None]
    return frozenset(re.findall(r"^\| (DCGM_FI_[A-Z0-9_]+) \|", section, flags=re.MULTILINE))


def dcgm_metric_names() -> frozenset[str]:
    """The exporter's default metric names; skips the test (fails it in CI) without the summary file."""
    path = metrics_file()
    if not path.is_file():
        reason = f"DCGM exporter metric list not found at {path} (set AUTOGLM_DCGM_METRICS to its METRICS.md)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return parse(path.read_text(encoding="utf-8"))
