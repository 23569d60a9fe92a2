"""Fixtures of the monitoring suite: the generator modules of mesh/monitoring on the path, promtool."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "mesh" / "monitoring"
# mesh/monitoring is a folder of scripts, not a package: import its modules as generate.py does.
sys.path.insert(0, str(MONITORING))

from prometheus_tools import PROMETHEUS, PROMTOOL  # noqa: E402


@pytest.fixture(scope="session")
def promtool() -> str:
    return PROMTOOL.require()


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return PROMETHEUS.require()


@pytest.fixture(scope="session")
def monitoring_dir() -> Path:
    return MONITORING
