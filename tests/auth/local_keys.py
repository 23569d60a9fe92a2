"""Locally generated signing keys and a JWKS file, for tests that need no Vault."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from autoglm_server.auth.keys import check_key

ISSUER = "autoglm-serve"
AUDIENCE = "autoglm"


@dataclass
class LocalKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, kid: str) -> LocalKey:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()))

    def public_jwk(self) -> dict[str, Any]:
        return check_key(self.kid, "ES256", self.private_key.public_key()).to_jwk()

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private_key, algorithm="ES256", headers={"kid": self.kid, **header})


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "scope": "generate models:read",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def write_jwks(path: Path, *keys: LocalKey) -> None:
    path.write_text(json.dumps({"keys": [key.public_jwk() for key in keys]}))
