"""Read the daemon's Prometheus /metrics into plain numbers keyed by series."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

# Labels every series carries (model, version): dropped from keys so tests need not repeat them.
COMMON_LABELS = frozenset({"model", "version"})


@dataclass(frozen=True)
class Snapshot:
    """Every sample of one scrape: {(sample name, ((label, value), ...)): value}."""

    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels` (0 when none)."""
        wanted = set(labels.items())
        return sum(v for (n, key), v in self.samples.items() if n == name and wanted <= set(key))

    def by_label(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """{label value: summed value} of the samples called `name` matching `labels`."""
        wanted = set(labels.items())
        out: dict[str, float] = {}
        for (n, key), v in self.samples.items():
            if n != name or not wanted <= set(key):
                continue
            found = dict(key).get(label)
            if found is not None:
                out[found] = out.get(found, 0.0) + v
        return out

    def names(self) -> set[str]:
        return {n for n, _ in self.samples}


class MetricsUnavailableError(AssertionError):
    """The admin server has no /metrics (observability not wired into the daemon)."""


def scrape(admin_url: str, timeout: float = 5.0) -> Snapshot:
    """GET {admin_url}/metrics and parse it."""
    try:
        with urllib.request.urlopen(f"{admin_url}/metrics", timeout=timeout) as response:
            text = response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        raise MetricsUnavailableError(
            f"GET {admin_url}/metrics answered {error.code}: the daemon exports no metrics"
        ) from None
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            key = tuple(sorted((k, v) for k, v in item.labels.items() if k not in COMMON_LABELS))
            samples[(item.name, key)] = float(item.value)
    return Snapshot(samples)


def counts_delta(before: Snapshot, after: Snapshot, name: str, label: str, **labels: str) -> dict[str, float]:
    """How much each `label` value of counter `name` grew between two scrapes (zero growth left out)."""
    start = before.by_label(name, label, **labels)
    end = after.by_label(name, label, **labels)
    return {key: end[key] - start.get(key, 0.0) for key in end if end[key] - start.get(key, 0.0) > 0}


def scrape_or_empty(admin_url: str) -> Snapshot:
    """A scrape, or an empty snapshot when the daemon has no /metrics (the check at the end then fails)."""
    try:
        return scrape(admin_url)
    except MetricsUnavailableError:
        return Snapshot({})
