#!/usr/bin/env bash
# Build one image target with `docker build` where Docker is present, else `buildah bud` (same Dockerfile,
# same arguments), then print its size and the build time. Used by `make image` and `make image-vllm`.
#
#   scripts/build-image.sh TARGET TAG      TARGET: runtime (CPU, built-in engine) or vllm
#
# Environment:
#   IMAGE_BUILD_ARGS   extra arguments for the build tool, word-split, e.g.
#                      "--build-arg PIP_INDEX_URL=https://mirror/simple --build-arg TORCH_INDEX_URL="
#   PIP_CONF           a pip config file passed as the build secret pip.conf (index credentials)
#   PIP_CA             a CA bundle passed as the build secret pip-ca (a proxy's or mirror's CA)
#   IMAGE_TOOL         docker or buildah, to override the choice
#   BUILDAH_ISOLATION  buildah's own variable: `chroot` where the host's cgroups refuse runc/crun for RUN
# buildah writes the docker image format: the OCI format has no HEALTHCHECK.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/build-image.sh TARGET TAG}
tag=${2:?usage: scripts/build-image.sh TARGET TAG}
tool=${IMAGE_TOOL:-}
if [[ -z $tool ]]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then tool=docker; else tool=buildah; fi
fi
args=(--target "$target" --tag "$tag" --file Dockerfile)
[[ -n ${PIP_CONF:-} ]] && args+=(--secret "id=pip.conf,src=$PIP_CONF")
[[ -n ${PIP_CA:-} ]] && args+=(--secret "id=pip-ca,src=$PIP_CA")
# shellcheck disable=SC2206 # word-splitting IMAGE_BUILD_ARGS is the point
extra=(${IMAGE_BUILD_ARGS:-})
started=$SECONDS
case $tool in
  docker) docker build "${args[@]}" "${extra[@]}" . ;;
  buildah) buildah bud --format docker --layers "${args[@]}" "${extra[@]}" . ;;
  *) echo "build-image: IMAGE_TOOL must be docker or buildah, not $tool" >&2; exit 2 ;;
esac
seconds=$((SECONDS - started))
if [[ $tool == docker ]]; then
  size=$(docker image inspect --format '{{.Size}}' "$tag")
else
  size=$(buildah inspect --type image --format '{{.ImageSize}}' "$tag" 2>/dev/null \
    || podman image inspect --format '{{.Size}}' "$tag")
fi
echo "build-image: $tag ($target) built by $tool in ${seconds} s, $((size / 1000000)) MB"
