//! `cargo xtask vm-test`: the engine scenario suite on stock Debian kernels under QEMU.
//!
//! 1. Builds the engine test binary (and the helper it runs) statically for
//!    `x86_64-unknown-linux-musl`; the agent's build.rs builds the eBPF object into it. Builds the
//!    release binary `target/dist/mcpguard` (the file `cargo xtask dist` packages) unless
//!    `--no-dist`.
//! 2. Builds one initramfs (uncompressed newc cpio): busybox for `/init` (under `/.mcpg`, off the
//!    tests' paths), merged /usr, the host's dynamic binaries the scenarios run (dash as /bin/sh,
//!    cat, true, tee, ... plus every `"/usr/bin/NAME"` literal in tests/) with their shared
//!    libraries and /etc/ld.so.cache, and the static test binaries at their host build paths.
//! 3. Boots each matrix entry (TCG, `-smp 1`, no network) with a hard timeout, the serial console
//!    logged to `target/vm-logs/ENTRY.log`. `/init` mounts proc, sysfs, devtmpfs, securityfs,
//!    bpffs, tracefs, cgroup2 and a tmpfs on /tmp, prints the active LSM list, runs the tests
//!    (`--test-threads=1`, `MCPG_EXPECT_BACKEND` from the entry), then runs the release binary as
//!    the daemon (`vm/dist-smoke.sh`: the backend it chose, one grant, one granted and one refused
//!    exec through the CLI, the audit line, a clean stop) and prints `MCPG-VM-DIST ok|FAIL` and
//!    `MCPG-VM-RESULT rc=N` before `poweroff -f`.
//! 4. Prints a summary table; exits non-zero if any entry failed (tests or the dist daemon),
//!    timed out, printed no result, or booted with an LSM list that does not match the entry (`bpf` must be active for the LSM
//!    entries and absent for the fmod_ret one: an LSM program attached while `bpf` is inactive
//!    never runs, so a green run there would prove nothing).
//!
//! Kernels come from `scripts/setup-vm.sh` (cache: `$MCPG_VM_CACHE` or `.vm-cache/`).
mod cpio;
mod initramfs;
pub(crate) mod qemu;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

const TARGET: &str = "x86_64-unknown-linux-musl";
const LSM_WITH_BPF: &str = "lockdown,capability,landlock,yama,bpf";
const LSM_WITHOUT_BPF: &str = "lockdown,capability,landlock,yama";

struct Entry {
    name: &'static str,
    /// Kernel series in the cache: `vmlinuz-SERIES`.
    series: &'static str,
    lsm: &'static str,
    /// What `MCPG_EXPECT_BACKEND` is set to by default.
    expect: &'static str,
    /// Whether `bpf` must (or must not) be in the guest's active LSM list.
    bpf_lsm: bool,
    /// Wall time the whole entry (boot to poweroff) may take on this machine kind with the other
    /// guest running beside it, measured (docs/vm-matrix.md) and rounded up; the hard limit is
    /// twice this, and an entry over it is reported as a warning.
    budget: Duration,
}

const MATRIX: &[Entry] = &[
    Entry {
        name: "debian-6.12-lsm",
        series: "6.12",
        lsm: LSM_WITH_BPF,
        expect: "lsm",
        bpf_lsm: true,
        budget: Duration::from_secs(150),
    },
    Entry {
        name: "debian-6.1-lsm",
        series: "6.1",
        lsm: LSM_WITH_BPF,
        expect: "lsm",
        bpf_lsm: true,
        budget: Duration::from_secs(200),
    },
    Entry {
        name: "debian-6.12-fmodret",
        series: "6.12",
        lsm: LSM_WITHOUT_BPF,
        expect: "fmod_ret",
        bpf_lsm: false,
        budget: Duration::from_secs(150),
    },
];

#[derive(clap::Args)]
pub struct Args {
    /// Run only this matrix entry (repeatable): debian-6.12-lsm, debian-6.1-lsm, debian-6.12-fmodret.
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// Backend every entry's tests must find in force (sets MCPG_EXPECT_BACKEND in the guest):
    /// lsm, fmod_ret or kill; `none` leaves it unset. Default: the entry's own (lsm / fmod_ret).
    #[arg(long, value_name = "BACKEND")]
    expect_backend: Option<String>,
    /// Run only the tests whose name contains this (repeatable; libtest filter).
    #[arg(long, value_name = "SUBSTRING")]
    filter: Vec<String>,
    /// Extra environment for the test binary in the guest (KEY=VALUE, repeatable).
    #[arg(long = "guest-env", value_name = "KEY=VALUE")]
    guest_env: Vec<String>,
    /// Extra host files (with their shared libraries) to put in the guest at the same path.
    #[arg(long, value_name = "PATH")]
    include: Vec<PathBuf>,
    /// Hard timeout per entry, seconds. Default: twice the entry's measured budget (MATRIX).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Guests booted at a time (each has one CPU). Default: the host's CPU count.
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Kernel cache (filled by scripts/setup-vm.sh).
    #[arg(long, env = "MCPG_VM_CACHE", value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Build the test binaries with the release profile.
    #[arg(long)]
    release: bool,
    /// Keep debug info in the guest's test binary (default: stripped copy, smaller initramfs).
    #[arg(long)]
    keep_debuginfo: bool,
    /// Echo the whole serial console (kernel boot included) to stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Skip the release binary: no build of `target/dist/mcpguard`, no daemon run in the guests
    /// (quicker iterations on the engine tests; CI runs the whole matrix without it).
    #[arg(long)]
    no_dist: bool,
    /// Print the matrix and exit.
    #[arg(long)]
    list: bool,
    /// Further arguments for the test binary (after `--`).
    #[arg(last = true)]
    test_args: Vec<String>,
}

pub fn run(a: &Args) -> Result<()> {
    if a.list {
        for e in MATRIX {
            println!(
                "{:<22} kernel {:<5} lsm={:<40} expect {:<9} budget {}s (limit {}s)",
                e.name,
                e.series,
                e.lsm,
                e.expect,
                e.budget.as_secs(),
                e.budget.as_secs() * 2
            );
        }
        return Ok(());
    }
    let root = workspace_root();
    let entries = select_entries(a)?;
    let kernels = preflight(a, &root, &entries)?;
    // 1. Build.
    let t = Instant::now();
    let built = build_tests(&root, a.release)?;
    eprintln!("vm-test: built {} in {:.0}s", built.test.display(), t.elapsed().as_secs_f64());
    let dist = if a.no_dist { None } else { Some(crate::dist::static_binary(&root)?) };
    let target_dir = target_dir(&root)?;
    let work = target_dir.join("vm-test");
    let logs = target_dir.join("vm-logs");
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&logs)?;

    let initrd = write_initramfs(a, &built, dist.as_deref(), &work)?;
    let (rows, wall, jobs) = boot_all(a, &entries, &kernels, &initrd, &logs)?;
    summarize(&rows, wall, jobs)
}

/// The entries `--only` names (all by default), and the other arguments checked.
fn select_entries(a: &Args) -> Result<Vec<&'static Entry>> {
    let entries: Vec<&'static Entry> = if a.only.is_empty() {
        MATRIX.iter().collect()
    } else {
        a.only
            .iter()
            .map(|n| {
                MATRIX.iter().find(|e| e.name == n).with_context(|| {
                    let names: Vec<_> = MATRIX.iter().map(|e| e.name).collect();
                    format!("unknown matrix entry {n:?}; entries: {}", names.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    if let Some(b) = &a.expect_backend
        && !["lsm", "fmod_ret", "kill", "none"].contains(&b.as_str())
    {
        bail!("--expect-backend must be lsm, fmod_ret, kill or none (got {b:?})");
    }
    for kv in &a.guest_env {
        if !kv.contains('=') || kv.contains('\n') {
            bail!("--guest-env wants KEY=VALUE (got {kv:?})");
        }
    }

    Ok(entries)
}

/// Everything that must exist before spending minutes on a build: each entry's cached kernel
/// (with its version), busybox, qemu.
fn preflight(a: &Args, root: &Path, entries: &[&Entry]) -> Result<Vec<(PathBuf, String)>> {
    let cache = a.cache.clone().unwrap_or_else(|| root.join(".vm-cache"));
    let mut kernels = Vec::new();
    for e in entries {
        let k = cache.join(format!("vmlinuz-{}", e.series));
        if !k.exists() {
            bail!(
                "kernel {} missing: run scripts/setup-vm.sh first (cache {}, override with MCPG_VM_CACHE)",
                k.display(),
                cache.display()
            );
        }
        let version = std::fs::read_to_string(cache.join(format!("vmlinuz-{}.version", e.series)))
            .unwrap_or_default()
            .trim()
            .to_string();
        kernels.push((std::fs::canonicalize(&k)?, version));
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox missing: run scripts/setup-vm.sh (busybox-static)");
    }
    which("qemu-system-x86_64").context("qemu-system-x86_64 missing: run scripts/setup-vm.sh")?;

    Ok(kernels)
}

/// Where the release binary is in the guest (as the Debian package installs it).
const GUEST_DIST: &str = "/usr/bin/mcpguard";

/// The guest's initramfs: the test binaries (stripped unless `--keep-debuginfo`), the release
/// binary and its smoke script, the host binaries the tests name, the arguments and environment,
/// the init script.
fn write_initramfs(a: &Args, built: &Built, dist: Option<&Path>, work: &Path) -> Result<PathBuf> {
    let root = workspace_root();
    let busybox = Path::new("/bin/busybox");
    let t = Instant::now();
    let initrd = work.join("initramfs.cpio");
    let mut guest_bins = Vec::new();
    for exe in std::iter::once(&built.test).chain(&built.others) {
        if exe.starts_with("/tmp") || exe.starts_with("/proc") || exe.starts_with("/sys") || exe.starts_with("/dev") {
            bail!(
                "{} is under a directory the guest mounts over; use a target dir elsewhere (CARGO_TARGET_DIR)",
                exe.display()
            );
        }
        let src = if a.keep_debuginfo { exe.clone() } else { strip_copy(exe, work)? };
        guest_bins.push((src, exe.clone()));
    }
    if let Some(d) = dist {
        guest_bins.push((d.to_path_buf(), PathBuf::from(GUEST_DIST)));
    }
    let mut host_paths: Vec<PathBuf> = initramfs::BASE_BINARIES.iter().map(PathBuf::from).collect();
    let mut sources = initramfs::sources_under(&root.join("tests/tests"), "rs");
    sources.extend(initramfs::sources_under(&root.join("tests/src"), "rs"));
    for p in initramfs::binaries_named_in(&sources)? {
        if !host_paths.contains(&p) {
            if !p.exists() {
                bail!("the tests name {} but the host has no such file", p.display());
            }
            host_paths.push(p);
        }
    }
    host_paths.extend(a.include.iter().cloned());
    let mut args_file = String::from("--test-threads=1\n");
    for f in a.filter.iter().chain(&a.test_args) {
        if f.contains('\n') {
            bail!("test arguments cannot contain newlines");
        }
        let _ = writeln!(args_file, "{f}");
    }
    let mut env_file = String::new();
    for kv in &a.guest_env {
        let _ = writeln!(env_file, "{kv}");
    }
    let init = init_script(&built.test, dist.is_some());
    let files = [
        ("mcpg/dist-smoke.sh", include_bytes!("vm/dist-smoke.sh").to_vec()),
        ("mcpg/args", args_file.into_bytes()),
        ("mcpg/env", env_file.into_bytes()),
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
        ),
        ("etc/group", b"root:x:0:\nnogroup:x:65534:\n".to_vec()),
    ];
    let (archive, libs) = initramfs::build(&initramfs::Spec {
        busybox,
        host_paths: &host_paths,
        guest_binaries: &guest_bins,
        init: &init,
        files: &files,
    })?;
    let size = {
        let f = std::fs::File::create(&initrd).with_context(|| format!("creating {}", initrd.display()))?;
        let mut w = std::io::BufWriter::new(f);
        archive.write(&mut w)?
    };
    eprintln!(
        "vm-test: initramfs {} ({:.1} MiB, {} host binaries, {} shared libraries) in {:.1}s",
        initrd.display(),
        size as f64 / (1024.0 * 1024.0),
        host_paths.len(),
        libs.len(),
        t.elapsed().as_secs_f64()
    );

    Ok(initrd)
}

/// Boots the entries, `jobs` guests at a time (each single-CPU): their rows in matrix order,
/// the wall time, and `jobs`.
fn boot_all<'a>(
    a: &'a Args,
    entries: &[&'a Entry],
    kernels: &[(PathBuf, String)],
    initrd: &Path,
    logs: &Path,
) -> Result<(Vec<Row<'a>>, Duration, usize)> {
    let jobs =
        a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).clamp(1, entries.len());
    let t = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(e) = entries.get(i) else { break };
                    let r = boot_entry(e, &kernels[i], a, initrd, logs);
                    done.lock().unwrap().push((i, r));
                }
            });
        }
    });
    let wall = t.elapsed();
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|(i, _)| *i);
    let mut rows = Vec::new();
    for (_, r) in done {
        rows.push(r?);
    }

    Ok((rows, wall, jobs))
}

/// The summary table (and the failures under each entry), the budget warnings, the verdict.
fn summarize(rows: &[Row<'_>], wall: Duration, jobs: usize) -> Result<()> {
    let mut table = vec![
        [
            "entry",
            "kernel",
            "active lsm",
            "expect",
            "result",
            "passed",
            "failed",
            "daemon",
            "boot_s",
            "total_s",
            "limit_s",
            "note",
        ]
        .map(String::from),
    ];
    let mut bad = 0;
    let mut slow = Vec::new();
    for r in rows {
        let o = &r.outcome;
        let result = match &r.verdict {
            Ok(()) => "PASS",
            Err(_) if o.timed_out => "TIMEOUT",
            Err(_) => "FAIL",
        };
        if r.verdict.is_err() {
            bad += 1;
        }
        // Over half the limit: the budget (measured with 2x headroom) is used up.
        if o.wall * 2 > r.limit {
            slow.push(format!(
                "{} took {:.0}s, over half its {}s limit: the host is slow or the scenarios outgrew the entry's budget \
                 (xtask/src/vm.rs MATRIX)",
                r.entry.name,
                o.wall.as_secs_f64(),
                r.limit.as_secs()
            ));
        }
        let mut notes = Vec::new();
        if let Err(w) = &r.verdict {
            notes.push(format!("{w} (log {})", r.log.display()));
        }
        if !o.warnings.is_empty() {
            notes.push(format!("init warnings: {}", o.warnings.join("; ")));
        }
        table.push([
            r.entry.name.to_string(),
            o.kernel_release.clone().unwrap_or_else(|| "?".into()),
            o.lsm.clone().unwrap_or_else(|| "?".into()),
            if r.expect.is_empty() { "-".into() } else { r.expect.to_string() },
            result.into(),
            o.passed.map_or("-".into(), |n| n.to_string()),
            o.failed.map_or("-".into(), |n| n.to_string()),
            match &o.dist {
                Some(Ok(())) => "ok".into(),
                Some(Err(_)) => "FAIL".into(),
                None => "-".into(),
            },
            o.up_start.map_or("-".into(), |u| format!("{u:.1}")),
            format!("{:.0}", o.wall.as_secs_f64()),
            r.limit.as_secs().to_string(),
            notes.join("; "),
        ]);
    }
    let mut widths = [0usize; 12];
    for row in &table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    println!();
    for (i, row) in table.iter().enumerate() {
        let mut line = String::new();
        for (k, (c, w)) in row.iter().zip(widths).enumerate() {
            if k == 11 {
                line.push_str(c);
            } else if (5..11).contains(&k) {
                let _ = write!(line, "{c:>w$}  ");
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        println!("{}", line.trim_end());
        if i > 0 {
            for f in &rows[i - 1].outcome.failures {
                println!("    failed: {f}");
            }
        }
    }
    for w in &slow {
        println!("vm-test: WARNING: {w}");
    }
    let in_vms: Duration = rows.iter().map(|r| r.outcome.wall).sum();
    println!(
        "vm-test: {} entries, {} failed, {:.0}s wall with {jobs} guest(s) at a time ({:.0}s in VMs)",
        rows.len(),
        bad,
        wall.as_secs_f64(),
        in_vms.as_secs_f64()
    );
    if bad > 0 {
        bail!("{bad} of {} VM entries failed", rows.len());
    }
    Ok(())
}

struct Row<'a> {
    entry: &'a Entry,
    expect: &'a str,
    outcome: qemu::Outcome,
    verdict: Result<(), String>,
    log: PathBuf,
    limit: Duration,
}

/// Boots one entry and judges its outcome.
fn boot_entry<'a>(
    e: &'a Entry,
    (kernel, version): &(PathBuf, String),
    a: &'a Args,
    initrd: &Path,
    logs: &Path,
) -> Result<Row<'a>> {
    let expect = match a.expect_backend.as_deref() {
        Some("none") => "",
        Some(b) => b,
        None => e.expect,
    };
    let limit = a.timeout.map_or(e.budget * 2, Duration::from_secs);
    let append = format!("console=ttyS0 panic=-1 quiet lsm={} mcpg.expect={expect}", e.lsm);
    let log = qemu::log_path(logs, e.name);
    eprintln!(
        "vm-test: === {} (kernel {}, lsm={}, MCPG_EXPECT_BACKEND={}, limit {}s) log {}",
        e.name,
        if version.is_empty() { e.series } else { version },
        e.lsm,
        if expect.is_empty() { "<unset>" } else { expect },
        limit.as_secs(),
        log.display()
    );
    let o = qemu::boot(&qemu::Boot {
        name: e.name,
        kernel,
        initrd,
        append,
        log: &log,
        timeout: limit,
        verbose: a.verbose,
    })?;
    let verdict = verdict(e, &o, !a.no_dist);
    if let Err(why) = &verdict {
        eprintln!("vm-test: {} FAILED: {why}; last console lines:", e.name);
        for l in o.tail.iter().rev().take(25).collect::<Vec<_>>().into_iter().rev() {
            eprintln!("  | {l}");
        }
    }
    eprintln!("vm-test: {} done in {:.0}s (limit {}s)", e.name, o.wall.as_secs_f64(), limit.as_secs());
    Ok(Row { entry: e, expect, outcome: o, verdict, log, limit })
}

/// Ok when the guest ran the tests to a zero exit with the LSM list the entry needs, and (unless
/// `--no-dist`) the release binary's smoke run passed.
fn verdict(e: &Entry, o: &qemu::Outcome, dist: bool) -> Result<(), String> {
    if o.timed_out {
        return Err("timed out".into());
    }
    let Some(rc) = o.rc else {
        return Err(format!("no MCPG-VM-RESULT line (guest crashed or /init failed; qemu exit {:?})", o.qemu_status));
    };
    if let Some(lsm) = &o.lsm {
        let has_bpf = lsm.split(',').any(|l| l == "bpf");
        if has_bpf != e.bpf_lsm {
            return Err(format!(
                "active LSM list {lsm:?} {} bpf: the entry is misconfigured",
                if e.bpf_lsm { "lacks" } else { "has" }
            ));
        }
    } else {
        return Err("no MCPG-VM-LSM line (securityfs not mounted?)".into());
    }
    if rc != 0 {
        return Err(format!("tests exited with {rc}"));
    }
    if o.passed.is_none() {
        return Err("no `test result:` line".into());
    }
    match &o.dist {
        _ if !dist => Ok(()),
        Some(Ok(())) => Ok(()),
        Some(Err(why)) => Err(format!("the release binary as daemon: {why}")),
        None => Err("no MCPG-VM-DIST line (the release binary's smoke run did not finish)".into()),
    }
}

/// The `/init` the guest runs (busybox sh).
fn init_script(test: &Path, dist: bool) -> String {
    let bb = initramfs::BB_DIR;
    format!(
        r#"#!{bb}/busybox sh
# mcpguard VM test init (generated by `cargo xtask vm-test`).
{bb}/busybox mkdir -p {bb}/bin
{bb}/busybox --install -s {bb}/bin
export PATH={bb}/bin
m() {{ mkdir -p "$3"; mount -t "$1" "$2" "$3" || echo "MCPG-VM-WARN mount $1 on $3 failed"; }}
m proc proc /proc
m sysfs sysfs /sys
m devtmpfs devtmpfs /dev
m securityfs securityfs /sys/kernel/security
m bpf bpf /sys/fs/bpf
m tracefs tracefs /sys/kernel/tracing
m cgroup2 cgroup2 /sys/fs/cgroup
m tmpfs tmpfs /tmp
m tmpfs tmpfs /run
# Loopback (the guest has no other interface): the network tests connect to their own listeners.
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up || echo "MCPG-VM-WARN loopback not up"
echo "MCPG-VM-KERNEL $(uname -r)"
echo "MCPG-VM-LSM $(cat /sys/kernel/security/lsm)"
expect=
for w in $(cat /proc/cmdline); do
  case "$w" in mcpg.expect=*) expect="${{w#mcpg.expect=}}" ;; esac
done
set --
while IFS= read -r kv; do set -- "$@" "$kv"; done < /mcpg/env
if [ -n "$expect" ]; then set -- "$@" "MCPG_EXPECT_BACKEND=$expect"; fi
set -- "$@" {test}
while IFS= read -r a; do set -- "$@" "$a"; done < /mcpg/args
cd /tmp
echo "MCPG-VM-START uptime=$(cut -d' ' -f1 /proc/uptime) expect=${{expect:-<unset>}} run: $*"
env -i PATH=/usr/bin:/bin HOME=/root LC_ALL=C RUST_BACKTRACE=1 "$@" < /dev/null
rc=$?
echo "MCPG-VM-END uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ {dist} = 1 ]; then
  env -i PATH={bb}/bin:/usr/bin HOME=/root LC_ALL=C sh /mcpg/dist-smoke.sh "$expect" < /dev/null
fi
echo "MCPG-VM-RESULT rc=$rc"
sync
poweroff -f
"#,
        test = test.display(),
        dist = u8::from(dist),
    )
}

struct Built {
    test: PathBuf,
    /// Other executables built with it (the helper the tests run by absolute path).
    others: Vec<PathBuf>,
}

fn build_tests(root: &Path, release: bool) -> Result<Built> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["test", "-p", "mcpguard-tests", "--test", "engine", "--no-run", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if release {
        cmd.arg("--release");
    }
    eprintln!("vm-test: building the engine tests for {TARGET}");
    let out = cmd.output().context("running cargo")?;
    if !out.status.success() {
        bail!("building the engine tests for {TARGET} failed ({}); see the errors above", out.status);
    }
    let mut test = None;
    let mut others = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else { continue };
        let kinds: Vec<&str> =
            v["target"]["kind"].as_array().into_iter().flatten().filter_map(|k| k.as_str()).collect();
        if kinds.contains(&"test") && v["target"]["name"] == "engine" {
            test = Some(PathBuf::from(exe));
        } else if kinds.contains(&"bin") {
            others.push(PathBuf::from(exe));
        }
    }
    let test = test.context("cargo reported no `engine` test executable")?;
    Ok(Built { test, others })
}

/// A debug-info-stripped copy (symbols kept, so backtraces still name functions); the
/// original if objcopy is missing.
fn strip_copy(exe: &Path, work: &Path) -> Result<PathBuf> {
    let dst = work.join(format!("stripped-{}", exe.file_name().unwrap().to_string_lossy()));
    let ok = Command::new("objcopy").arg("--strip-debug").arg(exe).arg(&dst).status().is_ok_and(|s| s.success());
    if ok { Ok(dst) } else { Ok(exe.to_path_buf()) }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub(crate) fn target_dir(root: &Path) -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        let d = PathBuf::from(d);
        return Ok(if d.is_absolute() { d } else { root.join(d) });
    }
    Ok(root.join("target"))
}

pub(crate) fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not on PATH"))
}
