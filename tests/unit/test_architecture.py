"""The house's layering (pyproject.toml's [tool.importlinter] contracts) holds, and has teeth.

The contracts: protobuf only in frontends/grpc, the HTTP framework only in frontends/openai, vllm
only in engine/vllm, torch nowhere above the engines, cli > app > frontends > serving > engine, the
two front doors and the two engines independent of each other, no circle between sibling modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_tree_keeps_every_contract() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of both packages and the contracts, to break on purpose."""
    copy = tmp_path_factory.mktemp("house")
    shutil.copytree(ROOT / "server" / "autoglm_server", copy / "autoglm_server", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copytree(ROOT / "client" / "autoglm_client", copy / "autoglm_client", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


VIOLATIONS = [
    ("serving/spec.py", "import torch\n", "torch nowhere above the engines BROKEN"),
    (
        "engine/types.py",
        "from google.protobuf import duration_pb2\n",
        "protobuf messages only in the gRPC front door BROKEN",
    ),
    ("frontends/grpc/convert.py", "import starlette\n", "the HTTP framework only in the OpenAI front door BROKEN"),
    ("serving/pipeline.py", "import vllm\n", "vllm only in engine/vllm BROKEN"),
    ("engine/builtin/runner.py", "from autoglm_server.serving import spec\n", "engines in layers BROKEN"),
    (
        "frontends/grpc/service.py",
        "from autoglm_server.frontends.openai import schemas\n",
        "front doors do not know each other BROKEN",
    ),
    (
        "engine/vllm/stats.py",
        "from autoglm_server.engine.builtin import memory\n",
        "engines do not know each other BROKEN",
    ),
    ("bench/cli.py", "from autoglm_server.bench import routing\n", "no import circles between sibling modules BROKEN"),
]


@pytest.mark.parametrize(
    ("module", "line", "verdict"), VIOLATIONS, ids=[v[2].removesuffix(" BROKEN") for v in VIOLATIONS]
)
def test_a_deliberate_violation_is_caught(tree_copy: Path, module: str, line: str, verdict: str) -> None:
    path = tree_copy / "autoglm_server" / module
    original = path.read_text()
    path.write_text(line + original)
    try:
        result = _lint_imports(tree_copy, pythonpath=str(tree_copy))
    finally:
        path.write_text(original)
    assert result.returncode != 0
    assert verdict in result.stdout, result.stdout
