#!/usr/bin/env bash
# Fresh machine -> running daemon: installs the toolchain (idempotent), builds, and runs
# `mcpguard daemon` in the foreground with this repository's policies. Extra args go to the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p mcpguard
exec ./target/release/mcpguard daemon --policy-dir "$PWD/policies" "$@"
