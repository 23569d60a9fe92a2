"""Load the served model and tokenizer: a built-in model, a local directory, or a cached Hugging Face id.

A vision model loads with its image processor when its architecture has an input strategy here
(VISION_ARCHITECTURES: GLM-4.1V); any other vision model is refused at start with a message that names
the engine that serves it. Nothing is ever downloaded: a hub id must already be in the local cache,
otherwise start-up fails with one `ModelLoadError` whose message says how to fetch it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autoglm_server.engine import builtin_models
from autoglm_server.engine.builtin.patch_embedding import use_linear_patch_embedding
from autoglm_server.engine.settings import EngineSettings
from autoglm_server.engine.types import ModelDescription
from autoglm_server.errors import StartupError

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_CONTEXT = 2048


class ModelLoadError(StartupError):
    """The model cannot be loaded; the message says why and what to do (no traceback needed)."""


# The vision architectures the built-in engine serves (each has an input strategy in inputs.py).
VISION_ARCHITECTURES = frozenset({"Glm4vForConditionalGeneration"})


@dataclass
class LoadedModel:
    """A model ready for the runner, its tokenizer, and what GetModelInfo reports.

    `image_processor` is set for a vision model (the model's own, which sizes and normalises images).
    """

    model: Any
    tokenizer: Any
    description: ModelDescription
    image_processor: Any | None = None


def resolve_device(choice: str) -> torch.device:
    """auto picks CUDA when a GPU is visible."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(choice)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 where the hardware runs it fast, float32 otherwise."""
    if choice != "auto":
        return _DTYPES[choice]
    fast = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_fast_bf16()
    return torch.bfloat16 if fast else torch.float32


# An intra-op thread pays off only when a decode step gives it enough matrix work: each extra thread
# adds an OpenMP barrier to every operator and spins on a core that the event loop (gRPC,
# streaming) and the request path also need. On 2 cores, builtin:tiny (3.5M parameters, ~1 ms steps)
# meets the benchmark's targets with 1 thread (with 2 it is faster but batching's lead over a padded
# generate() shrinks below 1.1x) and builtin:small (114M) with 2 (docs/benchmarks.md); the cut
# between them is set on parameters per thread.
PARAMETERS_PER_THREAD = 32_000_000


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup)
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, cpus)


def cgroup_cpu_quota(root: Path) -> int | None:
    """The CPU limit of this cgroup rounded up (Kubernetes `limits.cpu`), or None without one."""
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        pass
    else:
        return None if quota == "max" else _ceil_ratio(quota, period)
    try:  # cgroup v1: -1 means no limit
        return _ceil_ratio(
            (root / "cpu" / "cpu.cfs_quota_us").read_text(), (root / "cpu" / "cpu.cfs_period_us").read_text()
        )
    except OSError:
        return None


def _ceil_ratio(quota: str, period: str) -> int | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return max(1, -(-q // p)) if q > 0 and p > 0 else None


def resolve_torch_threads(choice: int, model: Any, device: torch.device) -> int:
    """--torch-threads, or for 0 (auto) a count fitted to the model's per-step work and the CPUs.

    On CPU: one thread per PARAMETERS_PER_THREAD of weights (at least 1), at most the usable CPUs,
    so a small model leaves the other cores to the event loop and a large one uses them all. On CUDA
    the forward runs on the GPU and torch's own default stays (capped at the usable CPUs).
    """
    if choice:
        return choice
    cpus = usable_cpus()
    if device.type != "cpu":
        return max(1, min(torch.get_num_threads(), cpus))
    parameters = int(sum(p.numel() for p in model.parameters()))
    return max(1, min(cpus, parameters // PARAMETERS_PER_THREAD))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def load(settings: EngineSettings) -> LoadedModel:
    """Load what `settings.model` names onto the chosen device and dtype."""
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    log.info("loading model %s on %s as %s (--dtype %s)", settings.model, device, dtype_name(dtype), settings.dtype)
    if settings.model in builtin_models.BUILTIN_MODELS:
        tokenizer, model, image_processor = builtin_models.build(settings.model)
        revision, random_weights = f"seed-{builtin_models.seed(settings.model)}", True
    else:
        source, revision = _locate(settings.model, settings.revision)
        tokenizer, model, image_processor = _load_pretrained(source, dtype)
        random_weights = False
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    if image_processor is not None:
        use_linear_patch_embedding(model)
    description = _describe(settings, model, tokenizer, revision, random_weights)
    return LoadedModel(model, tokenizer, description, image_processor)


def _locate(name: str, revision: str) -> tuple[str, str]:
    """A local directory as is, or a hub id's snapshot in the local cache (never the network)."""
    if os.path.isdir(name):
        return name, revision or "local"
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise ModelLoadError(f"model directory {name!r} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(name, revision=revision or None, local_files_only=True)
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and this daemon never downloads;"
            f" fetch it first with `hf download {name}` (or pass a local directory to --model)"
        ) from None
    except Exception as exc:  # a malformed id or cache: say so in one line
        raise ModelLoadError(f"model {name!r} cannot be resolved from the local cache: {exc}") from None
    return path, Path(path).name


def _load_pretrained(source: str, dtype: torch.dtype) -> tuple[Any, Any, Any | None]:
    """(tokenizer, model, image processor or None) from a local directory."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot read the model config in {source!r}: {exc}") from None
    vision = getattr(config, "vision_config", None) is not None
    architecture = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    if vision and architecture not in VISION_ARCHITECTURES:
        raise ModelLoadError(
            f"{source!r} is a vision model ({architecture}); the built-in engine serves images only for"
            f" {', '.join(sorted(VISION_ARCHITECTURES))}: serve it with --engine vllm"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        if not vision:
            model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True, dtype=dtype)
            return tokenizer, model, None
        from transformers import AutoModelForImageTextToText

        image_processor = AutoImageProcessor.from_pretrained(  # type: ignore[no-untyped-call]
            source, local_files_only=True
        )
        model = AutoModelForImageTextToText.from_pretrained(source, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        kind = "vision model" if vision else "causal LM"
        raise ModelLoadError(f"cannot load a {kind} from {source!r}: {exc}") from None
    return tokenizer, model, image_processor


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return tuple(sorted(ids))


def context_limit(model: Any, configured: int) -> int:
    if configured:
        return configured
    config = model.config.get_text_config()
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT


def _describe(
    settings: EngineSettings, model: Any, tokenizer: Any, revision: str, random_weights: bool
) -> ModelDescription:
    config = model.config.get_text_config()
    return ModelDescription(
        model_id=settings.model,
        revision=revision,
        architecture=(model.config.architectures or [type(model).__name__])[0],
        max_context_length=context_limit(model, settings.max_context_length),
        vocab_size=int(config.vocab_size),
        eos_token_ids=_eos_ids(model, tokenizer),
        dtype=dtype_name(model.dtype),
        device=str(next(model.parameters()).device),
        random_weights=random_weights,
    )
