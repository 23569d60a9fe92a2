#!/bin/sh
# Install one part of the vLLM image's lock (scripts/lock-part.sh: cuda, torch or rest) into /opt/autoglm,
# with the build stage's pip (/opt/pip, bind-mounted) and the pip settings of scripts/image-pip-env.sh.
# One Dockerfile RUN per part, so each part is a layer of its own.
#
#   image-install-part.sh PART LOCK
# shellcheck shell=sh
set -eu
part=${1:?usage: image-install-part.sh cuda|torch|rest LOCK}
lock=${2:?usage: image-install-part.sh cuda|torch|rest LOCK}
here=$(dirname "$0")
. "$here/pip-env.sh"
sh "$here/lock-part.sh" "$part" "$lock" > /tmp/part.lock
/opt/pip/bin/python -m pip --python /opt/autoglm/bin/python install --quiet --require-hashes --no-deps -r /tmp/part.lock
rm /tmp/part.lock
