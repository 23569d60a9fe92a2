"""The vault-transit key source and the keyring against a real OpenBao dev server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from autoglm_server.auth.jwks_route import CONTENT_TYPE
from autoglm_server.auth.keyring import Keyring
from autoglm_server.auth.mint import MintRequest, mint_token
from autoglm_server.auth.settings import AuthSettings, VaultSettings
from autoglm_server.auth.setup import build_auth, build_source
from autoglm_server.auth.vault import VaultSession, resolve_connection
from autoglm_server.auth.verifier import TokenRejectedError, Verifier, VerifierConfig
from tests.auth.conftest import KEY, setup_transit
from tests.helpers.openbao import OpenBao

CONFIG = VerifierConfig(issuer="autoglm-serve", audience="autoglm", leeway=30, max_token_bytes=8192)


def _settings(server: OpenBao, **overrides: Any) -> AuthSettings:
    return AuthSettings(vault_addr=server.addr, vault_token=server.root_token, **overrides)


def _mint(server: OpenBao, **overrides: Any) -> str:
    request = MintRequest(
        subject="svc", scopes=["generate"], ttl_s=300, issuer="autoglm-serve", audience=["autoglm"], min_key_age_s=0
    )
    session = VaultSession(VaultSettings(vault_addr=server.addr, vault_token=server.root_token))
    return mint_token(session, "transit", KEY, request)


def _keyring(server: OpenBao, min_interval: float = 0.0, max_staleness: float = 3600) -> Keyring:
    source = build_source(_settings(server))
    return Keyring(source, refresh_interval=3600, min_interval=min_interval, max_staleness=max_staleness)


def test_vault_variables_fill_empty_settings() -> None:
    env = {"VAULT_ADDR": "http://env:8200", "VAULT_TOKEN": "t", "VAULT_CACERT": "/ca", "VAULT_NAMESPACE": "ns"}
    conn = resolve_connection(VaultSettings(), env)
    assert (conn.addr, conn.token, conn.cacert, conn.namespace) == ("http://env:8200", "t", "/ca", "ns")
    own = resolve_connection(VaultSettings(vault_addr="http://own:8200", vault_namespace="mine"), env)
    assert (own.addr, own.token, own.namespace) == ("http://own:8200", "t", "mine")


async def test_transit_keys_have_versioned_kids_and_verify_minted_tokens(openbao: OpenBao, vault: Any) -> None:
    vault.secrets.transit.rotate_key(KEY)
    keyring = _keyring(openbao)
    assert await keyring.refresh()
    assert set(keyring.keys) == {f"{KEY}:v1", f"{KEY}:v2"}
    assert {k.algorithm for k in keyring.keys.values()} == {"ES256"}
    principal = await Verifier(keyring, CONFIG).authenticate("Bearer " + _mint(openbao))
    assert principal.subject == "svc"
    assert principal.scopes == frozenset({"generate"})


async def test_unknown_kid_forces_a_rate_limited_refresh(openbao: OpenBao, vault: Any) -> None:
    keyring = _keyring(openbao, min_interval=3600)
    assert await keyring.refresh()
    verifier = Verifier(keyring, CONFIG)
    vault.secrets.transit.rotate_key(KEY)
    # min_key_age 0 signs with v2, which the keyring has not seen; the last refresh was just now,
    # so the rate limit refuses to ask Vault again.
    token = _mint(openbao)
    with pytest.raises(TokenRejectedError) as caught:
        await verifier.authenticate("Bearer " + token)
    assert caught.value.reason == "unknown_kid"
    # Without the rate limit, the unknown kid triggers one refresh and verifies.
    keyring._min_interval = 0
    assert (await verifier.authenticate("Bearer " + token)).subject == "svc"


async def test_concurrent_unknown_kids_share_one_refresh(openbao: OpenBao, vault: Any) -> None:
    keyring = _keyring(openbao)
    fetches = 0
    source_fetch = keyring._source.fetch

    def counting_fetch() -> Any:
        nonlocal fetches
        fetches += 1
        return source_fetch()

    keyring._source.fetch = counting_fetch  # type: ignore[method-assign]
    assert await keyring.refresh()
    keyring._min_interval = 3600
    results = await asyncio.gather(*(keyring.lookup("nope:v9") for _ in range(20)))
    assert results == [None] * 20
    assert fetches == 1  # the first refresh only: every lookup was rate limited


async def test_raising_min_decryption_version_revokes_old_tokens(openbao: OpenBao, vault: Any) -> None:
    old_token = _mint(openbao)  # v1
    vault.secrets.transit.rotate_key(KEY)
    keyring = _keyring(openbao)
    assert await keyring.refresh()
    verifier = Verifier(keyring, CONFIG)
    assert (await verifier.authenticate("Bearer " + old_token)).subject == "svc"
    vault.secrets.transit.update_key_configuration(KEY, min_decryption_version=2)
    assert await keyring.refresh()
    assert set(keyring.keys) == {f"{KEY}:v2"}
    with pytest.raises(TokenRejectedError) as caught:
        await verifier.authenticate("Bearer " + old_token)
    assert caught.value.reason == "unknown_kid"
    assert (await verifier.authenticate("Bearer " + _mint(openbao))).subject == "svc"


async def test_outage_keeps_keys_staleness_and_recovery(openbao: OpenBao, vault: Any) -> None:
    clock = [1000.0]
    source = build_source(_settings(openbao, vault_request_timeout=1))
    keyring = Keyring(source, refresh_interval=3600, min_interval=0, max_staleness=60, clock=lambda: clock[0])
    assert not keyring.is_fresh()  # never fetched
    assert await keyring.refresh()
    token = _mint(openbao)
    verifier = Verifier(keyring, CONFIG)
    openbao.stop()
    clock[0] += 30
    assert not await keyring.refresh()
    assert (await verifier.authenticate("Bearer " + token)).subject == "svc"  # last keys still verify
    assert keyring.key_age_seconds() == 30
    assert keyring.is_fresh()
    clock[0] += 31
    assert not await keyring.refresh()
    assert not keyring.is_fresh()  # older than max_staleness: readiness turns NOT_SERVING
    openbao.start()  # a dev server comes back empty: set the key up again
    setup_transit(openbao)
    assert await keyring.refresh()
    assert keyring.is_fresh()
    assert keyring.key_age_seconds() == 0
    assert (await verifier.authenticate("Bearer " + _mint(openbao))).subject == "svc"


async def test_runtime_serves_jwks_with_etag(openbao: OpenBao, vault: Any) -> None:
    runtime = build_auth(_settings(openbao))
    assert runtime is not None
    await runtime.start()
    try:
        assert runtime.keys_fresh()
        route = next(iter(runtime.admin_routes().values()))
        first = route({})
        assert first.status == 200
        assert first.content_type == CONTENT_TYPE
        assert b'"kid":"autoglm-jwt:v1"' in first.body
        assert b'"d"' not in first.body
        assert "max-age" in first.headers["Cache-Control"]
        assert route({"if-none-match": first.headers["ETag"]}).status == 304
        vault.secrets.transit.rotate_key(KEY)
        assert await runtime.keyring.refresh()
        second = route({"if-none-match": first.headers["ETag"]})
        assert second.status == 200
        assert b"autoglm-jwt:v2" in second.body
    finally:
        await runtime.stop()


async def test_background_refresh_picks_up_rotation(openbao: OpenBao, vault: Any) -> None:
    runtime = build_auth(_settings(openbao, key_refresh_interval=0.2))
    assert runtime is not None
    await runtime.start()
    try:
        vault.secrets.transit.rotate_key(KEY)
        for _ in range(100):
            if f"{KEY}:v2" in runtime.keyring.keys:
                break
            await asyncio.sleep(0.05)
        assert f"{KEY}:v2" in runtime.keyring.keys
    finally:
        await runtime.stop()
