//! Kernel enforcement engine, kill backend, on this machine's kernel: real object, real
//! processes, assertions on what the kernel did (exit status, events, map state).
use std::{path::Path, time::Duration};

use mcpguard_tests::{killed, runtime_read_paths, Gated, Kernel, Scratch};

const LONG: Duration = Duration::from_secs(600);

#[test]
fn granted_exec_runs_ungranted_is_killed_ungoverned_untouched() {
    let mut k = Kernel::load();
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
    assert_eq!(ev.dev, mcpguard::kgrant::kernel_dev(std::os::unix::fs::MetadataExt::dev(&md)));
    assert_eq!(ev.path.as_deref(), other.to_str());

    // Ungoverned: same binary, no registration.
    let st = std::process::Command::new(&other).status().unwrap();
    assert!(st.success(), "ungoverned process must be untouched: {st:?}");
}

#[test]
fn offsets_from_btf_read_the_real_tgid_and_start_time() {
    // The fork hook reads the child's tgid and start time through the BTF offsets; the entry it
    // writes must be keyed by the real pid, and not be treated as a recycled PID.
    let mut k = Kernel::load();
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
    let _ = runtime_read_paths();
}
