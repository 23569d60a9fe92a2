"""The README's Python example runs as written against a real daemon."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.daemon import running_daemon

README = Path(__file__).resolve().parents[2] / "README.md"
DEFAULT_TARGET = "127.0.0.1:50051"


DEFAULT_HTTP_URL = "http://127.0.0.1:8000/v1"


def _python_examples() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert blocks, "README.md has no Python example"
    return [str(block) for block in blocks]


def _python_example() -> str:
    return _python_examples()[0]


def test_readme_openai_example_streams_text() -> None:
    example = next(block for block in _python_examples() if "from openai import OpenAI" in block)
    assert DEFAULT_HTTP_URL in example
    with running_daemon("--auth", "disabled") as daemon:
        result = subprocess.run(
            [sys.executable, "-c", example.replace(DEFAULT_HTTP_URL, daemon.http_url)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout, "the example printed no text"


def test_readme_python_example_streams_text() -> None:
    example = _python_example()
    assert DEFAULT_TARGET in example
    with running_daemon("--auth", "disabled") as daemon:
        result = subprocess.run(
            [sys.executable, "-c", example.replace(DEFAULT_TARGET, daemon.target)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout, "the example printed no text"
