"""The checked-in generated code must be what scripts/generate_protos.py produces now."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKED_IN = REPO / "client" / "autoglm_client" / "v1"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "generate_protos.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "autoglm_client" / "v1"
    generated = sorted(p.name for p in fresh.iterdir() if "_pb2" in p.name)
    assert generated == sorted(p.name for p in CHECKED_IN.iterdir() if "_pb2" in p.name)
    stale = [name for name in generated if not filecmp.cmp(fresh / name, CHECKED_IN / name, shallow=False)]
    assert not stale, f"regenerate with `make protos`: {stale} differ from the protos"


def test_generated_imports_use_the_client_package() -> None:
    text = (CHECKED_IN / "generation_pb2_grpc.py").read_text()
    assert "from autoglm_client.v1 import generation_pb2" in text
