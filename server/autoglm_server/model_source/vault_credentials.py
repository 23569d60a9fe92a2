"""S3 keys from a Vault KV v2 secret, through the daemon's own Vault login (auth/vault.py).

The secret holds `access_key_id` and `secret_access_key` (and, for temporary keys, `session_token`).
They live in SecretStr from the moment they are read, so a repr or a log line shows stars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hvac import exceptions as hvac_exc
from pydantic import SecretStr

from autoglm_server.auth.settings import VaultSettings
from autoglm_server.auth.vault import VaultError, VaultSession, vault_message
from autoglm_server.model_source.errors import CredentialsError


@dataclass(frozen=True, slots=True)
class StaticCredentials:
    access_key_id: str
    secret_access_key: SecretStr
    session_token: SecretStr | None = None


def split_kv_path(path: str) -> tuple[str, str]:
    """`mount/some/path` -> ("mount", "some/path")."""
    mount, _, rest = path.strip("/").partition("/")
    if not mount or not rest:
        raise CredentialsError(f"--s3-vault-kv-path {path!r} must be MOUNT/PATH of a KV v2 secret")
    return mount, rest


def read_vault_credentials(vault: VaultSettings, path: str) -> StaticCredentials:
    mount, secret_path = split_kv_path(path)

    def read(client: Any) -> Any:
        kv = client.secrets.kv.v2
        return kv.read_secret_version(path=secret_path, mount_point=mount, raise_on_deleted_version=True)

    try:
        answer = VaultSession(vault).call(read)
    except VaultError as exc:
        raise CredentialsError(f"cannot read S3 credentials from Vault {path}: {exc}") from None
    except hvac_exc.InvalidPath:
        raise CredentialsError(f"Vault has no secret at {path} (KV v2 mount {mount!r}, path {secret_path!r})") from None
    except hvac_exc.VaultError as exc:
        raise CredentialsError(f"Vault refused the S3 credentials at {path}: {vault_message(exc)}") from None
    data = answer.get("data", {}).get("data", {}) if isinstance(answer, dict) else {}
    key_id, secret = data.get("access_key_id"), data.get("secret_access_key")
    if not isinstance(key_id, str) or not isinstance(secret, str) or not key_id or not secret:
        raise CredentialsError(f"Vault secret {path} lacks access_key_id and secret_access_key")
    token = data.get("session_token")
    return StaticCredentials(key_id, SecretStr(secret), SecretStr(token) if isinstance(token, str) and token else None)
