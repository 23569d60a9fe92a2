"""`autoglm-server token mint` and `autoglm-server vault bootstrap` as an operator runs them: a real
subprocess, real exit status, stdout and stderr. Failures are one `error:` line, never a traceback;
bootstrap reports each step as it goes; mint prints the token alone on stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import hvac
import pytest

from tests.helpers.openbao import OpenBao, free_port


@dataclass
class Result:
    status: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def _run(*args: str, vault_addr: str, vault_token: str = "not-a-token") -> Result:  # noqa: S107 - not a secret
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "AUTOGLM_"))}
    env.update(VAULT_ADDR=vault_addr, VAULT_TOKEN=vault_token)
    done = subprocess.run(
        [sys.executable, "-m", "autoglm_server", *args], env=env, capture_output=True, text=True, timeout=60
    )
    return Result(done.returncode, done.stdout, done.stderr)


def _assert_one_clean_error(result: Result, status: int, words: str) -> None:
    assert result.status == status, result
    assert "Traceback" not in result.err, result.err
    assert result.out == ""
    errors = result.error_lines()
    assert len(errors) == 1, result.err
    assert words in errors[0], errors[0]


@pytest.mark.parametrize("command", [("token", "mint", "--sub", "ops"), ("vault", "bootstrap")])
def test_unreachable_vault_is_one_line_and_exit_1(command: tuple[str, ...]) -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    result = _run(*command, vault_addr=addr)
    _assert_one_clean_error(result, 1, f"cannot reach Vault at {addr}: connection refused")


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (("token", "mint"), 2, "--sub: Field required"),
        (("token", "mint", "--sub", "ops", "--ttl", "soon"), 1, "not a duration: 'soon'"),
        (("vault", "bootstrap", "--no-such-flag", "1"), 2, "unrecognized arguments: --no-such-flag"),
        (("vault", "bootstrap", "--auto-rotate-period", "10m"), 1, "at least 1h"),
        (("vault", "bootstrap", "--kubernetes-ca-cert-file", "/nonexistent/ca.pem"), 1, "/nonexistent/ca.pem"),
    ],
)
def test_bad_command_lines_are_one_line(args: tuple[str, ...], status: int, words: str) -> None:
    _assert_one_clean_error(_run(*args, vault_addr="http://127.0.0.1:1"), status, words)


def test_bootstrap_progress_then_least_privilege_errors(openbao: OpenBao) -> None:
    first = _run("vault", "bootstrap", vault_addr=openbao.addr, vault_token=openbao.root_token)
    assert first.status == 0, first.err
    progress = [line.split(None, 1) for line in first.err.splitlines() if not line.startswith("INFO")]
    assert ["created", "transit key autoglm-jwt"] in progress
    assert ["created", "policy autoglm-issuer"] in progress
    assert "INFO bootstrap done" in first.err
    root = hvac.Client(url=openbao.addr, token=openbao.root_token)

    def token(policy: str) -> str:
        return str(root.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"])

    daemon = token("autoglm-daemon")
    refused = _run("vault", "bootstrap", vault_addr=openbao.addr, vault_token=daemon)
    _assert_one_clean_error(refused, 1, "admin token")
    assert daemon not in refused.err
    mint = ("token", "mint", "--sub", "ops", "--min-key-age", "0s")
    _assert_one_clean_error(_run(*mint, vault_addr=openbao.addr, vault_token=daemon), 1, "autoglm-issuer policy")
    _assert_one_clean_error(_run(*mint, vault_addr=openbao.addr, vault_token="bogus"), 1, "Vault login (token) failed")
    minted = _run(*mint, vault_addr=openbao.addr, vault_token=token("autoglm-issuer"))
    assert minted.status == 0, minted.err
    assert minted.out.count("\n") == 1
    assert minted.out.count(".") == 2
    assert minted.out.strip() not in minted.err
