"""The GPU rules and panels over the DCGM exporter: promtool unit tests (firing and silent cases), tests
that can fail, the GPU row's topics, and names checked against the exporter's default metric set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import monitoring_gpu
import pytest
import yaml
from dcgm_metrics import dcgm_metric_names, parse
from prometheus_tools import promtool_run, write_rules
from promql_names import metric_names, without_grafana_variables

HERE = Path(__file__).resolve().parent
GPU_GROUPS = {"autoglm.gpu.recording", "autoglm.gpu.alerts"}


@pytest.fixture(scope="module")
def gpu_groups(monitoring_dir: Path) -> list[dict[str, Any]]:
    """The GPU groups as the checked-in PrometheusRule holds them."""
    rule = yaml.safe_load((monitoring_dir / "prometheusrule.yaml").read_text())
    groups: list[dict[str, Any]] = [g for g in rule["spec"]["groups"] if g["name"] in GPU_GROUPS]
    return groups


def _promtool_test(promtool: str, groups: list[dict[str, Any]], tmp_path: Path) -> str:
    write_rules(groups, tmp_path / "rules.yaml")
    shutil.copy(HERE / "gpu_rules_test.yaml", tmp_path / "gpu_rules_test.yaml")
    proc = promtool_run(promtool, "test", "rules", "gpu_rules_test.yaml", cwd=tmp_path)
    return f"rc={proc.returncode}\n{proc.stdout}{proc.stderr}"


def test_gpu_groups_are_shipped_apart(gpu_groups: list[dict[str, Any]]) -> None:
    assert {g["name"] for g in gpu_groups} == GPU_GROUPS
    alerts = {r["alert"] for g in gpu_groups for r in g["rules"] if "alert" in r}
    assert alerts == {
        "AutoglmGpuMemoryHigh",
        "AutoglmGpuXidError",
        "AutoglmGpuBusyWithoutWork",
        "AutoglmGpuIdleWhileQueued",
    }


def test_promtool_unit_tests_of_the_gpu_alerts_pass(
    promtool: str, gpu_groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = _promtool_test(promtool, gpu_groups, tmp_path)
    assert out.startswith("rc=0"), out
    assert "SUCCESS" in out


def test_gpu_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """Thresholds set where nothing fires (or everything does) make the same unit tests fail, alert by alert."""
    silent = monitoring_gpu.GpuTuning(memory_ratio=0.999, busy_util_pct=95, idle_util_pct=1)
    out = _promtool_test(promtool, monitoring_gpu.groups(silent), tmp_path)
    assert not out.startswith("rc=0"), out
    for alert in ("AutoglmGpuMemoryHigh", "AutoglmGpuBusyWithoutWork", "AutoglmGpuIdleWhileQueued"):
        assert f"alertname: {alert}" in out, alert
    loud = monitoring_gpu.GpuTuning(memory_ratio=0.5)  # vLLM's normal 90 % would page
    out = _promtool_test(promtool, monitoring_gpu.groups(loud), tmp_path)
    assert "alertname: AutoglmGpuMemoryHigh" in out, out


def test_gpu_rules_name_only_dcgm_daemon_or_recorded_metrics(gpu_groups: list[dict[str, Any]]) -> None:
    from exported import exported_metric_names

    rules = [r for g in gpu_groups for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    used = {name for r in rules for name in metric_names(str(r["expr"]))}
    dcgm = dcgm_metric_names()
    assert used - exported_metric_names() - recorded - dcgm == set()
    assert {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_XID_ERRORS"} <= used


def test_the_dcgm_list_is_the_default_table_only() -> None:
    names = dcgm_metric_names()
    assert len(names) == 25
    assert {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_PROF_GR_ENGINE_ACTIVE"} <= names
    # Described in the file's prose as commented out, or the exporter's own series: not exported by default.
    assert not {"DCGM_FI_PROF_SM_ACTIVE", "DCGM_EXP_XID_ERRORS_COUNT"} & names
    table = "## Metrics exported by default\n\n| metric |\n| --- |\n| DCGM_FI_DEV_GPU_TEMP | gauge |\n\n## Next\n"
    assert parse(table + "| DCGM_FI_DEV_SM_CLOCK | gauge |\n") == {"DCGM_FI_DEV_GPU_TEMP"}


def test_the_gpu_row_covers_memory_utilization_temperature_power_and_xid(monitoring_dir: Path) -> None:
    board = json.loads((monitoring_dir / "dashboard.json").read_text())
    panels = board["panels"]
    row = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "GPU (DCGM exporter)")
    gpu_panels = [p for p in panels[row + 1 :] if p["type"] != "row"]
    titles = " | ".join(p["title"] for p in gpu_panels).lower()
    for topic in ("memory used and free", "kv cache", "utilization", "temperature", "power", "xid", "at start"):
        assert topic in titles, topic
    exprs = [without_grafana_variables(t["expr"]) for p in gpu_panels for t in p["targets"]]
    dcgm_exprs = [e for e in exprs if "DCGM_" in e]
    # Each DCGM query is joined to our pods (and the pickers) through the daemon's build info.
    assert dcgm_exprs
    assert all("on (namespace, pod) group_left" in e and "autoglm_build_info" in e for e in dcgm_exprs)
    used = {n for e in exprs for n in metric_names(e)}
    assert {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "autoglm_kv_cache_usage_ratio"} <= used
    assert "autoglm_gpu_memory_headroom_bytes" in used
