"""Both servers of the vLLM benchmarks get one engine configuration (no vLLM needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from autoglm_server.bench import vllm_options


def _args(tmp_path: Path, *extra: str, vision: bool = False) -> argparse.Namespace:
    config = {"model_type": "glm4v", "vision_config": {}} if vision else {"model_type": "llama"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    parser = argparse.ArgumentParser()
    vllm_options.add_vllm_options(parser)
    return parser.parse_args(["--model", str(tmp_path), "--output-dir", str(tmp_path / "out"), *extra])


def _flag(flags: list[str], name: str) -> str:
    return flags[flags.index(name) + 1]


def test_engine_arguments_become_server_flags() -> None:
    flags = vllm_options.as_flags(
        {"model": "m", "max_num_seqs": 8, "enable_prefix_caching": False, "limit_mm_per_prompt": {"image": 2}}
    )
    assert flags == ["--max-num-seqs", "8", "--no-enable-prefix-caching", "--limit-mm-per-prompt", '{"image": 2}']


def test_the_peer_gets_what_the_daemon_gives_its_engine(tmp_path: Path) -> None:
    args = _args(tmp_path, "--max-model-len", "4096", "--peer-arg=--seed=1")
    peer = vllm_options.peer_args(args, max_running=8, prefix_caching=False)
    daemon = vllm_options.daemon_args(args, engine="vllm", max_running=8, prefix_caching=False)
    assert _flag(peer, "--max-num-seqs") == _flag(daemon, "--max-running") == "8"
    assert _flag(peer, "--max-model-len") == _flag(daemon, "--max-model-len") == "4096"
    assert _flag(peer, "--dtype") == _flag(daemon, "--dtype") == "bfloat16"
    assert "--no-enable-prefix-caching" in peer
    assert "--no-enable-prefix-caching" in daemon
    assert _flag(daemon, "--engine") == "vllm"
    assert "--enable-prompt-tokens-details" in peer  # so vLLM's server reports cached_tokens as the daemon does
    assert peer[-1] == "--seed=1"


def test_a_vision_model_gets_images_only_and_the_pixel_bound_that_works(tmp_path: Path) -> None:
    args = _args(tmp_path, vision=True)
    peer = vllm_options.peer_args(args, max_running=8)
    assert json.loads(_flag(peer, "--limit-mm-per-prompt"))["video"] == 0
    assert json.loads(_flag(peer, "--mm-processor-kwargs"))["size"]["longest_edge"] == 5_000_000
    daemon = vllm_options.daemon_args(args, engine="vllm", max_running=8)
    assert json.loads(_flag(daemon, "--mm-processor-kwargs")) == {"max_pixels": 5_000_000}
    assert "--enable-prefix-caching" in daemon


def test_the_builtin_daemon_gets_no_vllm_flag_and_the_shared_prefix_cache_one(tmp_path: Path) -> None:
    args = _args(tmp_path, "--max-model-len", "512")
    daemon = vllm_options.daemon_args(args, engine="builtin", max_running=4)
    assert "--engine" not in daemon
    assert not any(flag in daemon for flag in ("--max-model-len", "--vllm-arg"))
    assert [flag for flag in daemon if "prefix" in flag] == ["--enable-prefix-caching"]
    assert _flag(daemon, "--max-context-length") == "512"
    off = vllm_options.daemon_args(args, engine="builtin", max_running=4, prefix_caching=False)
    assert [flag for flag in off if "prefix" in flag] == ["--no-enable-prefix-caching"]


def test_vllm_env_takes_key_value_pairs(tmp_path: Path) -> None:
    args = _args(tmp_path, "--vllm-env", "VLLM_CPU_KVCACHE_SPACE=2")
    assert vllm_options.vllm_env(args) == {"VLLM_CPU_KVCACHE_SPACE": "2"}
