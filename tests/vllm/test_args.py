"""The daemon's settings as vLLM engine arguments (pure: runs without vllm too)."""

from __future__ import annotations

import pytest

from autoglm_server.engine.vllm import args
from autoglm_server.errors import StartupError
from tests.vllm.support import settings


def test_open_autoglm_max_pixels_becomes_the_size_that_works() -> None:
    assert args.mm_processor_kwargs('{"max_pixels": 5000000}') == {
        "size": {"shortest_edge": 12544, "longest_edge": 5000000}
    }
    assert args.mm_processor_kwargs('{"max_pixels": 100, "min_pixels": 50, "fps": 2}') == {
        "fps": 2,
        "size": {"shortest_edge": 50, "longest_edge": 100},
    }
    assert args.mm_processor_kwargs('{"size": {"longest_edge": 7}}') == {"size": {"longest_edge": 7}}
    assert args.mm_processor_kwargs("") == {}


@pytest.mark.parametrize("raw", ["{", "[1]", '"x"'])
def test_bad_mm_processor_kwargs_stop_the_start(raw: str) -> None:
    with pytest.raises(StartupError, match="--mm-processor-kwargs"):
        args.mm_processor_kwargs(raw)


def test_vllm_args_parse_json_values_else_strings() -> None:
    parsed = args.parse_vllm_args(["enforce_eager=true", "block-size=16", "kv_cache_dtype=fp8", 'x={"a": 1}'])
    assert parsed == {"enforce_eager": True, "block_size": 16, "kv_cache_dtype": "fp8", "x": {"a": 1}}
    with pytest.raises(StartupError, match="KEY=VALUE"):
        args.parse_vllm_args(["no-equals"])


def test_unknown_vllm_args_are_named() -> None:
    with pytest.raises(StartupError, match="enfroce_eager, nope"):
        args.check_known(["enforce_eager", "nope", "enfroce_eager"], ["enforce_eager"])


def test_settings_map_onto_engine_args() -> None:
    config = settings(
        "/models/glm",
        max_running=12,
        gpu_memory_fraction=0.8,
        max_context_length=4096,
        tensor_parallel_size=2,
        enable_prefix_caching=False,
        mm_processor_kwargs='{"max_pixels": 5000000}',
        limit_images_per_request=3,
        vllm_arg=["max_num_seqs=5"],
    )
    built = args.engine_arg_dict(config)
    assert built["model"] == "/models/glm"
    assert built["max_num_seqs"] == 5  # --vllm-arg wins
    assert built["gpu_memory_utilization"] == 0.8
    assert built["max_model_len"] == 4096
    assert built["tensor_parallel_size"] == 2
    assert built["enable_prefix_caching"] is False
    assert built["limit_mm_per_prompt"] == {"image": 3, "video": 0}
    assert built["mm_processor_kwargs"] == {"size": {"shortest_edge": 12544, "longest_edge": 5000000}}
    assert built["scheduling_policy"] == "priority"
    assert args.engine_arg_dict(settings("m", max_model_len=1000, max_context_length=4096))["max_model_len"] == 1000


def test_device_cuda_without_a_gpu_names_the_missing_gpu() -> None:
    with pytest.raises(StartupError, match=r"--device cuda, but vLLM finds no GPU \(platform: none\)"):
        args.check_device("cuda", platform_is_gpu=False, platform_name="")
    args.check_device("cuda", platform_is_gpu=True, platform_name="cuda")
    args.check_device("cpu", platform_is_gpu=False, platform_name="cpu")
    args.check_device("auto", platform_is_gpu=False, platform_name="cpu")
