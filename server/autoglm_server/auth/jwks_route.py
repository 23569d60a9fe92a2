"""The JWKS endpoint on the admin port: the keys the daemon verifies with, for Istio and others.

The document is rebuilt when the keyring changes and served as-is: the admin thread only reads
one immutable reference. ETag is a hash of the body; If-None-Match answers 304.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from autoglm_server.admin_http import Response
from autoglm_server.auth.keys import VerificationKey, jwks_document

CONTENT_TYPE = "application/jwk-set+json"


class JwksRoute:
    def __init__(self, max_age_s: int) -> None:
        self._max_age_s = max_age_s
        self._state: tuple[bytes, str] = (b"", "")
        self.update({})

    def update(self, keys: Mapping[str, VerificationKey]) -> None:
        body = json.dumps(jwks_document(keys), separators=(",", ":"), sort_keys=True).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        # One tuple, one assignment: a reader sees the old pair or the new one.
        self._state = (body, etag)

    def __call__(self, headers: Mapping[str, str]) -> Response:
        body, etag = self._state
        common = {"ETag": etag, "Cache-Control": f"public, max-age={self._max_age_s}"}
        if_none_match = headers.get("if-none-match", "")
        if etag in (tag.strip() for tag in if_none_match.split(",")) or if_none_match.strip() == "*":
            return Response(304, b"", CONTENT_TYPE, common)
        return Response(200, body, CONTENT_TYPE, common)
