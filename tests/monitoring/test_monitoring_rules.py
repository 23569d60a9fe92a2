"""The PrometheusRule: fresh from its source, accepted by promtool, unit-tested with `promtool test rules`,
every alert with a severity, summary and runbook, and every metric one the daemon exports."""

from __future__ import annotations

import shutil
from pathlib import Path

import generate
import monitoring_gpu
import monitoring_rules
import pytest
import yaml
from dcgm_metrics import dcgm_metric_names
from exported import exported_metric_names
from prometheus_tools import promtool_run, write_rules
from promql_names import metric_names

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "mesh" / "README.md"
# Series the rules read that the daemon does not export, each from a standard exporter (and the DCGM
# exporter's default set, dcgm_metrics.py).
EXTERNAL = {"kube_pod_status_ready": "kube-state-metrics: the pods' Ready condition"}
SEVERITIES = {"critical", "warning"}


@pytest.fixture(scope="module")
def checked_in(monitoring_dir: Path) -> dict[str, object]:
    rule: dict[str, object] = yaml.safe_load((monitoring_dir / "prometheusrule.yaml").read_text())
    return rule


def _all_rules(groups: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for g in groups for r in g["rules"]]  # type: ignore[attr-defined]


def test_generated_files_are_fresh() -> None:
    stale = {str(p) for p, text in generate.outputs().items() if p.read_text() != text}
    assert stale == set(), "run .venv/bin/python mesh/monitoring/generate.py"


def test_checked_in_rules_mean_the_source(checked_in: dict[str, object]) -> None:
    """Formatting aside, the applied file holds the source's rules (the same names, labels, annotations)."""
    source = monitoring_rules.prometheus_rule()
    strip = [{k: v for k, v in r.items() if k != "expr"} for r in _all_rules(source["spec"]["groups"])]
    assert [{k: v for k, v in r.items() if k != "expr"} for r in _all_rules(checked_in["spec"]["groups"])] == strip  # type: ignore[index]


@pytest.mark.parametrize("tuning", ["production", "end-to-end"])
def test_promtool_accepts_the_rules(promtool: str, checked_in: dict[str, object], tmp_path: Path, tuning: str) -> None:
    groups = (
        checked_in["spec"]["groups"] if tuning == "production" else monitoring_rules.groups(monitoring_rules.END_TO_END)
    )  # type: ignore[index]
    path = write_rules(groups, tmp_path / "rules.yaml")
    proc = promtool_run(promtool, "check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_all_rules(groups))} rules found" in proc.stdout


def test_promtool_unit_tests_pass(promtool: str, checked_in: dict[str, object], tmp_path: Path) -> None:
    write_rules(checked_in["spec"]["groups"], tmp_path / "rules.yaml")  # type: ignore[index]
    shutil.copy(HERE / "rules_test.yaml", tmp_path / "rules_test.yaml")
    proc = promtool_run(promtool, "test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """The same unit tests against rules whose thresholds are off must fail (they are not vacuous)."""
    loose = monitoring_rules.Tuning(error_ratio=0.5, waiting_per_pod=100, rejection_ratio=0.5, key_stale_s=1e9)
    write_rules(monitoring_rules.groups(loose), tmp_path / "rules.yaml")
    shutil.copy(HERE / "rules_test.yaml", tmp_path / "rules_test.yaml")
    proc = promtool_run(promtool, "test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert proc.returncode != 0
    for alert in ("AutoglmErrorRatioHigh", "AutoglmSaturated", "AutoglmRejectionsHigh", "AutoglmJwtKeysStale"):
        assert f"alertname: {alert}" in proc.stdout + proc.stderr, alert


def test_every_alert_has_severity_summary_and_runbook(checked_in: dict[str, object]) -> None:
    readme = README.read_text()
    runbooks = readme[readme.index("## Runbooks") :]
    for rule in _all_rules(checked_in["spec"]["groups"]):  # type: ignore[index]
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name  # type: ignore[index]
        assert rule["annotations"]["summary"].strip(), name  # type: ignore[index]
        assert rule["annotations"]["runbook"].endswith(f"({name})"), name  # type: ignore[index]
        assert f"| `{name}` |" in runbooks, f"mesh/README.md has no runbook line for {name}"


def test_the_issue_s_alerts_are_all_there(checked_in: dict[str, object]) -> None:
    alerts = {r["alert"] for r in _all_rules(checked_in["spec"]["groups"]) if "alert" in r}  # type: ignore[index]
    daemon = {a.name for a in monitoring_rules.alerts(monitoring_rules.PRODUCTION)}
    gpu = {a.name for a in monitoring_gpu.alerts(monitoring_gpu.GPU_PRODUCTION)}
    assert alerts == daemon | gpu
    assert (len(daemon), len(gpu)) == (11, 4)


def test_every_metric_is_exported_or_recorded(checked_in: dict[str, object]) -> None:
    rules = _all_rules(checked_in["spec"]["groups"])  # type: ignore[index]
    recorded = {r["record"] for r in rules if "record" in r}
    known = exported_metric_names() | recorded | set(EXTERNAL) | dcgm_metric_names()
    unknown = {name for r in rules for name in metric_names(str(r["expr"])) if name not in known}
    assert unknown == set()


def test_the_name_check_catches_a_typo() -> None:
    assert "autoglm_requests_totl" in metric_names("sum(rate(autoglm_requests_totl[5m]))")
    assert "autoglm_requests_totl" not in exported_metric_names()
