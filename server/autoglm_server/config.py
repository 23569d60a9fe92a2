"""The daemon's settings: one typed object, built once in main() and passed down.

Every setting has a flag (`--max-running`), an environment variable (`AUTOGLM_MAX_RUNNING`) and a
documented default; flags win over the environment. Each concern declares its own fields in its own
module (engine/settings.py, auth/settings.py, observability/settings.py) and they are combined here.
Nothing reads the environment at import time.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, CliApp

from autoglm_server import names
from autoglm_server.auth.settings import AuthSettings
from autoglm_server.command_settings import command_config
from autoglm_server.engine.settings import EngineSettings
from autoglm_server.engine.vllm.settings import VllmSettings
from autoglm_server.frontends.openai.settings import HttpSettings
from autoglm_server.model_source.settings import ModelSourceSettings
from autoglm_server.observability.settings import ObservabilitySettings
from autoglm_server.serving.images.settings import ImageSettings


class ServerSettings(BaseModel):
    """Where the daemon listens and how it treats connections."""

    listen: str = Field(names.DEFAULT_LISTEN, description="host:port of the gRPC server (port 0 picks one)")
    admin_listen: str = Field(
        names.DEFAULT_ADMIN_LISTEN,
        description="host:port of the HTTP admin server (/metrics, JWKS); empty turns it off",
    )
    port_file: str = Field(
        "", description="write the bound gRPC and admin ports to this JSON file once serving (for tests)"
    )
    drain_timeout: float = Field(
        names.DEFAULT_DRAIN_TIMEOUT_S, ge=0, description="seconds in-flight streams may run on after SIGTERM"
    )
    max_message_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="largest gRPC request message accepted (a Chat with its images)"
    )
    max_metadata_bytes: int = Field(16 * 1024, ge=1024, description="largest request metadata accepted")
    max_concurrent_streams: int = Field(1024, ge=1, description="HTTP/2 streams per connection")
    max_connection_age: float = Field(
        0, ge=0, description="seconds after which a connection is asked to reconnect (0: never)"
    )
    max_connection_age_grace: float = Field(
        600, ge=0, description="seconds a reconnecting connection keeps its in-flight calls"
    )
    keepalive_min_ping_interval: float = Field(
        10, ge=0, description="pings from a client more often than this count as strikes"
    )
    tls_cert: str = Field("", description="PEM certificate chain file; with --tls-key serves TLS")
    tls_key: str = Field("", description="PEM private key file of --tls-cert")
    tls_client_ca: str = Field("", description="PEM CA bundle; when set, clients must present a certificate")


# Bases in reverse order of appearance in --help: pydantic lists the last base's fields first.
class Settings(
    ObservabilitySettings,
    AuthSettings,
    ImageSettings,
    VllmSettings,
    ModelSourceSettings,
    EngineSettings,
    HttpSettings,
    ServerSettings,
    BaseSettings,
):
    """Run the autoglm-serve daemon.

    Every flag can also be set through an environment variable named AUTOGLM_ and the flag in upper
    case with underscores (--max-running is AUTOGLM_MAX_RUNNING); a flag wins over the environment.
    Vault's own VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT and VAULT_NAMESPACE, and the standard OTEL_*
    variables, apply where the matching flag is unset.
    """

    model_config = command_config("autoglm-server serve", exit_on_error=True)


# --help prints the docstring verbatim: drop the class-body indentation.
Settings.__doc__ = inspect.cleandoc(Settings.__doc__ or "")


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Parse flags (over AUTOGLM_* environment variables) into Settings."""
    return CliApp.run(Settings, cli_args=list(argv) if argv is not None else [])


LogFormat = Literal["auto", "text", "json"]
