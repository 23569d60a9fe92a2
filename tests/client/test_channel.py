"""Channel set-up: the retry service config, TLS options, and that gRPC really retries UNAVAILABLE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoglm_client import Client, RetryPolicy, TlsConfig, UnavailableError
from autoglm_client.channel import channel_options, service_config
from tests.client.scripted_server import ScriptedServer


def test_service_config_retries_only_unavailable_on_both_services() -> None:
    config = service_config(RetryPolicy(max_attempts=3, initial_backoff_s=0.2, max_backoff_s=1.5))
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": "autoglm.v1.GenerationService"}, {"service": "grpc.health.v1.Health"}]
    assert method["retryPolicy"] == {
        "maxAttempts": 3,
        "initialBackoff": "0.2s",
        "maxBackoff": "1.5s",
        "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }


def test_no_retry_policy_means_no_retry_config() -> None:
    assert "retryPolicy" not in service_config(None)["methodConfig"][0]
    options = dict(channel_options(None, None))
    assert options["grpc.enable_retries"] == 0


def test_channel_options_carry_the_config_and_the_server_name() -> None:
    options = dict(channel_options(RetryPolicy(), TlsConfig(server_name="daemon.example"), [("x.extra", 1)]))
    assert options["grpc.enable_retries"] == 1
    assert json.loads(options["grpc.service_config"]) == service_config(RetryPolicy())
    assert options["grpc.ssl_target_name_override"] == "daemon.example"
    assert options["x.extra"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"max_attempts": 6}, {"initial_backoff_s": 0.0}, {"backoff_multiplier": -1.0}],
)
def test_retry_policy_rejects_values_grpc_would_ignore(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by field
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_tls_config_needs_cert_and_key_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        TlsConfig(client_cert=tmp_path / "c.pem")


def test_grpc_retries_unavailable_as_configured(scripted: ScriptedServer) -> None:
    """The server answers UNAVAILABLE every time: the call is tried max_attempts times, then raises."""
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    for retry, attempts in [(policy, 3), (None, 1)]:
        before = scripted.recorder.generate_calls
        with Client(scripted.target, timeout=10, retry=retry) as client, pytest.raises(UnavailableError):
            client.generate_text("unavailable")
        assert scripted.recorder.generate_calls - before == attempts


def test_other_errors_are_not_retried(scripted: ScriptedServer) -> None:
    before = scripted.recorder.generate_calls
    with Client(scripted.target, timeout=10) as client, pytest.raises(Exception, match="INVALID_ARGUMENT"):
        client.generate_text("invalid")
    assert scripted.recorder.generate_calls - before == 1
