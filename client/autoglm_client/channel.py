"""How the SDK connects: channel options (retry service config), TLS credentials, call metadata.

Retries for UNAVAILABLE are gRPC's own (a retryPolicy in the service config), not a loop in the
SDK: gRPC only retries a call that has received no response yet, so a streamed generation is
never replayed after its first token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from autoglm_client._metadata import CallMetadata
from autoglm_client.v1 import generation_pb2

GENERATION_SERVICE: str = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name
HEALTH_SERVICE = "grpc.health.v1.Health"
DEFAULT_TARGET = "127.0.0.1:50051"

# A generated stream can be long and a token can be large; the defaults (4 MiB) suit both.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retryPolicy for UNAVAILABLE: attempts include the first; backoff is exponential, jittered."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 5:  # gRPC caps attempts at 5
            raise ValueError(f"max_attempts must be in [1, 5], got {self.max_attempts}")
        if self.initial_backoff_s <= 0 or self.max_backoff_s <= 0 or self.backoff_multiplier <= 0:
            raise ValueError("backoffs and multiplier must be > 0")


def service_config(retry: RetryPolicy | None) -> dict[str, Any]:
    """The service config applied to every method of the generation and health services."""
    method: dict[str, Any] = {"name": [{"service": GENERATION_SERVICE}, {"service": HEALTH_SERVICE}]}
    if retry is not None and retry.max_attempts > 1:
        method["retryPolicy"] = {
            "maxAttempts": retry.max_attempts,
            "initialBackoff": f"{retry.initial_backoff_s}s",
            "maxBackoff": f"{retry.max_backoff_s}s",
            "backoffMultiplier": retry.backoff_multiplier,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return {"methodConfig": [method]}


@dataclass(frozen=True)
class TlsConfig:
    """TLS for the channel. Paths to PEM files; no root CA means the system's trust store.

    `client_cert` and `client_key` together present a client certificate (mTLS). `server_name`
    overrides the name checked against the server certificate (for a target given as an IP).
    """

    root_ca: str | os.PathLike[str] | None = None
    client_cert: str | os.PathLike[str] | None = None
    client_key: str | os.PathLike[str] | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together (mTLS needs both)")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.root_ca),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )


def _read(path: str | os.PathLike[str] | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def channel_options(
    retry: RetryPolicy | None, tls: TlsConfig | None, extra: Sequence[tuple[str, Any]] = ()
) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1 if retry is not None else 0),
        ("grpc.service_config", json.dumps(service_config(retry))),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    options.extend(extra)
    return options


class Connection:
    """Everything a client needs to open its channel and decorate its calls, built once."""

    def __init__(
        self,
        target: str,
        *,
        tls: TlsConfig | bool | None,
        token_provider: Callable[[], str] | None,
        retry: RetryPolicy | None,
        options: Sequence[tuple[str, Any]],
        propagate_trace: bool,
    ) -> None:
        self.target = target
        self.tls = TlsConfig() if tls is True else (tls or None)
        self.options = channel_options(retry, self.tls, options)
        self.credentials = self.tls.credentials() if self.tls is not None else None
        # The token goes as per-call metadata, not as gRPC call credentials: a failing provider then
        # raises its own TokenError at the call site, where call credentials turn it into UNAVAILABLE
        # (which the retry policy would even retry). On plaintext channels (a loopback daemon, or a
        # mesh sidecar that encrypts) call credentials would be refused anyway.
        self.metadata = CallMetadata(token_provider, propagate_trace=propagate_trace)

    def sync_channel(self) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=self.options)
        return grpc.secure_channel(self.target, self.credentials, options=self.options)

    def aio_channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=self.options)
        return grpc.aio.secure_channel(self.target, self.credentials, options=self.options)
