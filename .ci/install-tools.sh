#!/usr/bin/env bash
# Tools the test suite needs beside the Python packages: buf (npm), the mesh tools
# (kubectl, checkov in its own virtualenv) from .ci/mesh-tools.sh, and prometheus/promtool from .ci/prometheus.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .tools/node_modules/.bin/buf ]; then
    npm install --prefix .tools --no-audit --no-fund --silent @bufbuild/buf@1.75.0
fi
if [ -f .ci/mesh-tools.sh ]; then
    bash .ci/mesh-tools.sh
fi
# prometheus + promtool (Debian's package) for tests/monitoring.
if [ -f .ci/prometheus.sh ]; then
    bash .ci/prometheus.sh
fi
# buildah, podman, runc, debootstrap, catatonit (Debian's) for tests/container.
if [ -f .ci/container-tools.sh ]; then
    bash .ci/container-tools.sh
fi
