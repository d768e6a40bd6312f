//! Path operations on the deny backends (LSM `path_*` hooks, fmod_ret on `security_path_*`):
//! creating, removing, renaming and truncating need write access under the grant to what they
//! change; refused with EPERM before anything changes (asserted on the objects). The kill
//! backend has no such hooks: there the launcher's Landlock write ceiling refuses them for the
//! processes mcpguard starts (tests/tests/ceiling.rs).
#[allow(clippy::wildcard_imports, reason = "shared fixtures and imports of the engine target")]
use super::*;
use mcpguard_tests::{PATH_TOOLS, entries, snapshot, times};

#[test]
fn path_operations_need_write_access_to_what_they_change() {
    let mut k = Kernel::shared();
    if !k.engine.backend().synchronous_deny() {
        eprintln!(
            "no path hooks on the {} backend (the write ceiling covers launched processes)",
            k.engine.backend().name()
        );
        return;
    }
    // What status and the metrics say about this host.
    let channels = k.engine.channels();
    for ch in ["path_ops", "metadata", "times", "times_now"] {
        assert!(channels.contains(&(ch, "eperm")), "{ch}: {channels:?}");
    }
    let inside = Scratch::new("pin");
    let outside = Scratch::new("pout");
    let victim = outside.path("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::create_dir(outside.path("dir")).unwrap();
    std::fs::write(inside.path("mine"), "mine\n").unwrap();
    let before = (snapshot(&victim), snapshot(&outside.path("dir")), entries(&outside.0));
    // After the snapshot's read (relatime moves atime once after a write, not again).
    let victim_times = times(&victim);
    let exec: Vec<&Path> = PATH_TOOLS.iter().map(Path::new).collect();
    let base = k.baseline();
    // Read on both trees, write on `inside`: a read grant allows no change.
    let (task, _) =
        k.grant(&exec, &[inside.0.clone(), outside.0.clone(), p("/dev/null")], &[inside.0.clone(), p("/dev/null")]);
    let session = unique_id();
    k.set_mode(session, base, task, LONG, mcpguard_common::MODE_DENY);
    let (i, o) = (inside.0.display(), outside.0.display());
    let script = format!(
        "for op in \
           'rm -f {o}/victim' 'rmdir {o}/dir' 'mv {o}/victim {i}/taken' 'mv {i}/mine {o}/planted' \
           'mkdir {o}/new' 'ln -s /etc/shadow {o}/link' 'mkfifo {o}/fifo' 'truncate -s 0 {o}/victim' \
           'touch -d @978307200 {o}/victim' 'touch {o}/victim'; do \
           (eval \"$op\") 2>/dev/null; echo \"refused $? $op\"; done; \
         echo one > {i}/a && mv {i}/a {i}/b && mkdir {i}/d && rmdir {i}/d && rm {i}/b && \
         touch {i}/t && touch -d @978307200 {i}/t && echo inside-ok"
    );
    let (st, out, _) = run(&mut k, session, &[DASH, "-c", &script]);
    assert!(st.success(), "deny mode: the shell keeps running: {st:?} {out}");
    let refused: Vec<&str> = out.lines().filter(|l| l.starts_with("refused ")).collect();
    assert_eq!(refused.len(), 10, "{out}");
    for l in &refused {
        assert!(l.starts_with("refused 1 "), "refused with EPERM, nobody killed: {l}\n{out}");
    }
    assert!(out.contains("inside-ok"), "create, write, rename, remove, touch inside the grant: {out}");
    assert_eq!(times(&victim), victim_times, "`touch` (given times, and now) changed no time");
    assert_eq!((snapshot(&victim), snapshot(&outside.path("dir")), entries(&outside.0)), before);
    assert_eq!(times(&inside.path("t")).2, 978_307_200, "touch -d inside the write grant");
    assert_eq!(std::fs::read_to_string(inside.path("mine")).unwrap(), "mine\n");
    // One event per refused operation kind, each naming the entry it would have changed.
    // (`truncate` opens the file for writing first: that open is what is refused.)
    for hook in ["unlink", "rmdir", "rename", "mkdir", "symlink", "mknod", "utimes"] {
        let ev = k.wait_event(session, |d| d.hook == hook);
        assert_eq!((ev.action, ev.reason), ("denied", "not_granted"), "{ev:#?}");
        assert!(ev.path.as_deref().is_some_and(|p| p.starts_with(&o.to_string())), "{ev:#?}");
    }
}

/// Mode and owner changes need write access and `metadata = true` on the object (LSM
/// `path_chmod`, `path_chown`); extended attributes are refused to governed processes (the inode
/// hooks give no mount to walk the grant's ancestry with). EPERM before anything changes.
#[test]
fn metadata_changes_need_a_metadata_grant() {
    let mut k = Kernel::shared();
    if !k.engine.backend().synchronous_deny() {
        eprintln!(
            "no path hooks on the {} backend (the launcher's seccomp filter refuses metadata)",
            k.engine.backend().name()
        );
        return;
    }
    let dir = Scratch::new("meta");
    std::fs::create_dir(dir.path("w")).unwrap();
    std::fs::create_dir(dir.path("m")).unwrap();
    let (wf, mf) = (dir.path("w/f"), dir.path("m/f"));
    std::fs::write(&wf, "w\n").unwrap();
    std::fs::write(&mf, "m\n").unwrap();
    // Times need write access (no metadata flag): `r` is only readable, `w/t` writable.
    let (rf, tf) = (dir.path("r"), dir.path("w/t"));
    std::fs::write(&rf, "r\n").unwrap();
    std::fs::write(&tf, "t\n").unwrap();
    let _ = (std::fs::read(&rf), std::fs::read(&tf));
    let r_times = times(&rf);
    let before = snapshot(&wf);
    let base = k.baseline();
    let exec: Vec<&Path> = [DASH, "/usr/bin/chmod", "/usr/bin/chown", HELPER].iter().map(Path::new).collect();
    let mut g = mcpguard::grant::kgrant::compile(
        &exec.iter().map(|p| (p.to_path_buf(), None)).collect::<Vec<_>>(),
        std::slice::from_ref(&dir.0),
        &[dir.path("w"), p("/dev/null")],
    )
    .unwrap();
    mcpguard::grant::kgrant::add_paths(
        &mut g,
        &[dir.path("m")],
        mcpguard_common::ACCESS_WRITE | mcpguard_common::ACCESS_METADATA,
    )
    .unwrap();
    let task = unique_id();
    k.engine.install_grant(task, &g).unwrap();
    k.grants.push((task, g));
    let session = unique_id();
    k.set_mode(session, base, task, LONG, mcpguard_common::MODE_DENY);
    let (w, m) = (wf.display(), mf.display());
    let script = format!(
        "/usr/bin/chmod 777 {w}; echo chmod-w $?; /usr/bin/chown 65534 {w}; echo chown-w $?; \
         /usr/bin/chmod 600 {m}; echo chmod-m $?; /usr/bin/chown 65534 {m}; echo chown-m $?; \
         {HELPER} setxattr {m}; echo R; {HELPER} times {r}; echo T; {HELPER} times {t}",
        r = rf.display(),
        t = tf.display(),
    );
    let (st, out, _) = run(&mut k, session, &[DASH, "-c", &script]);
    assert!(st.success(), "{st:?} {out}");
    for (line, want) in [("chmod-w", "1"), ("chown-w", "1"), ("chmod-m", "0"), ("chown-m", "0")] {
        assert!(out.contains(&format!("{line} {want}")), "{line} exit {want}: {out}");
    }
    assert!(out.contains("setxattr errno 1"), "{out}");
    // Every times syscall, given times or now: EPERM on the readable file, allowed on the
    // writable one.
    let (r_out, t_out) = out.split_once("\nT\n").unwrap_or_else(|| panic!("{out}"));
    for call in ["utimensat", "futimens", "utimes", "utime", "futimesat", "now"] {
        assert!(r_out.contains(&format!("times {call} errno 1")), "{call} refused on r: {out}");
        assert!(t_out.contains(&format!("times {call} ok")), "{call} allowed on w/t: {out}");
    }
    assert_eq!(times(&rf), r_times, "the read-only file's times are exactly as before");
    let ev = k.wait_event(session, |d| d.hook == "utimes");
    assert_eq!((ev.action, ev.reason, ev.access.as_str()), ("denied", "not_granted", "w"), "{ev:#?}");
    assert_eq!(ev.path.as_deref(), Some(s(&rf)), "{ev:#?}");
    assert_eq!(snapshot(&wf), before, "a write grant without metadata changes nothing");
    let md = std::fs::metadata(&mf).unwrap();
    assert_eq!((md.mode() & 0o777, md.uid()), (0o600, 65534), "inside the metadata grant");
    let ev = k.wait_event(session, |d| d.hook == "setattr");
    assert_eq!((ev.action, ev.reason, ev.access.as_str()), ("denied", "not_granted", "wm"), "{ev:#?}");
    assert_eq!(ev.path.as_deref(), Some(s(&wf)), "{ev:#?}");
    let ev = k.wait_event(session, |d| d.hook == "xattr");
    assert_eq!((ev.action, ev.reason), ("denied", "not_granted"), "{ev:#?}");
}
