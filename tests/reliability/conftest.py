"""Options and fixtures of the reliability suite.

`--soak` runs every scenario at its long size (10+ minutes in all). The option is registered here,
so it works when pytest is pointed at this folder (`pytest tests/reliability --soak`); a root
tests/conftest.py may register it too (then this registration steps aside). Without either,
AUTOGLM_RELIABILITY_SOAK=1 selects soak mode. Each scenario adds a row of figures; they are printed
at the end of the run and, when AUTOGLM_RELIABILITY_FIGURES names a file, written there as JSON
(docs/reliability.md is made from them).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.sizes import FAST, SOAK, Sizes

_FIGURES = pytest.StashKey[list[dict[str, Any]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    # A conftest closer to the root may have registered it already (ValueError): then use that one.
    with contextlib.suppress(ValueError):
        parser.addoption(
            "--soak", action="store_true", default=False, help="run the reliability scenarios at soak size"
        )


def _soak(config: pytest.Config) -> bool:
    try:
        flag = bool(config.getoption("--soak"))
    except ValueError:  # not registered: pytest was pointed above this folder
        flag = False
    return flag or os.environ.get("AUTOGLM_RELIABILITY_SOAK", "") == "1"


@pytest.fixture(scope="session")
def sizes(pytestconfig: pytest.Config) -> Sizes:
    return SOAK if _soak(pytestconfig) else FAST


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> Iterator[list[dict[str, Any]]]:
    rows = pytestconfig.stash.setdefault(_FIGURES, [])
    yield rows
    target = os.environ.get("AUTOGLM_RELIABILITY_FIGURES", "")
    if target and rows:
        Path(target).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_FIGURES, [])
    if not rows:
        return
    terminalreporter.section(f"reliability figures ({'soak' if _soak(config) else 'fast'} mode)")
    for row in rows:
        terminalreporter.line(json.dumps(row))
