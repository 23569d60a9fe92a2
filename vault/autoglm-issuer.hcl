# autoglm-issuer: mints JWTs (autoglm-server token mint). Signs with the JWT key only.

path "transit/sign/autoglm-jwt" {
  capabilities = ["update"]
}

# Creation times of the versions, to sign with one that every verifier has already fetched.
path "transit/keys/autoglm-jwt" {
  capabilities = ["read"]
}

# Check and keep alive its own token (also in Vault's default policy, which a token may lack).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
