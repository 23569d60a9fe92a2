"""`autoglm-server vault bootstrap` and `token mint` against a real OpenBao dev server."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import hvac
import pytest
from hvac import exceptions as hvac_exc

from autoglm_server.auth.cli import token_main, vault_main
from autoglm_server.auth.keyring import Keyring
from autoglm_server.auth.mint import choose_version
from autoglm_server.auth.policies import render_policies
from autoglm_server.auth.settings import VaultSettings
from autoglm_server.auth.sources import VaultTransitSource
from autoglm_server.auth.vault import VaultSession
from autoglm_server.auth.verifier import Verifier, VerifierConfig
from tests.helpers.openbao import OpenBao

VAULT_DIR = Path(__file__).resolve().parents[2] / "vault"


def _env(monkeypatch: pytest.MonkeyPatch, server: OpenBao, token: str | None = None) -> None:
    monkeypatch.setenv("VAULT_ADDR", server.addr)
    monkeypatch.setenv("VAULT_TOKEN", token or server.root_token)


def _outcomes(stderr: str) -> list[str]:
    return [line.split()[0] for line in stderr.splitlines() if line.strip() and not line.startswith("INFO")]


def test_policy_files_match_what_bootstrap_writes() -> None:
    for name, text in render_policies("transit", "autoglm-jwt").items():
        assert (VAULT_DIR / f"{name}.hcl").read_text() == text, name


def test_bootstrap_is_idempotent(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(monkeypatch, openbao)
    assert vault_main(["bootstrap", "--auto-rotate-period", "24h"]) == 0
    first = _outcomes(capsys.readouterr().err)
    assert "created" in first
    assert "unchanged" not in first
    assert vault_main(["bootstrap", "--auto-rotate-period", "24h"]) == 0
    second = _outcomes(capsys.readouterr().err)
    assert second
    assert set(second) == {"unchanged"}
    assert vault_main(["bootstrap", "--auto-rotate-period", "48h"]) == 0
    assert _outcomes(capsys.readouterr().err).count("updated") == 1
    client = hvac.Client(url=openbao.addr, token=openbao.root_token)
    key = client.secrets.transit.read_key("autoglm-jwt")["data"]
    assert key["type"] == "ecdsa-p256"
    assert key["auto_rotate_period"] == 48 * 3600
    assert vault_main(["bootstrap", "--auto-rotate-period", "10m"]) == 1  # below Vault's minimum


def _token_for(client: Any, policy: str) -> str:
    return str(client.auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"])


def test_least_privilege_daemon_cannot_sign_issuer_can(
    openbao: OpenBao, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(monkeypatch, openbao)
    assert vault_main(["bootstrap"]) == 0
    root = hvac.Client(url=openbao.addr, token=openbao.root_token)
    daemon = hvac.Client(url=openbao.addr, token=_token_for(root, "autoglm-daemon"))
    assert daemon.secrets.transit.read_key("autoglm-jwt")["data"]["keys"]
    with pytest.raises(hvac_exc.Forbidden):
        daemon.secrets.transit.sign_data("autoglm-jwt", hash_input=base64.b64encode(b"x").decode())
    issuer = hvac.Client(url=openbao.addr, token=_token_for(root, "autoglm-issuer"))
    with pytest.raises(hvac_exc.Forbidden):
        issuer.secrets.transit.rotate_key("autoglm-jwt")
    # The issuer's token mints (min-key-age 0: the only version is brand new).
    _env(monkeypatch, openbao, token=_token_for(root, "autoglm-issuer"))
    capsys.readouterr()
    assert token_main(["mint", "--sub", "ops", "--scope", "generate", "--ttl", "5m", "--min-key-age", "0s"]) == 0
    assert capsys.readouterr().out.count(".") == 2


async def test_minted_token_verifies_with_its_claims(
    openbao: OpenBao,
    vault: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _env(monkeypatch, openbao)
    argv = ["mint", "--sub", "batch-job", "--scope", "generate models:read", "--ttl", "15m", "--tenant", "acme"]
    assert token_main([*argv, "--aud", "autoglm", "--aud", "other", "--min-key-age", "30m"]) == 0
    captured = capsys.readouterr()
    token = captured.out.strip()
    assert "\n" not in token
    assert token.count(".") == 2
    assert "no key version" in caplog.text  # the only version is new: warned, oldest live used
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["exp"] - payload["iat"] == 900
    assert payload["aud"] == ["autoglm", "other"]
    session = VaultSession(VaultSettings(vault_addr=openbao.addr, vault_token=openbao.root_token))
    keyring = Keyring(
        VaultTransitSource(session, "transit", "autoglm-jwt"), refresh_interval=60, min_interval=0, max_staleness=60
    )
    assert await keyring.refresh()
    config = VerifierConfig(issuer="autoglm-serve", audience="autoglm", leeway=30, max_token_bytes=8192)
    principal = await Verifier(keyring, config).authenticate("Bearer " + token)
    assert (principal.subject, principal.tenant) == ("batch-job", "acme")
    assert principal.scopes == frozenset({"generate", "models:read"})


def test_mint_picks_the_newest_version_old_enough() -> None:
    key_data = {
        "keys": {
            "1": {"creation_time": "2026-01-01T00:00:00.123456789Z"},
            "2": {"creation_time": "2026-01-01T01:00:00Z"},
            "3": {"creation_time": "2026-01-01T01:50:00Z"},
        }
    }
    two_hours = 1767225600.0 + 7200  # 2026-01-01T02:00:00Z
    assert choose_version(key_data, min_age_s=1800, now=two_hours) == 2
    assert choose_version(key_data, min_age_s=60, now=two_hours) == 3
    assert choose_version(key_data, min_age_s=86400, now=two_hours) == 1  # none old enough: the oldest


def test_mint_without_vault_fails_cleanly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    monkeypatch.delenv("AUTOGLM_VAULT_ADDR", raising=False)
    assert token_main(["mint", "--sub", "x"]) == 1
    assert "Vault address" in capsys.readouterr().err
