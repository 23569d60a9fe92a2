"""Command-line options and server arguments shared by the vLLM benchmarks (throughput and agent).

One place turns the benchmark's flags into the arguments of both servers, so that the daemon with
`--engine vllm` and vLLM's own server get the same engine configuration (model, dtype, context,
batch rows, prefix caching, multimodal limits) and differ only in what is measured: the front door.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

# Open-AutoGLM serves with `--mm-processor-kwargs '{"max_pixels":5000000}'`; transformers 5.19's
# GLM-4.1V processor ignores max_pixels, and vLLM then sizes its encoder cache too small. The
# `size` form caps the pixels the same way and is honoured.
VISION_MM_PROCESSOR_KWARGS = {"size": {"shortest_edge": 12544, "longest_edge": 5_000_000}}
# Without torchvision (CPU), vLLM's start-up dummy-video pass fails: images only.
VISION_LIMIT_MM = {"image": 10, "video": 0}


def default_vllm_python() -> str:
    """The interpreter of the environment with vLLM: `.venv-vllm` of the checkout, else this one."""
    candidate = Path.cwd() / ".venv-vllm" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def add_vllm_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a local model directory (vLLM loads the same one)")
    parser.add_argument("--output-dir", required=True, type=Path, help="where the JSON and Markdown go")
    parser.add_argument("--dtype", default="bfloat16", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="the daemon's --device")
    parser.add_argument("--vllm-python", default="", help="interpreter with vLLM (default: .venv-vllm/bin/python)")
    parser.add_argument("--max-model-len", type=int, default=0, help="context of both servers (0: the model's)")
    parser.add_argument(
        "--vllm-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of every vLLM process (e.g. VLLM_CPU_KVCACHE_SPACE=4); repeatable",
    )
    parser.add_argument(
        "--peer-arg", action="append", default=[], help="one more argument of vLLM's own server; repeatable"
    )
    parser.add_argument(
        "--daemon-arg", action="append", default=[], help="one more argument of the daemon; repeatable"
    )


def vllm_python(args: argparse.Namespace) -> str:
    return str(args.vllm_python or default_vllm_python())


def vllm_env(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in args.vllm_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RuntimeError(f"--vllm-env takes KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def is_vision_model(model: str) -> bool:
    """A model directory whose config has a vision tower (GLM-4.1V and the like)."""
    config = Path(model) / "config.json"
    if not config.is_file():
        return False
    data: dict[str, Any] = json.loads(config.read_text())
    return "vision_config" in data


def prefix_daemon_args(enabled: bool) -> list[str]:
    return ["--enable-prefix-caching" if enabled else "--no-enable-prefix-caching"]


def prefix_peer_args(enabled: bool) -> list[str]:
    return ["--enable-prefix-caching" if enabled else "--no-enable-prefix-caching"]


def daemon_args(args: argparse.Namespace, *, engine: str, max_running: int) -> list[str]:
    """The daemon's flags for this benchmark (`engine` builtin or vllm)."""
    out = ["--engine", engine] if engine != "builtin" else []
    out += ["--dtype", args.dtype, "--device", args.device, "--max-running", str(max_running)]
    out += ["--max-waiting", str(max(256, 4 * max_running))]
    if args.max_model_len:
        out += ["--max-context-length", str(args.max_model_len)]
    if engine == "vllm" and is_vision_model(args.model):
        out += ["--mm-processor-kwargs", json.dumps(VISION_MM_PROCESSOR_KWARGS)]
    return out + list(args.daemon_arg)


def peer_args(args: argparse.Namespace, *, max_running: int) -> list[str]:
    """vLLM's own server's flags matching `daemon_args` for the vllm engine."""
    out = ["--dtype", args.dtype, "--max-num-seqs", str(max_running), "--disable-uvicorn-access-log"]
    if args.max_model_len:
        out += ["--max-model-len", str(args.max_model_len)]
    if is_vision_model(args.model):
        out += ["--limit-mm-per-prompt", json.dumps(VISION_LIMIT_MM)]
        out += ["--mm-processor-kwargs", json.dumps(VISION_MM_PROCESSOR_KWARGS)]
    return out + list(args.peer_arg)


def environment_note() -> dict[str, Any]:
    """What of the environment shapes vLLM on CPU, for the JSON."""
    keys = sorted(k for k in os.environ if k.startswith(("VLLM_", "OMP_")))
    return {k: os.environ[k] for k in keys}
