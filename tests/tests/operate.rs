//! The operator's everyday commands against the real daemon (root, real kernel): `events` (the
//! recent lines then exit, filters, `--follow`, the lines of before a restart), the `status`
//! table, the audit format's RFC 3339 time, and the policies built into the binary.
use std::{
    io::Write as _,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use mcpguard_tests::{Scratch, daemon::TestDaemon, killed, read_line_from};
use serde_json::Value;

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed ({}): {}{}",
        c,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `mcpguard events ARGS` under a 20 s `timeout` (a command that should exit by itself but
/// waits fails the test with status 124 instead of hanging it).
fn events(d: &TestDaemon, args: &[&str]) -> Vec<String> {
    let mut c = Command::new("/usr/bin/timeout");
    c.arg("20").arg(mcpguard_tests::daemon::mcpguard_bin()).arg("--socket").arg(&d.socket).arg("events").args(args);
    let out = run(&mut c);
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

fn json(lines: &[String]) -> Vec<Value> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// A launched dash script whose every `cat` of a file outside `ws` is stopped: one `open`
/// denial each. The task grant allows cat and reading `ws`.
fn denials(d: &TestDaemon, session: &str, task: &str, ws: &Scratch, files: &[std::path::PathBuf]) -> Child {
    let cats: String = files.iter().map(|f| format!("/usr/bin/cat {}; read x; ", f.display())).collect();
    let child = d.launch(session, &format!("read x; {cats}echo done"), &[]);
    d.wait_session(session);
    let ws = ws.0.to_str().unwrap();
    run(d.cmd().args(["grant", "--session", session, "--task", task, "--allow-exec", "/usr/bin/cat"]).args([
        "--allow-read",
        ws,
        "--ttl",
        "5m",
    ]));
    child
}

fn step(child: &mut Child) {
    child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
}

fn audit_count(d: &TestDaemon, session: &str) -> usize {
    d.audit().iter().filter(|l| l["session"] == session && l["hook"] == "open").count()
}

fn wait_count(d: &TestDaemon, session: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while audit_count(d, session) < n {
        assert!(Instant::now() < deadline, "{session}: {} of {n} audit lines: {}", audit_count(d, session), d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn events_prints_the_recent_lines_filters_them_follows_and_survives_a_restart() {
    let mut d = TestDaemon::start("operate", None, &[]);
    let ws = Scratch::new("opw");
    let outside = Scratch::new("opx");
    let files: Vec<_> = (0..3)
        .map(|i| {
            let p = outside.path(&format!("f{i}"));
            std::fs::write(&p, "x").unwrap();
            p
        })
        .collect();
    // Session opa: three denials; opb: two.
    for (session, n) in [("opa", 3), ("opb", 2)] {
        let mut c = denials(&d, session, &format!("T-{session}"), &ws, &files[..n]);
        for _ in 0..=n {
            step(&mut c);
        }
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done"), "{out:?}");
        wait_count(&d, session, n);
    }

    // The last N, then exit: the header and N aligned lines, the newest last.
    let human = events(&d, &["-n", "2"]);
    assert_eq!(human.len(), 3, "{human:#?}");
    assert!(human[0].starts_with("TIME") && human[0].contains("REASON"), "{human:#?}");
    assert!(
        human[2].contains("killed")
            && human[2].contains("opb/T-opb")
            && human[2].contains(&files[1].display().to_string()),
        "{human:#?} {}",
        files[1].display()
    );
    // Format 3: RFC 3339 UTC with microseconds, beside the boot clock.
    let all = json(&events(&d, &["--json", "-n", "100"]));
    assert_eq!(all.len(), 5, "{all:#?}");
    for l in &all {
        assert_eq!(l["v"], 3);
        let ts = l["ts"].as_str().unwrap();
        assert!(ts.len() == 27 && ts.ends_with('Z'), "{ts}");
        assert!(l["ts_boot_ns"].as_u64().unwrap() > 0);
    }
    // Filters: by session, by reason (none of these are other_process), since an instant.
    let a = json(&events(&d, &["--json", "--session", "opa"]));
    assert_eq!(a.len(), 3);
    assert!(a.iter().all(|l| l["session"] == "opa" && l["reason"] == "not_granted"));
    assert!(events(&d, &["--json", "--reason", "other_process"]).is_empty());
    let since = a[1]["ts"].as_str().unwrap();
    let later = json(&events(&d, &["--json", "--session", "opa", "--since", since]));
    assert_eq!(
        later.iter().map(|l| l["path"].clone()).collect::<Vec<_>>(),
        [a[1]["path"].clone(), a[2]["path"].clone()]
    );
    assert_eq!(json(&events(&d, &["--json", "--since", "1h"])).len(), 5);
    // Bad filters name the problem.
    let bad = Command::new(mcpguard_tests::daemon::mcpguard_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["events", "--reason", "not_grnted"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("unknown `reason`") && err.contains("other_process"), "{err}");

    // --follow: the backlog, then each new line as it happens (backlog and stream join without
    // a gap: the first line proves the subscription is in place before the next denial).
    let mut c = denials(&d, "opc", "T-opc", &ws, &files[..2]);
    step(&mut c);
    wait_count(&d, "opc", 1);
    let mut follower = d
        .cmd()
        .args(["events", "--follow", "--json", "-n", "1", "--session", "opc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = follower.stdout.take().unwrap();
    let first: Value = serde_json::from_str(&read_line_from(&mut out)).unwrap();
    assert_eq!(first["path"], files[0].to_str().unwrap());
    // The status table, while opc holds a task grant.
    let st = String::from_utf8(run(d.cmd().arg("status")).stdout).unwrap();
    let row = st.lines().find(|l| l.contains("T-opc")).unwrap_or_else(|| panic!("{st}"));
    assert!(st.contains("SESSION") && st.contains("REMAINING") && st.contains("backend  kill"), "{st}");
    assert!(row.contains("task #") && row.contains("inline") && (row.contains("4m") || row.contains("5m")), "{st}");
    step(&mut c);
    let second: Value = serde_json::from_str(&read_line_from(&mut out)).unwrap();
    assert_eq!((second["path"].as_str(), second["action"].as_str()), (files[1].to_str(), Some("killed")));
    follower.kill().unwrap();
    follower.wait().unwrap();
    step(&mut c);
    let (st, _) = (c.wait().unwrap(), ());
    assert!(st.success(), "{st:?}");

    // After a restart, the lines of before it are still the recent ones (from the audit log).
    d.kill9();
    d.spawn();
    let after = json(&events(&d, &["--json", "-n", "1000"]));
    assert_eq!(after.iter().filter(|l| l["session"] == "opa").count(), 3, "{after:#?}");
    assert_eq!(after.len(), 7);
}

/// `--baseline baseline-minimal` with no policy directory holding it: the shipped policies are
/// built into the binary (and enforced: the baseline lets dash start and nothing else run).
#[test]
fn the_shipped_baselines_are_built_in() {
    let d = TestDaemon::start("builtin", None, &[]);
    let list = String::from_utf8(run(d.cmd().args(["policy", "list"])).stdout).unwrap();
    assert!(list.lines().any(|l| l == "baseline-minimal") && list.lines().any(|l| l == "git"), "{list}");
    let out = d
        .cmd()
        .args([
            "exec",
            "--session",
            "bi",
            "--",
            "/usr/bin/dash",
            "-c",
            "echo started; /usr/bin/cat /etc/hostname; echo rc=$?",
        ])
        .env_clear()
        .env("PATH", "/usr/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?} {}", d.log());
    assert!(stdout.contains("started") && stdout.contains("rc=137"), "cat is in no grant: {stdout}");
    let line = d.wait_audit(|l| l["session"] == "bi" && l["hook"] == "exec");
    assert_eq!((line["policy"].as_str(), line["reason"].as_str()), (Some("baseline-minimal"), Some("not_granted")));
    assert!(!killed(out.status));
    // A name that is neither in a policy directory nor built in says where it looked.
    let out = d
        .cmd()
        .args(["exec", "--session", "bj", "--baseline", "baseline-nope", "--", "/usr/bin/true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("built-in") && err.contains("policy_dirs"), "{err}");
}
