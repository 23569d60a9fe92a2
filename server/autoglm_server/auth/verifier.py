"""JWT verification: the checks of RFC 8725, each failure naming the check that failed.

Order: size cap (before any parsing), then the header (kid -> key -> the key's one algorithm), then
signature and claims (PyJWT, with exactly the key's algorithm allowed), then scopes. The kid is
attacker input: it is only ever a dictionary key (never a path, URL or log field), and an unknown
kid costs at most one rate-limited refresh (keyring.py). Header fields that point elsewhere (jku,
x5u, jwk, x5c) are ignored, never fetched or trusted; `crit` and `b64` are refused, because we
implement no JWS extension. Messages never echo the token or show key material.

A small cache remembers tokens whose signature already verified, so a caller
that reuses a token pays for the ECDSA check once; a hit still checks exp/nbf and that its key is
still in the keyring (a revoked key stops its cached tokens too).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import exceptions as jwt_exc

from autoglm_server.auth.keyring import Keyring
from autoglm_server.auth.keys import MAX_KID_LENGTH, VerificationKey
from autoglm_server.auth.principal import Principal
from autoglm_server.errors import AuthenticationError, PermissionDeniedError

REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
_CACHE_SIZE = 4096


class TokenRejectedError(AuthenticationError):
    """A token failed a check; `reason` is a short label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"authentication failed: {message}")
        self.reason = reason


class ScopeMissingError(PermissionDeniedError):
    reason = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"the token lacks the scope {scope!r} this method needs")


@dataclass(frozen=True, slots=True)
class VerifierConfig:
    issuer: str
    audience: str
    leeway: float
    max_token_bytes: int


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    key: VerificationKey
    exp: float
    nbf: float | None


# PyJWT's exception types -> (reason label, message). Subclasses come before their bases.
_PYJWT_FAILURES: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt_exc.ExpiredSignatureError, "expired", "the token has expired (exp)"),
    (jwt_exc.InvalidIssuedAtError, "bad_iat", "the iat claim is not a number"),
    (jwt_exc.InvalidIssuerError, "wrong_issuer", "wrong issuer (iss)"),
    (jwt_exc.InvalidAudienceError, "wrong_audience", "wrong audience (aud)"),
    (jwt_exc.InvalidSubjectError, "bad_subject", "the sub claim is not a string"),
    (jwt_exc.InvalidJTIError, "bad_jti", "the jti claim is not a string"),
    (jwt_exc.InvalidSignatureError, "bad_signature", "signature verification failed"),
    (jwt_exc.InvalidAlgorithmError, "alg_not_allowed", "algorithm not allowed for this key"),
    (jwt_exc.DecodeError, "malformed", "the token is not a well-formed JWT"),
)


def _bearer_token(authorization: str | None, max_bytes: int) -> str:
    if authorization is None:
        raise TokenRejectedError("missing", "no authorization metadata; send 'authorization: Bearer <jwt>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise TokenRejectedError("not_bearer", "the authorization metadata is not a Bearer token")
    token = token.strip()
    if not token:
        raise TokenRejectedError("empty", "the Bearer token is empty")
    # A JWT is ASCII, so characters are bytes and the cap below is a cap in bytes.
    if len(token) > max_bytes:
        raise TokenRejectedError("too_large", f"the token is longer than {max_bytes} bytes")
    if not token.isascii():
        raise TokenRejectedError("malformed", "the token is not a well-formed JWT (non-ASCII characters)")
    return token


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, read by hand: PyJWT's reader raises undocumented types for odd headers
    (a numeric kid, an unknown crit), which would escape as INTERNAL instead of UNAUTHENTICATED."""
    if token.count(".") != 2:
        raise TokenRejectedError("malformed", "the token is not a well-formed JWT (needs 3 segments)")
    segment = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise TokenRejectedError("malformed", "the token is not a well-formed JWT (bad header)") from exc
    if not isinstance(header, dict):
        raise TokenRejectedError("malformed", "the token is not a well-formed JWT (bad header)")
    return header


def _immature(exc: jwt_exc.ImmatureSignatureError) -> TokenRejectedError:
    # PyJWT raises the same type for a future nbf and a future iat; its message names the claim.
    if "(iat)" in str(exc):
        return TokenRejectedError("iat_in_future", "the token was issued in the future (iat)")
    return TokenRejectedError("not_yet_valid", "the token is not valid yet (nbf)")


def parse_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope", "")
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list) and all(isinstance(s, str) for s in scope):
        return frozenset(scope)
    raise TokenRejectedError("bad_scope", "the scope claim is neither a string nor a list of strings")


class Verifier:
    def __init__(self, keyring: Keyring, config: VerifierConfig, clock: Callable[[], float] = time.time) -> None:
        self._keyring = keyring
        self._config = config
        self._clock = clock
        self._jwt = jwt.PyJWT()
        self._cache: dict[str, _Verified] = {}
        keyring.add_listener(lambda _keys: self._cache.clear())

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a verified token; raises TokenRejectedError naming the failed check."""
        token = _bearer_token(authorization, self._config.max_token_bytes)
        cached = self._cache.get(token)
        if cached is not None and self._still_valid(cached):
            return cached.principal
        key = await self._key_for(token)
        verified = self._decode(token, key)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[token] = verified
        return verified.principal

    def authorize(self, principal: Principal, scope: str) -> None:
        if scope not in principal.scopes:
            raise ScopeMissingError(scope)

    def _still_valid(self, cached: _Verified) -> bool:
        # Identity, not equality: a key replaced under the same kid invalidates its tokens.
        if self._keyring.keys.get(cached.key.kid) is not cached.key:
            return False
        now, leeway = self._clock(), self._config.leeway
        return now <= cached.exp + leeway and (cached.nbf is None or cached.nbf <= now + leeway)

    async def _key_for(self, token: str) -> VerificationKey:
        header = _unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if "crit" in header or "b64" in header:
            raise TokenRejectedError("unsupported_header", "the token header asks for a JWS extension (crit/b64)")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise TokenRejectedError("no_kid", "the token header has no usable kid")
        key = await self._keyring.lookup(kid)
        if key is None:
            raise TokenRejectedError("unknown_kid", "unknown key id (kid); the key may be revoked")
        if alg != key.algorithm:
            raise TokenRejectedError("alg_not_allowed", "the token's alg does not match its key's algorithm")
        return key

    def _decode(self, token: str, key: VerificationKey) -> _Verified:
        cfg = self._config
        try:
            claims = self._jwt.decode(
                token,
                key=key.public_key,
                algorithms=[key.algorithm],
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt_exc.MissingRequiredClaimError as exc:
            raise TokenRejectedError("missing_claim", f"the token lacks the required claim {exc.claim!r}") from exc
        except jwt_exc.ImmatureSignatureError as exc:
            raise _immature(exc) from exc
        except jwt_exc.InvalidTokenError as exc:
            for exc_type, reason, message in _PYJWT_FAILURES:
                if isinstance(exc, exc_type):
                    raise TokenRejectedError(reason, message) from exc
            raise TokenRejectedError("invalid", "the token failed validation") from exc
        return self._verified(claims, key)

    @staticmethod
    def _verified(claims: Mapping[str, Any], key: VerificationKey) -> _Verified:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenRejectedError("bad_subject", "the sub claim must be a non-empty string")
        # An empty tenant counts as none: Vault identity-token templates render missing entity
        # metadata as "" (e.g. {{identity.entity.metadata.tenant}} on an entity without it).
        tenant = claims.get("tenant")
        if tenant is None or tenant == "":
            tenant = subject
        elif not isinstance(tenant, str):
            raise TokenRejectedError("bad_tenant", "the tenant claim must be a string")
        nbf = claims.get("nbf")
        return _Verified(
            principal=Principal(subject=subject, tenant=tenant, scopes=parse_scopes(claims)),
            key=key,
            exp=float(claims["exp"]),
            nbf=float(nbf) if isinstance(nbf, int | float) else None,
        )
