"""VaultSession's logins against a real OpenBao: AppRole, Kubernetes (against a fake TokenReview
API, see fake_kube_api.py) and a token file; renewal before expiry; a fresh login when renewal is
refused or capped by the max TTL; a credential file re-read at each login.

The roles get TTLs of a few seconds, so that renewal and expiry happen while the test waits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from hvac import exceptions as hvac_exc

from autoglm_server.auth.bootstrap import BootstrapPlan, bootstrap
from autoglm_server.auth.settings import VaultSettings
from autoglm_server.auth.vault import VaultError, VaultSession
from tests.auth.fake_kube_api import FakeKubeApi, dummy_ca_pem, running_fake_kube_api
from tests.helpers.openbao import OpenBao, free_port

KEY = "autoglm-jwt"
ROLE = "autoglm-daemon"
SA, NAMESPACE = "autoglm", "autoglm"
LOG = "autoglm_server.auth.vault"


@pytest.fixture
def kube_api() -> Iterator[FakeKubeApi]:
    with running_fake_kube_api(NAMESPACE, SA) as api:
        yield api


@pytest.fixture
def root(openbao: OpenBao, kube_api: FakeKubeApi) -> Any:
    """Vault set up by `vault bootstrap`, with the Kubernetes auth method pointed at the fake API."""
    plan = BootstrapPlan(
        "transit", KEY, 3600, "approle", "kubernetes", kube_api.url, dummy_ca_pem(), SA, NAMESPACE, 3600
    )
    bootstrap(_session(openbao, vault_token=openbao.root_token), plan)
    return hvac.Client(url=openbao.addr, token=openbao.root_token)


def _session(openbao: OpenBao, **auth: str) -> VaultSession:
    """A session with the test OpenBao, logging in as the VaultSettings fields in `auth` say."""
    return VaultSession(VaultSettings(vault_addr=openbao.addr, **auth))


def _set_ttl(root: Any, path: str, ttl: int, max_ttl: int) -> None:
    # Vault keeps the role's other fields on an update.
    root.write_data(path, data={"token_ttl": ttl, "token_max_ttl": max_ttl})
    assert root.read(path)["data"]["token_policies"] == ["autoglm-daemon"]


def _approle_session(openbao: OpenBao, root: Any, secret_file: Path) -> VaultSession:
    role_id = root.read(f"auth/approle/role/{ROLE}/role-id")["data"]["role_id"]
    secret_file.write_text(root.write_data(f"auth/approle/role/{ROLE}/secret-id", data={})["data"]["secret_id"])
    return _session(
        openbao,
        vault_auth_method="approle",
        vault_approle_role_id=role_id,
        vault_approle_secret_id_file=str(secret_file),
    )


def _daemon_call(client: Any) -> dict[str, Any]:
    """What the daemon does (read the public keys), then who it is: its token's lookup-self."""
    assert client.secrets.transit.read_key(KEY)["data"]["keys"]
    data: dict[str, Any] = client.auth.token.lookup_self()["data"]
    return data


def _revoke(root: Any, accessor: str) -> None:
    root.write_data("auth/token/revoke-accessor", data={"accessor": accessor})


def _wait(seconds: float) -> None:
    # Waiting on Vault's real token clock: the role TTLs are whole seconds.
    time.sleep(seconds)


def test_approle_renews_before_expiry_then_logs_in_again_near_max_ttl(
    openbao: OpenBao, root: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _set_ttl(root, f"auth/approle/role/{ROLE}", ttl=4, max_ttl=9)
    session = _approle_session(openbao, root, tmp_path / "secret-id")
    caplog.set_level(logging.DEBUG, logger=LOG)
    first = session.call(_daemon_call)
    assert first["policies"] == ["autoglm-daemon", "default"]
    assert not first.get("last_renewal_time")
    # t=3: past two thirds of the 4 s TTL, before its end: the call renews the same token.
    _wait(3.0)
    renewed = session.call(_daemon_call)
    assert renewed["accessor"] == first["accessor"]
    assert renewed.get("last_renewal_time")
    # t=6: renewing again is capped by the 9 s max TTL, so the session plans a fresh login ...
    _wait(3.0)
    assert session.call(_daemon_call)["accessor"] == first["accessor"]
    # ... and at t=8.2, before the max TTL ends, it has a new token, with no call refused.
    _wait(2.2)
    assert session.call(_daemon_call)["accessor"] != first["accessor"]
    assert "nears its max TTL" in caplog.text
    assert "refused" not in caplog.text
    assert "failed" not in caplog.text


def test_approle_logs_in_again_when_renewal_or_a_call_is_refused(
    openbao: OpenBao, root: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _set_ttl(root, f"auth/approle/role/{ROLE}", ttl=2, max_ttl=60)
    secret_file = tmp_path / "secret-id"
    session = _approle_session(openbao, root, secret_file)
    first = session.call(_daemon_call)["accessor"]
    # Renewal refused: the token was revoked; the renewal due at 1.33 s fails, a login follows.
    _revoke(root, first)
    _wait(1.6)
    second = session.call(_daemon_call)["accessor"]
    assert second != first
    assert "renewing the Vault token failed" in caplog.text
    # A call refused before renewal is due: log in again once and repeat the call. The secret_id
    # was replaced meanwhile (the old one destroyed): the file is re-read at each login.
    old_secret = secret_file.read_text()
    new_secret = root.write_data(f"auth/approle/role/{ROLE}/secret-id", data={})["data"]["secret_id"]
    secret_file.write_text(new_secret)
    root.write_data(f"auth/approle/role/{ROLE}/secret-id/destroy", data={"secret_id": old_secret})
    _revoke(root, second)
    third = session.call(_daemon_call)["accessor"]
    assert third not in (first, second)
    assert "Vault refused the token; logging in again" in caplog.text
    # Secrets never reach the log.
    assert old_secret not in caplog.text
    assert new_secret not in caplog.text


def test_approle_login_failure_is_one_clear_error(openbao: OpenBao, root: Any, tmp_path: Path) -> None:
    session = _approle_session(openbao, root, tmp_path / "secret-id")
    (tmp_path / "secret-id").write_text("not-the-secret-id")
    with pytest.raises(VaultError, match=r"Vault login \(approle\) failed: .*invalid") as caught:
        session.call(_daemon_call)
    assert "not-the-secret-id" not in str(caught.value)
    (tmp_path / "secret-id").unlink()
    with pytest.raises(VaultError, match="cannot read the AppRole secret_id file"):
        session.call(_daemon_call)


def _kube_session(openbao: OpenBao, token_file: Path) -> VaultSession:
    return _session(
        openbao,
        vault_auth_method="kubernetes",
        vault_kubernetes_role=ROLE,
        vault_kubernetes_token_file=str(token_file),
    )


def test_kubernetes_login_rereads_the_rotated_projected_token(
    openbao: OpenBao, root: Any, kube_api: FakeKubeApi, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    old = kube_api.issue_token()
    token_file.write_text(old)
    session = _kube_session(openbao, token_file)
    first = session.call(_daemon_call)
    assert first["meta"]["service_account_name"] == SA
    assert kube_api.reviews == 1
    # The kubelet rotates the projected token: a new file, and the API forgets the old token.
    token_file.write_text(kube_api.issue_token())
    kube_api.valid.discard(old)
    # The old token no longer logs in (so the next step can only pass by re-reading the file).
    with pytest.raises(hvac_exc.Forbidden):
        hvac.Client(url=openbao.addr, token="").auth.kubernetes.login(role=ROLE, jwt=old)
    _revoke(root, first["accessor"])
    second = session.call(_daemon_call)
    assert second["accessor"] != first["accessor"]
    assert kube_api.reviews == 3


def test_kubernetes_login_failures_are_clear(
    openbao: OpenBao, root: Any, kube_api: FakeKubeApi, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    session = _kube_session(openbao, token_file)
    with pytest.raises(VaultError, match="cannot read the Kubernetes service-account token file"):
        session.call(_daemon_call)
    wrong_audience = kube_api.issue_token(audience="not-vault")
    token_file.write_text(wrong_audience)
    with pytest.raises(VaultError, match=r"Vault login \(kubernetes\) failed") as caught:
        session.call(_daemon_call)
    assert wrong_audience not in str(caught.value)


def test_token_file_is_reread_when_it_changes(openbao: OpenBao, root: Any, tmp_path: Path) -> None:
    token_file = tmp_path / "vault-token"
    first = root.auth.token.create(policies=["autoglm-daemon"], ttl="1h")["auth"]
    token_file.write_text(first["client_token"])
    session = _session(openbao, vault_token_file=str(token_file))
    assert session.call(_daemon_call)["accessor"] == first["accessor"]
    # A Vault Agent writes a new token into the sink and the old one is revoked.
    second = root.auth.token.create(policies=["autoglm-daemon"], ttl="1h")["auth"]
    token_file.write_text(second["client_token"] + "\n")
    _revoke(root, first["accessor"])
    assert session.call(_daemon_call)["accessor"] == second["accessor"]


def test_unreachable_vault_is_one_short_error() -> None:
    session = VaultSession(VaultSettings(vault_addr=f"http://127.0.0.1:{free_port()}", vault_token="x"))
    with pytest.raises(VaultError) as caught:
        session.call(_daemon_call)
    message = str(caught.value)
    assert message.endswith(": connection refused"), message
    assert message.startswith("cannot reach Vault at http://127.0.0.1:")


def test_fixed_token_that_vault_refuses_is_a_clear_login_error(openbao: OpenBao) -> None:
    session = _session(openbao, vault_token="not-a-token")
    with pytest.raises(VaultError, match=r"Vault login \(token\) failed: permission denied") as caught:
        session.call(_daemon_call)
    assert "not-a-token" not in str(caught.value)
