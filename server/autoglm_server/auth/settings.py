"""Settings of JWT authentication and its key sources (part of config.Settings).

VaultSettings is shared with `autoglm-server token mint` and `autoglm-server vault bootstrap`, which
talk to the same Vault. Vault's own variables (VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT,
VAULT_NAMESPACE) apply where these settings are empty; see auth/vault.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from autoglm_server import names

KeySourceName = Literal["vault-transit", "vault-oidc", "jwks-file"]
VaultAuthMethod = Literal["token", "approle", "kubernetes"]


class VaultSettings(BaseModel):
    """How to reach Vault and log in to it."""

    vault_addr: str = Field("", description="Vault address, e.g. https://vault:8200 (default: $VAULT_ADDR)")
    vault_token: SecretStr = Field(
        SecretStr(""), description="Vault token for --vault-auth-method token (default: $VAULT_TOKEN)"
    )
    vault_token_file: str = Field(
        "", description="file holding the Vault token (re-read when it changes, e.g. a Vault Agent sink)"
    )
    vault_cacert: str = Field("", description="PEM CA bundle that signs Vault's certificate ($VAULT_CACERT)")
    vault_namespace: str = Field("", description="Vault Enterprise namespace ($VAULT_NAMESPACE)")
    vault_request_timeout: float = Field(5.0, gt=0, description="seconds one request to Vault may take")
    vault_transit_mount: str = Field("transit", description="mount path of the transit secrets engine")
    vault_transit_key: str = Field("autoglm-jwt", description="transit key that signs the JWTs")
    vault_auth_method: VaultAuthMethod = Field("token", description="how the daemon logs in to Vault")
    vault_approle_mount: str = Field("approle", description="mount path of the AppRole auth method")
    vault_approle_role_id: str = Field("", description="AppRole role_id (not a secret on its own)")
    vault_approle_secret_id_file: str = Field(
        "", description="file holding the AppRole secret_id (re-read at each login)"
    )
    vault_kubernetes_mount: str = Field("kubernetes", description="mount path of the Kubernetes auth method")
    vault_kubernetes_role: str = Field("", description="Vault role of the Kubernetes auth method")
    vault_kubernetes_token_file: str = Field(
        "/var/run/secrets/vault/token",
        description="projected service-account token; re-read at each login because the kubelet rotates it",
    )


class AuthSettings(VaultSettings):
    """How calls are authenticated."""

    auth: Literal["enabled", "disabled"] = Field(
        "enabled", description="check a JWT on every call; 'disabled' is for local development only"
    )
    jwt_issuer: str = Field("autoglm-serve", description="required `iss` claim (exact match)")
    jwt_audience: str = Field("autoglm", description="audience the `aud` claim must contain")
    jwt_leeway: float = Field(30.0, ge=0, description="seconds of clock skew allowed for exp, nbf and iat")
    max_token_bytes: int = Field(8192, ge=256, description="longer bearer tokens are rejected before parsing")
    scope_generate: str = Field(
        names.SCOPE_GENERATE, description="scope that Generate and Tokenize need in the `scope` claim"
    )
    scope_models_read: str = Field(
        names.SCOPE_MODELS_READ, description="scope that GetModelInfo needs in the `scope` claim"
    )
    key_source: KeySourceName = Field(
        "vault-transit",
        description="where verification keys come from: vault-transit (public keys of the transit key), "
        "vault-oidc (Vault identity-token JWKS), jwks-file (development)",
    )
    jwks_file: str = Field("", description="JWKS file of --key-source jwks-file")
    key_refresh_interval: float = Field(60.0, gt=0, description="seconds between key refreshes (jittered)")
    key_refresh_min_interval: float = Field(
        10.0, ge=0, description="an unknown kid forces a refresh at most this often (seconds)"
    )
    key_max_staleness: float = Field(
        3600.0, gt=0, description="readiness turns NOT_SERVING when the keys are older than this (seconds)"
    )
