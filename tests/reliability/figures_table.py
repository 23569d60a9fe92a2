"""Render the figures JSON of a reliability run (AUTOGLM_RELIABILITY_FIGURES) as the Markdown table
of docs/reliability.md: `python -m tests.reliability.figures_table figures.json`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = (
    ("scenario", "scenario"),
    ("sent", "sent"),
    ("completed", "completed (OK)"),
    ("by_code", "failed, by code"),
    ("lost", "lost"),
    ("reject_ms_p50", "reject p50 ms"),
    ("reject_ms_p99", "reject p99 ms"),
    ("complete_ms_p50", "complete p50 ms"),
    ("complete_ms_p99", "complete p99 ms"),
    ("peak_rss_mib", "peak RSS MiB"),
)
SHOWN = {key for key, _ in COLUMNS} | {"mode", "server_codes"}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " | other figures |"]
    lines.append("|" + "---|" * (len(COLUMNS) + 1))
    for row in sorted(rows, key=lambda r: str(r["scenario"])):
        if "completed" not in row:  # hostile input: OK count is in by_code
            row = {**row, "completed": row.get("by_code", {}).get("OK", 0)}
        other = {k: v for k, v in row.items() if k not in SHOWN}
        by_code = {k: v for k, v in row.get("by_code", {}).items() if k != "OK"}
        cells = [_cell(by_code if key == "by_code" else row.get(key)) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " | " + _cell(other).replace("|", "/") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1]).read_text())))
