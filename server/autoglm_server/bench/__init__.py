"""`autoglm-server bench`: the daemon against plain transformers generate, on one model, in one run.

Entry point: `bench_main(argv)`.
"""

from __future__ import annotations

from autoglm_server.bench.routing import bench_main

__all__ = ["bench_main"]
