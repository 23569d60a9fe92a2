"""Token providers: static, a file re-read when it changes, and Vault identity tokens (real OpenBao)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoglm_client import FileToken, StaticToken, TokenError, VaultIdentityToken
from autoglm_client.tokens import jwt_expiry
from tests.helpers.openbao import OpenBao, running_openbao


def test_static_token_strips_and_hides_itself() -> None:
    provider = StaticToken("  abc.def.ghi\n")
    assert provider() == "abc.def.ghi"
    assert "abc" not in repr(provider)
    with pytest.raises(TokenError, match="empty"):
        StaticToken(" \n")


def _rewrite(path: Path, text: str) -> None:
    """Write and move the mtime on, as a rotation a second later would (filesystem clocks are coarse)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def test_file_token_is_read_again_only_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    _rewrite(path, "first\n")
    provider = FileToken(path)
    assert provider() == "first"
    # Same mtime and size: the cached value is kept (proved by changing content behind its back).
    stamp = path.stat().st_mtime_ns
    path.write_text("FIRST\n", encoding="utf-8")
    os.utime(path, ns=(stamp, stamp))
    assert provider() == "first"
    _rewrite(path, "second-token")
    assert provider() == "second-token"


def test_file_token_follows_an_atomic_replace(tmp_path: Path) -> None:
    """Kubernetes swaps projected tokens by renaming a new file over the old one: a new inode."""
    path = tmp_path / "token"
    path.write_text("old", encoding="utf-8")
    provider = FileToken(path)
    assert provider() == "old"
    fresh = tmp_path / "token.new"
    fresh.write_text("new", encoding="utf-8")
    stamp = path.stat().st_mtime_ns
    os.utime(fresh, ns=(stamp, stamp))  # even with the same mtime and size, the inode differs
    fresh.replace(path)
    assert provider() == "new"


def test_file_token_errors_name_the_file(tmp_path: Path) -> None:
    missing = FileToken(tmp_path / "absent")
    with pytest.raises(TokenError, match="absent"):
        missing()
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(TokenError, match="empty"):
        FileToken(empty)()


def _jwt(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'ES256'})}.{part(claims)}.c2ln"


def test_jwt_expiry_reads_exp_without_verifying() -> None:
    assert jwt_expiry(_jwt({"exp": 1234567890, "sub": "x"})) == 1234567890.0
    assert jwt_expiry(_jwt({"sub": "x"})) is None
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.%%%.c") is None


# --- Vault identity tokens, against a real OpenBao dev server -------------------------------------

ROLE = "autoglm-caller"
TOKEN_TTL_S = 120


@dataclass(frozen=True)
class AppRole:
    bao: OpenBao
    role_id: str
    secret_id: str


@pytest.fixture(scope="module")
def approle() -> Iterator[AppRole]:
    import hvac

    with running_openbao() as bao:
        root = hvac.Client(url=bao.addr, token=bao.root_token)
        root.sys.enable_auth_method("approle")
        root.sys.create_or_update_policy("caller", f'path "identity/oidc/token/{ROLE}" {{ capabilities = ["read"] }}')
        root.auth.approle.create_or_update_approle("caller", token_policies=["caller"], token_ttl="10m")
        role_id = root.auth.approle.read_role_id("caller")["data"]["role_id"]
        secret_id = root.auth.approle.generate_secret_id("caller")["data"]["secret_id"]
        root.secrets.identity.create_named_key(
            "autoglm-key", allowed_client_ids=["*"], rotation_period="24h", verification_ttl="24h", algorithm="ES256"
        )
        root.secrets.identity.create_or_update_role(ROLE, key="autoglm-key", ttl=f"{TOKEN_TTL_S}s")
        yield AppRole(bao, role_id, secret_id)


def test_vault_identity_token_is_cached_until_shortly_before_exp(approle: AppRole, tmp_path: Path) -> None:
    now = [time.time()]
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(approle.secret_id + "\n", encoding="utf-8")
    provider = VaultIdentityToken(
        ROLE,
        url=approle.bao.addr,
        approle_role_id=approle.role_id,
        approle_secret_id_file=secret_file,
        refresh_margin_s=60,
        clock=lambda: now[0],
    )
    token = provider()
    expiry = jwt_expiry(token)
    assert expiry is not None
    assert expiry - now[0] == pytest.approx(TOKEN_TTL_S, abs=5)
    assert provider() == token
    assert provider.fetches == 1
    # The margin is capped at a fifth of the 120 s lifetime: 24 s before exp it is still cached...
    now[0] = expiry - 25
    assert provider() == token
    assert provider.fetches == 1
    # ...and within the margin it fetches a fresh token (logging in again with AppRole).
    now[0] = expiry - 23
    provider()
    assert provider.fetches == 2


def test_vault_token_without_an_identity_is_a_clear_error(approle: AppRole) -> None:
    """A root token has no entity, so Vault refuses to issue an identity token for it."""
    provider = VaultIdentityToken(ROLE, url=approle.bao.addr, token=approle.bao.root_token)
    with pytest.raises(TokenError, match=ROLE):
        provider()


def test_bad_approle_secret_is_a_login_error(approle: AppRole) -> None:
    provider = VaultIdentityToken(
        ROLE, url=approle.bao.addr, approle_role_id=approle.role_id, approle_secret_id="wrong"
    )
    with pytest.raises(TokenError, match="AppRole login failed"):
        provider()


def test_no_vault_credentials_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    with pytest.raises(TokenError, match="no Vault token"):
        VaultIdentityToken(ROLE, url="http://127.0.0.1:1")()
