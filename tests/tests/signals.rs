//! Signals of a launched session where the kernel has no hook that refuses them (the kill
//! backend): the real daemon decides them through the launcher's seccomp signal filter. Asserts on
//! what the targets received, not only on what the sender saw. On the deny backends the kernel's
//! `task_kill` hook decides (tests/tests/engine/contain.rs); this file checks that path is in
//! force instead.
use std::{
    io::{Read as _, Write as _},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mcpguard_tests::daemon::{TestDaemon, mcpguard_bin};

/// Process state letter of `/proc/PID/stat` (`T`: stopped), `None` once it is gone.
fn state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].chars().next()
}

fn finish(mut child: Child) -> (std::process::ExitStatus, String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let (mut out, mut err) = (String::new(), String::new());
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (st, out, err);
        }
        assert!(Instant::now() < deadline, "launched process did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_launched_session_signals_only_its_own_processes() {
    let d = TestDaemon::start("signals", None, &[]);
    let st = d.raw(br#"{"v":1,"op":"status"}"#);
    if st["channels"]["signal"] != "launcher" {
        eprintln!("signals are decided by the kernel here ({}): see engine/contain.rs", st["channels"]["signal"]);
        return;
    }
    // An unrelated process, leader of its own process group: it must receive nothing.
    let mut outsider = Command::new("/usr/bin/sleep").arg("60").process_group(0).spawn().unwrap();
    let o = outsider.id();
    let daemon = d.child.as_ref().unwrap().id();
    let script = format!(
        "read x; kill -TERM {o}; echo out=$?; kill -STOP {daemon}; echo daemon=$?; kill -0 {o}; echo probe=$?; \
         kill -TERM -{o}; echo group=$?; kill -0 $$; echo self=$?; \
         /usr/bin/sleep 30 & c=$!; kill -TERM $c; wait $c; echo in=$?"
    );
    let mut child = d.launch("sig", &script, &[]);
    let s = d.wait_session("sig");
    assert_eq!(s["signals_supervised"], true, "{s}");
    let out = d
        .cmd()
        .args(["grant", "--session", "sig", "--task", "t1", "--allow-exec", "/usr/bin/sleep", "--mode", "deny"])
        .output()
        .unwrap();
    assert!(out.status.success(), "grant: {}", String::from_utf8_lossy(&out.stderr));
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let (st, stdout, stderr) = finish(child);
    assert!(st.success(), "the sender keeps running (deny mode): {st:?} {stdout} {stderr}");
    for refused in ["out=1", "daemon=1", "probe=1", "group=1"] {
        assert!(stdout.contains(refused), "{refused} expected: {stdout} {stderr}");
    }
    assert!(stdout.contains("self=0"), "a probe of itself passes: {stdout}");
    assert!(stdout.contains("in=143"), "a signal to its own child is delivered: {stdout} {stderr}");
    // What the other side got: nothing.
    assert_eq!(outsider.try_wait().unwrap(), None, "the outsider is alive");
    assert_eq!(state(o), Some('S'), "the outsider is neither stopped nor killed");
    assert!(matches!(state(daemon), Some('S' | 'R')), "the daemon was not stopped: {:?}", state(daemon));
    let line = d.wait_audit(|l| l["session"] == "sig" && l["hook"] == "signal" && l["target_pid"] == o);
    assert_eq!((line["action"].as_str(), line["reason"].as_str()), (Some("denied"), Some("signal_outside_session")));
    assert_eq!(line["signal"], 15, "{line}");
    assert_eq!(line["task"], "t1", "{line}");
    let stop = d.wait_audit(|l| l["session"] == "sig" && l["hook"] == "signal" && l["target_pid"] == daemon);
    assert_eq!(stop["signal"], 19, "SIGSTOP to the daemon: {stop}");
    let _ = outsider.kill();
    let _ = outsider.wait();
}

/// `pidfd_send_signal` is refused with ENOSYS (its descriptor could be swapped by a sibling
/// thread between a look and the kernel's use): runtimes fall back to `kill`, which is decided.
#[test]
fn pidfd_signals_are_enosys_in_a_launched_session() {
    let d = TestDaemon::start("pidfd", None, &[]);
    let st = d.raw(br#"{"v":1,"op":"status"}"#);
    if st["channels"]["signal"] != "launcher" {
        return;
    }
    // python3 is not in the baseline; the helper binary calls the syscall itself.
    let helper = env!("CARGO_BIN_EXE_mcpg-helper");
    let child = Command::new(mcpguard_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["exec", "--session", "pidfd", "--baseline", "test-baseline", "--", helper, "pidfd-signal"])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let (st, stdout, stderr) = finish(child);
    assert!(st.success(), "{st:?} {stdout} {stderr}");
    assert!(stdout.contains(&format!("pidfd_send_signal errno {}", libc::ENOSYS)), "{stdout} {stderr}");
}
