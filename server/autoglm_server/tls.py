"""TLS and mTLS for the gRPC port, with certificates renewed in place picked up without a restart.

cert-manager (or anyone) rewrites the PEM files; gRPC asks our fetcher for the configuration at
each new handshake, and the fetcher re-reads the files only when their stat signature changed. A
half-written or mismatched pair is ignored (the previous one keeps serving) and logged.
In an Istio mesh the sidecars do mTLS: leave these settings empty there.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

logger = logging.getLogger(__name__)


class TlsSettings(Protocol):
    tls_cert: str
    tls_key: str
    tls_client_ca: str


class TlsConfigError(ValueError):
    """The TLS settings or files cannot be used."""


def _public_bytes(key: Any) -> bytes:
    der: bytes = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return der


def _load_pair(cert_path: str, key_path: str, ca_path: str) -> tuple[bytes, bytes, bytes | None]:
    cert_pem = Path(cert_path).read_bytes()
    key_pem = Path(key_path).read_bytes()
    ca_pem = Path(ca_path).read_bytes() if ca_path else None
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
        key = load_pem_private_key(key_pem, password=None)
        if ca_pem is not None:
            x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        raise TlsConfigError(f"cannot parse the TLS files: {exc}") from exc
    if _public_bytes(cert.public_key()) != _public_bytes(key.public_key()):
        raise TlsConfigError(f"{key_path} is not the key of the first certificate in {cert_path}")
    return cert_pem, key_pem, ca_pem


class CertificateReloader:
    """gRPC's certificate configuration fetcher: a new configuration when the files changed."""

    def __init__(self, cert: str, key: str, client_ca: str) -> None:
        self._paths = (cert, key, client_ca)
        self._lock = threading.Lock()
        self._signature = self._stat()

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        # Content swaps by rename (Kubernetes' atomic writer) change the inode; in-place writes
        # change mtime or size.
        out = []
        for path in self._paths:
            if path:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_ino, st.st_size))
        return tuple(out)

    def load(self) -> grpc.ServerCertificateConfiguration:
        cert, key, ca = _load_pair(*self._paths)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                signature = self._stat()
                if signature == self._signature:
                    return None
                config = self.load()
            except (OSError, TlsConfigError) as exc:
                logger.warning("TLS files changed but cannot be used yet (%s); keeping the previous ones", exc)
                return None
            self._signature = signature
            logger.info("serving the renewed TLS certificate from %s", self._paths[0])
            return config


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials | None:
    """Credentials for server.add_secure_port, or None for plain text (the mesh case)."""
    cert, key, ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if not cert and not key:
        if ca:
            raise TlsConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not cert or not key:
        raise TlsConfigError("--tls-cert and --tls-key go together")
    try:
        reloader = CertificateReloader(cert, key, ca)
        initial = reloader.load()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the TLS files: {exc}") from exc
    return grpc.dynamic_ssl_server_credentials(initial, reloader, require_client_authentication=bool(ca))
