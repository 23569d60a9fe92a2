"""How every `autoglm-server` command reads its settings: flags in kebab case, each one also an
AUTOGLM_* environment variable, the flag winning. One place, so that `serve`, `token`, `vault` and
`model` parse alike."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict


def command_config(prog: str, *, exit_on_error: bool = False) -> SettingsConfigDict:
    """pydantic-settings' configuration for the command named `prog` (e.g. "autoglm-server model push").

    exit_on_error=False makes a bad flag raise SettingsError, so the command can print its own message
    and exit code; `serve` lets argparse print usage and exit 2.
    """
    return SettingsConfigDict(
        env_prefix="AUTOGLM_",
        cli_kebab_case=True,
        cli_prog_name=prog,
        cli_implicit_flags=True,
        cli_avoid_json=True,
        cli_exit_on_error=exit_on_error,
        extra="ignore",
    )
