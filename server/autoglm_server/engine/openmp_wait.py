"""How long torch's OpenMP workers spin between parallel regions, chosen for a serving process.

libgomp (torch's OpenMP on Linux) keeps a worker spinning for GOMP_SPINCOUNT iterations after each
parallel region before it sleeps; its default (300,000, milliseconds on this class of CPU) suits a
process that does nothing but compute. The daemon is not one: between two forward passes the engine
thread samples and schedules in Python, and the event loop encodes the stream messages. A spinning
worker holds a core through those gaps, the event loop preempts it, and the next parallel region
waits at its barrier for the preempted thread. Measured with `autoglm-server bench --model
builtin:small` (2 threads on 2 cores, one round each): daemon at 32 streams 234 tokens/s with the
default, 255 with 1,000 iterations; at 1 stream 25.7 and 28.1 (docs/benchmarks.md, Torch threads).
libgomp reads the variable once, when torch loads it, so this runs before anything imports torch.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SERVING_SPIN_COUNT = "1000"
_OPERATOR_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def choose_spin_count(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Set GOMP_SPINCOUNT for serving unless the operator set either OpenMP wait variable.

    Returns the value set, or None when the operator's own setting stays.
    """
    if any(name in environ for name in _OPERATOR_VARIABLES):
        return None
    environ["GOMP_SPINCOUNT"] = SERVING_SPIN_COUNT
    return SERVING_SPIN_COUNT
