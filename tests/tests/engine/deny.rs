//! Deny mode and the checks whose outcome depends on the backend in force; guard syscalls.
#[allow(clippy::wildcard_imports, reason = "shared fixtures and imports of the engine target")]
use super::*;

// ------------------------------------------------------------------------------------------------
// Deny mode: the outcome depends on the backend in force, and each backend's outcome is asserted.
// ------------------------------------------------------------------------------------------------

/// Deny mode. Synchronous backends (LSM): the forbidden exec fails with EPERM (shell status 126),
/// the forbidden open fails (cat status 1), and the process that asked keeps running. Kill
/// backend: deny is carried out as a kill (status 128+9), and the parent shell still runs.
#[test]
fn deny_mode_outcome_matches_the_backend_in_force() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("deny");
    let other = dir.copy_bin("/usr/bin/true", "other-true");
    let outside = Scratch::new("deny-out");
    std::fs::write(outside.path("o.txt"), "OUT\n").unwrap();
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new("/usr/bin/dash"), Path::new("/usr/bin/cat")], &[], &[]);
    let session = mcpguard_tests::unique_id();
    k.set_mode(session, base, task, LONG, mcpguard_common::MODE_DENY);
    let script = format!(
        "{other}; echo rc1=$?; /usr/bin/cat {o}; echo rc2=$?",
        other = other.display(),
        o = outside.path("o.txt").display()
    );
    let mut g = Gated::spawn(&["/usr/bin/dash", "-c", &script]);
    k.engine.add_process(g.pid(), session).unwrap();
    g.release();
    let (st, out) = g.finish();
    assert!(st.success(), "the asking shell survives: {st:?} {out}");
    let sync = k.engine.backend().synchronous_deny();
    let (rc1, rc2, action) = if sync { ("rc1=126", "rc2=1", "denied") } else { ("rc1=137", "rc2=137", "killed") };
    assert!(out.contains(rc1) && out.contains(rc2), "backend {}: {out}", k.engine.backend().name());
    assert!(!out.contains("OUT"));
    let ev = k.wait_event(session, |d| d.hook == "exec");
    assert_eq!((ev.action, ev.reason), (action, "not_granted"));
    let ev = k.wait_event(session, |d| d.hook == "open");
    assert_eq!((ev.action, ev.reason), (action, "not_granted"));
}

/// Only a synchronous backend can pass this: `ld.so ./prog` maps an ungranted program with
/// PROT_EXEC without any exec. The program lies in a directory the session may write, so it is
/// never mapped executable (W^X): EPERM on the deny backends (ld.so fails), a kill at
/// `sys_enter_mmap` on the kill backend (deny mode is carried out as a kill there).
#[test]
fn ld_so_running_an_ungranted_writable_binary_is_refused() {
    let mut k = Kernel::shared();
    let ws = Scratch::new("ldso");
    let prog = ws.copy_bin("/usr/bin/true", "dropped-true");
    let ld = std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2").unwrap();
    let base = k.baseline();
    let (task, _) = k.grant(&[ld.as_path()], std::slice::from_ref(&ws.0), std::slice::from_ref(&ws.0));
    let session = mcpguard_tests::unique_id();
    k.set_mode(session, base, task, LONG, mcpguard_common::MODE_DENY);
    let mut g = Gated::spawn(&[ld.to_str().unwrap(), prog.to_str().unwrap()]);
    k.engine.add_process(g.pid(), session).unwrap();
    g.release();
    let (st, _) = g.finish();
    if k.engine.backend().synchronous_deny() {
        assert!(!st.success() && !killed(st), "ld.so must fail, not be killed: {st:?}");
        let ev = k.wait_event(session, |d| d.hook == "mmap");
        assert_eq!((ev.action, ev.reason), ("denied", "not_granted"));
        assert_eq!(ev.path.as_deref(), prog.to_str());
    } else {
        assert!(killed(st), "kill backend: the executable mapping is stopped: {st:?}");
        let ev = k.wait_event(session, |d| d.hook == "mmap");
        assert_eq!((ev.action, ev.reason), ("killed", "not_granted"));
        assert_eq!(ev.path.as_deref(), prog.to_str());
    }
}

/// io_uring operations bypass the open-family hooks, so a governed process may not set up a
/// ring: on the kill backend it dies at io_uring_setup; an ungoverned process is untouched.
#[test]
fn io_uring_setup_is_refused_to_governed_processes() {
    let mut k = Kernel::shared();
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(HELPER)], &[], &[]);
    let session = k.session(base, task, LONG);
    let mut g = Gated::spawn(&[HELPER, "io-uring"]);
    let pid = g.pid();
    k.engine.add_process(pid, session).unwrap();
    g.release();
    let (st, out) = g.finish();
    if k.engine.backend().synchronous_deny() {
        // Synchronous backends decide on the file objects io_uring opens (security_file_open
        // sees them), so the ring itself is allowed there.
        assert!(st.success(), "{st:?} {out}");
    } else {
        assert!(killed(st), "governed io_uring_setup must be stopped: {st:?} {out}");
        assert!(!out.contains("io_uring_setup "), "no ring may be handed out: {out}");
        let ev = k.wait_event(session, |d| d.hook == "io_uring" && d.tgid == pid);
        assert_eq!((ev.action, ev.reason, ev.grant_id), ("killed", "not_granted", task));
    }
    // Ungoverned: io_uring works as usual (or is unavailable for reasons of its own, not ours).
    let out = std::process::Command::new(HELPER).arg("io-uring").output().unwrap();
    assert!(out.status.code().is_some(), "ungoverned process untouched: {:?}", out.status);
}

/// A governed process (which may be root) must not reach the guard's own machinery: bpf() (our
/// pinned maps), ptrace (the daemon), mounts and hard links (aliasing objects from elsewhere
/// into a granted tree). Each attempt
/// is stopped and reported with the syscall's name; an ungoverned process is untouched.
#[test]
fn guard_syscalls_are_stopped_for_governed_processes() {
    let mut k = Kernel::shared();
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(HELPER)], &[], &[]);
    let session = k.session(base, task, LONG);
    for (name, nr) in [
        ("bpf", "321"),
        ("ptrace", "101"),
        ("pidfd_getfd", "438"),
        ("mount", "165"),
        ("open_tree", "428"),
        ("fspick", "433"),
        ("linkat", "265"),
    ] {
        let mut g = Gated::spawn(&[HELPER, "raw-syscall", nr]);
        let pid = g.pid();
        k.engine.add_process(pid, session).unwrap();
        g.release();
        let (st, out) = g.finish();
        assert!(killed(st), "{name}: governed process must be stopped: {st:?} {out}");
        assert!(!out.contains("returned"), "{name}: the syscall must not complete: {out}");
        let ev = k.wait_event(session, |d| d.hook == "syscall" && d.tgid == pid);
        assert_eq!((ev.action, ev.syscall), ("killed", Some(name)));
        let out = std::process::Command::new(HELPER).args(["raw-syscall", nr]).output().unwrap();
        assert!(out.status.success(), "{name}: ungoverned process untouched: {:?}", out.status);
    }
}
