#!/usr/bin/env bash
# Set the canary's share of traffic (0-100 percent) and apply the canary overlay.
#   mesh/set-canary-weight.sh 50             rewrite overlays/canary/weights.yaml, then kubectl apply -k
#   mesh/set-canary-weight.sh 0              roll back: all traffic to stable (header-forced calls still reach canary)
#   mesh/set-canary-weight.sh 50 --render    rewrite the file and print the rendered VirtualService only
# KUBECTL names the kubectl binary (default: kubectl on PATH).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kubectl="${KUBECTL:-kubectl}"
weight="${1:-}"
if ! [[ "$weight" =~ ^[0-9]+$ ]] || (( weight > 100 )); then
  echo "usage: $0 CANARY_PERCENT(0-100) [--render]" >&2
  exit 2
fi
cat > "$here/overlays/canary/weights.yaml" <<YAML
# The canary's share of traffic, in percent. Set with: mesh/set-canary-weight.sh N
- op: replace
  path: /spec/http/1/route/0/weight
  value: $((100 - weight))
- op: replace
  path: /spec/http/1/route/1/weight
  value: $weight
YAML
if [[ "${2:-}" == "--render" ]]; then
  "$kubectl" kustomize "$here/overlays/canary" | awk '/^---$/{if (vs) print buf; buf=""; vs=0; next} {buf=buf $0 "\n"} /^kind: VirtualService$/{vs=1} END{if (vs) printf "%s", buf}'
else
  "$kubectl" apply -k "$here/overlays/canary"
fi
