//! Process trees and threads, session state (expiry, swap, no grant), cgroup sessions.
use super::opens::OpenTree;
#[allow(clippy::wildcard_imports, reason = "shared fixtures and imports of the engine target")]
use super::*;

// ---- process trees and threads -------------------------------------------------------------------

/// Leaving the tree does not leave the session: a grandchild made by a double fork (dash forks
/// setsid, `setsid -f` forks again) that starts a new session and is re-parented away from the
/// governed process is still governed: its forbidden open is killed under the session, and a
/// long-lived one is in the session map.
#[test]
fn grandchild_after_double_fork_and_setsid_is_still_governed() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("setsid");
    let outside = dir.path("outside.txt");
    std::fs::write(&outside, "x\n").unwrap();
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(DASH), Path::new(SETSID), Path::new(CAT), Path::new(SLEEP)], &[], &[]);
    let session = k.session(base, task, LONG);
    let script =
        format!("{SETSID} -f {DASH} -c 'echo $$; exec {SLEEP} 30'\n{SETSID} -f {DASH} -c '{CAT} {}'\n", s(&outside));
    let mut g = Gated::spawn(&[DASH, "-c", &script]);
    let root = g.pid();
    k.engine.add_process(root, session).unwrap();
    g.release();

    let gc: u32 = g.read_line().trim().parse().unwrap();
    assert_eq!(k.engine.process_session(gc), Some(session), "long-lived grandchild");
    let (ppid, sid) = ppid_and_sid(gc);
    assert_ne!(ppid, root, "the grandchild was re-parented");
    assert_eq!(sid, gc, "the grandchild leads its own session");

    let ev = k.wait_event(session, |d| d.hook == "open" && d.path.as_deref() == Some(s(&outside)));
    assert_kill(&ev, "open", "not_granted", task);
    assert_ne!(ev.tgid, root);
    assert_object(&ev, &outside);

    kill_own(gc);
    let (st, _) = g.finish();
    assert!(st.success(), "the governed root itself did nothing forbidden: {st:?}");
}

/// Decisions are keyed by tgid, which all threads share: an open from a non-main thread of a
/// governed process is decided (and killed) under the process's session. The event carries the
/// thread's id as `pid` and the process's as `tgid`.
#[test]
fn open_from_a_non_main_thread_is_governed() {
    let mut k = Kernel::shared();
    let t = OpenTree::new("thread");
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(HELPER)], std::slice::from_ref(&t.granted), &[]);
    let session = k.session(base, task, LONG);
    let out = expect_runs(&mut k, session, &[HELPER, "thread-open", s(&t.inside)]);
    assert!(out.ends_with("read 7\n"), "{out:?}");

    let mut g = Gated::spawn(&[HELPER, "thread-open", s(&t.outside)]);
    let pid = g.pid();
    k.engine.add_process(pid, session).unwrap();
    g.release();
    let line = g.read_line();
    let tid: u32 = line.strip_prefix("tid ").and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
    assert_ne!(tid, pid, "the helper opens from a second thread");
    let (st, _) = g.finish();
    assert!(killed(st), "{st:?}");
    let ev = k.wait_event(session, |d| d.hook == "open" && d.tgid == pid);
    assert_kill(&ev, "open", "not_granted", task);
    assert_eq!(ev.pid, tid, "{ev:#?}");
    assert_object(&ev, &t.outside);
}

/// `govern_tree` adopts a process that is already running together with the descendants it
/// already has (children and a grandchild), and new children after that are governed too.
#[test]
fn govern_tree_adopts_existing_descendants() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("tree");
    let outside = dir.path("outside.txt");
    std::fs::write(&outside, "x\n").unwrap();
    let base = k.baseline();
    // dash gives background jobs /dev/null as stdin; that open may come after adoption.
    let (task, _) = k.grant(&[Path::new(DASH), Path::new(SLEEP), Path::new(CAT)], &[p("/dev/null")], &[]);
    let session = k.session(base, task, LONG);
    let script = format!(
        "{SLEEP} 30 & echo $!\n\
         {DASH} -c '{SLEEP} 30 & echo $!; wait' & echo $!\n\
         read _\n\
         {CAT} {}\n\
         echo survived\n",
        s(&outside)
    );
    let mut root = ChildGuard(
        Command::new(DASH)
            .args(["-c", &script])
            .env_clear()
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let root_pid = root.0.id();
    let mut so = root.0.stdout.take().unwrap();
    let mut kids: Vec<u32> = (0..3).map(|_| read_line_from(&mut so).trim().parse().unwrap()).collect();
    kids.sort_unstable();

    let mut governed = k.engine.govern_tree(root_pid, session).unwrap();
    governed.sort_unstable();
    let mut expected = kids.clone();
    expected.push(root_pid);
    expected.sort_unstable();
    assert_eq!(governed, expected, "root, two children and a grandchild");
    for pid in &expected {
        assert_eq!(k.engine.process_session(*pid), Some(session), "pid {pid}");
    }

    // A child forked after adoption is governed too.
    root.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let ev = k.wait_event(session, |d| d.hook == "open" && d.path.as_deref() == Some(s(&outside)));
    assert_kill(&ev, "open", "not_granted", task);
    assert_object(&ev, &outside);
    assert_eq!(read_line_from(&mut so), "survived");
    for pid in kids {
        kill_own(pid);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = root.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "root did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(st.success(), "{st:?}");
}

// ---- session state: expiry, swap, no grant ---------------------------------------------------------

/// After the task grant's expiry (kernel-side, CLOCK_BOOTTIME), a process governed while it was
/// valid is killed with `grant_expired` for a binary and for a file the task grant named; the
/// base grant still applies; renewing the same task grant makes both work again.
#[test]
fn expired_task_grant_is_killed_as_expired() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("expire");
    let bin = dir.copy_bin(TRUE, "task-tool");
    let file = dir.path("task.txt");
    std::fs::write(&file, "task\n").unwrap();
    let (base, _) = k.grant(&[Path::new(CAT)], &runtime_read_paths(), &[]);
    let (task, _) = k.grant(&[&bin], std::slice::from_ref(&file), &[]);
    let ttl = Duration::from_millis(300);
    let session = k.session(base, task, ttl);
    let expires_by = boot_ns() + u64::try_from(ttl.as_nanos()).unwrap();

    let mut ge = Gated::spawn(&[s(&bin)]);
    let mut go = Gated::spawn(&[CAT, s(&file)]);
    let (pe, po) = (ge.pid(), go.pid());
    k.engine.add_process(pe, session).unwrap();
    k.engine.add_process(po, session).unwrap();
    wait_boot_past(expires_by);

    ge.release();
    let (st, _) = ge.finish();
    assert!(killed(st), "exec after expiry: {st:?}");
    let ev = k.wait_event(session, |d| d.hook == "exec" && d.tgid == pe);
    assert_kill(&ev, "exec", "grant_expired", task);
    assert_object(&ev, &bin);

    go.release();
    let (st, _) = go.finish();
    assert!(killed(st), "open after expiry: {st:?}");
    let ev = k.wait_event(session, |d| d.hook == "open" && d.tgid == po);
    assert_kill(&ev, "open", "grant_expired", task);
    assert_eq!(ev.access, "r");
    assert_object(&ev, &file);

    k.set(session, base, task, LONG);
    expect_runs(&mut k, session, &[s(&bin)]);
    assert_eq!(expect_runs(&mut k, session, &[CAT, s(&file)]), "task\n");
}

/// Swapping a session's task grant A -> B is one map update that takes effect at once, also for
/// processes governed before the swap: A's binary is killed (`not_granted`, grant B), B's runs.
#[test]
fn grant_swap_takes_effect_at_once() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("swap");
    let a = dir.copy_bin(TRUE, "tool-a");
    let b = dir.copy_bin(TRUE, "tool-b");
    let base = k.baseline();
    let (ga, _) = k.grant(&[&a], &[], &[]);
    let (gb, _) = k.grant(&[&b], &[], &[]);
    let session = k.session(base, ga, LONG);
    expect_runs(&mut k, session, &[s(&a)]);

    let mut g = Gated::spawn(&[s(&a)]);
    let pid = g.pid();
    k.engine.add_process(pid, session).unwrap();
    k.set(session, base, gb, LONG);
    g.release();
    let (st, _) = g.finish();
    assert!(killed(st), "A's binary after the swap: {st:?}");
    let ev = k.wait_event(session, |d| d.hook == "exec" && d.tgid == pid);
    assert_kill(&ev, "exec", "not_granted", gb);
    assert_object(&ev, &a);

    expect_runs(&mut k, session, &[s(&b)]);
}

/// A session with no grant at all (base 0, task 0), or with no state in the kernel, kills any
/// exec as `no_grant` (grant id 0).
#[test]
fn session_without_grants_kills_any_exec() {
    let mut k = Kernel::shared();
    let session = unique_id();
    k.set(session, 0, 0, LONG);
    let ev = expect_killed(&mut k, session, &[TRUE], "exec");
    assert_kill(&ev, "exec", "no_grant", 0);
    assert_object(&ev, Path::new(TRUE));

    // A registered process whose session has no state at all: there is no mode either, so the
    // backend's default denial applies (kill backend: kill; synchronous backends: EPERM).
    let stateless = unique_id();
    if k.engine.backend().synchronous_deny() {
        let mut g = Gated::spawn(&[TRUE]);
        k.engine.add_process(g.pid(), stateless).unwrap();
        g.release();
        let (st, _) = g.finish();
        assert_eq!(st.code(), Some(126), "exec refused with EPERM: {st:?}");
        let ev = k.wait_event(stateless, |d| d.hook == "exec");
        assert_eq!((ev.action, ev.reason, ev.grant_id), ("denied", "no_grant", 0));
    } else {
        let ev = expect_killed(&mut k, stateless, &[TRUE], "exec");
        assert_kill(&ev, "exec", "no_grant", 0);
    }
}

// ---- cgroup sessions -----------------------------------------------------------------------------

/// A cgroup bound to a session governs every process in it without a per-process entry:
/// granted exec runs, an ungranted exec is killed under the cgroup's session, and children
/// forked inside inherit it.
#[test]
fn cgroup_session_governs_its_processes() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("cgroup");
    let ok = dir.copy_bin(TRUE, "ok-tool");
    let bad = dir.copy_bin(TRUE, "bad-tool");
    let base = k.baseline();
    let (task, _) = k.grant(&[&ok, Path::new(DASH)], &[], &[]);
    let session = k.session(base, task, LONG);
    let cg = Cgroup::new("session");
    let id = cg.id();
    k.engine.add_cgroup(id, session).unwrap();
    assert_eq!(k.engine.cgroup_session(id), Some(session));

    let in_cgroup = |argv: &[&str]| {
        let mut g = Gated::spawn(argv);
        let pid = g.pid();
        cg.add(pid);
        assert!(cg.procs().contains(&pid));
        g.release();
        let (st, out) = g.finish();
        (st, out, pid)
    };

    let (st, _, pid) = in_cgroup(&[s(&ok)]);
    assert!(
        st.success(),
        "granted exec in the cgroup: {st:?} {:#?}",
        k.events_for(session, Duration::from_millis(300))
    );
    assert_eq!(k.engine.process_session(pid), None, "governed by cgroup, not by pid");

    let (st, _, pid) = in_cgroup(&[s(&bad)]);
    assert!(killed(st), "ungranted exec in the cgroup: {st:?}");
    let ev = k.wait_event(session, |d| d.hook == "exec" && d.tgid == pid);
    assert_kill(&ev, "exec", "not_granted", task);
    assert_object(&ev, &bad);

    let script = format!("{}; echo after", s(&bad));
    let (st, out, pid) = in_cgroup(&[DASH, "-c", &script]);
    assert!(st.success() && out == "after\n", "dash survives its child's kill: {st:?} {out:?}");
    let ev = k.wait_event(session, |d| d.hook == "exec" && d.path.as_deref() == Some(s(&bad)) && d.tgid != pid);
    assert_kill(&ev, "exec", "not_granted", task);

    k.engine.remove_cgroup(id).unwrap();
    assert_eq!(k.engine.cgroup_session(id), None);
}
