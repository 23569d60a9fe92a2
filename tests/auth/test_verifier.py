"""The bad-token matrix and scopes, through a real grpc.aio server with the auth interceptor.

Keys come from a jwks-file source, so no Vault is needed here; the Vault sources have their own
tests against OpenBao.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jwt.algorithms import ECAlgorithm

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from autoglm_server.auth.settings import AuthSettings
from autoglm_server.auth.setup import AuthRuntime, build_auth
from autoglm_server.auth.verifier import TokenRejectedError
from tests.auth.local_keys import LocalKey, claims, write_jwks
from tests.auth.stub_server import StubServer, stub_server


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())


@pytest.fixture
def key() -> LocalKey:
    return LocalKey.generate("dev:v1")


@pytest.fixture
async def runtime(tmp_path: Path, key: LocalKey) -> AsyncIterator[AuthRuntime]:
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, key)
    settings = AuthSettings(key_source="jwks-file", jwks_file=str(jwks), key_refresh_min_interval=0)
    auth = build_auth(settings)
    assert auth is not None
    await auth.start()
    yield auth
    await auth.stop()


@pytest.fixture
async def server(runtime: AuthRuntime) -> AsyncIterator[StubServer]:
    async with stub_server([runtime.interceptor]) as running:
        yield running


@pytest.fixture
async def stub(server: StubServer) -> AsyncIterator[pb_grpc.GenerationServiceStub]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield pb_grpc.GenerationServiceStub(channel)


async def _model_info(stub: pb_grpc.GenerationServiceStub, authorization: str | None) -> pb.GetModelInfoResponse:
    metadata = None if authorization is None else (("authorization", authorization),)
    return await stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata, timeout=10)


async def test_valid_token_reaches_the_servicer_with_its_principal(
    stub: pb_grpc.GenerationServiceStub, key: LocalKey
) -> None:
    token = key.sign(claims(sub="alice", tenant="acme"))
    reply = await _model_info(stub, f"Bearer {token}")
    assert reply.model_info.model_id == "alice|acme|generate models:read"
    # The tenant defaults to the subject.
    reply = await _model_info(stub, f"Bearer {key.sign(claims(sub='bob'))}")
    assert reply.model_info.model_id.startswith("bob|bob|")


async def test_streaming_rpc_is_authenticated_and_sees_the_principal(
    stub: pb_grpc.GenerationServiceStub, key: LocalKey
) -> None:
    metadata = (("authorization", f"Bearer {key.sign(claims(sub='carol'))}"),)
    responses = [r async for r in stub.Generate(pb.GenerateRequest(), metadata=metadata, timeout=10)]
    assert responses[0].started.model_id.startswith("carol|")
    assert responses[2].chunk.text.startswith("carol|")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [r async for r in stub.Generate(pb.GenerateRequest(), timeout=10)]
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_missing_scope_is_permission_denied(stub: pb_grpc.GenerationServiceStub, key: LocalKey) -> None:
    token = key.sign(claims(scope="generate"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _model_info(stub, f"Bearer {token}")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "models:read" in (caught.value.details() or "")
    # The same token may tokenize: Tokenize needs `generate`.
    reply = await stub.Tokenize(pb.TokenizeRequest(text="x"), metadata=(("authorization", f"Bearer {token}"),))
    assert reply.count == 2


async def test_health_is_exempt(server: StubServer) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _hs256_with_public_key(key: LocalKey) -> str:
    # The classic confusion attack: HMAC keyed with the verifier's public key (PEM or JWK text).
    public_pem = key.private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    signing_input = _segments({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims())
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)


def _es256_with_header(key: LocalKey, header: dict[str, Any]) -> str:
    # Signed by hand: PyJWT's encoder refuses some of the headers an attacker may send.
    signing_input = _segments({"alg": "ES256", "typ": "JWT", **header}, claims())
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input.encode(), key.private_key)
    return signing_input + "." + _b64(signature)


def _tamper_payload(token: str) -> str:
    header, _, signature = token.split(".")
    return header + "." + _b64(json.dumps(claims(sub="mallory")).encode()) + "." + signature


def _tamper_signature(token: str) -> str:
    head, _, signature = token.rpartition(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[5] ^= 0x01
    return head + "." + _b64(bytes(raw))


def _matrix(key: LocalKey) -> list[tuple[str, str | None, str]]:
    """(case, authorization metadata, words the UNAUTHENTICATED message must contain)."""
    other = LocalKey.generate("dev:v99")
    valid = key.sign(claims())
    big = key.sign(claims(padding="x" * 6800))
    assert 9 * 1024 <= len(big) < 10 * 1024
    return [
        ("alg none", "Bearer " + _segments({"alg": "none", "kid": key.kid}, claims()) + ".", "alg"),
        ("HS256 with the public key", "Bearer " + _hs256_with_public_key(key), "alg"),
        ("expired", "Bearer " + key.sign(claims(iat=1_000_000, nbf=1_000_000, exp=1_000_600)), "expired"),
        ("nbf in the future", "Bearer " + key.sign(claims(nbf=2_000_000_000)), "nbf"),
        ("wrong iss", "Bearer " + key.sign(claims(iss="someone-else")), "issuer"),
        ("wrong aud", "Bearer " + key.sign(claims(aud="other-service")), "audience"),
        ("unknown kid", "Bearer " + other.sign(claims()), "unknown key id"),
        ("tampered payload", "Bearer " + _tamper_payload(valid), "signature"),
        ("tampered signature", "Bearer " + _tamper_signature(valid), "signature"),
        ("9 KiB token", "Bearer " + big, "longer than 8192"),
        ("not a JWT", "Bearer not-a-jwt", "well-formed"),
        ("no Bearer prefix", valid, "not a Bearer"),
        ("empty", "Bearer ", "empty"),
        ("no metadata", None, "no authorization"),
        ("missing sub", "Bearer " + key.sign(claims(sub=None)), "'sub'"),
        ("missing exp", "Bearer " + key.sign(claims(exp=None)), "'exp'"),
        ("missing iat", "Bearer " + key.sign(claims(iat=None)), "'iat'"),
        ("iat in the future", "Bearer " + key.sign(claims(iat=2_000_000_000, nbf=None)), "issued in the future"),
        ("crit header", "Bearer " + key.sign(claims(), crit=["exp"]), "JWS extension"),
        ("b64 header", "Bearer " + _es256_with_header(key, {"kid": key.kid, "b64": True}), "JWS extension"),
        ("no kid", "Bearer " + _es256_with_header(key, {}), "no usable kid"),
        ("numeric kid", "Bearer " + _es256_with_header(key, {"kid": 1}), "no usable kid"),
        ("huge kid", "Bearer " + _es256_with_header(key, {"kid": "k" * 300}), "no usable kid"),
        ("non-string tenant", "Bearer " + key.sign(claims(tenant=["a", "b"])), "tenant"),
    ]


async def test_bad_token_matrix(stub: pb_grpc.GenerationServiceStub, key: LocalKey) -> None:
    failures: dict[str, str] = {}
    for case, authorization, words in _matrix(key):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _model_info(stub, authorization)
        code, details = caught.value.code(), caught.value.details() or ""
        if code != grpc.StatusCode.UNAUTHENTICATED or words not in details:
            failures[case] = f"{code.name}: {details}"
        # The message never echoes the token.
        if authorization and len(authorization) > 20:
            assert authorization[7:] not in details, case
    assert not failures, failures


async def test_rejections_are_reported_with_a_reason(
    runtime: AuthRuntime, stub: pb_grpc.GenerationServiceStub, key: LocalKey
) -> None:
    reasons: list[str] = []
    runtime.on_failure = reasons.append
    for authorization in ("Bearer x.y.z", None, f"Bearer {key.sign(claims(scope='generate'))}"):
        with pytest.raises(grpc.aio.AioRpcError):
            await _model_info(stub, authorization)
    assert reasons == ["malformed", "missing", "insufficient_scope"]


async def test_cached_token_stops_verifying_when_its_key_is_removed(
    tmp_path: Path, runtime: AuthRuntime, stub: pb_grpc.GenerationServiceStub, key: LocalKey
) -> None:
    token = key.sign(claims())
    assert (await _model_info(stub, f"Bearer {token}")).model_info.model_id.startswith("alice|")
    write_jwks(tmp_path / "jwks.json", LocalKey.generate("dev:v2"))
    assert await runtime.keyring.refresh()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _model_info(stub, f"Bearer {token}")
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown key id" in (caught.value.details() or "")


async def test_two_authorization_entries_are_refused(stub: pb_grpc.GenerationServiceStub, key: LocalKey) -> None:
    token = key.sign(claims())
    metadata = (("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "more than one authorization" in (caught.value.details() or "")


async def test_empty_tenant_means_the_subject(stub: pb_grpc.GenerationServiceStub, key: LocalKey) -> None:
    # Vault identity tokens render missing entity metadata as "" (see test_vault_oidc.py).
    reply = await _model_info(stub, f"Bearer {key.sign(claims(sub='carol', tenant=''))}")
    assert reply.model_info.model_id.startswith("carol|carol|")


async def test_non_ascii_token_is_malformed_before_parsing(runtime: AuthRuntime, key: LocalKey) -> None:
    # gRPC clients cannot send this, but the verifier must not count characters as bytes.
    with pytest.raises(TokenRejectedError) as caught:
        await runtime.verifier.authenticate("Bearer " + key.sign(claims())[:-1] + "\u00e9")
    assert caught.value.reason == "malformed"


def test_disabled_auth_builds_nothing() -> None:
    assert build_auth(AuthSettings(auth="disabled")) is None
