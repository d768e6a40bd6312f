#!/usr/bin/env bash
# Idempotent setup for `cargo xtask vm-test` (the QEMU kernel matrix). Quick when cached.
#
# - apt packages: qemu-system-x86, busybox-static, cpio; for `cargo xtask dist` / `deb-test`:
#   mmdebstrap (the Debian 12 guest's root filesystem), lintian, e2fsprogs (mkfs.ext4 -d)
# - the musl target for the stable toolchain (static test binaries for the initramfs)
# - Debian cloud kernels 6.12 (bookworm-security) and 6.1, downloaded as .deb, unpacked into the
#   cache ($MCPG_VM_CACHE, default <repo>/.vm-cache), and exposed as
#   $CACHE/vmlinuz-6.12 and $CACHE/vmlinuz-6.1 (+ $CACHE/vmlinuz-SERIES.version).
#
# Versions are pinned below. When a pinned package is no longer in the archive, the newest of
# the same series is used instead, and this is said loudly. A kernel that cannot be fetched at
# all makes this script fail (non-zero): the VM matrix must never skip silently.
set -euo pipefail

log() { printf 'setup-vm: %s\n' "$*" >&2; }
die() { printf 'setup-vm: ERROR: %s\n' "$*" >&2; exit 1; }

# Pinned kernel packages (series -> package name). Update together with the README/notes.
declare -A PIN=(
  [6.12]=linux-image-6.12.117+deb12-cloud-amd64-unsigned
  [6.1]=linux-image-6.1.0-56-cloud-amd64-unsigned
)
# Fallback pattern per series (apt-cache search --names-only regex).
declare -A SERIES_RE=(
  [6.12]='^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$'
  [6.1]='^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$'
)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MCPG_VM_CACHE:-$ROOT/.vm-cache}
mkdir -p "$CACHE/debs" "$CACHE/kernels"
CACHE=$(cd "$CACHE" && pwd)

SUDO=()
[[ $(id -u) -eq 0 ]] || SUDO=(sudo)

# --- apt packages ---------------------------------------------------------------------------
APT_UPDATED=0
apt_update_once() {
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
}

missing=()
for p in qemu-system-x86 busybox-static cpio mmdebstrap lintian e2fsprogs; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  apt_update_once
  log "installing apt packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found after install"
[[ -x /bin/busybox ]] || die "/bin/busybox (busybox-static) not found after install"
command -v mmdebstrap >/dev/null || die "mmdebstrap not found after install"
command -v lintian >/dev/null || die "lintian not found after install"

# --- musl target ----------------------------------------------------------------------------
if ! rustup target list --toolchain stable --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  log "adding rust target x86_64-unknown-linux-musl (stable)"
  rustup target add x86_64-unknown-linux-musl --toolchain stable || die "rustup target add failed"
fi

# --- kernels --------------------------------------------------------------------------------
# Is a package name known to apt (any version)?
apt_has() { [[ -n $(apt-cache policy "$1" 2>/dev/null | sed -n 's/^  Candidate: //p' | grep -v '(none)') ]]; }

newest_of_series() {
  apt-cache search --names-only "${SERIES_RE[$1]}" 2>/dev/null | awk '{print $1}' | sort -V | tail -n1
}

# Unpacked kernel dir for a package, if complete.
unpacked_vmlinuz() {
  local dir=$CACHE/kernels/$1
  [[ -f $dir/.complete ]] || return 1
  ls "$dir"/boot/vmlinuz-* 2>/dev/null | head -n1
}

fetch_kernel() { # series
  local series=$1 pkg=${PIN[$1]} vmlinuz
  if ! vmlinuz=$(unpacked_vmlinuz "$pkg"); then
    if ! apt_has "$pkg"; then
      apt_update_once
    fi
    if ! apt_has "$pkg"; then
      local alt
      alt=$(newest_of_series "$series")
      [[ -n $alt ]] || die "no kernel package of series $series in the apt archive (pinned $pkg): cannot run the VM matrix"
      log "WARNING: pinned kernel $pkg is not available any more; using the newest of series $series: $alt"
      log "WARNING: update PIN[$series] in scripts/setup-vm.sh"
      pkg=$alt
    fi
  fi
  if ! vmlinuz=$(unpacked_vmlinuz "$pkg"); then
    log "downloading $pkg"
    local tmp
    tmp=$(mktemp -d "$CACHE/debs/dl.XXXXXX")
    # apt's download sandbox user must be able to write there.
    chmod 0777 "$tmp"
    (cd "$tmp" && apt-get download -q "$pkg" 2>&1 | grep -v 'unsandboxed' >&2) || true
    local deb
    deb=$(ls "$tmp"/*.deb 2>/dev/null | head -n1)
    [[ -n $deb ]] || { rm -rf "$tmp"; die "apt-get download $pkg failed: cannot run the VM matrix"; }
    mv "$deb" "$CACHE/debs/"
    rm -rf "$tmp"
    deb=$CACHE/debs/$(basename "$deb")
    local dir=$CACHE/kernels/$pkg
    rm -rf "$dir"
    mkdir -p "$dir"
    log "unpacking $(basename "$deb")"
    # Only boot/ is needed (vmlinuz + config); modules are not used (everything needed is built in).
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" ./boot \
      || die "unpacking $deb failed"
    local config
    config=$(ls "$dir"/boot/config-* 2>/dev/null | head -n1)
    [[ -n $config ]] || die "$pkg has no boot/config-*"
    for opt in CONFIG_BPF_LSM=y CONFIG_DEBUG_INFO_BTF=y CONFIG_BPF_SYSCALL=y CONFIG_DEVTMPFS=y; do
      grep -qx "$opt" "$config" || die "$pkg: $opt missing from its config"
    done
    dpkg-deb -f "$deb" Version >"$dir/.deb-version"
    touch "$dir/.complete"
    rm -f "$deb" # the unpacked kernel is the cache; the .deb is not needed again
    vmlinuz=$(unpacked_vmlinuz "$pkg") || die "$pkg has no boot/vmlinuz-*"
  fi
  ln -sfn "${vmlinuz#"$CACHE"/}" "$CACHE/vmlinuz-$series"
  local ver debver
  ver=$(basename "$vmlinuz"); ver=${ver#vmlinuz-}
  debver=$(cat "$(dirname "$vmlinuz")/../.deb-version" 2>/dev/null || echo '?')
  printf '%s %s %s\n' "$pkg" "$debver" "$ver" >"$CACHE/vmlinuz-$series.version"
  log "kernel $series: $pkg $debver ($ver)"
}

for series in 6.12 6.1; do
  fetch_kernel "$series"
done

log "ok (cache: $CACHE)"
