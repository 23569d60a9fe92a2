"""Verification keys: one public key, its kid and the one algorithm it may verify.

The algorithm belongs to the key, never to the token (RFC 8725): a key made from a transit
`ecdsa-p256` key verifies ES256 and nothing else. Only asymmetric algorithms are ever allowed, so
an HMAC "signed" with a public key can never verify.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

# Every algorithm any key source may hand out; each source narrows this further.
ALLOWED_ALGORITHMS: frozenset[str] = frozenset({"ES256", "EdDSA", "RS256"})

# A kid longer than this is attacker noise: it is looked up in a dict, never used as a path or URL.
MAX_KID_LENGTH = 256


class KeyFormatError(ValueError):
    """A key from a source cannot be used (wrong type, algorithm or encoding)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    algorithm: str
    public_key: PublicKey

    def to_jwk(self) -> dict[str, Any]:
        """The public JWK, as served at the JWKS endpoint."""
        jwk: dict[str, Any]
        if isinstance(self.public_key, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(self.public_key, as_dict=True)
        elif isinstance(self.public_key, ed25519.Ed25519PublicKey):
            jwk = OKPAlgorithm.to_jwk(self.public_key, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(self.public_key, as_dict=True)
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return jwk


def check_key(kid: str, algorithm: str, public_key: object) -> VerificationKey:
    """Build a VerificationKey, refusing any key whose type does not match its algorithm."""
    if algorithm not in ALLOWED_ALGORITHMS:
        raise KeyFormatError(f"key {kid!r}: algorithm {algorithm} is not allowed")
    if not kid or len(kid) > MAX_KID_LENGTH:
        raise KeyFormatError("a key needs a kid of 1 to 256 characters")
    if algorithm == "ES256":
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise KeyFormatError(f"key {kid!r}: ES256 needs a P-256 public key")
        return VerificationKey(kid, algorithm, public_key)
    if algorithm == "EdDSA":
        if not isinstance(public_key, ed25519.Ed25519PublicKey):
            raise KeyFormatError(f"key {kid!r}: EdDSA needs an Ed25519 public key")
        return VerificationKey(kid, algorithm, public_key)
    if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < 2048:
        raise KeyFormatError(f"key {kid!r}: RS256 needs an RSA public key of at least 2048 bits")
    return VerificationKey(kid, algorithm, public_key)


def _default_algorithm(jwk: Mapping[str, Any]) -> str:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "EC" and crv == "P-256":
        return "ES256"
    if kty == "OKP" and crv == "Ed25519":
        return "EdDSA"
    if kty == "RSA":
        return "RS256"
    raise KeyFormatError(f"key {jwk.get('kid')!r}: unsupported key type {kty}/{crv}")


def key_from_jwk(jwk: Mapping[str, Any], allowed: frozenset[str]) -> VerificationKey:
    """Parse one public JWK; its `alg` (or the one its type implies) must be in `allowed`."""
    if "d" in jwk:
        raise KeyFormatError(f"key {jwk.get('kid')!r} holds private material; publish public keys only")
    kid = jwk.get("kid")
    if not isinstance(kid, str):
        raise KeyFormatError("a JWK without a string kid cannot be selected")
    algorithm = jwk.get("alg") or _default_algorithm(jwk)
    if algorithm not in allowed:
        raise KeyFormatError(f"key {kid!r}: algorithm {algorithm} is not allowed for this key source")
    text = json.dumps(dict(jwk))
    public_key: object
    try:
        if algorithm == "ES256":
            public_key = ECAlgorithm.from_jwk(text)
        elif algorithm == "EdDSA":
            public_key = OKPAlgorithm.from_jwk(text)
        else:
            public_key = RSAAlgorithm.from_jwk(text)
    except Exception as exc:  # PyJWT raises several types for a bad JWK
        raise KeyFormatError(f"key {kid!r}: not a valid {algorithm} public JWK") from exc
    return check_key(kid, algorithm, public_key)


def jwks_document(keys: Mapping[str, VerificationKey]) -> dict[str, Any]:
    """A JWK Set of the given keys, in a stable order."""
    return {"keys": [keys[kid].to_jwk() for kid in sorted(keys)]}
