#!/usr/bin/env bash
# Install Debian's `prometheus` package (the server and promtool) for tests/monitoring, on a fresh
# Debian machine as root. Idempotent: returns at once when both programs are already there.
# The package's service is not started: a policy-rc.d that refuses starts is put in place for the
# install when the machine has none (container images usually ship one).
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  echo "prometheus tools: $(promtool --version 2>&1 | head -1)"
  exit 0
fi
if ! command -v apt-get >/dev/null || [[ "$(id -u)" != 0 ]]; then
  echo "prometheus/promtool missing: run as root on Debian (apt-get install --no-install-recommends prometheus)" >&2
  exit 1
fi
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  added_policy=1
fi
cleanup() { if [[ $added_policy == 1 ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
install 2>/dev/null || { apt-get update -qq >/dev/null && install; }
echo "prometheus tools: $(promtool --version 2>&1 | head -1)"
