//! The real `mcpguard daemon` for tests: private control socket, state directory, audit log and
//! bpffs directory (`/sys/fs/bpf/mcpguard-test-*`, unpinned on drop), started from this build's
//! binary. Test files add their own helpers on top (`Deref`).
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Scratch, unique_id};

/// The `mcpguard` binary of this build: `target/<profile>/deps/TEST-HASH` ->
/// `target/<profile>/mcpguard`.
#[must_use]
pub fn mcpguard_bin() -> PathBuf {
    let p = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("mcpguard");
    assert!(p.exists(), "{} missing: build the workspace first (cargo build --workspace)", p.display());
    p
}

/// Policy `test-baseline`: what a dynamically linked program needs to start (loader cache,
/// libraries, `/dev/null`, `/proc`).
pub const TEST_BASELINE: &str = "name = \"test-baseline\"\n[[read]]\npath = \"/etc/ld.so.cache\"\n\
    [[read]]\npath = \"/usr/lib\"\n[[read]]\npath = \"/dev/null\"\n[[read]]\npath = \"/proc\"\n";

pub struct TestDaemon {
    /// `None` between a stop (`kill9`, a test's own signal) and the next [`TestDaemon::spawn`].
    pub child: Option<Child>,
    pub dir: Scratch,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    policy_dir: PathBuf,
    extra: Vec<String>,
}

impl TestDaemon {
    /// Starts a daemon with `extra` flags (`--metrics off` unless they set `--metrics`). Policies
    /// come from `policy_dir`, or from a private directory holding [`TEST_BASELINE`].
    pub fn start(tag: &str, policy_dir: Option<&Path>, extra: &[&str]) -> Self {
        let dir = Scratch::new(tag);
        let policy_dir = policy_dir.map_or_else(
            || {
                let p = dir.path("policies");
                std::fs::create_dir_all(&p).unwrap();
                std::fs::write(p.join("test-baseline.toml"), TEST_BASELINE).unwrap();
                p
            },
            Path::to_path_buf,
        );
        let mut extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        if !extra.iter().any(|a| a == "--metrics") {
            extra.extend(["--metrics".into(), "off".into()]);
        }
        let mut d = Self {
            child: None,
            socket: dir.path("ctl.sock"),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/mcpguard-test-{}", unique_id())),
            dir,
            policy_dir,
            extra,
        };
        d.spawn();
        d
    }

    /// (Re)starts the daemon process with the same settings and waits for its socket.
    pub fn spawn(&mut self) {
        let child = Command::new(mcpguard_bin())
            .args(["--socket", self.socket.to_str().unwrap(), "daemon"])
            .args(["--state-dir", self.dir.path("state").to_str().unwrap()])
            .args(["--audit-log", self.dir.path("audit.jsonl").to_str().unwrap()])
            .args(["--bpffs-dir", self.bpffs.to_str().unwrap()])
            .args(["--policy-dir", self.policy_dir.to_str().unwrap()])
            .args(["--net-cgroup", crate::test_cgroup().to_str().unwrap()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&self.socket).is_err() {
            assert!(Instant::now() < deadline, "daemon did not come up: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (no shutdown path): pins and state stay as they are.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// The daemon's stderr so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("daemon.log")).unwrap_or_default()
    }

    /// `mcpguard --socket SOCKET` (the client side), without backtraces.
    #[must_use]
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(mcpguard_bin());
        c.arg("--socket").arg(&self.socket).env("RUST_BACKTRACE", "0");
        c
    }

    /// The status entry of session `name`, once it is registered (bounded wait).
    pub fn wait_session(&self, name: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.raw(br#"{"v":1,"op":"status"}"#);
            if let Some(s) = st["sessions"].as_array().and_then(|a| a.iter().find(|s| s["name"] == name)) {
                return s.clone();
            }
            assert!(Instant::now() < deadline, "session {name} never appeared: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `mcpguard exec` of a dash script under `test-baseline` (environment: PATH, LC_ALL and
    /// `env`); stdin, stdout and stderr piped (scripts typically `read` a line before running).
    pub fn launch(&self, session: &str, script: &str, env: &[(&str, &str)]) -> Child {
        self.cmd()
            .args(["exec", "--session", session, "--baseline", "test-baseline", "--", "/usr/bin/dash", "-c", script])
            .env_clear()
            .env("PATH", "/usr/bin")
            .env("LC_ALL", "C")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Raw protocol exchange: one line out, one line back.
    pub fn raw(&self, line: &[u8]) -> Value {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // The daemon answers an oversized line as soon as it has read past the limit and closes:
        // the rest of the write may then fail (EPIPE) while the answer is already waiting.
        let sent = s.write_all(line).and_then(|()| s.write_all(b"\n"));
        if let Err(e) = &sent {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing the request: {e}");
        }
        let mut out = String::new();
        BufReader::new(s).read_line(&mut out).unwrap();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad response {out:?}: {e}"))
    }

    /// Every audit line so far; each must parse with every key once, at the current format.
    #[must_use]
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let m = mcpguard::daemon::audit::parse_strict(l).unwrap_or_else(|e| panic!("audit line: {e}: {l}"));
                assert_eq!(m["v"], mcpguard::daemon::audit::AUDIT_FORMAT, "{l}");
                Value::Object(m)
            })
            .collect()
    }

    /// The first audit line matching `pred` (waits up to 10 s).
    pub fn wait_audit(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.audit().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(Instant::now() < deadline, "no matching audit line in {:#?}", self.audit());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(mcpguard_bin()).args(["unpin", "--bpffs-dir", self.bpffs.to_str().unwrap()]).output();
    }
}
