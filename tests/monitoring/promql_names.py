"""Metric names in a PromQL expression, read from its syntax tree (promql-parser, a PromQL parser)."""

from __future__ import annotations

import re

import promql_parser

# Grafana's variables, replaced by values of the right kind before an expression is parsed.
_GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def without_grafana_variables(expr: str) -> str:
    """EXPR with `$name` / `${name}` replaced: durations for Grafana's own, a plain word for the rest."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: _GRAFANA_VARIABLES.get(m.group(1), "x"), expr)


def metric_names(expr: str) -> set[str]:
    """Every metric a selector of EXPR names; a selector without a metric name is an error here."""
    found: set[str] = set()
    nameless: list[str] = []

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                found.add(node.name)
            else:
                nameless.append(str(node))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    if nameless:
        raise ValueError(f"selectors without a metric name in {expr!r}: {nameless}")
    return found
