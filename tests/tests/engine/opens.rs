//! Opens decided on the file object and its ancestry.
#[allow(clippy::wildcard_imports, reason = "shared fixtures and imports of the engine target")]
use super::*;

// ---- opens ---------------------------------------------------------------------------------------

/// Scratch layout for the open tests: ROOT/granted/{in.txt, link -> ROOT/outside.txt, sub/},
/// ROOT/outside.txt.
pub(super) struct OpenTree {
    pub(super) dir: Scratch,
    pub(super) granted: PathBuf,
    pub(super) inside: PathBuf,
    pub(super) outside: PathBuf,
    pub(super) sub: PathBuf,
}

impl OpenTree {
    pub(super) fn new(tag: &str) -> Self {
        let dir = Scratch::new(tag);
        let granted = dir.path("granted");
        let sub = granted.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let inside = granted.join("in.txt");
        std::fs::write(&inside, "inside\n").unwrap();
        let outside = dir.path("outside.txt");
        std::fs::write(&outside, "outside\n").unwrap();
        std::os::unix::fs::symlink(&outside, granted.join("link")).unwrap();
        Self { dir, granted, inside, outside, sub }
    }
}

/// A read inside a read grant works (content checked); a write-open of the same file under a
/// read-only grant is killed with access "w" (O_TRUNC has already happened when the kill lands:
/// only the kill is asserted).
#[test]
fn read_inside_grant_works_write_on_read_only_grant_is_killed() {
    let mut k = Kernel::shared();
    let t = OpenTree::new("open-rw");
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(CAT), Path::new(TEE)], std::slice::from_ref(&t.granted), &[]);
    let session = k.session(base, task, LONG);
    assert_eq!(expect_runs(&mut k, session, &[CAT, s(&t.inside)]), "inside\n");

    let (st, _, pid) = run_with_input(&mut k, session, &[TEE, s(&t.inside)], b"overwrite\n");
    assert!(killed(st), "write under a read-only grant must be killed: {st:?}");
    let ev = k.wait_event(session, |d| d.hook == "open" && d.tgid == pid);
    assert_kill(&ev, "open", "not_granted", task);
    assert_eq!(ev.access, "w");
    assert_object(&ev, &t.inside);
}

/// Decisions are on the opened object, not on the path string: a file outside the grant is
/// killed whether named directly, through a symlink inside the granted directory (the event
/// reports the TARGET), or through `GRANTED/../`.
#[test]
fn open_outside_grant_is_killed_whatever_the_path() {
    let mut k = Kernel::shared();
    let t = OpenTree::new("open-out");
    let base = k.baseline();
    let (task, _) = k.grant(&[Path::new(CAT)], std::slice::from_ref(&t.granted), &[]);
    let session = k.session(base, task, LONG);
    let via_link = t.granted.join("link");
    let via_dotdot = t.granted.join("../outside.txt");
    for path in [&t.outside, &via_link, &via_dotdot] {
        let ev = expect_killed(&mut k, session, &[CAT, s(path)], "open");
        assert_kill(&ev, "open", "not_granted", task);
        assert_eq!(ev.access, "r");
        assert_object(&ev, &t.outside);
    }
    let _ = &t.dir;
}

/// Access bits combine along the ancestry: read on GRANTED plus write on GRANTED/sub lets a
/// process create and write files in sub, read them back, and open them read-write; writes
/// elsewhere under GRANTED stay forbidden, and read-write on a read-only file is killed as "rw".
#[test]
fn write_grant_on_subdir_with_read_on_parent() {
    let mut k = Kernel::shared();
    let t = OpenTree::new("open-sub");
    let base = k.baseline();
    let (task, _) = k.grant(
        &[Path::new(CAT), Path::new(TEE), Path::new(DASH)],
        std::slice::from_ref(&t.granted),
        std::slice::from_ref(&t.sub),
    );
    let session = k.session(base, task, LONG);
    let w = t.sub.join("w.txt");
    let (st, out, _) = run_with_input(&mut k, session, &[TEE, s(&w)], b"written\n");
    assert!(st.success() && out == "written\n", "write in sub: {st:?} {out:?}");
    assert_eq!(std::fs::read_to_string(&w).unwrap(), "written\n");
    assert_eq!(expect_runs(&mut k, session, &[CAT, s(&w)]), "written\n", "read via the parent's grant");
    let rw = format!("exec 3<>{}", s(&w));
    expect_runs(&mut k, session, &[DASH, "-c", &rw]);
    assert_eq!(expect_runs(&mut k, session, &[CAT, s(&t.inside)]), "inside\n");

    let x = t.granted.join("x.txt");
    let (st, _, pid) = run_with_input(&mut k, session, &[TEE, s(&x)], b"no\n");
    assert!(killed(st), "write outside sub must be killed: {st:?}");
    if k.engine.backend().synchronous_deny() {
        // Creating the file is a change of a directory the grant does not let it write: refused
        // by `path_mknod` (O_CREAT passes it) before the file exists.
        let ev = k.wait_event(session, |d| d.hook == "mknod" && d.tgid == pid);
        assert_kill(&ev, "mknod", "not_granted", task);
        assert_eq!(ev.path.as_deref(), Some(s(&x)), "{ev:#?}");
        assert!(!x.exists(), "nothing was created");
    } else {
        let ev = k.wait_event(session, |d| d.hook == "open" && d.tgid == pid);
        assert_kill(&ev, "open", "not_granted", task);
        assert_eq!(ev.access, "w");
        assert_object(&ev, &x);
    }

    let rw = format!("exec 3<>{}", s(&t.inside));
    let ev = expect_killed(&mut k, session, &[DASH, "-c", &rw], "open");
    assert_kill(&ev, "open", "not_granted", task);
    assert_eq!(ev.access, "rw");
    assert_object(&ev, &t.inside);
}
