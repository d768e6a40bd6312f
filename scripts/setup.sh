#!/usr/bin/env bash
# One-time (idempotent) machine setup for building and testing mcpguard.
# Installs: apt packages, nightly rust-src, bpf-linker (built against nightly's libLLVM),
# and mounts bpffs / securityfs / tracefs. Quick when everything is already in place.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (installs packages, mounts bpffs)"; exit 1
  fi
}
need_root

# --- apt packages ---------------------------------------------------------------------------
# podman (and runc: Debian 12's crun refuses hosts with a hybrid cgroup layout) build and run the
# container image in tests/tests/fleet.rs; python3-venv also holds kubernetes-validate
# (scripts/validate-k8s.sh).
APT_PKGS=(bpftool python3-venv podman runc)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing apt packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- rust toolchains ------------------------------------------------------------------------
if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
fi
# The test command checks formatting and lints with the default (stable) toolchain.
for comp in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
    log "adding $comp"
    rustup component add "$comp"
  fi
done

# --- bpf-linker -----------------------------------------------------------------------------
if ! command -v bpf-linker >/dev/null 2>&1 && [[ ! -x $HOME/.cargo/bin/bpf-linker ]]; then
  SYSROOT=$(rustc +nightly --print sysroot)
  lib=$(ls "$SYSROOT"/lib/libLLVM-*.so 2>/dev/null | head -n1)
  [[ -n $lib ]] || { log "no libLLVM in $SYSROOT/lib"; exit 1; }
  name=$(basename "$lib" .so); name=${name#lib}
  ver=$(sed -E 's/^LLVM-([0-9]+).*/\1/' <<<"$name")
  log "building bpf-linker against $name (llvm-$ver)"
  RUSTFLAGS="-L $SYSROOT/lib -l dylib=$name -C link-arg=-Wl,-rpath,$SYSROOT/lib" \
    cargo install --locked bpf-linker --no-default-features --features "llvm-$ver,no-llvm-linking"
fi

# --- kernel filesystems ---------------------------------------------------------------------
mountpoint -q /sys/fs/bpf || { log "mounting bpffs"; mount -t bpf bpf /sys/fs/bpf; }
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security || true
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing || true

# --- QEMU, busybox, musl target and the Debian kernels for the deny-backend matrix -----------
# Only for the tests (`setup.sh --vm`, as scripts/test.sh does).
if [[ ${1:-} == --vm ]]; then
  bash "$(dirname "$0")/setup-vm.sh"
fi

log "ok"
