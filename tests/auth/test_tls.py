"""TLS, mTLS and certificate renewal without a restart, with certificates made in the test."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from autoglm_server.tls import TlsConfigError, server_credentials
from tests.auth.stub_server import stub_server


@dataclass
class Issued:
    cert_pem: bytes
    key_pem: bytes
    serial: int


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    cn: str, issuer_key: ec.EllipticCurvePrivateKey | None, issuer_cn: str | None, *, ca: bool = False
) -> tuple[Issued, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(issuer_cn or cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return Issued(cert.public_bytes(Encoding.PEM), key_pem, cert.serial_number), key


@dataclass
class Pki:
    ca: Issued
    ca_key: ec.EllipticCurvePrivateKey
    dir: Path

    def issue(self, cn: str) -> Issued:
        return _issue(cn, self.ca_key, "test-ca")[0]

    def write_server(self, issued: Issued) -> None:
        # Written in place, as cert-manager's atomic writer swaps the file under the same name.
        (self.dir / "tls.key.tmp").write_bytes(issued.key_pem)
        (self.dir / "tls.crt.tmp").write_bytes(issued.cert_pem)
        (self.dir / "tls.key.tmp").replace(self.dir / "tls.key")
        (self.dir / "tls.crt.tmp").replace(self.dir / "tls.crt")

    def settings(self, mtls: bool) -> SimpleNamespace:
        return SimpleNamespace(
            tls_cert=str(self.dir / "tls.crt"),
            tls_key=str(self.dir / "tls.key"),
            tls_client_ca=str(self.dir / "ca.crt") if mtls else "",
        )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, ca_key = _issue("test-ca", None, None, ca=True)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    pki = Pki(ca, ca_key, tmp_path)
    pki.write_server(pki.issue("server-1"))
    return pki


async def _health(target: str, credentials: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(target, credentials) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)


def _served_serial(port: int, pki: Pki, client: Issued | None = None) -> int:
    """Handshake with the stdlib and read the certificate the server presents."""
    context = ssl.create_default_context(cadata=pki.ca.cert_pem.decode())
    context.set_alpn_protocols(["h2"])
    if client is not None:
        (pki.dir / "client.crt").write_bytes(client.cert_pem)
        (pki.dir / "client.key").write_bytes(client.key_pem)
        context.load_cert_chain(pki.dir / "client.crt", pki.dir / "client.key")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


async def test_tls_serves_and_plaintext_is_refused(pki: Pki) -> None:
    async with stub_server(credentials=server_credentials(pki.settings(mtls=False))) as server:
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem)
        assert await _health(server.target, creds) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(server.target) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)


async def test_mtls_requires_a_client_certificate(pki: Pki) -> None:
    async with stub_server(credentials=server_credentials(pki.settings(mtls=True))) as server:
        without = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _health(server.target, without)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        client = pki.issue("client-1")
        with_cert = grpc.ssl_channel_credentials(pki.ca.cert_pem, client.key_pem, client.cert_pem)
        assert await _health(server.target, with_cert) == health_pb2.HealthCheckResponse.SERVING
        # A certificate from another CA is refused too.
        stranger, _ = _issue("stranger", None, None)
        other = grpc.ssl_channel_credentials(pki.ca.cert_pem, stranger.key_pem, stranger.cert_pem)
        with pytest.raises(grpc.aio.AioRpcError):
            await _health(server.target, other)


async def test_renewed_certificate_is_served_without_restart(pki: Pki) -> None:
    first = pki.issue("server-1")
    pki.write_server(first)
    async with stub_server(credentials=server_credentials(pki.settings(mtls=False))) as server:
        assert await asyncio.to_thread(_served_serial, server.port, pki) == first.serial
        renewed = pki.issue("server-2")
        pki.write_server(renewed)
        assert await asyncio.to_thread(_served_serial, server.port, pki) == renewed.serial
        # A half-written pair (new cert, old key) is not served; the renewed one stays.
        (pki.dir / "tls.crt").write_bytes(pki.issue("server-3").cert_pem)
        assert await asyncio.to_thread(_served_serial, server.port, pki) == renewed.serial
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem)
        assert await _health(server.target, creds) == health_pb2.HealthCheckResponse.SERVING


def test_bad_tls_settings_are_clear_errors(pki: Pki) -> None:
    assert server_credentials(SimpleNamespace(tls_cert="", tls_key="", tls_client_ca="")) is None
    with pytest.raises(TlsConfigError, match="go together"):
        server_credentials(SimpleNamespace(tls_cert=str(pki.dir / "tls.crt"), tls_key="", tls_client_ca=""))
    with pytest.raises(TlsConfigError, match="needs --tls-cert"):
        server_credentials(SimpleNamespace(tls_cert="", tls_key="", tls_client_ca=str(pki.dir / "ca.crt")))
    (pki.dir / "tls.crt").write_bytes(pki.issue("mismatch").cert_pem)
    with pytest.raises(TlsConfigError, match="not the key"):
        server_credentials(pki.settings(mtls=False))
