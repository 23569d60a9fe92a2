"""The daemon's OpenMP spin default: set for serving, never over the operator's own choice."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autoglm_server.engine.openmp_wait import SERVING_SPIN_COUNT, choose_spin_count


def test_sets_the_serving_spin_count_when_nothing_is_set() -> None:
    environ: dict[str, str] = {}
    assert choose_spin_count(environ) == SERVING_SPIN_COUNT
    assert environ == {"GOMP_SPINCOUNT": SERVING_SPIN_COUNT}


@pytest.mark.parametrize("variable", ["GOMP_SPINCOUNT", "OMP_WAIT_POLICY"])
def test_the_operators_setting_stays(variable: str) -> None:
    environ = {variable: "ACTIVE" if variable == "OMP_WAIT_POLICY" else "300000"}
    before = dict(environ)
    assert choose_spin_count(environ) is None
    assert environ == before


def test_the_cli_sets_it_before_torch_loads() -> None:
    # A fresh interpreter: loading settings and tuning OpenMP must not import torch first, or
    # libgomp would already have read its environment.
    code = (
        "import os, sys\n"
        "os.environ.pop('GOMP_SPINCOUNT', None); os.environ.pop('OMP_WAIT_POLICY', None)\n"
        "from autoglm_server import cli\n"
        "from autoglm_server.config import load_settings\n"
        "settings = load_settings(['--auth', 'disabled'])\n"
        "cli._tune_openmp(settings)\n"
        "print('torch' in sys.modules, os.environ.get('GOMP_SPINCOUNT'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", SERVING_SPIN_COUNT]
