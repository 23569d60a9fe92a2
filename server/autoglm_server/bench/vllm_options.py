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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Open-AutoGLM's form; the vLLM engine turns it into the size bounds GLM-4.1V's processor honours.
VISION_MM_PROCESSOR_KWARGS = {"max_pixels": 5_000_000}
# Engine arguments the peer does not take as flags: the model is positional-free (--model is set
# apart) and request logging is off by default in the server.
_NOT_FLAGS = {"model", "enable_log_requests", "disable_log_stats"}


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
        "--eager",
        action="store_true",
        help="vLLM without torch.compile (enforce_eager), in both servers: starts in a fraction of the time on CPU",
    )
    parser.add_argument(
        "--max-queue-time", type=float, default=600.0, help="the daemon's --max-queue-time (latency, not admission)"
    )
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
    parser.add_argument("--daemon-arg", action="append", default=[], help="one more argument of the daemon; repeatable")


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


@dataclass
class EngineView:
    """The settings fields `engine_arg_dict` reads, filled from the benchmark's flags."""

    model: str
    dtype: str
    max_running: int
    max_model_len: int
    enable_prefix_caching: bool
    mm_processor_kwargs: str
    revision: str = ""
    max_context_length: int = 0
    gpu_memory_fraction: float = 0.9
    engine: str = "vllm"
    tensor_parallel_size: int = 1
    vllm_arg: list[str] = field(default_factory=list)


def engine_view(args: argparse.Namespace, *, max_running: int, prefix_caching: bool) -> EngineView:
    kwargs = json.dumps(VISION_MM_PROCESSOR_KWARGS) if is_vision_model(args.model) else ""
    return EngineView(
        model=args.model,
        dtype=args.dtype,
        max_running=max_running,
        max_model_len=args.max_model_len,
        enable_prefix_caching=prefix_caching,
        mm_processor_kwargs=kwargs,
        vllm_arg=["enforce_eager=true"] if args.eager else [],
    )


def daemon_args(args: argparse.Namespace, *, engine: str, max_running: int, prefix_caching: bool = True) -> list[str]:
    """The daemon's flags for this benchmark (`engine` builtin or vllm)."""
    out = ["--engine", engine] if engine != "builtin" else []
    out += ["--dtype", args.dtype, "--device", args.device, "--max-running", str(max_running)]
    out += ["--max-waiting", str(max(256, 4 * max_running)), "--max-queue-time", str(args.max_queue_time)]
    # One setting for both engines' prefix cache (engine/settings.py).
    out += ["--enable-prefix-caching" if prefix_caching else "--no-enable-prefix-caching"]
    if engine == "vllm":
        view = engine_view(args, max_running=max_running, prefix_caching=prefix_caching)
        if view.max_model_len:
            out += ["--max-model-len", str(view.max_model_len)]
        if view.mm_processor_kwargs:
            out += ["--mm-processor-kwargs", view.mm_processor_kwargs]
        for item in view.vllm_arg:
            out += ["--vllm-arg", item]
    else:
        if args.max_model_len:
            out += ["--max-context-length", str(args.max_model_len)]
        if is_vision_model(args.model):  # the same image size bounds as the vLLM runs get
            out += ["--mm-processor-kwargs", json.dumps(VISION_MM_PROCESSOR_KWARGS)]
    return out + list(args.daemon_arg)


def peer_args(args: argparse.Namespace, *, max_running: int, prefix_caching: bool = True) -> list[str]:
    """vLLM's own server's flags: the engine arguments the daemon's vLLM engine gets, as CLI flags.

    Both come from the vLLM engine's own `engine_arg_dict`, so a change there moves both servers.
    --enable-prompt-tokens-details makes vLLM's server report usage.prompt_tokens_details.cached_tokens
    as the daemon always does (off by default there), so both report their prefix-cache hits.
    """
    from autoglm_server.engine.vllm.args import engine_arg_dict

    view = engine_view(args, max_running=max_running, prefix_caching=prefix_caching)
    frontend = ["--disable-uvicorn-access-log", "--enable-prompt-tokens-details"]
    return [*as_flags(engine_arg_dict(view)), *frontend, *args.peer_arg]


def as_flags(engine_args: dict[str, Any]) -> list[str]:
    """AsyncEngineArgs keywords as vLLM server flags: --kebab-case, JSON for objects, --no-X for False."""
    out: list[str] = []
    for key, value in engine_args.items():
        if key in _NOT_FLAGS:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, dict | list):
            out += [flag, json.dumps(value)]
        else:
            out += [flag, str(value)]
    return out


def environment_note() -> dict[str, Any]:
    """What of the environment shapes vLLM on CPU, for the JSON."""
    keys = sorted(k for k in os.environ if k.startswith(("VLLM_", "OMP_")))
    return {k: os.environ[k] for k in keys}


def quiet_http_logs() -> None:
    """The SDK's HTTP client logs every request at INFO: thousands of lines in a load run."""
    import logging

    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
