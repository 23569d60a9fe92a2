"""Start-up failures: one clear line, exit 1, never a traceback wall."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.helpers.daemon import _daemon_env


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "autoglm_server", "serve", "--admin-listen", "", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=_daemon_env(None), check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--listen", "127.0.0.1:0"), "authentication is on but cannot be set up"),
        (("--listen", "127.0.0.1:0", "--auth", "disabled", "--model", "nobody/no-such-model"), "hf download"),
        (("--listen", "not-an-address", "--auth", "disabled"), "expected host:port"),
    ],
)
def test_start_up_failure_is_one_clear_line(args: tuple[str, ...], message: str) -> None:
    result = _serve(*args)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert message in output
    assert "Traceback" not in output


def test_port_in_use_is_reported() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve("--listen", f"127.0.0.1:{port}", "--auth", "disabled")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"cannot listen on 127.0.0.1:{port}" in output
    assert "Traceback" not in output


def test_bad_flag_value_names_the_flag() -> None:
    result = _serve("--max-running", "lots")
    assert result.returncode != 0
    assert "max-running" in result.stderr or "max_running" in result.stderr
