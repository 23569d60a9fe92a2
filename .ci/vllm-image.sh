#!/usr/bin/env bash
# CI: build the vLLM image (`make image-vllm`) and check it without a GPU, only when its inputs changed.
#
# The key: the Dockerfile, both pyproject files, the tools and vLLM locks and the pip helper. A key that
# passed is kept outside the clone ($AUTOGLM_CI_CACHE, default /var/cache/autoglm-ci), so an unchanged
# tree costs nothing. Checks inside the image: `import vllm`, `autoglm-server --version`, and `serve`
# (auth off to reach the engine) exiting non-zero with the engine's "finds no GPU" line. The image is
# removed afterwards: it is large (CUDA torch and vLLM), and this machine keeps only the key.
# Needs root, buildah/podman (.ci/container-tools.sh) and free disk: each of the three venv layers is
# written into the build container, then committed (a temporary blob and the layer), beside pip's
# downloads. Below $NEED_GB free it does not start: it says NOT CHECKED loudly and exits 0 without keeping
# the key (a full disk is the machine's limit, not a fault of the tree; the next run with room checks it).
# Measured (2026-12-06, this machine, df every 2 s): 310 s to build, a 9.3 GB image, 23.4 GB of disk at the
# peak (34 GB when the venv was one layer). Dangling images (other builds' step cache) are pruned first.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AUTOGLM_CI_CACHE:-/var/cache/autoglm-ci}
TAG=localhost/autoglm-server:ci-vllm
NEED_GB=${AUTOGLM_VLLM_IMAGE_DISK_GB:-26}
key=$(cat Dockerfile .dockerignore pyproject.toml client/pyproject.toml requirements/image-tools.lock \
  requirements/image-vllm.lock scripts/image-pip-env.sh scripts/lock-part.sh scripts/image-install-part.sh scripts/build-image.sh .ci/vllm-image.sh | sha256sum | cut -c1-16)
if [[ -f $CACHE/vllm-image.ok && $(cat "$CACHE/vllm-image.ok") == "$key" ]]; then
  echo "vllm-image: inputs unchanged since the last passing check ($key), skipped"
  exit 0
fi
conf=$(mktemp -d)
# The image, then the build's intermediate images (buildah --layers keeps one per step), are removed
# before the containers.conf they need.
cleanup() {
  podman rmi --force "$TAG" >/dev/null 2>&1 || true
  podman image prune --force >/dev/null 2>&1 || true
  rm -rf "$conf"
}
trap cleanup EXIT
printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=16384:16384"]\n[engine]\nruntime = "runc"\n' \
  "$(ulimit -Hn)" "$(ulimit -Hn)" >"$conf/containers.conf"
export CONTAINERS_CONF=$conf/containers.conf BUILDAH_ISOLATION=chroot
storage=/var/lib/containers/storage
mkdir -p "$storage"
podman image prune --force >/dev/null 2>&1 || true  # earlier builds' step cache (the CPU image tests')
free_gb=$(( $(df --output=avail -k "$storage" | tail -1) / 1024 / 1024 ))
if (( free_gb < NEED_GB )); then
  echo "vllm-image: NOT CHECKED: $free_gb GB free under $storage, the build needs about $NEED_GB GB" >&2
  exit 0
fi
[[ -n ${PIP_CERT:-} && -f ${PIP_CERT:-} ]] && export PIP_CA=$PIP_CERT
bash .ci/base-image.sh
started=$SECONDS
bash scripts/build-image.sh vllm "$TAG"
built=$((SECONDS - started))

podman run --rm --entrypoint python "$TAG" -c 'import vllm; print("vllm-image: import vllm", vllm.__version__)'
version=$(podman run --rm "$TAG" --version 2>/dev/null)
[[ $version == "$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)" ]] || { echo "vllm-image: --version said $version" >&2; exit 1; }
set +e
output=$(podman run --rm -e AUTOGLM_AUTH=disabled "$TAG" 2>&1)
code=$?
set -e
if [[ $code == 0 ]] || ! grep -q "finds no GPU" <<<"$output"; then
  echo "vllm-image: serve without a GPU exited $code without naming the missing GPU:" >&2
  tail -20 <<<"$output" >&2
  exit 1
fi
echo "vllm-image: serve without a GPU exits $code: $(grep -o 'finds no GPU[^"]*' <<<"$output" | head -1)"
mkdir -p "$CACHE"
echo "$key" >"$CACHE/vllm-image.ok"
echo "vllm-image: checked in $((SECONDS - started)) s (build $built s)"
