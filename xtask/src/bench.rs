//! `cargo xtask bench` (root): enforcement overhead, event throughput, grant latency, daemon
//! memory and per-program cost, as ratios against a baseline measured in the same run.
//! Writes `target/bench/report.json` and prints a table. Method: `docs/benchmarks.md`.
//!
//! The harness pins itself (and the daemon it starts) to the first allowed CPU and every
//! workload process to the second. Only processes started here are governed or signalled.
//! Sections: `overhead` (overhead.rs), `events` + `latency` + `rss` (daemon.rs, events.rs,
//! latency.rs), `programs` (programs.rs).
mod daemon;
mod elf;
mod empty;
mod events;
mod latency;
mod listener;
mod overhead;
mod proc;
mod profile;
mod programs;
mod report;
mod seccomp;
mod signal;
mod stats;
mod workload;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Smoke test: 2 blocks per arm, short loops and windows (seconds, not minutes).
    #[arg(long)]
    quick: bool,
    /// Blocks per arm in each ABBA sequence (default 10; --quick: 2).
    #[arg(long)]
    blocks: Option<usize>,
    /// Run only these sections (comma-separated): overhead, events, latency, rss, programs.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Report path (default: target/bench/report.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also profile the daemon and the workload CPU with `perf` during one extra event probe.
    #[arg(long)]
    profile: bool,
    /// Overhead section: only these workloads (getppid, open, mmap, mprotect, utimes, forkexec, connect;
    /// comma-separated).
    #[arg(long, value_delimiter = ',')]
    workload: Vec<String>,
    /// Before starting, wait up to this many seconds for a quiet machine (1-minute load average
    /// below 0.5 and no other mcpguard programs loaded); the run starts anyway at the deadline.
    #[arg(long, value_name = "SECONDS")]
    wait_quiet: Option<u64>,
    /// Do not rebuild in release first (the binary must already be a release build).
    #[arg(long)]
    no_rebuild: bool,
    #[command(subcommand)]
    internal: Option<Internal>,
}

#[derive(clap::Subcommand)]
enum Internal {
    /// The measured process (started by the harness).
    #[command(hide = true)]
    Workload(workload::Args),
}

/// What every section needs.
pub struct Ctx {
    /// This (release) binary: the workload processes run it.
    pub exe: String,
    /// The release `mcpguard` binary (daemon).
    pub mcpguard: PathBuf,
    /// Scratch directory, removed at the end.
    pub work: PathBuf,
    /// File the open+close workload opens (granted in governed-allowed).
    pub file: PathBuf,
    /// File outside every grant (denied-open events).
    pub denied: PathBuf,
    /// The static binary of the fork+exec workload.
    pub bin: PathBuf,
    /// The harness's loopback TCP listener (listener.rs): the connect+close workload connects
    /// to it, and governed-allowed grants `tcp://` it.
    pub listener: listener::Listener,
    pub harness_cpu: Option<usize>,
    pub workload_cpu: Option<usize>,
    pub quick: bool,
    pub blocks: usize,
    /// The backend the strongest-that-works probe found; later loads ask for it directly.
    pub backend: Option<mcpguard::kernel::engine::Backend>,
    pub profile: bool,
    /// Overhead workloads to run (empty: all).
    pub workloads: Vec<String>,
}

const SECTIONS: [&str; 5] = ["overhead", "events", "latency", "rss", "programs"];

pub fn run(a: &Args) -> Result<()> {
    if let Some(Internal::Workload(w)) = &a.internal {
        return workload::run(w);
    }
    for s in &a.only {
        if !SECTIONS.contains(&s.as_str()) {
            bail!("unknown section {s:?}; sections: {}", SECTIONS.join(", "));
        }
    }
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads eBPF programs: run it as root");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.to_path_buf();
    if cfg!(debug_assertions) && !a.no_rebuild {
        return reexec_release(&root);
    }
    // The governed workloads inherit this environment: a code-injecting variable (cargo sets
    // LD_LIBRARY_PATH) would get their execs refused (`env_injection`), which is not what is
    // measured. Only here, after any rebuild: the toolchain's own tools need LD_LIBRARY_PATH.
    for n in mcpguard_common::INJECTION_ENV {
        // SAFETY: single-threaded here (nothing started yet).
        unsafe { std::env::remove_var(n) };
    }
    let exe = std::env::current_exe()?;
    let mcpguard = exe.with_file_name("mcpguard");
    if !mcpguard.exists() {
        bail!("{} is missing: build it (cargo build --release -p mcpguard)", mcpguard.display());
    }
    let cpus = proc::allowed_cpus();
    let (harness_cpu, workload_cpu) = match cpus.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => {
            eprintln!("bench: WARNING: a single CPU is available: workload and harness share it");
            (None, None)
        }
    };
    if let Some(c) = harness_cpu {
        proc::pin(0, c)?;
    }
    let work = std::env::temp_dir().join(format!("mcpg-bench-{}", std::process::id()));
    let _cleanup = Cleanup(work.clone());
    for d in ["allowed", "denied", "bin"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    let mut ctx = Ctx {
        exe: exe.display().to_string(),
        mcpguard,
        file: work.join("allowed/data"),
        denied: work.join("denied/data"),
        bin: work.join("bin/exit0"),
        // Kept for the whole run (every connect+close block connects to it).
        listener: listener::Listener::start()?,
        work,
        harness_cpu,
        workload_cpu,
        quick: a.quick,
        blocks: a.blocks.unwrap_or(if a.quick { 2 } else { 10 }),
        backend: None,
        profile: a.profile,
        workloads: a.workload.clone(),
    };
    std::fs::write(&ctx.file, b"mcpguard bench\n")?;
    std::fs::write(overhead::times_file(&ctx), b"mcpguard bench (times)\n")?;
    std::fs::write(&ctx.denied, b"mcpguard bench (not granted)\n")?;
    elf::write_exit0(&ctx.bin)?;
    let want = |s: &str| a.only.is_empty() || a.only.iter().any(|o| o == s);

    if let Some(secs) = a.wait_quiet {
        let quiet = || {
            let load: f64 = report::loadavg().split(' ').next().and_then(|x| x.parse().ok()).unwrap_or(9.0);
            load < 0.5 && report::foreign_programs().is_empty()
        };
        eprintln!("bench: waiting up to {secs} s for a quiet machine (load {})", report::loadavg());
        if !proc::wait_until(std::time::Duration::from_secs(secs), std::time::Duration::from_secs(5), quiet) {
            eprintln!("bench: WARNING: the machine did not become quiet (load {})", report::loadavg());
        }
    }
    let foreign = report::foreign_programs();
    if !foreign.is_empty() {
        eprintln!(
            "bench: WARNING: other mcpguard programs are loaded ({foreign:?}): the detached baseline is not clean"
        );
    }
    let (backend, probes) = {
        let e = mcpguard::kernel::engine::Engine::load(&mcpguard::kernel::engine::EngineOptions::default())
            .context("loading the eBPF programs")?;
        (e.backend(), serde_json::to_value(e.probes())?)
    };
    eprintln!("bench: backend in force: {}", backend.name());
    ctx.backend = Some(backend);
    let mut meta = report::meta(&ctx, backend.name());
    meta["backend_probes"] = probes;
    meta["foreign_mcpg_programs_at_start"] = json!(foreign);
    let mut rep = json!({ "meta": meta });
    let mut tables = report::Tables::default();
    if want("overhead") {
        let (rows, j) = overhead::run(&ctx)?;
        rep["overhead"] = j;
        tables.overhead = rows;
    }
    if want("programs") {
        let j = programs::run(&ctx)?;
        tables.programs = Some(j.clone());
        rep["programs"] = j;
    }
    if want("events") || want("latency") || want("rss") {
        let mut d = daemon::Daemon::start(&ctx, "main", None)?;
        rep["meta"]["daemon_backend"] = json!(d.backend.clone());
        if want("rss") {
            rep["rss"] = daemon::rss(&ctx, &mut d)?;
        }
        if want("latency") {
            rep["latency"] = latency::run(&ctx, &mut d)?;
            rep["latency"]["signal"] = signal::run(&ctx, &mut d)?;
        }
        if want("events") {
            rep["events"] = events::run(&ctx, &mut d, ctx.profile)?;
        }
        d.stop()?;
        // --profile: the same search with the audit log on tmpfs (no disk, no dirty-page
        // throttling), to tell the daemon's own per-event cost from the file system's.
        if want("events") && ctx.profile {
            let shm = PathBuf::from(format!("/dev/shm/mcpg-bench-{}", std::process::id()));
            std::fs::create_dir_all(&shm)?;
            let _rm = Cleanup(shm.clone());
            let mut d = daemon::Daemon::start(&ctx, "tmpfs", Some(&shm))?;
            eprintln!("bench: events again with the audit log on tmpfs ({})", shm.display());
            rep["events_audit_log_on_tmpfs"] = events::run(&ctx, &mut d, false)?;
            d.stop()?;
        }
    }
    rep["meta"]["loadavg_at_end"] = json!(report::loadavg());
    rep["meta"]["foreign_mcpg_programs_at_end"] = json!(report::foreign_programs());
    rep["targets"] = report::targets(&rep);
    let out = a.out.clone().unwrap_or_else(|| root.join("target/bench/report.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&rep)? + "\n")?;
    print!("{}", report::render(&rep, &tables));
    eprintln!("bench: report written to {}", out.display());
    Ok(())
}

/// `cargo xtask` runs a debug build; timings need the release one (workload loops included).
fn reexec_release(root: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: building release binaries (xtask, mcpguard)");
    let st = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "-p", "xtask", "-p", "mcpguard", "--bins"])
        .status()
        .context("running cargo")?;
    if !st.success() {
        bail!("release build failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let exe = target.join("release/xtask");
    let err = Command::new(&exe).arg("bench").args(std::env::args_os().skip(2)).arg("--no-rebuild").exec();
    Err(err).with_context(|| format!("exec {}", exe.display()))
}

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
