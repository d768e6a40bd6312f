#!/usr/bin/env bash
# The whole test suite: unit tests plus the root-only kernel tests that load the real eBPF object
# and run real processes. Sets the machine up first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --all-targets
# Kernel tests load programs that see every process on the machine; they only govern the
# process trees they create. Unpinned: everything detaches when the test process exits.
cargo test --workspace -- --test-threads=4
