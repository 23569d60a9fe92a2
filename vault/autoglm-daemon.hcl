# autoglm-daemon: verifies JWTs. Reads public keys only; it cannot sign, rotate or export.

# Public keys of every live version of the JWT signing key (kid = autoglm-jwt:vN).
path "transit/keys/autoglm-jwt" {
  capabilities = ["read"]
}

# The JWKS of Vault's identity-token issuer (--key-source vault-oidc).
path "identity/oidc/.well-known/keys" {
  capabilities = ["read"]
}

# Keep its own token alive.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
