"""bench.json, the Markdown table and the PNG chart of one benchmark run."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

# Targets of the issue: (name, measured key, reference key, minimum ratio).
TARGETS = (
    ("daemon at 32 vs ceiling", "daemon32", "ceiling", 0.9),
    ("daemon at 1 vs serial", "daemon1", "serial", 0.9),
    ("mixed vs padded", "mixed", "padded", 1.1),
)


def machine() -> dict[str, Any]:
    """What the figures were measured on, and how busy it was."""
    import torch
    import transformers

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_average_1m_at_start": os.getloadavg()[0],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _entry(result: dict[str, Any], key: str) -> dict[str, Any]:
    if key.startswith("daemon"):
        concurrency = int(key.removeprefix("daemon"))
        for run in result["daemon"]:
            if run["concurrency"] == concurrency:
                entry: dict[str, Any] = run
                return entry
        raise KeyError(key)
    found: dict[str, Any] = result[key]
    return found


def _samples(entry: dict[str, Any]) -> list[float]:
    return [float(x) for x in entry.get("samples") or [entry["tokens_per_s"]]]


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target's ratio: the median over rounds of daemon / baseline measured side by side."""
    out = []
    for name, measured, reference, minimum in TARGETS:
        pairs = zip(_samples(_entry(result, measured)), _samples(_entry(result, reference)), strict=False)
        ratios = sorted(m / r for m, r in pairs)
        ratio = statistics.median(ratios)
        out.append(
            {
                "target": name,
                "ratio": round(ratio, 3),
                "rounds": [round(r, 3) for r in ratios],
                "minimum": minimum,
                "met": ratio >= minimum,
            }
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"### {result['model']} ({result['dtype']}, {result['device']}, {result['torch_threads']} torch threads"
        f"{' (auto)' if result.get('torch_threads_flag') == 0 else ''})",
        "",
        "Tokens/s: the best of the rounds; the ratios below pair runs of the same round.",
        "",
        "| run | tokens/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in ("ceiling", "serial", "padded"):
        lines.append(f"| {key} (generate) | {result[key]['tokens_per_s']:.1f} | | | | |")
    for run in result["daemon"]:
        lines.append(
            f"| daemon at {run['concurrency']} | {run['tokens_per_s']:.1f} | {_ms(run['ttft_ms']['p50'])}"
            f" | {_ms(run['ttft_ms']['p99'])} | {_ms(run['itl_ms']['p50'])} | {_ms(run['itl_ms']['p99'])} |"
        )
    mixed = result["mixed"]
    lines.append(
        f"| mixed at 32 (daemon) | {mixed['tokens_per_s']:.1f} | {_ms(mixed['ttft_ms']['p50'])}"
        f" | {_ms(mixed['ttft_ms']['p99'])} | {_ms(mixed['itl_ms']['p50'])} | {_ms(mixed['itl_ms']['p99'])} |"
    )
    lines += ["", "| target (median of side-by-side rounds) | ratio | rounds | minimum | met |"]
    lines.append("|---|---:|---|---:|---|")
    for t in result["targets"]:
        rounds = ", ".join(f"{r:.2f}" for r in t.get("rounds", []))
        met = "yes" if t["met"] else "NO"
        lines.append(f"| {t['target']} | {t['ratio']:.2f} | {rounds} | {t['minimum']} | {met} |")
    lines += per_step_markdown(result)
    return "\n".join(lines) + "\n"


# The per-step columns of the report: (key in per_step, heading).
PER_STEP_COLUMNS = (
    ("step_ms", "step"),
    ("forward_ms", "forward"),
    ("non_forward_ms", "non-forward"),
    ("schedule_ms", "schedule"),
    ("sample_ms", "sample"),
    ("output_ms", "output"),
    ("handoff_ms", "handoff"),
    ("deliver_ms", "loop: deliver"),
    ("cpu_ms", "engine CPU"),
    ("forward_cpu_ms", "forward CPU"),
    ("loop_cpu_ms", "loop CPU"),
    ("other_threads_cpu_ms", "other threads CPU"),
)


def median_per_step(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each per-step figure's median over the rounds that have it."""
    keys = {k for r in rounds for k in r}
    return {k: statistics.median(r[k] for r in rounds if k in r) for k in sorted(keys)}


def per_step_markdown(result: dict[str, Any]) -> list[str]:
    """The engine's per-step timers of each daemon run (medians over rounds), or nothing."""
    runs = [(f"daemon at {r['concurrency']}", r.get("per_step") or {}) for r in result["daemon"]]
    runs.append(("mixed at 32", result["mixed"].get("per_step") or {}))
    if not any(figures for _, figures in runs):
        return []
    lines = [
        "",
        "Per engine step, ms (the engine's timers and per-thread CPU, median of the rounds): non-forward ="
        " schedule + sample + output + handoff; the event loop's deliver overlaps the steps.",
        "",
        "| run | steps | " + " | ".join(heading for _, heading in PER_STEP_COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(PER_STEP_COLUMNS),
    ]
    for name, figures in runs:
        if figures:
            cells = [_fixed(figures.get(key)) for key, _ in PER_STEP_COLUMNS]
            lines.append(f"| {name} | {figures.get('steps', 0):.0f} | " + " | ".join(cells) + " |")
    return lines


def _fixed(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def chart(result: dict[str, Any], path: Path) -> bool:
    """A bar chart of tokens/s; False when matplotlib (the `bench` extra) is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = ["ceiling", "serial", "padded"] + [f"daemon@{r['concurrency']}" for r in result["daemon"]] + ["mixed@32"]
    values = [result["ceiling"]["tokens_per_s"], result["serial"]["tokens_per_s"], result["padded"]["tokens_per_s"]]
    values += [r["tokens_per_s"] for r in result["daemon"]] + [result["mixed"]["tokens_per_s"]]
    colours = ["#888888"] * 3 + ["#1f77b4"] * len(result["daemon"]) + ["#2ca02c"]
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.bar(labels, values, color=colours)
    axes.set_ylabel("generated tokens/s")
    axes.set_title(f"{result['model']} {result['dtype']} on {result['device']}")
    for i, value in enumerate(values):
        axes.text(i, value, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def write(result: dict[str, Any], output_dir: Path) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [output_dir / "bench.json", output_dir / "bench.md"]
    written[0].write_text(json.dumps(result, indent=2) + "\n")
    written[1].write_text(markdown(result))
    if chart(result, output_dir / "bench.png"):
        written.append(output_dir / "bench.png")
    return written
