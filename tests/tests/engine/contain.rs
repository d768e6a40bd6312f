//! Containment beyond exec and open grants: other processes' `/proc` entries, signals, and the
//! integrity of events when several governed processes are denied at once.
#[allow(clippy::wildcard_imports, reason = "shared fixtures and imports of the engine target")]
use super::*;

/// An ungoverned process this test started (its own process group), killed and reaped on drop.
fn outsider() -> ChildGuard {
    let child = Command::new(SLEEP)
        .arg("60")
        .env_clear()
        .env("SECRET_TOKEN", "outsider-secret")
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn outsider");
    ChildGuard(child)
}

fn alive(c: &mut ChildGuard) -> bool {
    matches!(c.0.try_wait(), Ok(None))
}

/// The baselines grant `/proc` read (runtimes read `/proc/self/...`, which cannot be granted by
/// path). That must not open other processes' entries: `environ` holds their tokens. Decided on
/// the proc inode's process, not on the path: `/proc/self`, a process of the session and the
/// entries of no process (`/proc/meminfo`) follow the grant; any other process's entries are
/// `other_process` whatever the grant says.
#[test]
fn proc_entries_of_other_processes_are_denied_whatever_the_grant() {
    let mut k = Kernel::shared();
    let mut out = outsider();
    let o = out.0.id();
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(DASH), Path::new(CAT), Path::new(SLEEP)], &[p("/proc"), p("/dev/null")], &[]);
    let session = k.session(base, task, LONG);

    for entry in ["environ", "cmdline", "maps", "fd", &format!("task/{o}/environ")] {
        let path = format!("/proc/{o}/{entry}");
        let ev = expect_killed(&mut k, session, &[CAT, &path], "open");
        assert_kill(&ev, "open", "other_process", task);
        assert_eq!(ev.path.as_deref(), Some(path.as_str()), "{ev:#?}");
    }
    assert!(alive(&mut out), "the outsider is untouched");

    // The session's own entries follow the grant.
    let own = expect_runs(&mut k, session, &[CAT, "/proc/self/status", "/proc/self/maps", "/proc/meminfo"]);
    assert!(own.contains("Name:\tcat") && own.contains("MemTotal:"), "{own}");
    let child = expect_runs(
        &mut k,
        session,
        &[
            DASH,
            "-c",
            "/usr/bin/sleep 30 & c=$!; echo child=$c; /usr/bin/cat /proc/$c/stat /proc/$c/task/$c/status; kill -9 $c",
        ],
    );
    let c = child.lines().next().and_then(|l| l.strip_prefix("child=")).expect("child pid line");
    assert!(
        child.contains(&format!("\n{c} (")) && child.contains(&format!("Pid:\t{c}")),
        "own child's entries: {child}"
    );

    // Ungoverned processes read what they always could.
    let env = std::fs::read(format!("/proc/{o}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&env).contains("SECRET_TOKEN"));
}

/// A governed process signals only processes of its own session (LSM `task_kill`, fmod_ret
/// `security_task_kill`): synchronous EPERM, and the target never receives the signal. The kill
/// backend has no hook that can refuse a signal before it is delivered (README: signals); there
/// this test only checks that it is not run as if enforced.
#[test]
fn signals_reach_only_the_own_session_on_deny_backends() {
    let mut k = Kernel::shared();
    if !k.engine.backend().synchronous_deny() {
        eprintln!("signals are not refused on the {} backend: nothing to test", k.engine.backend().name());
        return;
    }
    let mut out = outsider();
    let o = out.0.id();
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(DASH), Path::new(SLEEP)], &[p("/dev/null")], &[]);
    let session = unique_id();
    k.set_mode(session, base, task, LONG, mcpguard_common::MODE_DENY);
    let script = format!(
        "kill -TERM {o}; echo out=$?; kill -KILL -{o}; echo group=$?; kill -0 {o}; echo probe=$?; \
         /usr/bin/sleep 30 & c=$!; kill -TERM $c; wait $c; echo in=$?"
    );
    let (st, stdout, _) = run(&mut k, session, &[DASH, "-c", &script]);
    assert!(st.success(), "the sender keeps running (deny mode): {st:?} {stdout}");
    for refused in ["out=1", "group=1", "probe=1"] {
        assert!(stdout.contains(refused), "{refused} expected: {stdout}");
    }
    assert!(stdout.contains("in=143"), "a signal inside the session is delivered: {stdout}");
    assert!(alive(&mut out), "the outsider received nothing");
    let ev = k.wait_event(session, |d| d.hook == "signal");
    assert_eq!((ev.action, ev.reason), ("denied", "signal_outside_session"), "{ev:#?}");
    assert_eq!((ev.target_pid, ev.signal), (Some(o), Some(15)), "{ev:#?}");
}

/// Several governed processes denied at the same time: every event names the object its own
/// process opened (events of different programs never share a buffer). Audit mode, so that each
/// process keeps opening and the events pile up on every backend.
#[test]
fn events_stay_intact_under_concurrent_denials() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("conc");
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(DASH)], &[], &[]);
    let session = unique_id();
    k.set_mode(session, base, task, LONG, mcpguard_common::MODE_AUDIT);
    const PROCS: usize = 4;
    const OPENS: usize = 100;
    let mut gated = Vec::new();
    let mut files = std::collections::HashMap::new();
    for n in 0..PROCS {
        let f = dir.path(&format!("file-{n}-{}", "x".repeat(n * 5)));
        std::fs::write(&f, "x\n").unwrap();
        let script = format!("i=0; while [ $i -lt {OPENS} ]; do read x < {}; i=$((i+1)); done", f.display());
        let g = Gated::spawn(&[DASH, "-c", &script]);
        k.engine.add_process(g.pid(), session).unwrap();
        files.insert(g.pid(), f);
        gated.push(g);
    }
    for g in &mut gated {
        g.release();
    }
    for g in gated {
        let (st, _) = g.finish();
        assert!(st.success(), "audit mode stops nothing: {st:?}");
    }
    let mut seen = std::collections::HashMap::<u32, usize>::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.values().sum::<usize>() < PROCS * OPENS {
        assert!(Instant::now() < deadline, "events seen per process: {seen:?}");
        for ev in k.events_for(session, Duration::from_millis(200)) {
            let want = files.get(&ev.tgid).unwrap_or_else(|| panic!("event of a process not started here: {ev:#?}"));
            assert_eq!((ev.hook, ev.action, ev.reason), ("open", "audited", "not_granted"), "{ev:#?}");
            // The object's identity, and its path (components are cut at 31 bytes for display;
            // these are shorter).
            assert_eq!((ev.dev, ev.ino), object_id(want), "event of {} names another object: {ev:#?}", ev.tgid);
            assert_eq!(ev.path.as_deref(), want.to_str(), "event of {} names another path: {ev:#?}", ev.tgid);
            *seen.entry(ev.tgid).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), PROCS, "{seen:?}");
}

/// A copy of the test library whose constructor writes `$MCPG_PRELOAD_MARK` (tests/src/preload.c)
/// in `dir`.
fn marking_library(dir: &Scratch) -> PathBuf {
    let p = dir.path("libmark.so");
    std::fs::write(&p, include_bytes!(env!("MCPG_PRELOAD_SO"))).unwrap();
    p
}

/// W^X for grants through `mprotect` too (the kill backend's `sys_enter_mprotect` and
/// `sys_enter_pkey_mprotect` programs, the LSM backends' `file_mprotect`): a readable mapping of a
/// file the session can write, made executable, stops the process before the call returns
/// (asserted on the mark it would write next); a read-only granted file and anonymous memory (a
/// JIT's code) pass.
#[test]
fn a_file_mapping_made_executable_is_decided_by_its_file() {
    let mut k = Kernel::shared();
    let ws = Scratch::new("mprot-ws");
    let ro = Scratch::new("mprot-ro");
    let (writable, readonly) = (marking_library(&ws), marking_library(&ro));
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(HELPER)], &[ws.0.clone(), ro.0.clone()], std::slice::from_ref(&ws.0));
    let session = k.session(base, task, LONG);
    for (src, name) in [("anon", "anon"), (s(&readonly), "ro")] {
        let mark = ws.path(&format!("mark-{name}"));
        let out = expect_runs(&mut k, session, &[HELPER, "mprotect-exec", src, s(&mark)]);
        assert!(out.contains("mprotect ok") && mark.exists(), "{name}: {out}");
    }
    for extra in [&[][..], &["pkey"][..]] {
        let mark = ws.path("mark-writable");
        let mut argv = vec![HELPER, "mprotect-exec", s(&writable), s(&mark)];
        argv.extend_from_slice(extra);
        let ev = expect_killed(&mut k, session, &argv, "mprotect");
        assert_kill(&ev, "mprotect", "not_granted", task);
        assert_object(&ev, &writable);
        assert!(!mark.exists(), "{argv:?}: nothing may run after a session-writable file became executable");
    }
}

/// W^X for grants, on every backend (the kill backend's `sys_enter_mmap` program, the LSM
/// backends' `mmap_file`): a library the session can write is never mapped executable, so
/// `LD_PRELOAD` of it into an approved binary is stopped before its constructor runs (asserted
/// on the constructor's side effect); the same library from a read-only granted directory loads.
#[test]
fn preloaded_library_the_session_can_write_never_runs() {
    let mut k = Kernel::shared();
    let ws = Scratch::new("pre-ws");
    let ro = Scratch::new("pre-ro");
    let (writable, readonly) = (marking_library(&ws), marking_library(&ro));
    let mark = ws.path("mark");
    let env = "/usr/bin/env";
    let base = k.baseline();
    // LD_PRELOAD is allowed for `true` (a code-injecting variable, refused unless named): what is
    // decided here is the mapping of the library it names.
    let preloaded = mcpguard::grant::policy::ExecRule {
        env: vec!["LD_PRELOAD".into()],
        ..mcpguard::grant::policy::ExecRule::path(TRUE)
    };
    let (task, _) = k.grant_rules(
        &[mcpguard::grant::policy::ExecRule::path(env), preloaded],
        &[ws.0.clone(), ro.0.clone()],
        std::slice::from_ref(&ws.0),
    );
    let session = k.session(base, task, LONG);
    let mark_var = format!("MCPG_PRELOAD_MARK={}", mark.display());

    let preload = format!("LD_PRELOAD={}", writable.display());
    let ev = expect_killed(&mut k, session, &[env, &preload, &mark_var, TRUE], "mmap");
    assert_kill(&ev, "mmap", "not_granted", task);
    assert_object(&ev, &writable);
    assert!(!mark.exists(), "the constructor of a session-writable library must never run");

    let preload = format!("LD_PRELOAD={}", readonly.display());
    expect_runs(&mut k, session, &[env, &preload, &mark_var, TRUE]);
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "ran\n", "a read-only granted library loads");
}
