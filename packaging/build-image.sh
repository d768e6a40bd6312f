#!/usr/bin/env bash
# Builds the mcpguard container image with podman from the static binary (no base image).
# Usage: packaging/build-image.sh [TAG]   (default localhost/mcpguard:0.1.0)
# Binary: $MCPG_BIN if set, else target/dist/mcpguard (cargo xtask dist) if present, else
# target/x86_64-unknown-linux-musl/release/mcpguard, built here if missing (cargo, musl target).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-localhost/mcpguard:0.1.0}
target=${CARGO_TARGET_DIR:-$root/target}
bin=${MCPG_BIN:-}
if [[ -z $bin && -x $target/dist/mcpguard ]]; then bin=$target/dist/mcpguard; fi
if [[ -z $bin ]]; then
  bin=$target/x86_64-unknown-linux-musl/release/mcpguard
  (cd "$root" && nice cargo build -q --release --target x86_64-unknown-linux-musl -p mcpguard)
fi
if ! file -b "$bin" | grep -q 'statically linked\|static-pie linked'; then
  echo "build-image: $bin is not a static binary ($(file -b "$bin"))" >&2; exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/mcpguard"
cp "$root/packaging/mcpguard-container.toml" "$ctx/mcpguard.toml"
cp -r "$root/policies" "$ctx/policies"
rm -f "$ctx/policies/README.md"
podman build -q -f "$root/packaging/Containerfile" -t "$tag" "$ctx"
