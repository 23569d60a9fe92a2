"""Why only the engine thread may run torch: an operator's time with one OpenMP team and with two.

Each OS thread that runs a parallel torch operator gets its own OpenMP team. While the teams hold
more threads than there are CPUs, libgomp shortens its workers' spin after each parallel region to
about 100 iterations, so the next region waits for a worker that went to sleep. Run it with as many
torch threads as the machine has CPUs:

    python scripts/openmp_teams.py            # figures in docs/benchmarks.md, "Torch threads"
    GOMP_SPINCOUNT=1000 python scripts/openmp_teams.py
"""

from __future__ import annotations

import os
import threading
import time

import torch

REPEATS = 20_000


def microseconds_per_operator(vector: torch.Tensor, matrix: torch.Tensor) -> float:
    for _ in range(200):  # warm-up
        vector @ matrix
    start = time.perf_counter()
    for _ in range(REPEATS):
        (vector @ matrix).relu_()
    return (time.perf_counter() - start) / REPEATS * 1e6


def report(label: str, vector: torch.Tensor, matrix: torch.Tensor) -> None:
    print(f"{label + ':':<40}{microseconds_per_operator(vector, matrix):7.1f} us per operator")


def main() -> None:
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    matrix = torch.randn(768, 768, dtype=torch.bfloat16)
    vector = torch.randn(1, 768, dtype=torch.bfloat16)
    print(f"torch threads: {threads}; GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(default)')}")
    report("one team", vector, matrix)

    release = threading.Event()

    def another_team() -> None:
        torch.set_num_threads(threads)
        vector @ matrix  # this thread's first parallel region creates its team
        release.wait()

    other = threading.Thread(target=another_team)
    other.start()
    time.sleep(0.5)
    report("a second team alive", vector, matrix)
    release.set()
    other.join()
    time.sleep(0.2)
    report("after the second team's thread ended", vector, matrix)


if __name__ == "__main__":
    main()
