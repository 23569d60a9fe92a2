# Sourced by the Dockerfile's pip steps (POSIX sh): a pip config and a CA bundle passed as build secrets
# take effect, and empty package-source build arguments are dropped (pip would read "" as an index URL).
# shellcheck shell=sh
if [ -s /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi
if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi
for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_TRUSTED_HOST; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then unset "$name"; fi
done
unset name value
