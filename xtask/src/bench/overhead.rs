//! Enforcement overhead: each workload × arm as an ABBA sequence of blocks against the baseline
//! with the programs detached (the engine dropped), ratios paired block by block.
//!
//! Arms: `attached-ungoverned` (programs loaded and attached, the workload in no session),
//! `governed-allowed` (a kill-mode session whose grant allows everything the workload does),
//! `governed-stopped` (an audit-mode session whose grant allows nothing the workload does: every
//! open/exec/connect is decided "not granted", reported as an event and let through, so the
//! process keeps looping and the full denial path — decision, path report, ring buffer — is
//! timed).
//! Every block is a fresh workload process, governed before its first instruction.
//!
//! The network programs (cgroup socket-address programs, ebpf/src/net.rs) are attached at load to
//! the cgroup v2 root (`EngineOptions::default()`, as the daemon does), so they see the workload
//! processes wherever they are in the hierarchy; unlike the syscall tracepoints they are not
//! lazy, so `attached-ungoverned` already prices them on `connect+close`. Before its
//! governed-allowed blocks, that workload checks that the grant is enforced (`connect_check`).
use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use mcpguard::{
    grant::kgrant,
    kernel::engine::{self, Engine, EngineOptions},
};
use mcpguard_common::{COUNTER_LOST, MODE_AUDIT, MODE_KILL, SESSION_SEALED, SessionState};
use serde_json::{Value, json};

use super::{
    Ctx,
    empty::Empty,
    listener::listen_overflows,
    proc::{Gated, boot_ns, pin},
    stats::{Slot, Summary, abba, paired_ratios},
    workload,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    Detached,
    /// Floor: an empty program on `sys_exit_openat` only (no mcpguard program).
    FloorExit,
    /// Floor: empty programs on `sys_exit_openat` and `sys_enter_bpf` (the kill backend attaches
    /// both `sys_exit_*` and `sys_enter_*` syscall tracepoints).
    FloorEnterExit,
    /// Alternative design, nothing attached: the workload filters itself with seccomp (guard
    /// syscalls refused); see seccomp.rs.
    SeccompFilter,
    /// As above, with `openat` decided by a user-space supervisor (`SECCOMP_RET_USER_NOTIF`).
    SeccompNotif,
    /// Nothing attached: the workload carries the launcher's own guard filter
    /// (`launcher::seccomp::GuardFilter`, what `mcpguard exec` installs), whose times syscalls
    /// are decided on their arguments (the kernel cannot cache their verdict).
    LauncherFilter,
    /// Nothing governed on the machine: the syscall tracepoints are not attached (lazy attach).
    Ungoverned,
    /// Another process is governed (an idle one, held before exec), so the syscall tracepoints
    /// are attached; the workload itself is in no session.
    UngovernedLive,
    /// As above, the idle process's session sealed (`SESSION_SEALED`, as `mcpguard exec`
    /// registers it: its seccomp filter refuses the guard syscalls), so only the open-family
    /// tracepoints are attached.
    UngovernedLiveSealed,
    Allowed,
    Stopped,
}

impl Arm {
    pub const MEASURED: [Arm; 10] = [
        Arm::FloorExit,
        Arm::FloorEnterExit,
        Arm::SeccompFilter,
        Arm::SeccompNotif,
        Arm::LauncherFilter,
        Arm::Ungoverned,
        Arm::UngovernedLive,
        Arm::UngovernedLiveSealed,
        Arm::Allowed,
        Arm::Stopped,
    ];
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Arm::Detached => "detached",
            Arm::FloorExit => "floor: empty exit tp",
            Arm::FloorEnterExit => "floor: empty enter+exit tp",
            Arm::SeccompFilter => "alt: seccomp filter (self)",
            Arm::SeccompNotif => "alt: seccomp + open notif",
            Arm::LauncherFilter => "launcher seccomp filter (self)",
            Arm::Ungoverned => "attached-ungoverned",
            Arm::UngovernedLive => "attached-ungoverned, session live",
            Arm::UngovernedLiveSealed => "attached-ungoverned, sealed session live",
            Arm::Allowed => "governed-allowed",
            Arm::Stopped => "governed-stopped",
        }
    }
    /// Reference arms (mechanism floors and the alternative design), not mcpguard itself.
    const fn reference(self) -> bool {
        matches!(
            self,
            Arm::FloorExit | Arm::FloorEnterExit | Arm::SeccompFilter | Arm::SeccompNotif | Arm::LauncherFilter
        )
    }
    const fn seccomp(self) -> Option<&'static str> {
        match self {
            Arm::SeccompFilter => Some("filter"),
            Arm::SeccompNotif => Some("notif"),
            Arm::LauncherFilter => Some("launcher"),
            _ => None,
        }
    }
}

/// What is attached while a block runs.
enum State {
    Detached,
    Floor { arm: Arm, _progs: Vec<Empty> },
    Engine(Box<Attached>),
}

impl State {
    fn engine(&mut self) -> Option<&mut Attached> {
        match self {
            State::Engine(a) => Some(a),
            _ => None,
        }
    }
}

/// One workload as the child runs it.
#[derive(Clone, Debug)]
pub struct Workload {
    pub name: &'static str,
    pub kind: &'static str,
    pub iters: u64,
    pub warmup: u64,
    pub path: Option<PathBuf>,
    /// Where the `connect` workload connects.
    pub addr: Option<SocketAddrV4>,
}

impl Workload {
    /// The workloads with block sizes of roughly 0.3 s each on this machine kind
    /// (`quick`: a tenth).
    #[must_use]
    pub fn all(ctx: &Ctx) -> Vec<Self> {
        let s = if ctx.quick { 10 } else { 1 };
        vec![
            Self {
                name: "null syscall (getppid)",
                kind: "getppid",
                iters: 2_000_000 / s,
                warmup: 50_000,
                path: None,
                addr: None,
            },
            Self {
                name: "open+close",
                kind: "open",
                iters: 100_000 / s,
                warmup: 5_000,
                path: Some(ctx.file.clone()),
                addr: None,
            },
            Self {
                name: "mmap(PROT_EXEC)+munmap",
                kind: "mmap",
                iters: 200_000 / s,
                warmup: 5_000,
                path: Some(ctx.file.clone()),
                addr: None,
            },
            Self {
                name: "mprotect(PROT_EXEC) and back",
                kind: "mprotect",
                iters: 200_000 / s,
                warmup: 5_000,
                path: Some(ctx.file.clone()),
                addr: None,
            },
            // utimensat(file, NULL): times set to now (deny backends: `vfs_utimes` fentry and
            // fexit, the `inode_setattr` decision; kill backend: no program, the launcher's
            // filter decides it on its arguments).
            Self {
                name: "utimensat(now)",
                kind: "utimes",
                iters: 200_000 / s,
                warmup: 5_000,
                path: Some(times_file(ctx)),
                addr: None,
            },
            Self {
                name: "fork+exec (static)",
                kind: "forkexec",
                iters: 2_000 / s,
                warmup: 50,
                path: Some(ctx.bin.clone()),
                addr: None,
            },
            // A TCP connection to the harness's loopback listener and its abortive close
            // (workload.rs `connect_close`): socket (`sock_create` program), connect
            // (`connect4`: the grant decision), close.
            Self {
                name: "connect+close",
                kind: "connect",
                iters: 20_000 / s,
                warmup: 1_000,
                path: None,
                addr: Some(ctx.listener.addr),
            },
        ]
    }
}

/// The file the `utimes` workload sets the times of: writable under the task grant.
#[must_use]
pub fn times_file(ctx: &Ctx) -> PathBuf {
    ctx.file.with_file_name("times")
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
fn unique_id() -> u64 {
    (u64::from(std::process::id()) << 20) | NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Drains the ring buffer on the harness CPU (as the daemon's event thread would), counting
/// events per session.
struct Consumer {
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 2]>,
    /// The latest decisions (for error messages).
    recent: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    /// While set, the ring buffer is not read (so the kernel sends no wake-ups).
    paused: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// Programs loaded and attached (unpinned: dropping this detaches them), with two sessions.
pub struct Attached {
    pub engine: Engine,
    pub allowed: u64,
    pub stopped: u64,
    consumer: Consumer,
    pub load_time: Duration,
    /// A governed process that never runs (held before exec): keeps the syscall tracepoints
    /// attached for `UngovernedLive`.
    idle: Option<(Gated, bool)>,
}

impl Attached {
    pub fn load(ctx: &Ctx) -> Result<Self> {
        let t = Instant::now();
        let opts = EngineOptions { backend: ctx.backend, ..EngineOptions::default() };
        let mut engine = Engine::load(&opts).context("loading the eBPF programs")?;
        let load_time = t.elapsed();
        // What the (dynamically linked, Rust) workload binary needs to start: its own exec, the
        // loader cache and libraries, and /proc (Rust's runtime reads /proc/self/maps).
        let mut reads: Vec<PathBuf> = ["/etc/ld.so.cache", "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/proc"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect();
        reads.dedup();
        let base = kgrant::compile(&[(PathBuf::from(&ctx.exe), None)], &reads, &[])?;
        let mut task = kgrant::compile(
            &[(ctx.bin.clone(), None)],
            &[ctx.file.parent().context("file dir")?.into()],
            &[times_file(ctx)],
        )?;
        // The connect+close workload's listener, as `--allow-connect tcp://127.0.0.1:PORT` would
        // grant it: in the task grant, like the open workload's file (so an allowed connect costs
        // a miss in the base grant's trie and a hit in the task grant's).
        let connect = [format!("tcp://{}", ctx.listener.addr)];
        kgrant::compile_net(&mut task, &connect, &[], &mut mcpguard::grant::net::system_resolver)?;
        let (base_id, task_id) = (unique_id(), unique_id());
        engine.install_grant(base_id, &base)?;
        engine.install_grant(task_id, &task)?;
        let (allowed, stopped) = (unique_id(), unique_id());
        let far = boot_ns() + 3_600_000_000_000;
        engine.set_session(
            allowed,
            SessionState { base_grant: base_id, task_grant: task_id, task_expires_ns: far, mode: MODE_KILL, flags: 0 },
        )?;
        engine.set_session(
            stopped,
            SessionState { base_grant: base_id, task_grant: 0, task_expires_ns: 0, mode: MODE_AUDIT, flags: 0 },
        )?;
        let mut rb = engine.take_events().context("event ring buffer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let recent = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let paused = Arc::new(AtomicBool::new(false));
        let (s2, c2, r2, p2) = (stop.clone(), counts.clone(), recent.clone(), paused.clone());
        let handle = std::thread::Builder::new().name("bench-events".into()).spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                if p2.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                for d in engine::read_ring(&mut rb, Duration::from_millis(20)) {
                    let i = usize::from(d.session_id != allowed);
                    c2[i].fetch_add(1, Ordering::Relaxed);
                    if d.action != "audited" {
                        let mut r = r2.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        r.push_back(format!("{} {} {} {:?} pid {}", d.hook, d.action, d.reason, d.path, d.pid));
                        if r.len() > 8 {
                            r.pop_front();
                        }
                    }
                }
            }
        })?;
        let consumer = Consumer { stop, counts, recent, paused, handle: Some(handle) };
        Ok(Self { engine, allowed, stopped, consumer, load_time, idle: None })
    }

    /// Governs an idle process (held before exec, killed when this is dropped), so that the
    /// syscall tracepoints are attached while the workload itself is ungoverned. `sealed`: in a
    /// session marked `SESSION_SEALED` (guard tracepoints not needed).
    pub fn hold_idle(&mut self, ctx: &Ctx, sealed: bool) -> Result<()> {
        if self.idle.is_none() {
            let session = if sealed {
                let mut st = self.engine.session_state(self.allowed).context("allowed session")?;
                st.flags |= SESSION_SEALED;
                let id = unique_id();
                self.engine.set_session(id, st)?;
                id
            } else {
                self.allowed
            };
            let g = Gated::spawn(&workload::argv(&ctx.exe, "getppid", 1, 0, None))?;
            self.engine.add_process(u32::try_from(g.pid)?, session)?;
            self.idle = Some((g, sealed));
        }
        let (open, guard, _) = self.engine.syscall_hooks();
        anyhow::ensure!(open > 0 && (guard == 0) == sealed, "syscall tracepoints attached: {open} open, {guard} guard");
        Ok(())
    }

    /// Events delivered so far for `session` (only our two sessions are told apart).
    #[must_use]
    pub fn events(&self, session: u64) -> u64 {
        self.consumer.counts[usize::from(session != self.allowed)].load(Ordering::Relaxed)
    }

    /// Stops or resumes reading the ring buffer. While the reader is behind, the kernel does not
    /// wake it per event (a wake-up is sent only when a record lands where the reader waits).
    pub fn pause_consumer(&self, paused: bool) {
        self.consumer.paused.store(paused, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(30)); // the reader leaves its poll
    }

    /// The latest non-audit decisions (why a governed workload was stopped).
    pub fn recent(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(100));
        self.consumer.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }

    pub fn lost(&self) -> u64 {
        self.engine.counters().map_or(0, |c| c[COUNTER_LOST as usize])
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.consumer.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.consumer.handle.take() {
            let _ = h.join();
        }
    }
}

/// One block's outcome.
pub struct Block {
    pub ns_per_op: f64,
    /// Events delivered for the block's session during the block (governed arms).
    pub events: u64,
    pub ops: u64,
}

/// Runs one block: a fresh workload process, pinned, governed (for the governed arms) before
/// it runs anything, timed by itself.
pub fn run_block(ctx: &Ctx, w: &Workload, arm: Arm, att: Option<&mut Attached>) -> Result<Block> {
    let mut argv = workload::argv(&ctx.exe, w.kind, w.iters, w.warmup, w.path.as_deref());
    if let Some(mode) = arm.seccomp() {
        argv.extend(["--seccomp".into(), mode.into()]);
    }
    if let Some(addr) = w.addr {
        argv.extend(["--addr".into(), addr.to_string()]);
    }
    let mut child = Gated::spawn(&argv)?;
    if let Some(cpu) = ctx.workload_cpu {
        pin(child.pid, cpu)?;
    }
    let session = match (arm, &att) {
        (Arm::Allowed, Some(a)) => Some(a.allowed),
        (Arm::Stopped, Some(a)) => Some(a.stopped),
        (Arm::Allowed | Arm::Stopped, None) => bail!("governed arm without programs"),
        _ => None,
    };
    let mut att = att;
    let ev0 = match (session, att.as_deref_mut()) {
        (Some(s), Some(a)) => {
            a.engine.add_process(u32::try_from(child.pid)?, s)?;
            a.events(s)
        }
        _ => 0,
    };
    child.release()?;
    let why = |att: &Option<&mut Attached>| att.as_ref().map(|a| a.recent()).unwrap_or_default();
    let line = match child.read_line() {
        Ok(l) => l,
        Err(e) => bail!("{} ({}): {e}; latest decisions: {:?}", w.name, arm.name(), why(&att)),
    };
    if let Err(e) = child.wait_ok() {
        bail!(
            "{} ({}): the workload did not finish cleanly: {e}; latest decisions: {:?}",
            w.name,
            arm.name(),
            why(&att)
        );
    }
    let mut f = line.split(' ');
    let (Some("ns"), Some(ns), Some(it)) = (f.next(), f.next(), f.next()) else {
        bail!("bad workload output {line:?}")
    };
    let (ns, it): (f64, f64) = (ns.parse()?, it.parse()?);
    let ops = w.iters + w.warmup;
    let events = match (session, att) {
        (Some(s), Some(a)) => {
            let paused = a.consumer.paused.load(Ordering::Relaxed);
            let expect = if arm == Arm::Stopped && !paused { ops } else { 0 };
            super::proc::wait_until(Duration::from_secs(2), Duration::from_millis(5), || a.events(s) - ev0 >= expect);
            a.events(s) - ev0
        }
        _ => 0,
    };
    Ok(Block { ns_per_op: ns / it, events, ops })
}

/// One `connect-once` probe to `addr`, in `session` (`None`: ungoverned); its outcome (`ok`,
/// `refused`, `error: ...`).
fn connect_probe(ctx: &Ctx, att: &mut Attached, session: Option<u64>, addr: SocketAddrV4) -> Result<String> {
    let mut argv = workload::argv(&ctx.exe, "connect-once", 0, 0, None);
    argv.extend(["--addr".into(), addr.to_string()]);
    let mut child = Gated::spawn(&argv)?;
    if let Some(s) = session {
        att.engine.add_process(u32::try_from(child.pid)?, s)?;
    }
    child.release()?;
    let line = child.read_line()?;
    child.wait_ok()?;
    Ok(line.strip_prefix("connect ").unwrap_or(&line).to_owned())
}

/// Before connect+close governed-allowed is timed: the network programs see the workload and
/// decide by its grant. In the governed-allowed session a connect to the granted listener
/// passes and one to another loopback listener (bound here, never accepted: the handshake
/// completes in its queue) is refused with EPERM; the same connect from an ungoverned process
/// passes, so the refusal is the grant's.
fn connect_check(ctx: &Ctx, att: &mut Attached) -> Result<Value> {
    let other = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the not-granted listener")?;
    let std::net::SocketAddr::V4(other) = other.local_addr()? else { bail!("listener is not IPv4") };
    let session = att.allowed;
    let granted = connect_probe(ctx, att, Some(session), ctx.listener.addr)?;
    let not_granted = connect_probe(ctx, att, Some(session), other)?;
    let ungoverned = connect_probe(ctx, att, None, other)?;
    let j = json!({
        "granted": {"addr": ctx.listener.addr.to_string(), "governed": granted},
        "not_granted": {"addr": other.to_string(), "governed": not_granted, "ungoverned": ungoverned},
    });
    eprintln!(
        "bench: connect check: governed to granted {} {granted}; to not granted {other} {not_granted} \
         (ungoverned: {ungoverned})",
        ctx.listener.addr
    );
    if (granted.as_str(), not_granted.as_str(), ungoverned.as_str()) != ("ok", "refused", "ok") {
        bail!("connect check failed: {j}; latest decisions: {:?}", att.recent());
    }
    Ok(j)
}

/// Attaches or detaches so that what is attached matches `want` (dropping a state detaches
/// its programs: links and perf events are closed).
fn ensure(ctx: &Ctx, st: &mut State, want: Arm, loads: &mut Vec<f64>) -> Result<()> {
    let ok = match (&*st, want) {
        (State::Detached, Arm::Detached | Arm::SeccompFilter | Arm::SeccompNotif | Arm::LauncherFilter)
        | (State::Engine(_), Arm::Allowed | Arm::Stopped) => true,
        (State::Engine(a), Arm::Ungoverned) => a.idle.is_none() && !a.engine.syscall_hooks_attached(),
        (State::Engine(a), Arm::UngovernedLive) => matches!(a.idle, Some((_, false))),
        (State::Engine(a), Arm::UngovernedLiveSealed) => matches!(a.idle, Some((_, true))),
        (State::Floor { arm, .. }, w) => *arm == w,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    *st = State::Detached;
    *st = match want {
        Arm::Detached | Arm::SeccompFilter | Arm::SeccompNotif | Arm::LauncherFilter => State::Detached,
        Arm::FloorExit => State::Floor { arm: want, _progs: vec![Empty::attach("syscalls", "sys_exit_openat")?] },
        Arm::FloorEnterExit => State::Floor {
            arm: want,
            _progs: vec![Empty::attach("syscalls", "sys_exit_openat")?, Empty::attach("syscalls", "sys_enter_bpf")?],
        },
        Arm::Ungoverned | Arm::UngovernedLive | Arm::UngovernedLiveSealed | Arm::Allowed | Arm::Stopped => {
            let mut a = Attached::load(ctx)?;
            loads.push(a.load_time.as_secs_f64() * 1e3);
            if matches!(want, Arm::UngovernedLive | Arm::UngovernedLiveSealed) {
                a.hold_idle(ctx, want == Arm::UngovernedLiveSealed)?;
            }
            State::Engine(Box::new(a))
        }
    };
    Ok(())
}

/// One (workload, arm) pair measured in ABBA order.
pub struct PairResult {
    pub workload: &'static str,
    pub arm: Arm,
    pub ratio: Summary,
    pub base_ns: Summary,
    pub arm_ns: Summary,
    pub events_per_op: f64,
    pub lost: u64,
}

impl PairResult {
    pub fn json(&self) -> Value {
        json!({
            "workload": self.workload, "arm": self.arm.name(), "ratio": self.ratio.json(),
            "baseline_ns_per_op": self.base_ns.json(), "arm_ns_per_op": self.arm_ns.json(),
            "events_per_op": self.events_per_op, "events_lost": self.lost,
        })
    }
}

pub fn run(ctx: &Ctx) -> Result<(Vec<PairResult>, Value)> {
    let mut out = Vec::new();
    let mut st = State::Detached;
    let mut loads = Vec::new();
    let mut check = Value::Null;
    // Listen-queue overflows during connect+close blocks (0 unless the listener fell behind).
    let mut overflows = 0;
    for w in Workload::all(ctx) {
        if !ctx.workloads.is_empty() && !ctx.workloads.iter().any(|k| k == w.kind) {
            continue;
        }
        for arm in Arm::MEASURED {
            // The reference arms matter where every syscall pays (null syscall) or the hooked one
            // does; the open supervisor only for opens. Not for connect+close: its hook is a
            // cgroup program, not a syscall tracepoint, and the seccomp design leaves it alone.
            if (arm.reference() && matches!(w.kind, "forkexec" | "connect"))
                || (arm == Arm::SeccompNotif && w.kind != "open")
                || (arm == Arm::LauncherFilter && !matches!(w.kind, "getppid" | "utimes"))
            {
                continue;
            }
            let (mut base, mut arm_ns) = (Vec::new(), Vec::new());
            let (mut events, mut ops, mut lost) = (0u64, 0u64, 0u64);
            for slot in abba(ctx.blocks) {
                let this = if slot == Slot::Arm { arm } else { Arm::Detached };
                ensure(ctx, &mut st, this, &mut loads)?;
                if this == Arm::Allowed && w.kind == "connect" && check.is_null() {
                    check = connect_check(ctx, st.engine().context("governed arm without programs")?)?;
                }
                let lost0 = st.engine().map_or(0, |a| a.lost());
                let ov0 = listen_overflows();
                let b = run_block(ctx, &w, this, st.engine())?;
                if w.addr.is_some() {
                    let ov = listen_overflows().saturating_sub(ov0);
                    if ov > 0 {
                        eprintln!(
                            "bench: WARNING: {} ({}): {ov} listen-queue overflow(s) during the block \
                             (a SYN retransmitted after 1 s: the block's time is not the workload's)",
                            w.name,
                            this.name()
                        );
                    }
                    overflows += ov;
                }
                match slot {
                    Slot::Base => base.push(b.ns_per_op),
                    Slot::Arm => {
                        arm_ns.push(b.ns_per_op);
                        events += b.events;
                        ops += b.ops;
                        lost += st.engine().map_or(0, |a| a.lost()) - lost0;
                    }
                }
            }
            let r = PairResult {
                workload: w.name,
                arm,
                ratio: Summary::of(&paired_ratios(&base, &arm_ns)),
                base_ns: Summary::of(&base),
                arm_ns: Summary::of(&arm_ns),
                events_per_op: events as f64 / ops.max(1) as f64,
                lost,
            };
            eprintln!(
                "bench: {:<24} {:<28} ratio {:.3} (IQR {:.3}-{:.3}, n={}) {:.1} -> {:.1} ns/op",
                w.name,
                arm.name(),
                r.ratio.median,
                r.ratio.q1,
                r.ratio.q3,
                r.ratio.n,
                r.base_ns.median,
                r.arm_ns.median
            );
            out.push(r);
        }
    }
    drop(st);
    let json = json!({
        "blocks_per_arm": ctx.blocks,
        "engine_load_ms": Summary::of(&loads).json(),
        "connect_check": check,
        "listener_accepted": ctx.listener.accepted(),
        "connect_listen_overflows": overflows,
        "results": out.iter().map(PairResult::json).collect::<Vec<_>>(),
    });
    Ok((out, json))
}
