//! Kernel enforcement engine, kill backend, on this machine's kernel: real object, real
//! processes, assertions on what the kernel did (exit status, events, map state).
//!
//! The scenarios share one engine per test process (`Kernel::shared`: loading verifies every
//! program, which is most of a scenario's cost under QEMU), each in sessions of its own that are
//! ended when it is done, so between scenarios the engine governs nothing (the tests of what is
//! attached while nothing is governed rely on it). Loading, adoption and detaching on exit are
//! exercised by the daemon tests (tests/tests/daemon.rs). Each governs only processes it spawns, and checks both the process's fate
//! (`killed` = SIGKILL) and the decision event (hook, action, reason, session, grant, and the
//! object's dev/ino/path).
//!
//! One test target (the QEMU matrix builds `--test engine`), split by concern: basics here;
//! `identity` (binary identity, memfd, scripts) · `opens` · `contain` (other processes' /proc,
//! signals, concurrent events) · `paths` (path operations on the deny backends) · `tree` (process trees and threads,
//! session state: expiry, swap, no grant; cgroup sessions) · `deny` (deny mode, ld.so, io_uring,
//! guard syscalls).
#![allow(unused_imports, reason = "the scenario modules share this file's imports via `use super::*`")]
use std::{
    fs::File,
    io::Write as _,
    os::{
        fd::FromRawFd as _,
        unix::{fs::MetadataExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use mcpguard::{grant::kgrant::kernel_dev, kernel::events::Decision};
use mcpguard_tests::{
    Cgroup, Gated, Kernel, Scratch, boot_ns, killed, object_id, read_line_from, runtime_read_paths, unique_id,
};

const LONG: Duration = Duration::from_secs(600);
const DASH: &str = "/usr/bin/dash";
const CAT: &str = "/usr/bin/cat";
const TEE: &str = "/usr/bin/tee";
const TRUE: &str = "/usr/bin/true";
const SLEEP: &str = "/usr/bin/sleep";
const SETSID: &str = "/usr/bin/setsid";
const ECHO: &str = "/usr/bin/echo";
/// Test helper programs (tests/src/bin/mcpg-helper.rs), built by cargo for this test.
const HELPER: &str = env!("CARGO_BIN_EXE_mcpg-helper");

// ---- helpers -------------------------------------------------------------------------------------

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// Runs `argv` as a gated process governed by `session`; returns (status, stdout, pid).
fn run(k: &mut Kernel, session: u64, argv: &[&str]) -> (ExitStatus, String, u32) {
    run_with_input(k, session, argv, b"")
}

fn run_with_input(k: &mut Kernel, session: u64, argv: &[&str], input: &[u8]) -> (ExitStatus, String, u32) {
    let mut g = Gated::spawn(argv);
    let pid = g.pid();
    k.engine.add_process(pid, session).unwrap();
    g.release_with(input);
    let (st, out) = g.finish();
    (st, out, pid)
}

/// Runs `argv` governed by `session` and expects a normal, successful exit; returns stdout.
#[track_caller]
fn expect_runs(k: &mut Kernel, session: u64, argv: &[&str]) -> String {
    let (st, out, _) = run(k, session, argv);
    assert!(st.success(), "{argv:?} must run: {st:?}; events {:#?}", k.events_for(session, Duration::from_millis(300)));
    out
}

/// Runs `argv` governed by `session`, expects SIGKILL, and returns the `hook` event of that
/// process (the gated process keeps its pid across exec, so the event's tgid is known).
#[track_caller]
fn expect_killed(k: &mut Kernel, session: u64, argv: &[&str], hook: &str) -> Decision {
    let (st, out, pid) = run(k, session, argv);
    assert!(killed(st), "{argv:?} must be killed: {st:?}, stdout {out:?}");
    k.wait_event(session, |d| d.hook == hook && d.tgid == pid)
}

/// The event is a kill for `reason` under `grant`.
#[track_caller]
fn assert_kill(ev: &Decision, hook: &str, reason: &str, grant: u64) {
    assert_eq!((ev.hook, ev.action, ev.reason, ev.grant_id), (hook, "killed", reason, grant), "{ev:#?}");
}

/// The event names the object at `path` (dev/ino as the kernel encodes them, and the path).
#[track_caller]
fn assert_object(ev: &Decision, path: &Path) {
    assert_eq!((ev.dev, ev.ino), object_id(path), "object of {}: {ev:#?}", path.display());
    assert_eq!(ev.path.as_deref(), Some(s(path)), "{ev:#?}");
}

/// Waits (bounded) until CLOCK_BOOTTIME has passed `t_ns`.
fn wait_boot_past(t_ns: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while boot_ns() <= t_ns {
        assert!(Instant::now() < deadline, "boot clock did not reach {t_ns}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILLs a process this test started (by pid, read from the process's own output).
fn kill_own(pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()), nix::sys::signal::SIGKILL);
}

/// A child started without the gate (to be adopted while running): killed and reaped on drop
/// if a failed assertion leaves it running.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// (ppid, session id) from /proc/PID/stat.
fn ppid_and_sid(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (f[1].parse().unwrap(), f[3].parse().unwrap())
}

mod cmdline;
mod contain;
mod deny;
mod identity;
mod net;
mod opens;
mod paths;
mod tree;

// ---- basics ------------------------------------------------------------------------------------

#[test]
fn granted_exec_runs_ungranted_is_killed_ungoverned_untouched() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("exec");
    let ok_bin = dir.copy_bin("/usr/bin/true", "granted-true");
    let other = dir.copy_bin("/usr/bin/true", "other-true");
    let base = k.baseline();
    let (task, _) = k.grant(&[&ok_bin], &[], &[]);
    let session = k.session(base, task, LONG);

    let mut g = Gated::spawn(&[ok_bin.to_str().unwrap()]);
    k.engine.add_process(g.pid(), session).unwrap();
    g.release();
    let (st, _) = g.finish();
    assert!(st.success(), "granted binary must run: {st:?} {:#?}", k.events_for(session, Duration::from_millis(300)));

    let mut g = Gated::spawn(&[other.to_str().unwrap()]);
    let pid = g.pid();
    k.engine.add_process(pid, session).unwrap();
    g.release();
    let (st, _) = g.finish();
    assert!(killed(st), "ungranted binary must be killed: {st:?}");
    let ev = k.wait_event(session, |d| d.hook == "exec" && d.tgid == pid);
    assert_eq!((ev.action, ev.reason), ("killed", "not_granted"));
    assert_eq!(ev.grant_id, task);
    let md = std::fs::metadata(&other).unwrap();
    assert_eq!(ev.ino, std::os::unix::fs::MetadataExt::ino(&md));
    assert_eq!(ev.dev, mcpguard::grant::kgrant::kernel_dev(std::os::unix::fs::MetadataExt::dev(&md)));
    assert_eq!(ev.path.as_deref(), other.to_str());

    // Ungoverned: same binary, no registration.
    let st = std::process::Command::new(&other).status().unwrap();
    assert!(st.success(), "ungoverned process must be untouched: {st:?}");
}

#[test]
fn offsets_from_btf_read_the_real_tgid_and_start_time() {
    // The fork hook reads the child's tgid and start time through the BTF offsets; the entry it
    // writes must be keyed by the real pid, and not be treated as a recycled PID.
    let mut k = Kernel::shared();
    let base = k.baseline();
    let sh = Path::new("/usr/bin/dash");
    let sleep = Path::new("/usr/bin/sleep");
    // dash gives a background job /dev/null as stdin: that open must be granted too.
    let (task, _) = k.grant(&[sh, sleep], &[std::path::PathBuf::from("/dev/null")], &[]);
    let session = k.session(base, task, LONG);
    let mut g = Gated::spawn(&["/usr/bin/dash", "-c", "/usr/bin/sleep 30 & echo $!; wait"]);
    k.engine.add_process(g.pid(), session).unwrap();
    g.release();
    let mut line = String::new();
    {
        use std::io::BufRead as _;
        let so = g.child.stdout.as_mut().unwrap();
        std::io::BufReader::new(so).read_line(&mut line).unwrap();
    }
    let child: u32 = line.trim().parse().unwrap();
    assert_eq!(k.engine.process_session(child), Some(session), "child tgid via offsets");
    // The child runs sleep (granted): it must still be alive, i.e. its start time matched.
    std::thread::sleep(Duration::from_millis(200));
    assert!(Path::new(&format!("/proc/{child}")).exists(), "{:#?}", k.events_for(session, Duration::from_millis(200)));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child as i32), nix::sys::signal::SIGKILL);
    drop(g);
}

#[test]
fn syscall_tracepoints_are_attached_only_while_something_is_governed() {
    // Syscall tracepoints slow down every syscall on the machine, so they are attached when the
    // first process is governed (before it runs) and detached when nothing is governed; the
    // enforcement they carry must hold from the first open after each re-attachment.
    // The shared engine between scenarios governs nothing (each scenario's sessions are ended).
    let mut k = Kernel::shared();
    assert!(!k.engine.syscall_hooks_attached(), "an engine that governs nothing attaches no syscall tracepoint");
    let dir = Scratch::new("lazy");
    let secret = dir.path("secret");
    std::fs::write(&secret, "x").unwrap();
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new("/usr/bin/cat")], &[], &[]);
    for round in 0..2 {
        let session = k.session(base, task, LONG);
        let mut g = Gated::spawn(&["/usr/bin/cat", s(&secret)]);
        let pid = g.pid();
        k.engine.add_process(pid, session).unwrap();
        assert!(k.engine.syscall_hooks_attached(), "round {round}: attached once a process is governed");
        g.release();
        let (st, out) = g.finish();
        assert!(killed(st), "round {round}: the ungranted open must be stopped: {st:?} {out:?}");
        let ev = k.wait_event(session, |d| d.hook == "open" && d.tgid == pid);
        assert_kill(&ev, "open", "not_granted", task);
        // The kernel forgets the dead process by itself; the engine detaches when told the
        // session is over (the daemon does this from its housekeeping).
        let deadline = Instant::now() + Duration::from_secs(5);
        while k.engine.process_session(pid).is_some() {
            assert!(Instant::now() < deadline, "exited process still in the map");
            std::thread::sleep(Duration::from_millis(10));
        }
        k.engine.remove_session(session);
        assert!(!k.engine.syscall_hooks_attached(), "round {round}: detached when nothing is governed");
    }
    // Ending a session that still has a live process removes the process too, and detaches.
    let session = k.session(base, task, LONG);
    let g = Gated::spawn(&["/usr/bin/true"]);
    k.engine.add_process(g.pid(), session).unwrap();
    assert!(k.engine.syscall_hooks_attached());
    k.engine.end_session(session);
    assert_eq!(k.engine.process_session(g.pid()), None, "the session's processes are no longer governed");
    assert!(!k.engine.syscall_hooks_attached(), "detached once the session ended");
    drop(g);
    let st = Command::new("/usr/bin/cat").arg(&secret).stdout(Stdio::null()).status().unwrap();
    assert!(st.success(), "ungoverned process untouched: {st:?}");
}

#[test]
fn a_sealed_session_needs_no_guard_tracepoints() {
    // `SESSION_SEALED`: the launcher's seccomp filter refuses the guard syscalls in every process
    // of the session, so only the open-family tracepoints (kill backend) are attached for it; an
    // unsealed session brings the guard tracepoints back.
    let mut k = Kernel::shared();
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new("/usr/bin/true")], &[], &[]);
    let sealed = unique_id();
    let state = |flags| mcpguard_common::SessionState {
        base_grant: base,
        task_grant: task,
        task_expires_ns: boot_ns() + LONG.as_nanos() as u64,
        mode: mcpguard_common::MODE_KILL,
        flags,
    };
    k.engine.set_session(sealed, state(mcpguard_common::SESSION_SEALED)).unwrap();
    let g = Gated::spawn(&["/usr/bin/true"]);
    k.engine.add_process(g.pid(), sealed).unwrap();
    let (open, guard, _) = k.engine.syscall_hooks();
    assert_eq!(guard, 0, "no guard tracepoint for a sealed session");
    assert_eq!(open > 0, k.engine.backend().name() == "kill", "open-family tracepoints only on the kill backend");
    // The session loses the seal while it has a process: guards first.
    k.engine.set_session(sealed, state(0)).unwrap();
    assert!(k.engine.syscall_hooks().1 > 0, "guard tracepoints for an unsealed session");
    k.engine.set_session(sealed, state(mcpguard_common::SESSION_SEALED)).unwrap();
    let pid = g.pid();
    drop(g);
    let deadline = Instant::now() + Duration::from_secs(5);
    while k.engine.process_session(pid).is_some() {
        assert!(Instant::now() < deadline, "exited process still in the map");
        std::thread::sleep(Duration::from_millis(10));
    }
    k.engine.remove_session(sealed);
    assert_eq!(k.engine.syscall_hooks(), (0, 0, 0), "nothing governed: nothing attached");
}
