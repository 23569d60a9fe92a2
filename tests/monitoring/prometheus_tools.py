"""Find and run the real Prometheus tools (Debian's `prometheus` package: promtool and the server).

A missing tool fails its tests, in CI and on a laptop alike, with the command that installs it: the
monitoring is only tested when these run, and a skip would hide that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

INSTALL_HINT = (
    "install Debian's prometheus package: `bash .ci/prometheus.sh` (as root; CI runs it from "
    ".ci/install-tools.sh), or `apt-get install --no-install-recommends prometheus`"
)


@dataclass(frozen=True)
class Tool:
    name: str
    env_var: str

    def find(self) -> str | None:
        named = os.environ.get(self.env_var)
        if named:
            return named if Path(named).is_file() else None
        return shutil.which(self.name)

    def require(self) -> str:
        path = self.find()
        if path is None:
            pytest.fail(f"{self.name} not found (set {self.env_var} or put it on PATH): {INSTALL_HINT}")
        return path


PROMTOOL = Tool("promtool", "AUTOGLM_PROMTOOL")
PROMETHEUS = Tool("prometheus", "AUTOGLM_PROMETHEUS")


def write_rules(groups: list[dict[str, Any]], path: Path) -> Path:
    """A Prometheus rule file (what the operator turns a PrometheusRule's spec into)."""
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def promtool_run(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)
