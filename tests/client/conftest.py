"""Fixtures of the SDK tests: a scripted gRPC server on 127.0.0.1:0 (see scripted_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.scripted_server import ScriptedServer, running_scripted_server


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedServer]:
    with running_scripted_server() as server:
        yield server


@pytest.fixture
def slow_scripted() -> Iterator[ScriptedServer]:
    """Tokens 20 ms apart, so a test can act in the middle of a stream."""
    with running_scripted_server(token_delay_s=0.02) as server:
        yield server
