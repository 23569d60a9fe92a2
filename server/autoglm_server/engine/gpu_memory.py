"""Start-up GPU memory headroom: does what the engine reserves fit the GPU it was given?

Pure Python, no torch: the engines measure (torch on the built-in engine's thread, NVML for vLLM, whose
parent process must not create a CUDA context) and hand the numbers here. The decision is then the same
for both engines and testable with given totals on a machine without a GPU.

Two quantities per GPU:
- `reserved`: what the engine takes from the card (built-in: weights + warm-up workspace + the KV token
  budget at its worst; vLLM: its --gpu-memory-fraction of the total, taken up front);
- `required`: what must fit inside the engine's share of the card (built-in: the same; vLLM: the
  weights' share of this GPU, estimated from the checkpoint, 0 when unknown).

Outcomes: FITS; EXCEEDS_SHARE (even an empty card's --gpu-memory-fraction cannot hold it: the settings
or the model must change); EXCEEDS_FREE (the share would fit, but something else holds the memory now).
A refusal raises GpuMemoryError, which exits with its own code (EXIT_GPU_MEMORY) so that an operator or
an orchestrator can tell "does not fit" from every other start-up failure.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from autoglm_server.errors import StartupError

# EX_CONFIG (sysexits.h): the configuration (model, budget, memory fraction) does not fit the machine.
EXIT_GPU_MEMORY = 78
GIB = float(2**30)


class GpuMemoryError(StartupError):
    """The engine's reservation cannot fit the GPU; the daemon refuses to start."""

    exit_code = EXIT_GPU_MEMORY


class Outcome(enum.Enum):
    FITS = "fits"
    EXCEEDS_SHARE = "exceeds_share"
    EXCEEDS_FREE = "exceeds_free"


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    """One GPU's memory as measured before the engine allocated anything on it."""

    index: int
    total_bytes: int
    free_bytes: int

    def __post_init__(self) -> None:
        if self.index < 0 or self.total_bytes <= 0 or not 0 <= self.free_bytes <= self.total_bytes:
            raise ValueError(f"implausible GPU memory reading: {self}")


@dataclass(frozen=True, slots=True)
class Reservation:
    """What the engine takes from one GPU, as named parts (for the report), and what must fit in it."""

    parts: tuple[tuple[str, int], ...]
    required_bytes: int | None = None  # None: the parts themselves are what must fit

    def __post_init__(self) -> None:
        if any(size < 0 for _, size in self.parts) or (self.required_bytes or 0) < 0:
            raise ValueError(f"negative reservation: {self}")

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.parts)

    @property
    def required(self) -> int:
        return self.bytes if self.required_bytes is None else self.required_bytes


@dataclass(frozen=True, slots=True)
class HeadroomCheck:
    """The verdict for one GPU, with everything the start-up report and the gauges show."""

    device: DeviceMemory
    reservation: Reservation
    fraction: float
    outcome: Outcome

    @property
    def share_bytes(self) -> int:
        """What --gpu-memory-fraction allows this process on the card."""
        return int(self.device.total_bytes * self.fraction)

    @property
    def headroom_bytes(self) -> int:
        """Bytes left between the reservation and the tighter of free memory and the share (negative: short)."""
        return min(self.device.free_bytes, self.share_bytes) - max(self.reservation.bytes, self.reservation.required)

    @property
    def fits(self) -> bool:
        return self.outcome is Outcome.FITS

    def report(self) -> str:
        """One line for the start-up log."""
        d, r = self.device, self.reservation
        parts = " + ".join(f"{name} {_gib(size)}" for name, size in r.parts)
        line = (
            f"GPU {d.index}: {_gib(d.total_bytes)} total, {_gib(d.free_bytes)} free at start; "
            f"engine reserves {_gib(r.bytes)} ({parts})"
        )
        if r.required_bytes is not None:
            line += f", of which {_gib(r.required_bytes)} must hold the weights"
        return f"{line}; share {_gib(self.share_bytes)} (--gpu-memory-fraction {self.fraction:g}): {self.verdict()}"

    def verdict(self) -> str:
        d, r = self.device, self.reservation
        if self.outcome is Outcome.FITS:
            return f"fits, {_gib(self.headroom_bytes)} to spare"
        if self.outcome is Outcome.EXCEEDS_SHARE:
            return (
                f"does not fit: {_gib(r.required)} needed but --gpu-memory-fraction {self.fraction:g} of "
                f"{_gib(d.total_bytes)} allows {_gib(self.share_bytes)}; lower --max-batch-tokens or "
                "--max-model-len, serve a smaller model or more GPUs (--tensor-parallel-size), "
                "or raise --gpu-memory-fraction"
            )
        held = d.total_bytes - d.free_bytes
        return (
            f"does not fit: {_gib(r.bytes)} needed but only {_gib(d.free_bytes)} is free "
            f"({_gib(held)} is held by other processes or contexts on this GPU); free the GPU, "
            "or lower --gpu-memory-fraction or --max-batch-tokens"
        )


def check(device: DeviceMemory, reservation: Reservation, fraction: float) -> HeadroomCheck:
    """Decide whether RESERVATION fits DEVICE under --gpu-memory-fraction FRACTION."""
    if not 0 < fraction <= 1:
        raise ValueError(f"gpu memory fraction must be in (0, 1], got {fraction}")
    share = device.total_bytes * fraction
    if reservation.required > share:
        outcome = Outcome.EXCEEDS_SHARE
    elif max(reservation.bytes, reservation.required) > device.free_bytes:
        outcome = Outcome.EXCEEDS_FREE
    else:
        outcome = Outcome.FITS
    return HeadroomCheck(device, reservation, fraction, outcome)


def require_fit(checks: Iterable[HeadroomCheck], engine: str) -> tuple[HeadroomCheck, ...]:
    """Return the checks when every GPU fits; otherwise raise GpuMemoryError naming each that does not."""
    done = tuple(checks)
    failed = [c for c in done if not c.fits]
    if failed:
        lines = "; ".join(c.report() for c in failed)
        raise GpuMemoryError(f"the {engine} engine's GPU memory reservation cannot fit: {lines}")
    return done


def vllm_reservations(
    devices: Sequence[DeviceMemory], fraction: float, checkpoint_bytes: int | None
) -> list[HeadroomCheck]:
    """vLLM takes FRACTION of each GPU's total at start; the weights are split over the GPUs (tensor parallel)."""
    per_gpu = None if checkpoint_bytes is None else -(-checkpoint_bytes // max(1, len(devices)))
    return [
        check(
            device,
            Reservation(
                (("vLLM share (weights, activations, KV cache)", int(device.total_bytes * fraction)),),
                required_bytes=per_gpu,
            ),
            fraction,
        )
        for device in devices
    ]


def _gib(size: int) -> str:
    return f"{size / GIB:.2f} GiB"
