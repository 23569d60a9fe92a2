# autoglm-rotator: rotates the JWT key, raises min_decryption_version (revocation) and trims.

path "transit/keys/autoglm-jwt" {
  capabilities = ["read"]
}
path "transit/keys/autoglm-jwt/rotate" {
  capabilities = ["update"]
}
path "transit/keys/autoglm-jwt/config" {
  capabilities = ["update"]
}
path "transit/keys/autoglm-jwt/trim" {
  capabilities = ["update"]
}
