#!/usr/bin/env bash
# Install Debian's container tools for tests/container: buildah (builds the image), podman (runs it and
# `podman kube play`s the Deployment), runc (the OCI runtime both use here), debootstrap (makes the
# stand-in for the python:3.11-slim-bookworm base, see .ci/base-image.sh), catatonit (podman builds its pod
# infra image locally from it: no registry needed for `podman kube play`). On Debian as root.
# Idempotent: returns at once when all of them are there. Without root or apt-get it says so and exits 0:
# tests/container then skip with that reason, the rest of the suite does not need these tools.
set -euo pipefail
tools=(buildah podman runc debootstrap catatonit)
missing=()
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null || [[ -x /usr/sbin/$t ]] || missing+=("$t")
done
if [[ ${#missing[@]} == 0 ]]; then
  echo "container tools: $(buildah --version), $(podman --version)"
  exit 0
fi
if ! command -v apt-get >/dev/null || [[ "$(id -u)" != 0 ]]; then
  echo "container tools missing (${missing[*]}): run as root on Debian; tests/container will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends "${missing[@]}" uidmap fuse-overlayfs >/dev/null; }
install 2>/dev/null || { apt-get update -qq >/dev/null && install; }
echo "container tools: $(buildah --version), $(podman --version)"
