"""The Vault policies of autoglm-serve, rendered for a transit mount and key.

vault/*.hcl holds these rendered with the defaults (a test keeps them in step). Least privilege:
the daemon reads public keys and cannot sign; the issuer signs with the JWT key only; the rotator
rotates, configures and trims that key and nothing else.
"""

from __future__ import annotations

DAEMON_POLICY = "autoglm-daemon"
ISSUER_POLICY = "autoglm-issuer"
ROTATOR_POLICY = "autoglm-rotator"

_DAEMON = """\
# autoglm-daemon: verifies JWTs. Reads public keys only; it cannot sign, rotate or export.

# Public keys of every live version of the JWT signing key (kid = {key}:vN).
path "{mount}/keys/{key}" {{
  capabilities = ["read"]
}}

# The JWKS of Vault's identity-token issuer (--key-source vault-oidc).
path "identity/oidc/.well-known/keys" {{
  capabilities = ["read"]
}}

# Keep its own token alive.
path "auth/token/lookup-self" {{
  capabilities = ["read"]
}}
path "auth/token/renew-self" {{
  capabilities = ["update"]
}}
"""

_ISSUER = """\
# autoglm-issuer: mints JWTs (autoglm-server token mint). Signs with the JWT key only.

path "{mount}/sign/{key}" {{
  capabilities = ["update"]
}}

# Creation times of the versions, to sign with one that every verifier has already fetched.
path "{mount}/keys/{key}" {{
  capabilities = ["read"]
}}

# Check and keep alive its own token (also in Vault's default policy, which a token may lack).
path "auth/token/lookup-self" {{
  capabilities = ["read"]
}}
path "auth/token/renew-self" {{
  capabilities = ["update"]
}}
"""

_ROTATOR = """\
# autoglm-rotator: rotates the JWT key, raises min_decryption_version (revocation) and trims.

path "{mount}/keys/{key}" {{
  capabilities = ["read"]
}}
path "{mount}/keys/{key}/rotate" {{
  capabilities = ["update"]
}}
path "{mount}/keys/{key}/config" {{
  capabilities = ["update"]
}}
path "{mount}/keys/{key}/trim" {{
  capabilities = ["update"]
}}
"""


def render_policies(mount: str, key: str) -> dict[str, str]:
    """Policy name -> HCL text."""
    return {
        DAEMON_POLICY: _DAEMON.format(mount=mount, key=key),
        ISSUER_POLICY: _ISSUER.format(mount=mount, key=key),
        ROTATOR_POLICY: _ROTATOR.format(mount=mount, key=key),
    }
