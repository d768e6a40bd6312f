//! The seccomp guard filter on the processes mcpguard launches (`mcpguard exec`, the MCP proxy's
//! server): the guard syscalls fail synchronously with EPERM and the process keeps running (on
//! the kill backend, without the filter, the in-kernel guards would SIGKILL it after the syscall
//! ran). Real daemon binary, real kernel, real processes; root.
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use mcpguard_tests::{Scratch, daemon::TestDaemon, unique_id};

const HELPER: &str = env!("CARGO_BIN_EXE_mcpg-helper");
/// mount, bpf, linkat, ptrace, process_vm_readv, io_uring_setup, open_tree, fsopen (x86_64).
const GUARDS: [(&str, u32); 8] = [
    ("mount", 165),
    ("bpf", 321),
    ("linkat", 265),
    ("ptrace", 101),
    ("process_vm_readv", 310),
    ("io_uring_setup", 425),
    ("open_tree", 428),
    ("fsopen", 430),
];
const GETPID: u32 = 39;

/// The shared test daemon (with `test-baseline` and an MCP tool map), plus this file's helpers.
struct Daemon(TestDaemon);

impl std::ops::Deref for Daemon {
    type Target = TestDaemon;
    fn deref(&self) -> &TestDaemon {
        &self.0
    }
}

impl Daemon {
    fn start() -> Self {
        let d = TestDaemon::start("seccomp", None, &[]);
        std::fs::write(d.dir.path("tools.toml"), "ttl = \"30s\"\n").unwrap();
        Self(d)
    }

    /// Processes the daemon governs in `session` (waits until the session has one).
    fn processes(&self, session: &str) -> Vec<i64> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.cmd().args(["status", "--json"]).output().unwrap();
            let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let procs: Vec<i64> = st["sessions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["name"] == session)
                .flat_map(|s| s["processes"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p.as_i64())
                .collect();
            if !procs.is_empty() {
                return procs;
            }
            assert!(Instant::now() < deadline, "session {session} never appeared: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Audit lines of the kernel's syscall guard for `session` (there must be none: the filter
    /// refused the syscalls before the tracepoints saw them).
    fn syscall_kills(&self, session: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["session"] == session && v["hook"] == "syscall"
            })
            .map(str::to_owned)
            .collect()
    }
}

fn helper_args() -> Vec<String> {
    let mut a = vec![HELPER.to_owned(), "raw-syscall".into(), "--wait".into()];
    a.extend(GUARDS.iter().map(|(_, nr)| nr.to_string()));
    a.push(GETPID.to_string());
    a
}

/// Reads the helper's report up to `alive`; asserts EPERM for every guard syscall and a real
/// result for getpid.
fn check_report(out: &mut BufReader<ChildStdout>, log: impl Fn() -> String) {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        let n = out.read_line(&mut l).unwrap();
        assert!(n > 0, "server output ended early (killed?): {lines:?}\n{}", log());
        let l = l.trim_end().to_owned();
        if l == "alive" {
            break;
        }
        lines.push(l);
    }
    for (name, nr) in GUARDS {
        let want = format!("syscall {nr} returned -1 errno {}", libc::EPERM);
        assert!(lines.contains(&want), "{name}: expected `{want}` in {lines:?}");
    }
    let getpid = lines.iter().find(|l| l.starts_with(&format!("syscall {GETPID} "))).unwrap();
    assert!(!getpid.contains("returned -1"), "other syscalls are allowed: {getpid}");
}

/// /proc/PID/status says the filter is in force and privileges cannot be gained by exec.
fn assert_filtered(pid: i64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for want in ["NoNewPrivs:\t1", "Seccomp:\t2"] {
        assert!(status.lines().any(|l| l == want), "pid {pid}: no `{want}` in\n{status}");
    }
}

fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_guard_syscalls_fail_with_eperm_and_the_process_keeps_running() {
    let d = Daemon::start();
    let session = format!("sc-exec-{}", unique_id());
    let mut child = d
        .cmd()
        .args(["exec", "--session", &session, "--baseline", "test-baseline", "--"])
        .args(helper_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    check_report(&mut out, || d.log());
    // Still alive, governed (the exec'd helper kept the launcher's pid) and filtered.
    let procs = d.processes(&session);
    assert_eq!(procs, vec![i64::from(child.id())]);
    assert_filtered(procs[0]);
    // The session is registered sealed: this daemon attaches no guard-syscall tracepoint for it
    // (the filter does that job), only the open-family ones on the kill backend.
    let out = d.cmd().args(["status", "--json"]).output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let me = st["sessions"].as_array().unwrap().iter().find(|s| s["name"] == session.as_str()).unwrap();
    assert_eq!(me["sealed"], true, "{st:#}");
    assert_eq!(st["syscall_tracepoints"]["guard"], 0, "{st:#}");
    assert_eq!(st["syscall_tracepoints"]["open"].as_u64().unwrap() > 0, st["backend"] == "kill", "{st:#}");
    drop(child.stdin.take());
    let st = wait_exit(&mut child, "governed helper");
    assert!(st.success(), "exited normally after the refused syscalls: {st:?}");
    assert!(d.syscall_kills(&session).is_empty(), "{:?}", d.syscall_kills(&session));
}

/// An x32 syscall (x86_64 arch, number with bit 30 set) would slip past a filter keyed on
/// x86_64 numbers: the filter kills the process (SIGSYS) before it runs.
#[test]
#[cfg(target_arch = "x86_64")]
fn x32_syscalls_kill_the_process() {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    let d = Daemon::start();
    let session = format!("sc-x32-{}", unique_id());
    let x32_mount = (0x4000_0000u32 | 165).to_string();
    let mut cmd = d.cmd();
    cmd.args(["exec", "--session", &session, "--baseline", "test-baseline", "--"]).args([
        HELPER,
        "raw-syscall",
        &GETPID.to_string(),
        &x32_mount,
    ]);
    // SAFETY: setrlimit only (no core file from the SIGSYS kill).
    unsafe {
        cmd.pre_exec(|| {
            let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &raw const zero);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{:?} {stdout}", out.status);
    assert!(stdout.contains(&format!("syscall {GETPID} returned")), "ran until the x32 call: {stdout}");
    assert!(!stdout.contains("alive"), "{stdout}");
}

/// A governed `git commit` writes its objects with link(2) and falls back to rename(2) when the
/// link fails: with the filter the link gets EPERM and the commit succeeds (the kernel guard
/// alone would kill git at the link).
#[test]
fn governed_git_commit_works_through_the_link_fallback() {
    let d = Daemon::start();
    let repo = Scratch::new("sc-repo");
    let git = |args: &[&str]| {
        Command::new("/usr/bin/git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(&repo.0)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("LC_ALL", "C")
            .output()
            .unwrap()
    };
    assert!(git(&["init", "-q"]).status.success());
    std::fs::write(repo.path("f"), "one\n").unwrap();
    assert!(git(&["add", "f"]).status.success());
    assert!(git(&["commit", "-qm", "one"]).status.success());
    std::fs::write(repo.path("f"), "two\n").unwrap();
    let mut policy = String::from("name = \"test-git\"\n[vars.repo]\nkind = \"path\"\nroots = [\"/tmp\"]\n");
    policy += "[[exec]]\npath = \"/usr/bin/git\"\n";
    for r in [
        "/etc/ld.so.cache",
        "/usr/lib",
        "/usr/share/git-core",
        "/usr/share/zoneinfo",
        "/dev/null",
        "/dev/urandom",
        "/proc",
        "${repo}",
    ] {
        policy += &format!("[[read]]\npath = \"{r}\"\n");
    }
    for w in ["/dev/null", "${repo}/.git"] {
        policy += &format!("[[write]]\npath = \"{w}\"\n");
    }
    std::fs::write(d.dir.path("policies/test-git.toml"), policy).unwrap();
    let session = format!("sc-git-{}", unique_id());
    let repo_var = format!("repo={}", repo.0.display());
    let out = d
        .cmd()
        .args(["exec", "--session", &session, "--baseline", "test-git", "--var", &repo_var, "--"])
        .args(["/usr/bin/git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qam", "two"])
        .current_dir(&repo.0)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let audit = std::fs::read_to_string(d.dir.path("audit.jsonl")).unwrap_or_default();
    assert!(
        out.status.success(),
        "governed git commit: {:?} {}\naudit:\n{audit}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let log = git(&["log", "--format=%s"]);
    assert_eq!(String::from_utf8_lossy(&log.stdout), "two\none\n");
    assert!(git(&["fsck", "--strict"]).status.success(), "the repository is sound");
}

#[test]
fn mcp_server_is_started_under_the_filter() {
    let d = Daemon::start();
    let session = format!("sc-mcp-{}", unique_id());
    let tools = d.dir.path("tools.toml");
    let mut proxy = d
        .cmd()
        .args(["exec", "--session", &session, "--mcp", "--tools", tools.to_str().unwrap()])
        .args(["--baseline", "test-baseline", "--max-restarts", "0", "--"])
        .args(helper_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(d.dir.path("proxy.log")).unwrap())
        .spawn()
        .unwrap();
    // The proxy forwards the server's non-JSON lines to the client as they are.
    let mut out = BufReader::new(proxy.stdout.take().unwrap());
    check_report(&mut out, || std::fs::read_to_string(d.dir.path("proxy.log")).unwrap_or_default());
    let procs = d.processes(&session);
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert_ne!(procs[0], i64::from(proxy.id()), "the server is governed, the proxy is not");
    assert_filtered(procs[0]);
    // The filter is installed in the forked child only: the proxy itself is not filtered.
    let own = std::fs::read_to_string(format!("/proc/{}/status", proxy.id())).unwrap();
    assert!(own.lines().any(|l| l == "Seccomp:\t0"), "{own}");
    drop(proxy.stdin.take());
    wait_exit(&mut proxy, "proxy");
    assert!(d.syscall_kills(&session).is_empty(), "{:?}", d.syscall_kills(&session));
}

/// A launched process may not create sockets of families no grant can name (packet, netlink):
/// the launcher's filter refuses `socket()` with EPERM before the kernel programs see it, and
/// the process keeps running; Unix and inet sockets are decided by the grants as usual.
#[test]
fn other_socket_families_fail_with_eperm_under_the_filter() {
    let d = Daemon::start();
    let session = format!("sc-sock-{}", unique_id());
    let out = d
        .cmd()
        .args(["exec", "--session", &session, "--baseline", "test-baseline", "--"])
        .args([HELPER, "net", "packet-socket", "-", "netlink-socket", "-", "socketpair", "-"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?} {stdout} {}", out.status, String::from_utf8_lossy(&out.stderr));
    for line in ["packet-socket - errno 1", "netlink-socket - errno 1", "socketpair - ok"] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert!(d.audit().iter().all(|l| l["session"] != session.as_str() || l["hook"] != "socket"), "no kernel event");
}
