"""Locate the external programs the mesh tests run (kubectl, checkov, hadolint).

Each can be named by an environment variable; otherwise the copy that .ci/mesh-tools.sh installs under
.tools/ is used, then PATH. Outside CI a missing tool skips its tests with the reason; in CI it fails them,
so a green CI run cannot hide a missing install step.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TOOLS_DIR = Path(os.environ.get("AUTOGLM_TOOLS_DIR", str(REPO / ".tools")))


@dataclass(frozen=True)
class Tool:
    name: str
    env_var: str
    bundled: tuple[Path, ...]

    def find(self) -> str | None:
        """The program's path, or None when it is nowhere to be found."""
        named = os.environ.get(self.env_var)
        if named:
            return named if Path(named).is_file() else None
        for candidate in self.bundled:
            if candidate.is_file():
                return str(candidate)
        return shutil.which(self.name)

    def require(self) -> str:
        """The program's path; skips the test (fails it in CI) when it is missing."""
        path = self.find()
        if path is None:
            reason = (
                f"{self.name} not found: set {self.env_var} or run .ci/mesh-tools.sh "
                f"(looked in {', '.join(str(p) for p in self.bundled)} and PATH)"
            )
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
        return path


KUBECTL = Tool("kubectl", "AUTOGLM_KUBECTL", (TOOLS_DIR / "kubectl-venv" / "bin" / "kubectl",))
CHECKOV = Tool("checkov", "AUTOGLM_CHECKOV", (TOOLS_DIR / "checkov-venv" / "bin" / "checkov",))
HADOLINT = Tool("hadolint", "AUTOGLM_HADOLINT", (TOOLS_DIR / "checkov-venv" / "bin" / "hadolint",))
