"""Throw-away PEM certificates for TLS tests: a CA, a server certificate for 127.0.0.1/localhost, a client."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def read(self, path: Path) -> bytes:
        return path.read_bytes()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def make_pki(directory: Path, server_name: str = "autoglm.test") -> Pki:
    """A CA, a server certificate for `server_name`, localhost and 127.0.0.1, and a client certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("test ca", ca_key, "test ca", ca_key, is_ca=True)
    ca_path, _ = _write(directory / "ca", ca_cert, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName(server_name),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = _issue(server_name, server_key, "test ca", ca_key, sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    server_cert, server_key_path = _write(directory / "server", server, server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("test client", client_key, "test ca", ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    client_cert, client_key_path = _write(directory / "client", client, client_key)
    return Pki(ca_path, server_cert, server_key_path, client_cert, client_key_path)
