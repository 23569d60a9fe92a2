"""A FAKE Kubernetes API server: it implements only the TokenReview endpoint, on 127.0.0.1.

No real Kubernetes can run in these tests, yet Vault's Kubernetes auth method must ask one whether a
service-account token is valid. This stand-in answers that one question from a set of tokens the
test declares valid, the way the real API server does for projected tokens the kubelet rotates: a
token it no longer lists is answered `authenticated: false`. It checks nothing else (no signature,
no RBAC for the reviewer); Vault's own checks (bound service account, namespace, audience) still
run for real inside OpenBao.

Tokens are JWTs shaped like projected service-account tokens (the `kubernetes.io` claims Vault
reads), signed with a throwaway key that nothing verifies (Vault is not given it).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


class FakeKubeApi:
    """Holds the valid tokens; `url` is what Vault's kubernetes_host is set to."""

    def __init__(self, namespace: str, service_account: str) -> None:
        self.namespace = namespace
        self.service_account = service_account
        self.uid = str(uuid.uuid4())
        self.valid: set[str] = set()
        self.reviews = 0
        self._signing_key = ec.generate_private_key(ec.SECP256R1())
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-kube-api", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def issue_token(self, audience: str = "vault") -> str:
        """A new projected token, valid until revoked (the kubelet's rotation, in short)."""
        now = int(time.time())
        claims = {
            "iss": "https://kubernetes.default.svc",
            "aud": [audience],
            "sub": f"system:serviceaccount:{self.namespace}:{self.service_account}",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
            "kubernetes.io": {
                "namespace": self.namespace,
                "serviceaccount": {"name": self.service_account, "uid": self.uid},
            },
        }
        token = jwt.encode(claims, self._signing_key, algorithm="ES256")
        self.valid.add(token)
        return token

    def review(self, request: dict[str, Any]) -> dict[str, Any]:
        self.reviews += 1
        spec = request.get("spec") or {}
        status: dict[str, Any] = {"authenticated": False, "error": "token not valid (fake API)"}
        if spec.get("token") in self.valid:
            status = {
                "authenticated": True,
                "audiences": spec.get("audiences") or ["vault"],
                "user": {
                    "username": f"system:serviceaccount:{self.namespace}:{self.service_account}",
                    "uid": self.uid,
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{self.namespace}"],
                },
            }
        return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path != TOKEN_REVIEW_PATH or not self.headers.get("Authorization", "").startswith("Bearer "):
                    self._reply(404 if self.path != TOKEN_REVIEW_PATH else 401, {"kind": "Status"})
                    return
                self._reply(201, api.review(json.loads(body)))

            def _reply(self, status: int, document: dict[str, Any]) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def dummy_ca_pem() -> str:
    """A self-signed CA certificate. Vault insists on a kubernetes_ca_cert when it runs outside a
    pod; over plain http to the fake API it is never used."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-api-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@contextlib.contextmanager
def running_fake_kube_api(namespace: str, service_account: str) -> Iterator[FakeKubeApi]:
    api = FakeKubeApi(namespace, service_account)
    api.start()
    try:
        yield api
    finally:
        api.stop()
