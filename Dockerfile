# syntax=docker/dockerfile:1
# autoglm-server image: a build stage makes both wheels and a virtualenv, the runtime stage copies only
# that virtualenv (no compilers, no pip cache, no sources).
#
# CPU (default):  docker build -t autoglm-server:0.1.0 .
# CUDA 12.x:      docker build -t autoglm-server:0.1.0-cuda \
#                   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
# (any cu12x index that carries TORCH_VERSION and suits the nodes' driver).
# vLLM (CUDA):    docker build --target vllm -t autoglm-server:0.1.0-vllm .
#                 (autoglm-server[vllm]: vLLM brings the CUDA torch build it was made for).
# The cu12x torch wheels carry the CUDA runtime libraries themselves, so the same slim base runs on a
# GPU node (the NVIDIA container toolkit mounts the driver); BASE_IMAGE swaps the base for a mirror or
# a pinned digest. The default target is the last stage, `runtime`; stages a target does not need are
# not built.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS wheels
# checkov:skip=CKV_DOCKER_7: the tag comes from the BASE_IMAGE argument, a fixed tag by default
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install --no-cache-dir build==1.3.0
COPY pyproject.toml README.md ./
COPY server/ server/
COPY client/ client/
RUN python -m build --wheel --outdir /wheels . \
    && python -m build --wheel --outdir /wheels client

FROM wheels AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
# torch first, from the index that matches the hardware; the wheels then find it already satisfied.
RUN python -m venv /opt/autoglm \
    && /opt/autoglm/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
    && /opt/autoglm/bin/pip install --no-cache-dir /wheels/*.whl

# The vLLM engine: autoglm-server[vllm] from PyPI's vLLM, which pins the CUDA torch it was built against.
FROM wheels AS build-vllm
RUN python -m venv /opt/autoglm \
    && set -- /wheels/autoglm_server-*.whl \
    && /opt/autoglm/bin/pip install --no-cache-dir /wheels/autoglm_client-*.whl "$1[vllm]"

# What both runtime images share: the non-root user, the environment, the health check, the entry point.
FROM ${BASE_IMAGE} AS runtime-base
# checkov:skip=CKV_DOCKER_7: the tag comes from the BASE_IMAGE argument, a fixed tag by default
# A fixed non-root uid/gid that matches the Deployment's runAsUser/runAsGroup.
RUN groupadd --system --gid 10001 autoglm \
    && useradd --system --uid 10001 --gid autoglm --home-dir /var/cache/autoglm --no-create-home autoglm \
    && mkdir -p /var/cache/autoglm \
    && chown autoglm:autoglm /var/cache/autoglm
ENV PATH=/opt/autoglm/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/var/cache/autoglm/hf \
    AUTOGLM_LISTEN=0.0.0.0:50051 \
    AUTOGLM_HTTP_LISTEN=0.0.0.0:8000 \
    AUTOGLM_ADMIN_LISTEN=0.0.0.0:9090 \
    AUTOGLM_LOG_FORMAT=json \
    AUTOGLM_MODEL=builtin:tiny
WORKDIR /var/cache/autoglm
EXPOSE 50051 8000 9090
# For `docker run`; Kubernetes uses the Deployment's own probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import grpc, sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; r = g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(service=''), timeout=3); sys.exit(r.status != h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["autoglm-server"]
CMD ["serve"]

# The vLLM image (`--target vllm`). Triton, which vLLM uses for some kernels, compiles a small C launcher
# the first time it runs, so this image keeps a C compiler; the default CPU image below has none.
FROM runtime-base AS vllm
# Not pinned: Debian's security updates replace these exact versions, and a pin would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-vllm /opt/autoglm /opt/autoglm
ENV AUTOGLM_ENGINE=vllm AUTOGLM_DEVICE=cuda
USER 10001:10001

# The default image: CPU (or CUDA through TORCH_INDEX) with the built-in engine.
FROM runtime-base AS runtime
COPY --from=build /opt/autoglm /opt/autoglm
USER 10001:10001
