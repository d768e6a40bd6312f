//! The Landlock write ceiling on the processes mcpguard launches: creating, removing, renaming
//! and truncating outside every path the session may write fail before anything changes, on
//! every backend (on the kill backend the kernel programs would act only after the syscall).
//! Real daemon binary, real kernel, real processes; root. Assertions are on the objects.
use std::{os::unix::fs::PermissionsExt as _, process::Command};

use mcpguard_tests::{PATH_TOOLS, Scratch, daemon::TestDaemon, entries, snapshot, times, unique_id};

#[test]
fn path_operations_outside_the_write_ceiling_change_nothing() {
    let d = TestDaemon::start("ceiling", None, &[]);
    let inside = Scratch::new("ceil-in");
    let outside = Scratch::new("ceil-out");
    let victim = outside.path("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::create_dir(outside.path("dir")).unwrap();
    std::fs::write(inside.path("mine"), "mine\n").unwrap();
    let before = (snapshot(&victim), snapshot(&outside.path("dir")), entries(&outside.0));
    let victim_times = times(&victim);

    // Reads of both trees, writes to `inside` only: the read grant on `outside` allows no change.
    let mut policy = String::from("name = \"test-ceiling\"\n");
    for x in PATH_TOOLS {
        policy += &format!("[[exec]]\npath = \"{x}\"\n");
    }
    for r in ["/etc/ld.so.cache", "/usr/lib", "/dev/null", "/proc"] {
        policy += &format!("[[read]]\npath = \"{r}\"\n");
    }
    policy += &format!("[[read]]\npath = \"{}\"\n[[read]]\npath = \"{}\"\n", inside.0.display(), outside.0.display());
    policy += &format!("[[write]]\npath = \"{}\"\n[[write]]\npath = \"/dev/null\"\n", inside.0.display());
    std::fs::write(d.dir.path("policies/test-ceiling.toml"), policy).unwrap();

    let (i, o) = (inside.0.display(), outside.0.display());
    // Each refused operation prints its status; every one must fail, nothing outside change.
    let script = format!(
        "for op in \
           'rm -f {o}/victim' 'rmdir {o}/dir' 'mv {o}/victim {i}/taken' 'mv {i}/mine {o}/planted' \
           'mkdir {o}/new' 'ln -s /etc/shadow {o}/link' 'ln {o}/victim {o}/hard' 'mkfifo {o}/fifo' \
           ': > {o}/victim' 'truncate -s 0 {o}/victim' 'chmod 777 {o}/victim' 'chown 65534 {o}/victim' \
           'chmod 600 {i}/mine' 'touch -c -d @978307200 {o}/victim' 'touch -c -d @978307200 {i}/mine'; do \
           (eval \"$op\") 2>/dev/null; echo \"refused $? $op\"; done; \
         echo one > {i}/a && mv {i}/a {i}/b && mkdir {i}/d && rmdir {i}/d && rm {i}/b && \
         touch -c {i}/mine && echo inside-ok"
    );
    let session = format!("ceil-{}", unique_id());
    let out = d
        .cmd()
        .args(["exec", "--session", &session, "--baseline", "test-ceiling", "--", "/usr/bin/dash", "-c", &script])
        .env("PATH", "/usr/bin")
        .env("LC_ALL", "C")
        .env("TZ", "UTC0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let audit = std::fs::read_to_string(d.dir.path("audit.jsonl")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{:?} {stdout} {}\naudit:\n{audit}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let refused: Vec<&str> = stdout.lines().filter(|l| l.starts_with("refused ")).collect();
    // (chmod/chown are refused everywhere unless launched with --allow-metadata: seccomp, EPERM.)
    assert_eq!(refused.len(), 15, "{stdout}");
    for l in &refused {
        assert!(!l.starts_with("refused 0 "), "allowed outside the ceiling: {l}\n{stdout}");
    }
    // Given times are refused by the seccomp filter (EPERM, the shell is not killed), inside the
    // grant too; `touch -c` (set to now) is not.
    for l in refused.iter().filter(|l| l.contains("touch")) {
        assert!(l.starts_with("refused 1 "), "{l}\n{stdout}");
    }
    assert_eq!(times(&victim), victim_times, "times outside the grant exactly as before");
    assert_ne!(times(&inside.path("mine")).2, 978_307_200, "given times refused inside too");
    assert!(stdout.contains("inside-ok"), "create, write, rename, remove inside the grant work: {stdout}");
    let after = (snapshot(&victim), snapshot(&outside.path("dir")), entries(&outside.0));
    assert_eq!(after, before, "nothing outside the ceiling changed");
    assert!(!inside.path("taken").exists() || std::fs::read(inside.path("taken")).unwrap() == b"precious\n");
    assert_eq!(std::fs::read_to_string(inside.path("mine")).unwrap(), "mine\n", "the source of a refused move stays");
    assert_ne!(snapshot(&inside.path("mine")).1 & 0o777, 0o600, "metadata refused inside too");

    // With --allow-metadata the mode can be changed (session-wide).
    let session = format!("ceil-md-{}", unique_id());
    let chmod = format!("chmod 600 {i}/mine && touch -c -d @978307200 {i}/mine");
    let out = d
        .cmd()
        .args(["exec", "--session", &session, "--baseline", "test-ceiling", "--allow-metadata", "--"])
        .args(["/usr/bin/dash", "-c", &chmod])
        .env("PATH", "/usr/bin")
        .env("LC_ALL", "C")
        .env("TZ", "UTC0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(snapshot(&inside.path("mine")).1 & 0o777, 0o600);
    assert_eq!(times(&inside.path("mine")).2, 978_307_200, "given times with --allow-metadata");
}

/// `--no-write-ceiling` launches without it (reported as such); a ceiling root that is not an
/// absolute path is refused by the daemon before anything runs.
#[test]
fn the_ceiling_is_reported_and_can_only_be_given_as_absolute_paths() {
    let d = TestDaemon::start("ceiling2", None, &[]);
    let session = format!("ceil2-{}", unique_id());
    let out = d
        .cmd()
        .args(["exec", "--session", &session, "--baseline", "test-baseline", "--write-ceiling", "rel/dir", "--"])
        .args(["/usr/bin/true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("absolute path"), "{err}");
    let st = Command::new(mcpguard_tests::daemon::mcpguard_bin())
        .args(["--socket", d.socket.to_str().unwrap(), "exec", "--session", &session, "--baseline", "test-baseline"])
        .args(["--write-ceiling", "/srv/ceiling-root", "--", "/usr/bin/dash", "-c", "read _"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut st = scopeguard(st);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ceiling = loop {
        let v = d.raw(br#"{"v":1,"op":"status"}"#);
        if let Some(s) = v["sessions"].as_array().and_then(|a| a.iter().find(|s| s["name"] == session.as_str())) {
            break s["write_ceiling"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "session did not appear: {v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // The baseline's write path (/dev/null) and the explicit root.
    assert_eq!(ceiling, serde_json::json!(["/srv/ceiling-root"]), "{ceiling}");
    // A task grant that writes outside it is refused, naming the ceiling and the fix.
    let tmp = std::env::temp_dir();
    let out = d
        .cmd()
        .args(["grant", "--session", &session, "--task", "t", "--allow-write", tmp.to_str().unwrap(), "--ttl", "1m"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("outside_ceiling") && err.contains("--write-ceiling"), "{err}");
    let v = d.raw(br#"{"v":1,"op":"status"}"#);
    let s = v["sessions"].as_array().unwrap().iter().find(|s| s["name"] == session.as_str()).unwrap().clone();
    assert!(s["task"].is_null(), "no task grant was installed: {s}");
    drop(st.0.stdin.take());
    let _ = st.0.wait();
}

/// Kills and reaps a child this test started if it is still running on drop.
struct Guard(std::process::Child);
fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c)
}
impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
