"""The Grafana dashboard: regenerated equal to the checked-in JSON, read back by grafana-foundation-sdk's
models, every expression parsed by promtool, and every metric one the daemon's registry exports."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import monitoring_dashboard
import pytest
import yaml
from dcgm_metrics import dcgm_metric_names
from exported import exported_metric_names
from grafana_foundation_sdk.models.dashboard import Dashboard
from prometheus_tools import promtool_run, write_rules
from promql_names import metric_names, without_grafana_variables

# The mesh suite's renderer and strict Kubernetes validation (tests/mesh/meshcheck).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mesh"))
from meshcheck import core, render
from meshcheck.tools import KUBECTL


@pytest.fixture(scope="module")
def board(monitoring_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((monitoring_dir / "dashboard.json").read_text())
    return data


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def _expressions(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(board) for t in p.get("targets", [])]


def test_checked_in_json_is_what_the_generator_builds(board: dict[str, Any]) -> None:
    assert board == monitoring_dashboard.to_json(), "run .venv/bin/python mesh/monitoring/generate.py"


def test_the_sdk_reads_the_json_back_unchanged(board: dict[str, Any]) -> None:
    """grafana-foundation-sdk's Dashboard model parses the JSON and writes back the same object."""
    model = Dashboard.from_json(board)
    assert json.loads(json.dumps(model.to_json(), default=lambda o: o.to_json())) == board


def test_panels_cover_what_an_operator_needs(board: dict[str, Any]) -> None:
    titles = " | ".join(p["title"] for p in _panels(board)).lower()
    for topic in (
        "requests per second",
        "tokens per second",
        "time to first token",
        "inter-token latency",
        "queue and batch",
        "kv token budget",
        "rejections by reason",
        "authentication failures",
        "canary against stable",
    ):
        assert topic in titles, topic
    for panel in _panels(board):
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_every_expression_parses_with_promtool(promtool: str, board: dict[str, Any], tmp_path: Path) -> None:
    """Each panel expression becomes a recording rule, so promtool's own PromQL parser checks it."""
    exprs = _expressions(board)
    rules = [{"record": f"dashboard:panel_{i}", "expr": without_grafana_variables(e)} for i, e in enumerate(exprs)]
    path = write_rules([{"name": "dashboard", "rules": rules}], tmp_path / "dashboard-rules.yaml")
    proc = promtool_run(promtool, "check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout


def test_promtool_rejects_a_broken_expression(promtool: str, tmp_path: Path) -> None:
    broken = [{"record": "dashboard:broken", "expr": "sum by (le (rate(autoglm_requests_total[5m]))"}]
    proc = promtool_run(
        promtool, "check", "rules", str(write_rules([{"name": "d", "rules": broken}], tmp_path / "b.yaml"))
    )
    assert proc.returncode != 0


def test_every_metric_is_in_the_daemon_registry(board: dict[str, Any]) -> None:
    """... or, for the GPU row, in the DCGM exporter's default set."""
    exported = exported_metric_names() | dcgm_metric_names()
    used = {name for e in _expressions(board) for name in metric_names(without_grafana_variables(e))}
    variables = [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    used |= {m.group(1) for q in variables for m in [re.match(r"label_values\((\w+)", q)] if m}
    assert len(variables) == 2
    assert used - exported == set()
    # Everything the issue asks a panel for is read from the daemon.
    for needed in (
        "autoglm_requests_total",
        "autoglm_time_to_first_token_seconds_bucket",
        "autoglm_inter_token_latency_seconds_bucket",
        "autoglm_requests_waiting",
        "autoglm_batch_size_bucket",
        "autoglm_token_budget_used",
        "autoglm_rejections_total",
        "autoglm_auth_failures_total",
    ):
        assert needed in used, needed


def test_monitoring_kustomization_ships_both(monitoring_dir: Path, board: dict[str, Any]) -> None:
    """`kubectl apply -k mesh/monitoring` applies the rule file and the dashboard, unchanged and valid."""
    kubectl = KUBECTL.require()
    docs = render.parse(render.kustomize(kubectl, monitoring_dir))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"PrometheusRule", "ConfigMap"}
    assert kinds["PrometheusRule"] == yaml.safe_load((monitoring_dir / "prometheusrule.yaml").read_text())
    config_map = kinds["ConfigMap"]
    assert core.validate_core(config_map) == []
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["dashboard.json"]) == board
