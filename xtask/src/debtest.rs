//! `cargo xtask deb-test`: the Debian package, installed with apt and run by systemd in a
//! Debian 12 guest under QEMU.
//!
//! 1. `cargo xtask dist` (the static binary and the .deb).
//! 2. A Debian 12 (bookworm) root filesystem from Debian's packages with `mmdebstrap`: systemd
//!    as init, udev, and the same Debian cloud kernel package the VM matrix boots
//!    (`vmlinuz-6.12.version` in the cache, pinned by scripts/setup-vm.sh) with its own
//!    initramfs (initramfs-tools; virtio_blk is a module in that kernel). Written as an ext4
//!    image with `mkfs.ext4 -d` (no loop device) and cached under `<cache>/deb-rootfs-KEY/`, KEY
//!    a hash of everything that goes into it; QEMU opens it with `snapshot=on`, so it stays clean.
//! 3. A second, read-only disk with the .deb and the guest script (`debtest/guest.sh`), which the
//!    image's `mcpg-debtest.service` runs at boot: apt install, service active, backend lsm,
//!    grant enforcement through the CLI, restart with enforcement continuing, apt purge.
//! 4. Boots it (`lsm=...,bpf`) with a hard timeout, the serial console in
//!    `target/vm-logs/deb-test.log`, and asserts the guest's `MCPG-DEB-RESULT PASS` line.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

const SUITE: &str = "bookworm";
const MIRRORS: &[&str] = &[
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];
/// Besides the kernel package: what the guest needs (apt comes with the `apt` variant).
const PACKAGES: &[&str] = &["systemd-sysv", "udev", "initramfs-tools"];
const LSM: &str = "lockdown,capability,landlock,yama,bpf";
const GUEST_SCRIPT: &str = include_str!("debtest/guest.sh");

/// Run in the rootfs by mmdebstrap (`--customize-hook`, `$1` the root directory).
const CUSTOMIZE: &str = r#"set -eu
R=$1
# The root disk is virtio: its driver (and nothing else needed) in the Debian initramfs.
echo MODULES=list > "$R/etc/initramfs-tools/conf.d/mcpg"
printf 'virtio_pci\nvirtio_blk\n' >> "$R/etc/initramfs-tools/modules"
chroot "$R" update-initramfs -u -k all
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$R/etc/fstab"
echo mcpg-deb > "$R/etc/hostname"
mkdir -p "$R/mnt/mcpg"
# Nothing that competes with the test for the one CPU or the console.
chroot "$R" systemctl mask serial-getty@ttyS0.service getty@tty1.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_reap.service e2scrub_all.timer fstrim.timer
cat > "$R/etc/systemd/system/mcpg-debtest.service" <<'EOF'
[Unit]
Description=mcpguard deb-test driver (payload disk /dev/vdb)
After=basic.target
[Service]
Type=simple
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh -c 'mount -o ro /dev/vdb /mnt/mcpg && exec /bin/sh /mnt/mcpg/guest.sh; echo "MCPG-DEB-FAIL no payload disk"; echo "MCPG-DEB-RESULT FAIL"; systemctl poweroff -ff'
[Install]
WantedBy=multi-user.target
EOF
chroot "$R" systemctl enable mcpg-debtest.service
"#;

#[derive(clap::Args)]
pub struct Args {
    /// Cache for the kernels (scripts/setup-vm.sh) and the root filesystem image.
    #[arg(long, env = "MCPG_VM_CACHE", value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Hard timeout for the guest, seconds (boot to poweroff; measured 78-93 s under TCG).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    timeout: u64,
    /// Rebuild the root filesystem image even if cached.
    #[arg(long)]
    rebuild_image: bool,
    /// Echo the whole serial console (kernel and systemd boot included) to stderr.
    #[arg(long, short)]
    verbose: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let started = Instant::now();
    let root = crate::vm::workspace_root();
    let cache = a.cache.clone().unwrap_or_else(|| root.join(".vm-cache"));
    for tool in ["mmdebstrap", "mkfs.ext4", "qemu-system-x86_64"] {
        crate::vm::which(tool).with_context(|| format!("{tool} missing: run scripts/setup-vm.sh"))?;
    }
    let kernel_pkg = kernel_package(&cache)?;
    let d = crate::dist::build()?;
    let t = Instant::now();
    let image = rootfs(&cache, &kernel_pkg, a.rebuild_image)?;
    let image_s = t.elapsed().as_secs_f64();
    let target = crate::vm::target_dir(&root)?;
    let work = target.join("deb-test");
    let logs = target.join("vm-logs");
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&logs)?;
    let payload = payload(&work, &d.deb)?;
    let log = logs.join("deb-test.log");
    eprintln!("deb-test: booting Debian 12 ({kernel_pkg}, lsm={LSM}), limit {}s, log {}", a.timeout, log.display());
    let o = boot(&image, &payload, &log, Duration::from_secs(a.timeout), a.verbose)?;
    eprintln!(
        "deb-test: guest {:.0}s (image {image_s:.0}s{}), total {:.0}s",
        o.wall.as_secs_f64(),
        if image_s < 1.0 { ", cached" } else { "" },
        started.elapsed().as_secs_f64()
    );
    match o.result.as_deref() {
        Some("PASS") => {
            println!("deb-test: PASS: mcpguard {} installed, enforced, restarted and purged under systemd", d.version);
            Ok(())
        }
        _ => {
            for l in o.tail.iter().rev().take(40).collect::<Vec<_>>().into_iter().rev() {
                eprintln!("  | {l}");
            }
            let why = if o.timed_out {
                format!("timed out after {}s", a.timeout)
            } else if let Some(f) = &o.failure {
                f.clone()
            } else {
                "no MCPG-DEB-RESULT line (guest crashed or did not boot)".into()
            };
            bail!("deb-test FAILED: {why} (serial log {})", log.display())
        }
    }
}

/// The Debian kernel package the matrix boots as 6.12 (first field of `vmlinuz-6.12.version`).
fn kernel_package(cache: &Path) -> Result<String> {
    let f = cache.join("vmlinuz-6.12.version");
    let s = std::fs::read_to_string(&f)
        .with_context(|| format!("{} missing: run scripts/setup-vm.sh (or set MCPG_VM_CACHE)", f.display()))?;
    let pkg = s.split_whitespace().next().context("empty kernel version file")?;
    Ok(pkg.to_string())
}

/// FNV-1a: a stable cache key (std's hasher may change between releases).
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

struct Image {
    disk: PathBuf,
    vmlinuz: PathBuf,
    initrd: PathBuf,
}

/// The cached root filesystem image, built when missing.
fn rootfs(cache: &Path, kernel_pkg: &str, rebuild: bool) -> Result<Image> {
    let mut parts = vec![SUITE, kernel_pkg, CUSTOMIZE];
    parts.extend(MIRRORS);
    parts.extend(PACKAGES);
    let dir = cache.join(format!("deb-rootfs-{:016x}", fnv(&parts)));
    let img = Image { disk: dir.join("root.img"), vmlinuz: dir.join("vmlinuz"), initrd: dir.join("initrd.img") };
    if dir.join(".complete").exists() && !rebuild {
        eprintln!("deb-test: root filesystem cached: {}", dir.display());
        return Ok(img);
    }
    let t = Instant::now();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let tree = dir.join("tree");
    let hook = dir.join("customize.sh");
    std::fs::write(&hook, CUSTOMIZE)?;
    let include = PACKAGES.iter().copied().chain([kernel_pkg]).collect::<Vec<_>>().join(",");
    eprintln!("deb-test: building the Debian {SUITE} root filesystem (mmdebstrap, {include})");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=apt", "--quiet"])
        .arg(format!("--include={include}"))
        .arg(format!("--customize-hook=sh {} \"$1\"", hook.display()))
        .arg(SUITE)
        .arg(&tree)
        .args(MIRRORS);
    let st = cmd.status().context("running mmdebstrap (scripts/setup-vm.sh installs it)")?;
    if !st.success() {
        bail!("mmdebstrap failed ({st}): see its output above; the guest needs deb.debian.org");
    }
    let boot = tree.join("boot");
    let find = |prefix: &str| -> Result<PathBuf> {
        std::fs::read_dir(&boot)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
            .with_context(|| format!("no {prefix}* in {}", boot.display()))
    };
    std::fs::copy(find("vmlinuz-")?, &img.vmlinuz)?;
    std::fs::copy(find("initrd.img-")?, &img.initrd)?;
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "mcpg-root", "-d"])
        .arg(&tree)
        .arg(&img.disk)
        .arg("1G")
        .status()
        .context("running mkfs.ext4")?;
    if !st.success() {
        bail!("mkfs.ext4 -d {} failed ({st})", tree.display());
    }
    std::fs::remove_dir_all(&tree)?;
    std::fs::write(dir.join(".complete"), format!("{include}\n"))?;
    eprintln!("deb-test: root filesystem {} built in {:.0}s", dir.display(), t.elapsed().as_secs_f64());
    Ok(img)
}

/// The read-only payload disk: the .deb and the guest script.
fn payload(work: &Path, deb: &Path) -> Result<PathBuf> {
    let dir = work.join("payload");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(deb, dir.join(deb.file_name().unwrap()))?;
    std::fs::write(dir.join("guest.sh"), GUEST_SCRIPT)?;
    let img = work.join("payload.img");
    let _ = std::fs::remove_file(&img);
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "mcpg-payload", "-d"])
        .arg(&dir)
        .arg(&img)
        .arg("32M")
        .status()
        .context("running mkfs.ext4")?;
    if !st.success() {
        bail!("mkfs.ext4 -d {} failed ({st})", dir.display());
    }
    Ok(img)
}

#[derive(Default)]
struct Outcome {
    result: Option<String>,
    failure: Option<String>,
    timed_out: bool,
    wall: Duration,
    tail: Vec<String>,
}

fn boot(img: &Image, payload: &Path, log: &Path, timeout: Duration, verbose: bool) -> Result<Outcome> {
    let mut cmd = Command::new("qemu-system-x86_64");
    // TCG: this machine kind's /dev/kvm cannot run a stock kernel (KVM internal error,
    // emulation failure; docs/packaging.md).
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1", "-nic", "none"])
        .args(["-nographic", "-no-reboot", "-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&img.vmlinuz)
        .arg("-initrd")
        .arg(&img.initrd)
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio,snapshot=on", img.disk.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio,readonly=on", payload.display()))
        .arg("-append")
        .arg(format!("console=ttyS0 root=/dev/vda rw panic=-1 quiet lsm={LSM}"));
    let mut o = Outcome::default();
    let run = crate::vm::qemu::run_console(cmd, log, timeout, 80, |t, line| {
        let marker = line.find("MCPG-DEB-").map(|i| &line[i..]);
        if verbose || marker.is_some() || line.starts_with("[qemu") {
            eprintln!("[deb-test {:>4.0}s] {line}", t.as_secs_f64());
        }
        if let Some(m) = marker {
            if let Some(r) = m.strip_prefix("MCPG-DEB-RESULT ") {
                o.result = r.split_whitespace().next().map(String::from);
            } else if let Some(f) = m.strip_prefix("MCPG-DEB-FAIL ") {
                o.failure.get_or_insert_with(|| f.to_string());
            }
        }
    })?;
    o.timed_out = run.timed_out;
    o.wall = run.wall;
    o.tail = run.tail;
    Ok(o)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cache_key_separates_parts() {
        assert_ne!(super::fnv(&["ab", "c"]), super::fnv(&["a", "bc"]));
        assert_ne!(super::fnv(&["a"]), super::fnv(&["b"]));
    }
}
