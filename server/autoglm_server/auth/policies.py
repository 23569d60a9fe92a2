"""The Vault policies of autoglm-serve, rendered for a transit mount and key.

vault/*.hcl holds these rendered with the defaults (a test keeps them in step). Least privilege:
the daemon reads public keys and cannot sign; the issuer signs with the JWT key only; the rotator
rotates, configures and trims that key and nothing else.
"""

from __future__ import annotations

DAEMON_POLICY = "autoglm-daemon"
ISSUER_POLICY = "autoglm-issuer"
ROTATOR_POLICY = "autoglm-rotator"


def _grant(path: str, capability: str) -> str:
    """One HCL path block granting one capability."""
    return f'path "{path}" {{\n  capabilities = ["{capability}"]\n}}\n'


def _own_token() -> str:
    # Look up and renew the caller's own token, so a long-running process keeps its Vault login.
    return _grant("auth/token/lookup-self", "read") + _grant("auth/token/renew-self", "update")


def _daemon(mount: str, key: str) -> str:
    return (
        "# autoglm-daemon: verifies JWTs. Reads public keys only; it cannot sign, rotate or export.\n\n"
        f"# Public keys of every live version of the JWT signing key (kid = {key}:vN).\n"
        + _grant(f"{mount}/keys/{key}", "read")
        + "\n# The JWKS of Vault's identity-token issuer (--key-source vault-oidc).\n"
        + _grant("identity/oidc/.well-known/keys", "read")
        + "\n# Keep its own token alive.\n"
        + _own_token()
    )


def _issuer(mount: str, key: str) -> str:
    return (
        "# autoglm-issuer: mints JWTs (autoglm-server token mint). Signs with the JWT key only.\n\n"
        + _grant(f"{mount}/sign/{key}", "update")
        + "\n# Creation times of the versions, to sign with one that every verifier has already fetched.\n"
        + _grant(f"{mount}/keys/{key}", "read")
        + "\n# Check and keep alive its own token (also in Vault's default policy, which a token may lack).\n"
        + _own_token()
    )


def _rotator(mount: str, key: str) -> str:
    return (
        "# autoglm-rotator: rotates the JWT key, raises min_decryption_version (revocation) and trims.\n\n"
        + _grant(f"{mount}/keys/{key}", "read")
        + "".join(_grant(f"{mount}/keys/{key}/{action}", "update") for action in ("rotate", "config", "trim"))
    )


def render_policies(mount: str, key: str) -> dict[str, str]:
    """Policy name -> HCL text."""
    return {
        DAEMON_POLICY: _daemon(mount, key),
        ISSUER_POLICY: _issuer(mount, key),
        ROTATOR_POLICY: _rotator(mount, key),
    }
