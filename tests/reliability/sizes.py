"""How big each scenario is in fast mode (the normal test run) and in soak mode (--soak)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    name: str
    sustained_s: float  # overload: how long 3x capacity is offered after the burst
    storm_streams: int  # cancellation storm
    drain_streams: int
    fuzz_examples: int  # hypothesis examples of hostile GenerateRequests
    slow_consumer_tokens: int
    vault_s: float  # Vault faults: seconds of load while Vault misbehaves
    rounds: int  # repetitions of the short scenarios (deadlines, faults)


FAST = Sizes(
    name="fast",
    sustained_s=3.0,
    storm_streams=60,
    drain_streams=32,
    fuzz_examples=60,
    slow_consumer_tokens=48,
    vault_s=6.0,
    rounds=1,
)
SOAK = Sizes(
    name="soak",
    sustained_s=30.0,
    storm_streams=200,
    drain_streams=32,
    fuzz_examples=2000,
    slow_consumer_tokens=256,
    vault_s=60.0,
    rounds=10,
)
