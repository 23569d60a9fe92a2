"""The two health checks a client (and the Deployment's probes) make: gRPC health and HTTP /health."""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def grpc_serving(port: int, service: str = "") -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_status(port: int, path: str) -> int:
    with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
    return 0


def http_body(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())
