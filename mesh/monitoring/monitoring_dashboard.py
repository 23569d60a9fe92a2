"""The Grafana dashboard of the daemon, built with grafana-foundation-sdk (Grafana's own typed builders).

generate.py writes it to dashboard.json; tests/monitoring regenerates it, parses every expression with
promtool and checks each metric name against the daemon's real registry. Queries filter on the
dashboard's variables and aggregate with `sum by (...)`, so new labels on a series change nothing here.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, VariableRefresh
from monitoring_rules import CAPACITY_REASONS, SERVER_ERROR_CODES

UID = "autoglm-server"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every selector of the dashboard: the namespace and model picked at the top.
SEL = 'namespace=~"$namespace", model=~"$model"'
RATE = "[$__rate_interval]"


def _query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def _series(title: str, unit: str, targets: list[tuple[str, str]], description: str) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(8)
        .span(12)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max"])
        )
    )
    for expr, legend in targets:
        panel = panel.with_target(_query(expr, legend))
    return panel


def _quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    keep = f"{by}, le" if by else "le"
    prefix = "{{" + by + "}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({keep}) (rate({metric}_bucket{{{SEL}}}{RATE})))",
            f"{prefix}p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def _traffic() -> list[timeseries.Panel]:
    return [
        _series(
            "Requests per second",
            "reqps",
            [(f"sum by (version, method) (rate(autoglm_requests_total{{{SEL}}}{RATE}))", "{{version}} {{method}}")],
            "Finished calls of both front doors, per version and method.",
        ),
        _series(
            "Tokens per second",
            "short",
            [
                (f"sum by (version) (rate(autoglm_generated_tokens_total{{{SEL}}}{RATE}))", "{{version}} generated"),
                (f"sum by (version) (rate(autoglm_prompt_tokens_total{{{SEL}}}{RATE}))", "{{version}} prompt"),
            ],
            "Generated and prompt tokens of admitted calls.",
        ),
    ]


def _latency() -> list[timeseries.Panel]:
    return [
        _series(
            "Time to first token",
            "s",
            _quantiles("autoglm_time_to_first_token_seconds"),
            "Arrival to first token sent; the SLO alert watches p99.",
        ),
        _series(
            "Inter-token latency",
            "s",
            _quantiles("autoglm_inter_token_latency_seconds"),
            "Time between successive tokens of one stream.",
        ),
        _series(
            "Queue time and request duration (p95)",
            "s",
            [
                (
                    f"histogram_quantile(0.95, sum by (le) (rate(autoglm_queue_time_seconds_bucket{{{SEL}}}{RATE})))",
                    "queue p95",
                ),
                (
                    "histogram_quantile(0.95, sum by (le) "
                    f"(rate(autoglm_request_duration_seconds_bucket{{{SEL}}}{RATE})))",
                    "duration p95",
                ),
            ],
            "Waiting before the first forward pass, and the whole call.",
        ),
    ]


def _capacity() -> list[timeseries.Panel]:
    return [
        _series(
            "Queue and batch",
            "short",
            [
                (f"sum by (pod) (autoglm_requests_waiting{{{SEL}}})", "{{pod}} waiting"),
                (f"sum by (pod) (autoglm_requests_running{{{SEL}}})", "{{pod}} running"),
                (
                    f"histogram_quantile(0.95, sum by (le) (rate(autoglm_batch_size_bucket{{{SEL}}}{RATE})))",
                    "batch size p95",
                ),
            ],
            "Requests waiting for a slot and decoding, per pod; rows per forward step.",
        ),
        _series(
            "KV token budget used",
            "percentunit",
            [
                (
                    f"sum by (pod) (autoglm_token_budget_used{{{SEL}}})"
                    f" / sum by (pod) (autoglm_token_budget_total{{{SEL}}})",
                    "{{pod}}",
                )
            ],
            "Share of the engine's KV token budget that admitted requests hold; the saturation alert fires at 95 %.",
        ),
        _series(
            "KV cache use and prefix-cache hit ratio (vLLM)",
            "percentunit",
            [
                (f"max by (pod) (autoglm_kv_cache_usage_ratio{{{SEL}}})", "{{pod}} KV cache used"),
                (
                    f"sum by (pod) (rate(autoglm_prefix_cache_hits_total{{{SEL}}}{RATE}))"
                    f" / sum by (pod) (rate(autoglm_prefix_cache_queries_total{{{SEL}}}{RATE}))",
                    "{{pod}} prefix hits",
                ),
            ],
            "Engines with a paged KV cache only. A low hit ratio under agent traffic means the session hash is "
            "not keeping agents on their replica (header missing, or pods churning).",
        ),
    ]


def _failures() -> list[timeseries.Panel]:
    return [
        _series(
            "Rejections by reason",
            "reqps",
            [(f"sum by (reason) (rate(autoglm_rejections_total{{{SEL}}}{RATE}))", "{{reason}}")],
            f"Calls refused or failed; capacity reasons ({CAPACITY_REASONS}) drive the rejection alert.",
        ),
        _series(
            "Authentication failures by reason",
            "reqps",
            [(f"sum by (reason) (rate(autoglm_auth_failures_total{{{SEL}}}{RATE}))", "{{reason}}")],
            "Calls refused by JWT verification; keys_unavailable means Vault cannot be read.",
        ),
        _series(
            "Server errors by code",
            "percentunit",
            [
                (
                    f'sum by (code) (rate(autoglm_requests_total{{{SEL}, code=~"{SERVER_ERROR_CODES}"}}{RATE}))'
                    f" / ignoring (code) group_left sum (rate(autoglm_requests_total{{{SEL}}}{RATE}))",
                    "{{code}}",
                )
            ],
            "Share of calls that end in a server-side code (client mistakes, rejections and auth apart).",
        ),
    ]


def _canary() -> list[timeseries.Panel]:
    return [
        _series(
            "Time to first token p95: canary against stable",
            "s",
            [
                (
                    "histogram_quantile(0.95, sum by (version, le) "
                    f"(rate(autoglm_time_to_first_token_seconds_bucket{{{SEL}}}{RATE})))",
                    "{{version}}",
                )
            ],
            "The canary alert fires when canary's p95 exceeds 1.5x stable's for 10 minutes.",
        ),
        _series(
            "Server error ratio: canary against stable",
            "percentunit",
            [
                (
                    f'sum by (version) (rate(autoglm_requests_total{{{SEL}, code=~"{SERVER_ERROR_CODES}"}}{RATE}))'
                    f" / sum by (version) (rate(autoglm_requests_total{{{SEL}}}{RATE}))",
                    "{{version}}",
                )
            ],
            "The canary alert fires when canary's ratio exceeds stable's by one percentage point.",
        ),
    ]


def _engine_alive() -> stat.Panel:
    return (
        stat.Panel()
        .title("Engines alive")
        .description("Pods whose engine loop runs, out of those scraped.")
        .datasource(DATASOURCE)
        .height(4)
        .span(24)
        .with_target(_query(f"sum(autoglm_engine_alive{{{SEL}}})", "alive"))
        .with_target(_query(f"count(autoglm_engine_alive{{{SEL}}})", "scraped"))
    )


def _variables(builder: dash.Dashboard) -> dash.Dashboard:
    namespace = (
        dash.QueryVariable("namespace")
        .label("Namespace")
        .datasource(DATASOURCE)
        .query("label_values(autoglm_build_info, namespace)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .all_value(".*")
    )
    model = (
        dash.QueryVariable("model")
        .label("Model")
        .datasource(DATASOURCE)
        .query('label_values(autoglm_build_info{namespace=~"$namespace"}, model)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .all_value(".*")
    )
    source = dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
    return builder.with_variable(source).with_variable(namespace).with_variable(model)


def _gpu_sections() -> list[tuple[str, list[timeseries.Panel]]]:
    """The GPU row (monitoring_gpu_panels.py, which builds on this module)."""
    import monitoring_gpu_panels

    return [("GPU (DCGM exporter)", monitoring_gpu_panels.panels())]


def build() -> dash.Dashboard:
    builder = (
        dash.Dashboard("autoglm-server")
        .uid(UID)
        .description("Throughput, latency, capacity, failures and canary against stable of autoglm-server.")
        .tags(["autoglm", "llm-serving"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone(common.TimeZoneBrowser)
        .tooltip(DashboardCursorSync.CROSSHAIR)
    )
    builder = _variables(builder).with_panel(_engine_alive())
    sections = [
        ("Traffic", _traffic()),
        ("Latency", _latency()),
        ("Capacity", _capacity()),
        ("Failures", _failures()),
        ("Canary against stable", _canary()),
        *_gpu_sections(),
    ]
    for title, panels in sections:
        builder = builder.with_row(dash.Row(title))
        for panel in panels:
            builder = builder.with_panel(panel)
    return builder


def to_json() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (what dashboard.json holds)."""
    data: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(build().build()))
    return data
