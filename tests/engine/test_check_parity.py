"""`autoglm-server check-parity` on builtin:glm4v-tiny: float32 agrees with transformers (exit 0), a
bfloat16 engine against the float32 reference diverges (exit 1) and says where, with the top-5 there."""

from __future__ import annotations

import pytest

from autoglm_server.cli import main

pytestmark = pytest.mark.timeout(300)

FLAGS = ["check-parity", "--model", "builtin:glm4v-tiny", "--max-pixels", "300000", "--max-new-tokens", "6"]


def test_float32_engine_matches_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(FLAGS) == 0
    out = capsys.readouterr().out
    assert "PARITY: same tokens" in out
    assert "tokens compared: 6" in out


def test_a_bfloat16_engine_diverges_and_the_report_says_where(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*FLAGS, "--dtype", "bfloat16"]) == 1
    out = capsys.readouterr().out
    assert "DIVERGENT at generated position" in out
    assert "reference top-5 logits" in out
    assert "engine top-5 logprobs" in out


def test_a_missing_model_directory_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-parity", "--model", "/nonexistent/model"]) == 2
    assert "is not a directory" in capsys.readouterr().err
