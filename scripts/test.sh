#!/usr/bin/env bash
# The whole test suite: unit tests plus the root-only kernel tests that load the real eBPF object
# and run real processes. Sets the machine up first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --vm
export PATH="$HOME/.cargo/bin:$PATH"
# One formatting (rustfmt.toml) and no lint warnings, before anything runs.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
# Kernel tests load programs that see every process on the machine; they only govern the
# process trees they create. Unpinned: everything detaches when the test process exits.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace -- --test-threads=4 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# The benchmark harness end to end (figures of a 2-block run mean nothing; it must complete).
if [[ $rc -eq 0 ]]; then
  set +e
  cargo xtask bench --quick --out target/bench/smoke.json 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  set -e
fi
# The deny backends (BPF-LSM, fmod_ret) cannot load on this host's kernel: the same engine
# scenarios run in QEMU on stock Debian 6.12 and 6.1 kernels (cargo xtask vm-test).
if [[ $rc -eq 0 ]]; then
  set +e
  # The guest mounts tmpfs over /tmp and /run: binaries built under them would be hidden there.
  vm_env=()
  case "$PWD" in /tmp/*|/run/*) vm_env=(CARGO_TARGET_DIR=/var/tmp/mcpguard-vm-target) ;; esac
  env "${vm_env[@]}" cargo xtask vm-test 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  set -e
fi
# The release artifacts: the static binary and the Debian package (lintian clean or each tag
# explained), then the package installed with apt, enforcing and purged under systemd in a
# Debian 12 guest (cargo xtask deb-test; its root filesystem is cached in .vm-cache/).
if [[ $rc -eq 0 ]]; then
  set +e
  cargo xtask dist --lintian 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  if [[ $rc -eq 0 ]]; then
    cargo xtask deb-test 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
  fi
  set -e
fi
# One closing line with the totals over every test binary (cargo prints one line per binary).
awk '/^(\[[^]]*\] +)?test result:/ { sub(/^\[[^]]*\] +/, ""); for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
