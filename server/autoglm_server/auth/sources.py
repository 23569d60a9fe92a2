"""Key sources: where the verification keys come from. Each fetch() blocks (run it off the loop).

- vault-transit: the public key of every live version of a transit key; kid = NAME:vN. Versions
  below `min_decryption_version` are not listed by Vault, so raising it revokes them.
- vault-oidc: the JWKS of Vault's identity-token issuer, for callers that get tokens from Vault.
- jwks-file: a JWKS document on disk, for development without Vault.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from autoglm_server.auth.keys import KeyFormatError, VerificationKey, check_key, key_from_jwk
from autoglm_server.auth.vault import VaultError, VaultSession

logger = logging.getLogger(__name__)

# Transit key types we can verify, and the JWS algorithm each signs with.
TRANSIT_ALGORITHMS: dict[str, str] = {
    "ecdsa-p256": "ES256",
    "ed25519": "EdDSA",
    "rsa-2048": "RS256",
    "rsa-3072": "RS256",
    "rsa-4096": "RS256",
}


class KeySource(Protocol):
    """Fetches the complete current set of verification keys, keyed by kid."""

    name: str

    def fetch(self) -> dict[str, VerificationKey]: ...


def transit_kid(key_name: str, version: int) -> str:
    return f"{key_name}:v{version}"


def read_transit_key(session: VaultSession, mount: str, key_name: str) -> dict[str, Any]:
    """The `data` of transit/keys/NAME (public keys, creation times, versions)."""

    def read(client: Any) -> Any:
        return client.secrets.transit.read_key(name=key_name, mount_point=mount)

    response = session.call(read)
    if not isinstance(response, dict) or not isinstance(response.get("data"), dict):
        raise VaultError(f"unexpected answer from {mount}/keys/{key_name}")
    data: dict[str, Any] = response["data"]
    return data


class VaultTransitSource:
    name = "vault-transit"

    def __init__(self, session: VaultSession, mount: str, key_name: str) -> None:
        self._session = session
        self._mount = mount
        self._key_name = key_name

    def fetch(self) -> dict[str, VerificationKey]:
        data = read_transit_key(self._session, self._mount, self._key_name)
        algorithm = TRANSIT_ALGORITHMS.get(str(data.get("type")))
        if algorithm is None:
            raise KeyFormatError(f"transit key {self._key_name} has type {data.get('type')}; need ecdsa-p256")
        keys: dict[str, VerificationKey] = {}
        for version, entry in (data.get("keys") or {}).items():
            kid = transit_kid(self._key_name, int(version))
            pem = entry.get("public_key") if isinstance(entry, dict) else None
            if not pem:
                raise KeyFormatError(f"transit key {kid} has no public key")
            keys[kid] = check_key(kid, algorithm, load_pem_public_key(pem.encode()))
        return keys


class JwksSource:
    """A JWK Set, from Vault's OIDC issuer or a file; keys with other algorithms are skipped."""

    def __init__(self, name: str, allowed: frozenset[str]) -> None:
        self.name = name
        self._allowed = allowed

    def parse(self, document: Any) -> dict[str, VerificationKey]:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise KeyFormatError(f"{self.name}: not a JWK Set")
        keys: dict[str, VerificationKey] = {}
        for jwk in document["keys"]:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                key = key_from_jwk(jwk, self._allowed)
            except KeyFormatError as exc:
                logger.warning("%s: skipping a key: %s", self.name, exc)
                continue
            keys[key.kid] = key
        return keys


OIDC_KEYS_PATH = "/v1/identity/oidc/.well-known/keys"
OIDC_DISCOVERY_PATH = "/v1/identity/oidc/.well-known/openid-configuration"


class VaultOidcSource(JwksSource):
    """Vault's identity-token issuer. Its tokens carry iss = <issuer>/v1/identity/oidc (the issuer
    of `identity/oidc/config`, else Vault's api_addr) and aud = the role's client_id: the daemon's
    --jwt-issuer and --jwt-audience must be set to those. The first successful fetch compares
    Vault's published issuer with the configured one and warns once on a mismatch, which would
    otherwise show only as every call failing with 'wrong issuer'."""

    def __init__(self, session: VaultSession, expected_issuer: str = "") -> None:
        # Vault signs identity tokens with RS256 by default; ES256 and EdDSA are configurable.
        super().__init__("vault-oidc", frozenset({"ES256", "EdDSA", "RS256"}))
        self._session = session
        self._expected_issuer = expected_issuer
        self._issuer_checked = not expected_issuer

    def fetch(self) -> dict[str, VerificationKey]:
        def read(client: Any, path: str) -> Any:
            return client.adapter.get(path)

        keys = self.parse(self._session.call(read, OIDC_KEYS_PATH))
        if not self._issuer_checked:
            discovery = self._session.call(read, OIDC_DISCOVERY_PATH)
            self._issuer_checked = True
            published = discovery.get("issuer") if isinstance(discovery, dict) else None
            if published != self._expected_issuer:
                logger.warning(
                    "Vault's identity tokens carry iss=%r but --jwt-issuer is %r: every token will be "
                    "rejected as 'wrong issuer' until they match",
                    published,
                    self._expected_issuer,
                )
        return keys


class JwksFileSource(JwksSource):
    def __init__(self, path: str) -> None:
        super().__init__("jwks-file", frozenset({"ES256", "EdDSA", "RS256"}))
        self._path = Path(path)

    def fetch(self) -> dict[str, VerificationKey]:
        try:
            document = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyFormatError(f"cannot read the JWKS file {self._path}: {exc}") from exc
        return self.parse(document)
