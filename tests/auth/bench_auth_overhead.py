"""Median latency that auth adds to a unary RPC: the real daemon with auth on vs off, one run.

    python -m tests.auth.bench_auth_overhead [--calls 2000]

Two daemons (auth enabled with a jwks-file key, auth disabled) serve GetModelInfo; calls alternate
between them so drift on a shared machine hits both alike. Two auth cases: one token reused (the
usual client, verified once then cached) and a fresh token per call (a full ES256 verification).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from autoglm_client.v1 import generation_pb2 as pb
from autoglm_client.v1 import generation_pb2_grpc as pb_grpc
from tests.auth.local_keys import LocalKey, claims, write_jwks
from tests.helpers.daemon import running_daemon


def _timed(stub: pb_grpc.GenerationServiceStub, token: str | None) -> float:
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    start = time.perf_counter()
    stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata, timeout=10)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    calls = parser.parse_args().calls
    key = LocalKey.generate("bench:v1")
    reused = key.sign(claims(scope="models:read"))
    fresh = [key.sign(claims(scope="models:read", jti=str(i))) for i in range(calls)]
    with tempfile.TemporaryDirectory() as workdir:
        jwks = Path(workdir) / "jwks.json"
        write_jwks(jwks, key)
        with (
            running_daemon("--key-source", "jwks-file", "--jwks-file", str(jwks)) as on,
            running_daemon("--auth", "disabled") as off,
            grpc.insecure_channel(on.target) as on_channel,
            grpc.insecure_channel(off.target) as off_channel,
        ):
            on_stub, off_stub = pb_grpc.GenerationServiceStub(on_channel), pb_grpc.GenerationServiceStub(off_channel)
            for _ in range(200):  # warm up connections and caches
                _timed(on_stub, reused)
                _timed(off_stub, None)
            base, cached, full = [], [], []
            for i in range(calls):
                base.append(_timed(off_stub, None))
                cached.append(_timed(on_stub, reused))
                full.append(_timed(on_stub, fresh[i]))
    b = statistics.median(base)
    print(f"calls per case: {calls}")
    print(f"auth disabled           median {b:.3f} ms")
    for name, samples in (("auth, reused token", cached), ("auth, fresh token", full)):
        m = statistics.median(samples)
        print(f"{name:<23} median {m:.3f} ms  added {m - b:+.3f} ms  ratio {m / b:.2f}x")


if __name__ == "__main__":
    main()
