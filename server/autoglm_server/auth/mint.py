"""Minting JWTs through Vault transit: the private key never leaves Vault.

The signing version is the newest one at least `min_key_age` old, so every verifier (and Istio,
which refreshes a jwksUri about every 20 minutes) has already fetched its public key. Where no
version is that old, the oldest live one is used, with a warning.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from autoglm_server.auth.sources import TRANSIT_ALGORITHMS, read_transit_key, transit_kid
from autoglm_server.auth.vault import VaultError, VaultSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MintRequest:
    subject: str
    scopes: Sequence[str]
    ttl_s: float
    issuer: str
    audience: Sequence[str]
    tenant: str = ""
    min_key_age_s: float = 1800.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _creation_time(text: str) -> float:
    # Vault writes RFC 3339 with nanoseconds; Python parses at most microseconds.
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00")
    return stamp.timestamp() + (float("0." + frac[:9]) if frac else 0.0)


def choose_version(key_data: dict[str, Any], min_age_s: float, now: float) -> int:
    """The newest version at least min_age_s old, else the oldest live version (with a warning)."""
    versions = sorted(
        (int(v), _creation_time(str(entry.get("creation_time", "")))) for v, entry in key_data["keys"].items()
    )
    if not versions:
        raise VaultError("the transit key has no live version")
    old_enough = [v for v, created in versions if now - created >= min_age_s]
    if old_enough:
        return old_enough[-1]
    logger.warning(
        "no key version is %.0f s old yet; signing with the oldest live version v%d, which some verifiers "
        "may not have fetched",
        min_age_s,
        versions[0][0],
    )
    return versions[0][0]


def claims_for(request: MintRequest, now: float) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": request.issuer,
        "sub": request.subject,
        "aud": request.audience[0] if len(request.audience) == 1 else list(request.audience),
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + request.ttl_s),
        "jti": uuid.uuid4().hex,
        "scope": " ".join(request.scopes),
    }
    if request.tenant:
        claims["tenant"] = request.tenant
    return claims


def mint_token(session: VaultSession, mount: str, key_name: str, request: MintRequest) -> str:
    """A signed compact JWT. Blocks on Vault (call it off the event loop)."""
    now = time.time()
    key_data = read_transit_key(session, mount, key_name)
    key_type = str(key_data.get("type"))
    algorithm = TRANSIT_ALGORITHMS.get(key_type)
    if algorithm is None:
        raise VaultError(f"transit key {key_name} has type {key_type}; it cannot sign JWTs")
    version = choose_version(key_data, request.min_key_age_s, now)
    header = {"alg": algorithm, "typ": "JWT", "kid": transit_kid(key_name, version)}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims_for(request, now), separators=(",", ":")).encode())
    )
    extra: dict[str, Any] = {}
    if algorithm == "RS256":
        extra["signature_algorithm"] = "pkcs1v15"

    def sign(client: Any) -> Any:
        return client.secrets.transit.sign_data(
            name=key_name,
            mount_point=mount,
            hash_input=base64.b64encode(signing_input.encode()).decode(),
            key_version=version,
            hash_algorithm="sha2-256",
            marshaling_algorithm="jws",
            **extra,
        )

    signature = str(session.call(sign)["data"]["signature"])
    # "vault:vN:<base64url signature>": JWS marshaling already gives the raw r||s, unpadded.
    return signing_input + "." + signature.rsplit(":", 1)[-1]
