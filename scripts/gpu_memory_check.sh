#!/usr/bin/env bash
# The start-up GPU memory headroom check on a real NVIDIA GPU (this machine has none; CI skips these tests).
#
#   AUTOGLM_PYTHON=/path/to/cuda-venv/bin/python scripts/gpu_memory_check.sh
#
# Needs an environment with a CUDA build of torch and this repository installed (`pip install -e ./client
# -e ".[dev]"` with the cu128 torch); nvidia-ml-py or vllm in it adds the NVML comparison. Runs:
#   - tests/engine/test_gpu_memory.py   the decision logic with given totals (also runs on CPU)
#   - tests/engine/test_gpu_headroom.py the built-in engine's report and refusal, the daemon's exit code 78
#                                       and its autoglm_gpu_memory_* gauges, NVML against CUDA
#   - tests/engine/test_gpu.py          the existing CUDA paths (budget from free memory, OOM contained)
# and prints the GPU as nvidia-smi sees it before and after, so a leak shows. Exit status: pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${AUTOGLM_PYTHON:-.venv/bin/python}
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA device: use a CUDA build of torch on a GPU host")'
query=(nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free --format=csv)
if command -v nvidia-smi >/dev/null; then "${query[@]}"; fi
status=0
"$PY" -m pytest -p no:cacheprovider -q -rs \
    tests/engine/test_gpu_memory.py tests/engine/test_gpu_headroom.py tests/engine/test_gpu.py || status=$?
if command -v nvidia-smi >/dev/null; then "${query[@]}"; fi
exit "$status"
