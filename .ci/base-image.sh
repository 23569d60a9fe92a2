#!/usr/bin/env bash
# TEST TOOLING ONLY: make a local stand-in for the Dockerfile's default base, python:3.11-slim-bookworm,
# on a machine that cannot reach a container registry (this CI machine reaches Debian but no registry).
# An operator who builds the image elsewhere pulls the real base and never runs this.
#
# The stand-in: Debian bookworm (debootstrap, minbase) with python3 (3.11), python3-venv, python-is-python3
# and ca-certificates, the PEP 668 marker removed, committed as docker.io/library/python:3.11-slim-bookworm.
# It carries no system pip: the Dockerfile installs its own pinned pip in the build stage only.
#
# Cached outside the clone, keyed by this script's hash: $AUTOGLM_CI_CACHE (default /var/cache/autoglm-ci)
# keeps the root filesystem tarball, and the image in container storage carries the key as a label, so CI
# runs debootstrap once per change of this script. A real image of that name (no label) is never replaced.
# Root only (debootstrap, container storage under /var/lib/containers).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=docker.io/library/python:3.11-slim-bookworm
CACHE=${AUTOGLM_CI_CACHE:-/var/cache/autoglm-ci}
MIRROR=${AUTOGLM_CI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
key=$(sha256sum .ci/base-image.sh | cut -c1-16)
tarball=$CACHE/base-bookworm-py311-$key.tar

have=$(podman image inspect --format '{{index .Labels "autoglm.ci.base-key"}}' "$IMAGE" 2>/dev/null || echo absent)
if [[ $have == "$key" ]]; then
  echo "base-image: $IMAGE is the stand-in $key"
  exit 0
fi
if [[ $have != absent && $have != "" && $have != "<no value>" ]]; then
  echo "base-image: replacing stand-in $have with $key"
elif [[ $have != absent ]]; then
  echo "base-image: $IMAGE exists and is not a stand-in; leaving it"
  exit 0
fi

started=$SECONDS
if [[ ! -f $tarball ]]; then
  mkdir -p "$CACHE"
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # What the official image also lacks: the PEP 668 marker (pip installs into venvs anyway), apt lists,
  # caches and logs.
  rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/log/* "$root"/tmp/*
  tar -C "$root" --numeric-owner -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  # Older stand-ins of this script are of no further use.
  find "$CACHE" -maxdepth 1 -name 'base-bookworm-py311-*.tar' ! -name "$(basename "$tarball")" -delete
fi
podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change "LABEL autoglm.ci.base-key=$key" \
  --quiet "$tarball" "$IMAGE" >/dev/null
echo "base-image: $IMAGE stand-in $key ready in $((SECONDS - started)) s"
