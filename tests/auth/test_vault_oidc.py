"""--key-source vault-oidc against a real OpenBao: Vault's identity-token issuer signs, the daemon's
auth (keyring + verifier + interceptor, as build_auth wires them) verifies.

Set-up, as an operator would do it (vault/README.md shows the same with `bao`): a named OIDC key, a
role whose client_id is the daemon's audience and whose template adds the `scope` and `tenant`
claims, and a caller: a userpass user whose entity carries metadata tenant=acme and whose policy
may read identity/oidc/token/ROLE. The daemon's own token has only the autoglm-daemon policy.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import hvac
import pytest

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from autoglm_server.auth.bootstrap import BootstrapPlan, bootstrap
from autoglm_server.auth.settings import AuthSettings, VaultSettings
from autoglm_server.auth.setup import AuthRuntime, build_auth
from autoglm_server.auth.vault import VaultSession
from autoglm_server.auth.verifier import TokenRejectedError
from tests.auth.stub_server import stub_server
from tests.helpers.openbao import OpenBao, running_openbao

ROLE = "autoglm-caller"
AUDIENCE = "autoglm"  # the role's client_id becomes the aud claim
# Vault renders missing metadata as "" (the verifier then uses the subject as tenant).
TEMPLATE = '{"scope": "generate models:read", "tenant": {{identity.entity.metadata.tenant}}}'
CALLER_POLICY = f'path "identity/oidc/token/{ROLE}" {{\n  capabilities = ["read"]\n}}\n'


@dataclass
class OidcVault:
    server: OpenBao
    root: Any
    entity_id: str
    daemon_token: str

    @property
    def issuer(self) -> str:
        return f"{self.server.addr}/v1/identity/oidc"

    def caller_token(self, role: str = ROLE) -> str:
        """What a caller does: log in to Vault, then ask it for an identity token."""
        caller = hvac.Client(url=self.server.addr, token="")
        caller.auth.userpass.login("batch-job", "test-password")
        return str(caller.read(f"identity/oidc/token/{role}")["data"]["token"])


def _configure(server: OpenBao) -> OidcVault:
    root = hvac.Client(url=server.addr, token=server.root_token)
    plan = BootstrapPlan("transit", "autoglm-jwt", 3600, "approle", "kubernetes", "", "", "autoglm", "autoglm", 3600)
    bootstrap(VaultSession(VaultSettings(vault_addr=server.addr, vault_token=server.root_token)), plan)
    root.write_data(
        "identity/oidc/key/autoglm",
        data={"algorithm": "ES256", "allowed_client_ids": AUDIENCE, "rotation_period": "24h"},
    )
    root.write_data(
        f"identity/oidc/role/{ROLE}", data={"key": "autoglm", "client_id": AUDIENCE, "ttl": "5m", "template": TEMPLATE}
    )
    # An RS256 key (Vault's default algorithm) and role, to check the other JWK type too.
    root.write_data("identity/oidc/key/autoglm-rsa", data={"allowed_client_ids": AUDIENCE})
    root.write_data(
        f"identity/oidc/role/{ROLE}-rsa", data={"key": "autoglm-rsa", "client_id": AUDIENCE, "template": TEMPLATE}
    )
    root.sys.create_or_update_policy(ROLE, CALLER_POLICY + CALLER_POLICY.replace(ROLE, f"{ROLE}-rsa"))
    root.sys.enable_auth_method("userpass")
    root.write_data("auth/userpass/users/batch-job", data={"password": "test-password", "token_policies": ROLE})
    entity = root.write_data("identity/entity", data={"name": "batch-job", "metadata": {"tenant": "acme"}})
    entity_id = str(entity["data"]["id"])
    accessor = root.sys.list_auth_methods()["data"]["userpass/"]["accessor"]
    root.write_data(
        "identity/entity-alias", data={"name": "batch-job", "canonical_id": entity_id, "mount_accessor": accessor}
    )
    daemon_token = root.auth.token.create(policies=["autoglm-daemon"], ttl="1h")["auth"]["client_token"]
    return OidcVault(server, root, entity_id, str(daemon_token))


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcVault]:
    with running_openbao() as server:
        yield _configure(server)


def _settings(oidc: OidcVault, **overrides: Any) -> AuthSettings:
    values: dict[str, Any] = {
        "key_source": "vault-oidc",
        "vault_addr": oidc.server.addr,
        "vault_token": oidc.daemon_token,
        "jwt_issuer": oidc.issuer,
        "jwt_audience": AUDIENCE,
        "key_refresh_min_interval": 0,
    }
    return AuthSettings(**{**values, **overrides})


@pytest.fixture
async def runtime(oidc: OidcVault) -> AsyncIterator[AuthRuntime]:
    auth = build_auth(_settings(oidc))
    assert auth is not None
    await auth.start()
    yield auth
    await auth.stop()


def _kid(token: str) -> str:
    return str(json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"])


async def test_identity_token_from_vault_passes_the_interceptor(oidc: OidcVault, runtime: AuthRuntime) -> None:
    assert runtime.keys_fresh()
    token = oidc.caller_token()
    assert _kid(token) in runtime.keyring.keys
    async with stub_server([runtime.interceptor]) as server, grpc.aio.insecure_channel(server.target) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        reply = await stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata, timeout=10)
    # The subject of a Vault identity token is the entity id; the tenant comes from its metadata.
    assert reply.model_info.model_id == f"{oidc.entity_id}|acme|generate models:read"


async def test_rs256_identity_tokens_verify_too(oidc: OidcVault, runtime: AuthRuntime) -> None:
    token = oidc.caller_token(f"{ROLE}-rsa")
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"] == "RS256"
    principal = await runtime.verifier.authenticate(f"Bearer {token}")
    assert principal.subject == oidc.entity_id


async def test_rotated_oidc_key_verifies_old_and_new_tokens(oidc: OidcVault, runtime: AuthRuntime) -> None:
    old = oidc.caller_token()
    oidc.root.write_data("identity/oidc/key/autoglm/rotate", data={})
    new = oidc.caller_token()
    assert _kid(new) != _kid(old)
    # Vault publishes the previous key until its verification_ttl ends, so both verify; the new
    # kid is fetched by the forced refresh an unknown kid triggers.
    assert (await runtime.verifier.authenticate(f"Bearer {new}")).tenant == "acme"
    assert (await runtime.verifier.authenticate(f"Bearer {old}")).tenant == "acme"


async def test_wrong_issuer_or_audience_settings_reject_with_their_reason(
    oidc: OidcVault, caplog: pytest.LogCaptureFixture
) -> None:
    token = oidc.caller_token()
    for overrides, reason in (
        ({"jwt_issuer": "autoglm-serve"}, "wrong_issuer"),
        ({"jwt_audience": "x"}, "wrong_audience"),
    ):
        auth = build_auth(_settings(oidc, **overrides))
        assert auth is not None
        with caplog.at_level(logging.WARNING, logger="autoglm_server.auth.sources"):
            await auth.start()
        try:
            with pytest.raises(TokenRejectedError) as caught:
                await auth.verifier.authenticate(f"Bearer {token}")
            assert caught.value.reason == reason
        finally:
            await auth.stop()
    # The issuer mismatch is diagnosed at start, naming what Vault publishes.
    assert f"carry iss={oidc.issuer!r} but --jwt-issuer is 'autoglm-serve'" in caplog.text
    assert caplog.text.count("carry iss=") == 1  # the right issuer raised no warning
