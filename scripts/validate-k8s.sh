#!/usr/bin/env bash
# Validates Kubernetes manifests offline (no cluster): each resource against the schema of a
# pinned Kubernetes version (PyPI kubernetes-validate, --strict: unknown fields are errors), the
# ServiceMonitor (a CRD; kubernetes-validate has no CRD schemas) against the fields we use,
# typed as in the Prometheus Operator's CRD (scripts/validate-k8s.py). The validator lives in a
# venv under target/ (first run: ~10 s with network; then nothing is fetched).
# Usage: scripts/validate-k8s.sh [FILE_OR_DIR...]   (default: deploy/kubernetes)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
K8S_VERSION=${K8S_VERSION:-1.34.0}
KV_VERSION=${KV_VERSION:-1.37.0}
venv=${CARGO_TARGET_DIR:-$root/target}/k8s-validate-venv
if [[ ! -x $venv/bin/python3 ]] || ! "$venv/bin/python3" -c "import kubernetes_validate.version as v, sys; sys.exit(v.__version__ != '$KV_VERSION')" 2>/dev/null; then
  echo "validate-k8s: installing kubernetes-validate==$KV_VERSION into $venv" >&2
  [[ -x $venv/bin/python3 ]] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi
(($#)) || set -- "$root/deploy/kubernetes"
exec "$venv/bin/python3" "$root/scripts/validate-k8s.py" "$K8S_VERSION" "$@"
