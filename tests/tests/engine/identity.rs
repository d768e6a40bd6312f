//! Binary identity (fingerprint, rename, copy, hard link), fileless exec, scripts.
#[allow(clippy::wildcard_imports, reason = "shared fixtures and imports of the engine target")]
use super::*;

// ---- binary identity -----------------------------------------------------------------------------

/// An approved binary modified in place (same inode, one byte appended) no longer matches its
/// fingerprint: exec is killed as `binary_changed`, and the event names that same inode.
#[test]
fn binary_modified_in_place_is_killed_as_changed() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("modify");
    let bin = dir.copy_bin(TRUE, "tool");
    let base = k.baseline();
    let (task, _) = k.grant(&[&bin], &[], &[]);
    let session = k.session(base, task, LONG);
    expect_runs(&mut k, session, &[s(&bin)]);

    let before = object_id(&bin);
    std::fs::OpenOptions::new().append(true).open(&bin).unwrap().write_all(b"\0").unwrap();
    assert_eq!(object_id(&bin), before, "same inode");
    let ev = expect_killed(&mut k, session, &[s(&bin)], "exec");
    assert_kill(&ev, "exec", "binary_changed", task);
    assert_object(&ev, &bin);
}

/// A different file renamed over the approved path (new inode under the approved name) is
/// `binary_changed`: the kernel recognises the approved (directory, name).
#[test]
fn binary_replaced_by_rename_is_killed_as_changed() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("rename");
    let bin = dir.copy_bin(TRUE, "tool");
    let base = k.baseline();
    let (task, _) = k.grant(&[&bin], &[], &[]);
    let session = k.session(base, task, LONG);
    expect_runs(&mut k, session, &[s(&bin)]);

    let approved = object_id(&bin);
    let tmp = dir.copy_bin("/usr/bin/false", ".tool.new");
    std::fs::rename(&tmp, &bin).unwrap();
    assert_ne!(object_id(&bin), approved, "a new object holds the approved name");
    let ev = expect_killed(&mut k, session, &[s(&bin)], "exec");
    assert_kill(&ev, "exec", "binary_changed", task);
    assert_object(&ev, &bin);
}

/// A byte-identical copy of the approved binary, under the same file name in another directory,
/// is a different object: `not_granted` (not `binary_changed`: the name is bound to its directory).
#[test]
fn copy_of_approved_binary_elsewhere_is_not_granted() {
    let mut k = Kernel::shared();
    let a = Scratch::new("copy-a");
    let b = Scratch::new("copy-b");
    let bin = a.copy_bin(TRUE, "tool");
    let copy = b.copy_bin(s(&bin), "tool");
    let base = k.baseline();
    let (task, _) = k.grant(&[&bin], &[], &[]);
    let session = k.session(base, task, LONG);
    expect_runs(&mut k, session, &[s(&bin)]);
    let ev = expect_killed(&mut k, session, &[s(&copy)], "exec");
    assert_kill(&ev, "exec", "not_granted", task);
    assert_object(&ev, &copy);
}

/// Exec grants are per object: a hard link made BEFORE approval is the approved object under
/// another name and runs. Creating a link changes the inode's ctime, which is part of the
/// fingerprint: a link made AFTER approval is, deliberately, a change of the approved binary
/// (`binary_changed`, through every name), and needs a new approval.
#[test]
fn hardlink_made_before_approval_runs_link_after_approval_is_a_change() {
    let mut k = Kernel::shared();
    let a = Scratch::new("link-a");
    let b = Scratch::new("link-b");
    let bin = a.copy_bin(TRUE, "tool");
    let alias = b.path("alias");
    std::fs::hard_link(&bin, &alias).unwrap();
    let base = k.baseline();
    let (task, g) = k.grant(&[&bin], &[], &[]);
    let session = k.session(base, task, LONG);
    expect_runs(&mut k, session, &[s(&alias)]);
    expect_runs(&mut k, session, &[s(&bin)]);

    std::fs::hard_link(&bin, b.path("late")).unwrap();
    let md = std::fs::metadata(&bin).unwrap();
    let fp = g.exec[0].fingerprint;
    assert_ne!(
        (md.ctime(), md.ctime_nsec()),
        (fp.ctime_sec, i64::from(fp.ctime_nsec)),
        "link() must have changed ctime for this test to mean anything"
    );
    let ev = expect_killed(&mut k, session, &[s(&bin)], "exec");
    assert_kill(&ev, "exec", "binary_changed", task);
    assert_object(&ev, &bin);
}

// ---- memfd ---------------------------------------------------------------------------------------

/// Exec of an anonymous memfd holding the bytes of a granted binary is killed: the exec'd object
/// is the memfd, which no grant names. Here the memfd is made by the test and inherited at a
/// known fd; the governed dash runs `exec /proc/self/fd/N`.
#[test]
fn exec_of_inherited_memfd_is_not_granted() {
    let mut k = Kernel::shared();
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(DASH), Path::new(TRUE)], &[], &[]);
    let session = k.session(base, task, LONG);
    // Control: the same grant runs the real binary through dash.
    expect_runs(&mut k, session, &[DASH, "-c", TRUE]);

    // SAFETY: valid NUL-terminated name; CLOEXEC so that no other test's child inherits it.
    let mut fd = unsafe { libc::memfd_create(c"mcpg-test".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_EXEC) };
    if fd < 0 {
        // MFD_EXEC exists from Linux 6.3; before that memfds are executable by default.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(c"mcpg-test".as_ptr(), libc::MFD_CLOEXEC) };
    }
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptor owned here.
    let mut mem = unsafe { File::from_raw_fd(fd) };
    mem.write_all(&std::fs::read(TRUE).unwrap()).unwrap();
    let md = mem.metadata().unwrap();
    let script = format!("exec /proc/self/fd/{fd}");
    let mut g = Gated::spawn_with(&[DASH, "-c", &script], None, move |cmd| {
        // SAFETY: fcntl is async-signal-safe; only this child's descriptor table is touched.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let pid = g.pid();
    k.engine.add_process(pid, session).unwrap();
    g.release();
    let (st, _) = g.finish();
    assert!(killed(st), "memfd exec must be killed: {st:?}");
    let ev = k.wait_event(session, |d| d.hook == "exec" && d.tgid == pid);
    assert_kill(&ev, "exec", "not_granted", task);
    assert_eq!((ev.dev, ev.ino), (kernel_dev(md.dev()), md.ino()), "{ev:#?}");
    assert!(ev.path.as_deref().is_some_and(|p| p.contains("memfd:mcpg-test")), "{ev:#?}");
    drop(mem);
}

/// The same from inside the governed process: memfd_create + write + fexecve (execveat with
/// AT_EMPTY_PATH). The helper prints the memfd's inode before it execs.
#[test]
fn fexecve_of_own_memfd_is_not_granted() {
    let mut k = Kernel::shared();
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(HELPER), Path::new(TRUE)], &[p(TRUE)], &[]);
    let session = k.session(base, task, LONG);
    let mut g = Gated::spawn(&[HELPER, "memfd-exec", TRUE]);
    let pid = g.pid();
    k.engine.add_process(pid, session).unwrap();
    g.release();
    let line = g.read_line();
    let f: Vec<&str> = line.split(' ').collect();
    let (ino, st_dev): (u64, u64) = match f.as_slice() {
        ["ino", i, "dev", d] => (i.parse().unwrap(), d.parse().unwrap()),
        _ => panic!("helper said {line:?}"),
    };
    let (st, _) = g.finish();
    assert!(killed(st), "fexecve of a memfd must be killed: {st:?}");
    let ev = k.wait_event(session, |d| d.hook == "exec" && d.tgid == pid);
    assert_kill(&ev, "exec", "not_granted", task);
    assert_eq!((ev.dev, ev.ino), (kernel_dev(st_dev), ino), "{ev:#?}");
}

// ---- scripts -------------------------------------------------------------------------------------

/// An interpreter grant lets the interpreter run; what code it runs is bounded by the read
/// grant: a script must be readable under the grant. Inline code (-c) is not distinguished on
/// this backend.
///
/// Proves: `dash SCRIPT` and a `#!/usr/bin/dash` script exec'd directly (the kernel decides the
/// exec on the interpreter) are killed when dash opens a script outside the read grant (event:
/// open, `not_granted`, the script's object and path); the same script in a read-granted
/// directory runs; inline `-c` code runs.
#[test]
fn script_runs_only_if_readable_under_the_grant() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("script");
    let granted = dir.path("granted");
    let other = dir.path("other");
    for d in [&granted, &other] {
        std::fs::create_dir(d).unwrap();
        let f = d.join("job.sh");
        std::fs::write(&f, "#!/usr/bin/dash\necho script-ran\n").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(DASH)], std::slice::from_ref(&granted), &[]);
    let session = k.session(base, task, LONG);

    let ok = granted.join("job.sh");
    assert_eq!(expect_runs(&mut k, session, &[DASH, s(&ok)]), "script-ran\n");
    assert_eq!(expect_runs(&mut k, session, &[s(&ok)]), "script-ran\n", "shebang exec");
    assert_eq!(expect_runs(&mut k, session, &[DASH, "-c", "echo inline-ran"]), "inline-ran\n");

    let bad = other.join("job.sh");
    for argv in [&[DASH, s(&bad)][..], &[s(&bad)][..]] {
        let ev = expect_killed(&mut k, session, argv, "open");
        assert_kill(&ev, "open", "not_granted", task);
        assert_eq!(ev.access, "r");
        assert_object(&ev, &bad);
    }
}
