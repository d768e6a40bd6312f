//! The daemon as users run it: the real `mcpguard` binary, its control socket, the real kernel.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{net::UnixStream, process::CommandExt as _},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use mcpguard_tests::{
    Scratch,
    daemon::{TestDaemon, mcpguard_bin},
    unique_id,
};

fn bin() -> PathBuf {
    mcpguard_bin()
}

/// The shared test daemon with a metrics endpoint, plus this file's helpers.
struct Daemon {
    d: TestDaemon,
    metrics: String,
}

impl std::ops::Deref for Daemon {
    type Target = TestDaemon;
    fn deref(&self) -> &TestDaemon {
        &self.d
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut TestDaemon {
        &mut self.d
    }
}

impl Daemon {
    fn start() -> Self {
        let metrics = format!("127.0.0.1:{}", 20000 + (unique_id() % 20000));
        Self { d: TestDaemon::start("daemon", None, &["--metrics", &metrics]), metrics }
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let v = self.raw(br#"{"v":1,"op":"status"}"#);
        assert_eq!(v["ok"], true, "{v}");
        v
    }

    /// Scrapes /metrics with curl (a real HTTP client) and parses the Prometheus text format.
    fn metrics(&self) -> Vec<(String, f64)> {
        let out = Command::new("curl").args(["-sf", &format!("http://{}/metrics", self.metrics)]).output().unwrap();
        assert!(out.status.success(), "scrape failed");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
            samples.push((series.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"))));
        }
        samples
    }

    fn metric(&self, series: &str) -> f64 {
        self.metrics().into_iter().find(|(s, _)| s == series).map_or(0.0, |(_, v)| v)
    }
}

fn go(child: &mut Child) {
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
}

fn finish(mut child: Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut out = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            return (st, out);
        }
        assert!(Instant::now() < deadline, "launched process did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Daemon up -> `mcpguard exec` launches a tree -> grant over the socket -> allowed work runs,
/// the rest is stopped -> audit line, metrics and status match what happened.
#[test]
fn end_to_end_launch_grant_enforce_audit_metrics_status() {
    let d = Daemon::start();
    let ws = Scratch::new("ws");
    std::fs::write(ws.path("a.txt"), "inside-grant\n").unwrap();
    let outside = Scratch::new("outside");
    std::fs::write(outside.path("secret.txt"), "SECRET\n").unwrap();
    let script = format!(
        "read x; /usr/bin/cat {a}; /usr/bin/cat {s}; echo after",
        a = ws.path("a.txt").display(),
        s = outside.path("secret.txt").display()
    );
    let mut child = d.launch("e2e", &script, &[]);
    let s = d.wait_session("e2e");
    assert_eq!(s["processes"].as_array().unwrap().len(), 1, "{s}");
    let out = d.cli(&[
        "grant",
        "--session",
        "e2e",
        "--task",
        "t1",
        "--allow-exec",
        "/usr/bin/cat",
        "--allow-read",
        ws.0.to_str().unwrap(),
        "--ttl",
        "5m",
    ]);
    assert!(out.status.success(), "grant failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("grant "));
    go(&mut child);
    let (st, stdout) = finish(child);
    assert!(st.success(), "{st:?}");
    assert!(stdout.contains("inside-grant"), "{stdout}");
    assert!(!stdout.contains("SECRET"), "{stdout}");
    assert!(stdout.contains("after"), "the shell survives its child's kill: {stdout}");

    let line = d.wait_audit(|l| l["session"] == "e2e" && l["hook"] == "open");
    assert_eq!(line["task"], "t1");
    assert_eq!(line["policy"], "inline");
    assert_eq!(line["action"], "killed");
    assert_eq!(line["reason"], "not_granted");
    assert_eq!(line["path"], outside.path("secret.txt").to_str().unwrap());
    assert_eq!(line["comm"], "cat");
    assert!(line["command"][0] == "/usr/bin/dash");

    let killed = d.metric(r#"mcpguard_decisions_total{action="killed",hook="open",reason="not_granted"}"#);
    assert!(killed >= 1.0, "{:?}", d.metrics());
    assert_eq!(d.metric(r#"mcpguard_socket_requests_total{op="grant",result="ok"}"#), 1.0);
    assert_eq!(d.metric(r#"mcpguard_backend_info{backend="kill",synchronous_deny="false"}"#), 1.0);
    assert_eq!(d.status()["backend"], "kill");
    // Per channel, what the attached backend can do (signals: the daemon, through the launcher's
    // seccomp filter; tests/tests/signals.rs).
    assert_eq!(d.status()["channels"]["signal"], "launcher");
    assert_eq!(d.status()["channels"]["proc_other_process"], "kill");
    assert_eq!(d.metric(r#"mcpguard_channel_info{channel="mmap_exec",mechanism="kill"}"#), 1.0);
    assert_eq!(d.metric(r#"mcpguard_channel_info{channel="signal",mechanism="launcher"}"#), 1.0);
    // File times on the kill backend: given times by the launcher's filter, set-to-now by nothing.
    assert_eq!(d.status()["channels"]["times"], "launcher");
    assert_eq!(d.status()["channels"]["times_now"], "none");
    assert_eq!(d.metric(r#"mcpguard_channel_info{channel="times_now",mechanism="none"}"#), 1.0);
}

/// A process inside a session may not use the socket even as root; other uids need allowing.
#[test]
fn governed_peers_and_unauthorised_uids_are_refused() {
    let d = Daemon::start();
    // The launched command is mcpguard itself, trying to widen its own grant. Its baseline lets
    // it read the daemon's pid file (its client verifies the daemon first; without the read it
    // is stopped right there). Without a grant to connect to the daemon's socket, the kernel
    // refuses the connect itself.
    let me = bin();
    let selfgrant = |baseline: &str| {
        Command::new(&me)
            .arg("--socket")
            .arg(&d.socket)
            .args(["exec", "--session", &format!("selfgrant-{baseline}"), "--baseline", baseline, "--"])
            .arg(&me)
            .arg("--socket")
            .arg(&d.socket)
            .args(["grant", "--session", &format!("selfgrant-{baseline}"), "--task", "x", "--allow-read", "/etc"])
            .args(["--ttl", "1m"])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let base = mcpguard_tests::daemon::TEST_BASELINE;
    let read_dir = format!("[[read]]\npath = \"{}\"\n", d.dir.0.display());
    let no_connect = format!("{}{read_dir}", base.replace("test-baseline", "test-baseline-noconn"));
    std::fs::write(d.dir.path("policies/test-baseline-noconn.toml"), no_connect).unwrap();
    let out = selfgrant("test-baseline-noconn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot reach the mcpguard daemon") && err.contains("Operation not permitted"), "{err}");
    // With the connect granted, the request reaches the daemon's peer check, which refuses it.
    let policy = format!(
        "{}{read_dir}[[connect]]\nto = \"unix:{}\"\n",
        base.replace("test-baseline", "test-baseline-ctl"),
        d.socket.display()
    );
    std::fs::write(d.dir.path("policies/test-baseline-ctl.toml"), policy).unwrap();
    let out = selfgrant("test-baseline-ctl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unauthorized") && err.contains("governed"), "{err}");
    assert_eq!(d.metric(r#"mcpguard_socket_requests_total{op="grant",result="unauthorized"}"#), 1.0);

    let out = Command::new(&me)
        .arg("--socket")
        .arg(&d.socket)
        .arg("status")
        .env("RUST_BACKTRACE", "0")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("uid 65534 is not allowed"), "{err}");
}

/// Each class of bad input gets a precise error; the daemon keeps serving with state intact.
#[test]
fn bad_input_is_refused_precisely_and_state_survives() {
    let d = Daemon::start();
    let mut child = d.launch("bad", "read x; echo ok", &[]);
    d.wait_session("bad");
    let ok = d.raw(br#"{"v":1,"op":"grant","session":"bad","task":"t","inline":{"read":["/tmp"]},"ttl":"5m"}"#);
    assert_eq!(ok["ok"], true, "{ok}");
    let grant_id = ok["grant_id"].clone();
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"{not json".to_vec(), "bad_json", ""),
        (br#"{"v":1,"op":"status","bogus":1}"#.to_vec(), "unknown_field", "bogus"),
        (br#"{"v":2,"op":"status"}"#.to_vec(), "unsupported_version", ""),
        (br#"{"v":1,"op":"grant","session":"nope","task":"t","inline":{"read":["/tmp"]}}"#.to_vec(), "unknown_session", "nope"),
        (br#"{"v":1,"op":"grant","session":"bad","task":"t","inline":{"exec":[{"path":"/nonexistent/bin"}]}}"#.to_vec(), "binary_missing", "/nonexistent/bin"),
        (format!(r#"{{"v":1,"op":"grant","session":"bad","task":"t","inline":{{"exec":[{{"path":"/usr/bin/true","sha256":"{}"}}]}}}}"#, "0".repeat(64)).into_bytes(), "digest_mismatch", "/usr/bin/true"),
        (br#"{"v":1,"op":"grant","session":"bad","task":"t","inline":{"read":["/tmp"]},"ttl":"soon"}"#.to_vec(), "bad_duration", "soon"),
        (br#"{"v":1,"op":"grant","session":"bad","task":"t","inline":{"read":["/tmp"]},"ttl":"400d"}"#.to_vec(), "ttl_too_long", "exceeds"),
        (br#"{"v":1,"op":"grant","session":"bad","task":"t","policy":"no-such-policy"}"#.to_vec(), "policy_error", "no-such-policy"),
    ];
    for (line, code, needle) in cases {
        let v = d.raw(&line);
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["error"]["code"], code, "{}: {v}", String::from_utf8_lossy(&line));
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{v}");
    }
    // Oversized line.
    let mut big = br#"{"v":1,"op":"status","pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 70 * 1024));
    let v = d.raw(&big);
    assert_eq!(v["error"]["code"], "too_large", "{v}");
    // A flood of idle connections does not stop service.
    let idle: Vec<UnixStream> = (0..100).map(|_| UnixStream::connect(&d.socket).unwrap()).collect();
    drop(idle);
    let s = d.wait_session("bad");
    assert_eq!(s["task"]["grant_id"], grant_id, "grant intact after bad input: {s}");
    go(&mut child);
    let (st, out) = finish(child);
    assert!(st.success() && out.contains("ok"));
}

/// SIGKILL the daemon: enforcement holds while it is down (pinned programs); on restart the
/// session and grant are back and the counters continue. TTL expiry while down still stops.
#[test]
fn restart_keeps_enforcement_state_and_counters() {
    let mut d = Daemon::start();
    let ws = Scratch::new("rws");
    std::fs::write(ws.path("a.txt"), "granted\n").unwrap();
    // Each "x" line runs one cat of a granted file, then of an ungranted one.
    let script = format!(
        "while read x; do /usr/bin/cat {a}; /usr/bin/cat /etc/hostname; echo round; done",
        a = ws.path("a.txt").display()
    );
    let mut child = d.launch("rs", &script, &[]);
    d.wait_session("rs");
    let out = d.cli(&[
        "grant",
        "--session",
        "rs",
        "--task",
        "t1",
        "--allow-exec",
        "/usr/bin/cat",
        "--allow-read",
        ws.0.to_str().unwrap(),
        "--ttl",
        "4s",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut read_round = |child: &mut Child| -> String {
        go(child);
        let mut acc = String::new();
        loop {
            let mut l = String::new();
            assert!(stdout.read_line(&mut l).unwrap() > 0, "governed shell died");
            acc.push_str(&l);
            if l.starts_with("round") {
                return acc;
            }
        }
    };
    let r1 = read_round(&mut child);
    assert!(r1.contains("granted"), "{r1}");
    d.wait_audit(|l| l["session"] == "rs" && l["reason"] == "not_granted");
    let before = d.metric(r#"mcpguard_decisions_total{action="killed",hook="open",reason="not_granted"}"#);
    assert!(before >= 1.0);

    d.kill9();
    // Down: the granted file still reads, the other is still stopped (no daemon involved).
    let r2 = read_round(&mut child);
    assert!(r2.contains("granted"), "{r2}");
    d.wait_audit(|_| true);
    // Wait out the TTL while the daemon is down: the kernel stops the granted read too.
    std::thread::sleep(Duration::from_secs(4));
    let r3 = read_round(&mut child);
    assert!(!r3.contains("granted"), "expired grant must stop the read: {r3}");

    d.spawn();
    assert!(d.log().contains("adopted from pins"), "{}", d.log());
    let s = d.wait_session("rs");
    assert_eq!(s["task"]["task"], "t1");
    assert_eq!(s["task"]["expired"], true, "{s}");
    let after = d.metric(r#"mcpguard_decisions_total{action="killed",hook="open",reason="not_granted"}"#);
    assert!(after >= before + 1.0, "counters continue across restart: {before} -> {after}");
    // The granted binary itself is in the expired task grant: its exec is what gets stopped.
    let expired = d.metric(r#"mcpguard_decisions_total{action="killed",hook="exec",reason="grant_expired"}"#);
    assert!(expired >= 1.0, "{:?}", d.metrics());
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM: clean exit, socket removed, programs stay pinned (enforcement continues while the
/// daemon is down); `mcpguard unpin` then removes everything it pinned.
#[test]
fn sigterm_keeps_pins_and_unpin_removes_them() {
    let mut d = Daemon::start();
    let mut child = d.child.take().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "daemon did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "{st:?}: {}", d.log());
    assert!(!d.socket.exists(), "socket removed on shutdown");
    assert!(d.log().contains("enforcement continues"), "{}", d.log());
    let links = d.bpffs.join("links");
    for l in ["mcpg_fork", "mcpg_exit"] {
        assert!(links.join(l).exists(), "link {l} stays pinned");
    }
    // Nothing was governed: the syscall tracepoints are not attached, only their programs pinned
    // (a restarted daemon attaches them when it governs something).
    assert!(!links.join("mcpg_openat").exists(), "no syscall tracepoint while nothing is governed");
    assert!(std::fs::read_dir(d.bpffs.join("progs")).unwrap().count() >= 1, "syscall programs stay pinned");
    let out = d.cli(&["unpin", "--bpffs-dir", d.bpffs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!d.bpffs.exists(), "unpin removes the whole directory");
}

/// `mcpguard exec --cgroup`: the daemon makes the session a cgroup v2; its processes are in it,
/// and a process moved into that cgroup later is governed too (no per-process registration).
/// When the session ends the cgroup is removed.
#[test]
fn cgroup_session_governs_processes_moved_in_later() {
    let d = Daemon::start();
    let mut child = Command::new(bin())
        .arg("--socket")
        .arg(&d.socket)
        .args([
            "exec",
            "--cgroup",
            "--session",
            "cgs",
            "--baseline",
            "test-baseline",
            "--",
            "/usr/bin/dash",
            "-c",
            "read x; echo done",
        ])
        .env_clear()
        .env("PATH", "/usr/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let s = d.wait_session("cgs");
    let pid = s["root_pid"].as_u64().unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap().to_owned();
    assert!(rel.contains("/mcpguard/cgs-"), "{cg}");
    let root = mcpguard::kernel::procs::cgroup2_root().expect("cgroup v2 must be mounted on this machine kind");
    let dir = root.join(rel.trim_start_matches('/'));

    // An ungoverned shell of the test's, moved into the session's cgroup before it runs cat.
    let mut late = Command::new("/bin/sh")
        .args(["-c", "echo ready; read x; /usr/bin/cat /etc/hostname; echo after=$?"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut late_out = BufReader::new(late.stdout.take().unwrap());
    let mut l = String::new();
    late_out.read_line(&mut l).unwrap();
    std::fs::write(dir.join("cgroup.procs"), late.id().to_string()).unwrap();
    late.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    late_out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("after=137"), "cat (not granted) must be stopped in the session cgroup: {rest}");
    late.wait().unwrap();
    let line = d.wait_audit(|l| l["session"] == "cgs" && l["comm"] == "cat");
    assert_eq!((line["hook"].as_str(), line["action"].as_str()), (Some("exec"), Some("killed")));

    go(&mut child);
    let (st, out) = finish(child);
    assert!(st.success() && out.contains("done"), "{st:?} {out}");
    // The session ends with its processes; the daemon removes its cgroup.
    let deadline = Instant::now() + Duration::from_secs(15);
    while dir.exists() {
        assert!(Instant::now() < deadline, "session cgroup {} not removed", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A crash between the kernel update and the save of the session table leaves the table on disk
/// behind the pinned maps (that change was never answered). Simulated exactly: the request is
/// made, the daemon is SIGKILLed, and the table saved before the request is put back. On restart
/// the kernel wins: a revocation it has is not undone, and a grant the table cannot describe is
/// replaced by the baseline alone (fail closed). Grants issued afterwards work (no id reuse).
#[test]
fn restart_after_an_unsaved_change_follows_the_kernel() {
    let mut d = Daemon::start();
    let ws = Scratch::new("cws");
    std::fs::write(ws.path("a.txt"), "granted\n").unwrap();
    let script = format!("while read x; do /usr/bin/cat {}; echo round; done", ws.path("a.txt").display());
    let mut child = d.launch("cs", &script, &[]);
    d.wait_session("cs");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut round = |child: &mut Child| -> bool {
        go(child);
        let mut acc = String::new();
        while !acc.ends_with("round\n") {
            assert!(stdout.read_line(&mut acc).unwrap() > 0, "governed shell died");
        }
        acc.contains("granted")
    };
    let grant = |d: &Daemon, task: &str| {
        let out = d.cli(&[
            "grant",
            "--session",
            "cs",
            "--task",
            task,
            "--allow-exec",
            "/usr/bin/cat",
            "--allow-read",
            ws.0.to_str().unwrap(),
            "--ttl",
            "5m",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let table = d.dir.path("state/state.json");
    let crash_and_forget = |d: &mut Daemon, saved: &[u8]| {
        d.kill9();
        std::fs::write(&table, saved).unwrap();
        d.spawn();
        assert!(d.log().contains("following the kernel"), "{}", d.log());
        d.wait_session("cs")
    };

    // A grant applied in the kernel, not saved: the table knows only the grant before it.
    grant(&d, "t1");
    assert!(round(&mut child));
    let saved = std::fs::read(&table).unwrap();
    grant(&d, "t2");
    let s = crash_and_forget(&mut d, &saved);
    assert!(s["task"].is_null(), "unknown grant dropped, not replaced by the older one: {s}");
    assert!(!round(&mut child), "baseline only after the restart");

    // A revocation applied in the kernel, not saved: the revoked grant must not come back.
    grant(&d, "t3");
    assert!(round(&mut child), "grants work after the restart");
    let saved = std::fs::read(&table).unwrap();
    let v = d.raw(br#"{"v":1,"op":"revoke","session":"cs"}"#);
    assert_eq!(v["ok"], true, "{v}");
    let s = crash_and_forget(&mut d, &saved);
    assert!(s["task"].is_null(), "revoked grant came back: {s}");
    assert!(!round(&mut child), "revoked grant came back in the kernel");
    grant(&d, "t4");
    assert!(round(&mut child));
    let _ = child.kill();
    let _ = child.wait();
}

/// A process that replaced the control socket (a governed root process can unlink it and bind
/// its own) learns nothing and approves nothing: the client verifies that the socket's peer is
/// the daemon recorded in the pid file next to it before it sends a byte.
#[test]
fn a_replaced_control_socket_is_refused_before_anything_is_sent() {
    let d = TestDaemon::start("impostor", None, &[]);
    let ok = d.cmd().arg("status").output().unwrap();
    assert!(ok.status.success(), "the real daemon is accepted: {}", String::from_utf8_lossy(&ok.stderr));
    std::fs::remove_file(&d.socket).unwrap();
    let fake = std::os::unix::net::UnixListener::bind(&d.socket).unwrap();
    let listener = std::thread::spawn(move || {
        let (mut conn, _) = fake.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        got
    });
    let out = d
        .cmd()
        .args(["grant", "--session", "s1", "--task", "T-1", "--allow-read", "/etc", "--ttl", "1m"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a fake daemon must be refused: {err}");
    assert!(err.contains("not served by the mcpguard daemon") && err.contains(".pid"), "{err}");
    let got = listener.join().unwrap();
    assert!(got.is_empty(), "the impostor received {:?}", String::from_utf8_lossy(&got));
}

/// A grant over the CLI names a host by DNS name and port: the daemon resolves it, the kernel
/// lets the launched process reach that address and port only, the listener on another port
/// receives nothing, and the audit line and status name the addresses.
#[test]
fn network_grant_by_name_end_to_end() {
    let d = Daemon::start();
    let granted = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (gp, op) = (granted.local_addr().unwrap().port(), other.local_addr().unwrap().port());
    let helper = env!("CARGO_BIN_EXE_mcpg-helper");
    let script = format!("read x; {helper} net tcp-connect 127.0.0.1:{gp} tcp-connect 127.0.0.1:{op}");
    let mut child = d.launch("net", &script, &[]);
    d.wait_session("net");
    let out = d.cli(&[
        "grant",
        "--session",
        "net",
        "--task",
        "fetch",
        "--allow-exec",
        helper,
        "--allow-connect",
        &format!("tcp://localhost:{gp}"),
        "--ttl",
        "5m",
    ]);
    assert!(out.status.success(), "grant failed: {}", String::from_utf8_lossy(&out.stderr));
    go(&mut child);
    let (st, stdout) = finish(child);
    assert!(st.success(), "{st:?} {stdout}");
    assert!(stdout.contains(&format!("tcp-connect 127.0.0.1:{gp} ok")), "{stdout}");
    assert!(stdout.contains(&format!("tcp-connect 127.0.0.1:{op} errno 1")), "{stdout}");
    other.set_nonblocking(true).unwrap();
    assert!(other.accept().is_err(), "the ungranted listener received no connection");
    granted.set_nonblocking(true).unwrap();
    assert!(granted.accept().is_ok(), "the granted listener got its connection");

    let line = d.wait_audit(|l| l["session"] == "net" && l["hook"] == "connect");
    assert_eq!(
        (&line["action"], &line["reason"], &line["task"]),
        (&serde_json::json!("denied"), &serde_json::json!("not_granted"), &serde_json::json!("fetch"))
    );
    assert_eq!(line["net"], format!("tcp 127.0.0.1:{op}"));
    let s = d.wait_session("net");
    let net = &s["task"]["network"][0];
    assert_eq!(net["target"], format!("tcp://localhost:{gp}"), "{s}");
    assert!(
        net["in_force"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == &serde_json::json!(format!("tcp connect 127.0.0.1:{gp}"))),
        "the resolved address is shown: {s}"
    );
    // A target that does not parse is refused with the reason, and the daemon keeps its state.
    let out = d.cli(&["grant", "--session", "net", "--task", "bad", "--allow-connect", "http://x:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scheme `http`"), "{out:?}");
    assert_eq!(d.wait_session("net")["task"]["network"][0]["target"], format!("tcp://localhost:{gp}"));
}
