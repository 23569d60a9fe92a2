"""The start-up GPU memory headroom decision (engine/gpu_memory.py) with given totals: one test per outcome,
for both engines' reservations, plus the pieces around it that need no GPU (NVML selectors, checkpoint
size, the gauges, the exit code). The same logic on a real GPU: tests/engine/test_gpu_headroom.py, run
by scripts/gpu_memory_check.sh."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoglm_server.engine import gpu_memory
from autoglm_server.engine.gpu_memory import DeviceMemory, Outcome, Reservation
from autoglm_server.engine.types import EngineStats
from autoglm_server.engine.vllm import gpu_probe
from autoglm_server.errors import StartupError
from autoglm_server.observability.metrics import Metrics

GIB = 1 << 30
H100 = DeviceMemory(index=0, total_bytes=80 * GIB, free_bytes=79 * GIB)


def builtin(weights: int, kv: int, workspace: int = 1 * GIB) -> Reservation:
    return Reservation((("weights", weights), ("workspace", workspace), ("KV budget", kv)))


def test_builtin_reservation_that_fits_reports_its_headroom() -> None:
    verdict = gpu_memory.check(H100, builtin(18 * GIB, 40 * GIB), 0.9)
    assert verdict.outcome is Outcome.FITS
    assert verdict.reservation.bytes == 59 * GIB
    assert verdict.headroom_bytes == int(80 * GIB * 0.9) - 59 * GIB
    line = verdict.report()
    assert "GPU 0: 80.00 GiB total, 79.00 GiB free at start" in line
    assert "weights 18.00 GiB + workspace 1.00 GiB + KV budget 40.00 GiB" in line
    assert "fits, 13.00 GiB to spare" in line
    assert gpu_memory.require_fit([verdict], "built-in") == (verdict,)


def test_builtin_reservation_over_the_fraction_is_refused_with_what_to_change() -> None:
    verdict = gpu_memory.check(H100, builtin(18 * GIB, 60 * GIB), 0.9)
    assert verdict.outcome is Outcome.EXCEEDS_SHARE
    assert verdict.headroom_bytes < 0
    with pytest.raises(gpu_memory.GpuMemoryError) as caught:
        gpu_memory.require_fit([verdict], "built-in")
    message = str(caught.value)
    assert "built-in engine's GPU memory reservation cannot fit" in message
    assert "79.00 GiB needed but --gpu-memory-fraction 0.9 of 80.00 GiB allows 72.00 GiB" in message
    assert "--max-batch-tokens" in message


def test_reservation_within_the_fraction_but_over_free_memory_names_the_other_holder() -> None:
    crowded = DeviceMemory(index=1, total_bytes=80 * GIB, free_bytes=30 * GIB)
    verdict = gpu_memory.check(crowded, builtin(18 * GIB, 20 * GIB), 0.9)
    assert verdict.outcome is Outcome.EXCEEDS_FREE
    with pytest.raises(gpu_memory.GpuMemoryError, match=r"only 30\.00 GiB is free \(50\.00 GiB is held by other"):
        gpu_memory.require_fit([verdict], "built-in")


def test_exactly_full_share_still_fits() -> None:
    device = DeviceMemory(index=0, total_bytes=100, free_bytes=100)
    verdict = gpu_memory.check(device, Reservation((("weights", 50),)), 0.5)
    assert verdict.outcome is Outcome.FITS
    assert verdict.headroom_bytes == 0
    assert gpu_memory.check(device, Reservation((("weights", 51),)), 0.5).outcome is Outcome.EXCEEDS_SHARE


def test_vllm_share_fits_an_empty_card() -> None:
    (verdict,) = gpu_memory.vllm_reservations([H100], 0.9, checkpoint_bytes=19 * GIB)
    assert verdict.outcome is Outcome.FITS
    assert verdict.reservation.bytes == int(80 * GIB * 0.9)
    assert "of which 19.00 GiB must hold the weights" in verdict.report()


def test_vllm_share_over_free_memory_is_refused() -> None:
    """vLLM takes its fraction of the total up front: with 60 GiB free, 0.9 x 80 GiB cannot be had."""
    busy = DeviceMemory(index=0, total_bytes=80 * GIB, free_bytes=60 * GIB)
    (verdict,) = gpu_memory.vllm_reservations([busy], 0.9, checkpoint_bytes=19 * GIB)
    assert verdict.outcome is Outcome.EXCEEDS_FREE
    with pytest.raises(gpu_memory.GpuMemoryError, match="the vLLM engine's GPU memory reservation cannot fit"):
        gpu_memory.require_fit([verdict], "vLLM")
    # A smaller fraction fits the same card.
    assert gpu_memory.vllm_reservations([busy], 0.7, checkpoint_bytes=19 * GIB)[0].fits


def test_vllm_weights_larger_than_the_share_are_refused_and_split_over_tensor_parallel_gpus() -> None:
    small = DeviceMemory(index=0, total_bytes=24 * GIB, free_bytes=24 * GIB)
    (alone,) = gpu_memory.vllm_reservations([small], 0.9, checkpoint_bytes=40 * GIB)
    assert alone.outcome is Outcome.EXCEEDS_SHARE
    assert "--tensor-parallel-size" in alone.verdict()
    pair = gpu_memory.vllm_reservations([small, DeviceMemory(1, 24 * GIB, 24 * GIB)], 0.9, checkpoint_bytes=40 * GIB)
    assert [v.outcome for v in pair] == [Outcome.FITS, Outcome.FITS]
    assert pair[0].reservation.required == 20 * GIB


def test_vllm_without_a_local_checkpoint_checks_free_memory_only() -> None:
    (verdict,) = gpu_memory.vllm_reservations([H100], 0.9, checkpoint_bytes=None)
    assert verdict.reservation.required == verdict.reservation.bytes
    assert verdict.fits


def test_one_failing_gpu_of_several_refuses_and_is_named() -> None:
    good = gpu_memory.check(H100, builtin(GIB, GIB), 0.9)
    bad = gpu_memory.check(DeviceMemory(3, 80 * GIB, GIB), builtin(GIB, GIB), 0.9)
    with pytest.raises(gpu_memory.GpuMemoryError) as caught:
        gpu_memory.require_fit([good, bad], "built-in")
    assert "GPU 3:" in str(caught.value)
    assert "GPU 0:" not in str(caught.value)


@pytest.mark.parametrize(
    ("device", "parts", "fraction"),
    [
        (dict(index=0, total_bytes=0, free_bytes=0), (("w", 1),), 0.9),
        (dict(index=0, total_bytes=10, free_bytes=11), (("w", 1),), 0.9),
        (dict(index=-1, total_bytes=10, free_bytes=5), (("w", 1),), 0.9),
        (dict(index=0, total_bytes=10, free_bytes=5), (("w", -1),), 0.9),
        (dict(index=0, total_bytes=10, free_bytes=5), (("w", 1),), 0.0),
        (dict(index=0, total_bytes=10, free_bytes=5), (("w", 1),), 1.5),
    ],
)
def test_implausible_readings_are_errors_not_verdicts(device: dict[str, int], parts: Any, fraction: float) -> None:
    with pytest.raises(ValueError, match=r"implausible|negative|fraction"):
        gpu_memory.check(DeviceMemory(**device), Reservation(parts), fraction)


def test_refusal_is_a_startup_error_with_its_own_exit_code() -> None:
    error = gpu_memory.GpuMemoryError("x")
    assert isinstance(error, StartupError)
    assert error.exit_code == gpu_memory.EXIT_GPU_MEMORY == 78
    assert StartupError("y").exit_code == 1


def test_gauges_show_total_free_reserved_and_headroom_per_gpu() -> None:
    verdict = gpu_memory.check(H100, builtin(18 * GIB, 40 * GIB), 0.9)
    metrics = Metrics(model="m", version="v")
    metrics.bind_engine(lambda: EngineStats(0, 0, 0, 1, 0, alive=True, gpu_memory=(verdict,)))
    samples = {
        s.name: (s.labels, s.value)
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name.startswith("autoglm_gpu_memory")
    }
    labels = {"gpu": "0", "model": "m", "version": "v"}
    assert samples == {
        "autoglm_gpu_memory_total_bytes": (labels, 80 * GIB),
        "autoglm_gpu_memory_free_at_start_bytes": (labels, 79 * GIB),
        "autoglm_gpu_memory_reserved_bytes": (labels, 59 * GIB),
        "autoglm_gpu_memory_headroom_bytes": (labels, verdict.headroom_bytes),
    }


def test_no_gauges_without_a_gpu() -> None:
    metrics = Metrics(model="m", version="v")
    metrics.bind_engine(lambda: EngineStats(0, 0, 0, 1, 0, alive=True))
    assert "autoglm_gpu_memory" not in metrics.render().decode()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, [0, 1]),
        ({"CUDA_VISIBLE_DEVICES": "3,1"}, [3, 1]),
        ({"CUDA_VISIBLE_DEVICES": "GPU-aa11,GPU-bb22,GPU-cc33"}, ["GPU-aa11", "GPU-bb22"]),
        ({"CUDA_VISIBLE_DEVICES": ""}, None),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, None),
        ({"CUDA_VISIBLE_DEVICES": "MIG-1234"}, None),
    ],
)
def test_nvml_selectors_follow_cuda_visible_devices(env: dict[str, str], expected: list[int | str] | None) -> None:
    assert gpu_probe.visible_selectors(2, env) == expected


def test_checkpoint_size_counts_weight_files_only(tmp_path: Path) -> None:
    (tmp_path / "model-00001.safetensors").write_bytes(b"x" * 300)
    (tmp_path / "model-00002.safetensors").write_bytes(b"x" * 200)
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 1000)
    assert gpu_probe.checkpoint_bytes(str(tmp_path)) == 500
    assert gpu_probe.checkpoint_bytes("zai-org/AutoGLM-Phone-9B") is None  # a hub id: unknown


class _FakeNvml:
    """Stands in for NVML, which needs an NVIDIA driver (not on this machine); the GPU script runs the real one."""

    def __init__(self, memory: dict[int | str, tuple[int, int]], fail_init: bool = False) -> None:
        self._memory = memory
        self._fail_init = fail_init
        self.shut = False

    def nvmlInit(self) -> None:
        if self._fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int | str:
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int | str:
        return uuid

    def nvmlDeviceGetMemoryInfo(self, handle: int | str) -> SimpleNamespace:
        total, free = self._memory[handle]
        return SimpleNamespace(total=total, free=free, used=total - free)


def test_nvml_readings_become_logical_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    nvml = _FakeNvml({2: (80 * GIB, 79 * GIB), 5: (80 * GIB, 10 * GIB)})
    devices = gpu_probe.read_devices(2, nvml=lambda: nvml)
    assert devices == [DeviceMemory(0, 80 * GIB, 79 * GIB), DeviceMemory(1, 80 * GIB, 10 * GIB)]
    assert nvml.shut


def test_no_driver_skips_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_probe.read_devices(1, nvml=lambda: _FakeNvml({}, fail_init=True)) is None
    assert gpu_probe.read_devices(1, nvml=lambda: None) is None
