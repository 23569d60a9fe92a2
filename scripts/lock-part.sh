#!/bin/sh
# Print one part of a hashed lock (scripts/lock.sh's format: `name==version \` then indented --hash and
# `# via` lines). The vLLM image installs requirements/image-vllm.lock in three parts, one layer each
# (Dockerfile), so that no single 9 GB layer has to be committed at once:
#
#   lock-part.sh cuda LOCK     the CUDA libraries (nvidia-*, cuda-*): ~3.7 GB installed
#   lock-part.sh torch LOCK    torch, its companions and Triton: ~2 GB
#   lock-part.sh rest LOCK     everything else (vLLM and the serving stack): ~3 GB
#
# Every entry is in exactly one part (tests/unit/test_image_locks.py). POSIX sh and awk: it runs in the
# image's build stage.
# shellcheck shell=sh
set -eu
part=${1:?usage: lock-part.sh cuda|torch|rest LOCK}
lock=${2:?usage: lock-part.sh cuda|torch|rest LOCK}
case $part in
    cuda | torch | rest) ;;
    *) echo "lock-part.sh: the part is cuda, torch or rest, not $part" >&2; exit 2 ;;
esac
awk -v part="$part" '
    /^#/ { next }                         # the file header
    /^[A-Za-z0-9]/ {                      # an entry starts: decide for it and its indented lines
        name = tolower($1); sub(/[=<>!~;[ ].*/, "", name)
        if (name ~ /^(nvidia|cuda)-/) mine = "cuda"
        else if (name ~ /^(torch|torchvision|torchaudio|torchcodec|torch-c-dlpack-ext|triton)$/) mine = "torch"
        else mine = "rest"
    }
    mine == part { print }
' "$lock"
