"""Fixtures: a real OpenBao dev server per test, with the JWT transit key set up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hvac
import pytest

from tests.helpers.openbao import OpenBao, running_openbao

KEY = "autoglm-jwt"


def setup_transit(server: OpenBao) -> Any:
    client = hvac.Client(url=server.addr, token=server.root_token)
    client.sys.enable_secrets_engine("transit")
    client.secrets.transit.create_key(KEY, key_type="ecdsa-p256")
    return client


@pytest.fixture
def openbao() -> Iterator[OpenBao]:
    with running_openbao() as server:
        yield server


@pytest.fixture
def vault(openbao: OpenBao) -> Any:
    """A root hvac client of a dev server with transit enabled and an ecdsa-p256 key."""
    return setup_transit(openbao)
