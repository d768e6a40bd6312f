//! `mcpguard doctor` on this host: the real binary, as root. It must find the backend the tests'
//! own engine gets here, say so the same way in text and JSON, exit 0, and leave nothing behind
//! (its probe cgroup removed, nothing pinned). Unprivileged, it must exit 1.
use std::{
    collections::BTreeMap,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Mutex, PoisonError},
};

use mcpguard_tests::{Kernel, Scratch, daemon::mcpguard_bin};
use serde_json::Value;

/// The checks doctor makes on every host (`lockdown` too where the lockdown LSM is built in).
const CHECKS: [&str; 18] = [
    "kernel",
    "root",
    "btf",
    "offsets",
    "bpffs",
    "securityfs",
    "lsm",
    "tracefs",
    "cgroup2",
    "landlock",
    "seccomp",
    "seccomp_notify",
    "backend.lsm",
    "backend.fmod_ret",
    "backend.kill",
    "backend",
    "enforce",
    "daemon",
];

/// One doctor at a time: each test asserts that no probe cgroup is left, which another test's
/// doctor could be holding at that moment.
static SERIAL: Mutex<()> = Mutex::new(());

/// Everything under /sys/fs/bpf, except other test processes' own pins
/// (`mcpguard-test-*`, created and removed by each daemon test, possibly running concurrently).
fn bpffs_entries() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if dir == Path::new("/sys/fs/bpf") && e.file_name().to_string_lossy().starts_with("mcpguard-test-") {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, out);
            }
            out.push(p);
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/bpf"), &mut out);
    out.sort();
    out
}

fn doctor_cgroups() -> Vec<PathBuf> {
    let root = mcpguard::kernel::cgroup::root().expect("cgroup v2 mounted");
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("mcpguard-doctor-"))
        .map(|e| e.path())
        .collect()
}

/// `mcpguard --socket <nowhere> doctor ARGS`: a private socket path, so the daemon check does not
/// depend on whether a daemon runs on this host.
fn doctor(scratch: &Scratch, args: &[&str], configure: impl FnOnce(&mut Command)) -> Output {
    let mut c = Command::new(mcpguard_bin());
    c.arg("--socket").arg(scratch.path("no-daemon.sock")).arg("doctor").args(args).env("RUST_BACKTRACE", "0");
    c.env_remove("RUST_LOG");
    configure(&mut c);
    c.output().expect("run mcpguard doctor")
}

/// The check lines of the text report: check -> (verdict, rest of the line). Fix lines (indented)
/// and everything after the table (the first empty line) are skipped.
fn text_checks(text: &str) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for line in text.lines().take_while(|l| !l.is_empty()) {
        if line.starts_with(' ') {
            assert!(line.trim_start().starts_with("fix: "), "indented line that is not a fix: {line:?}");
            continue;
        }
        let mut it = line.splitn(2, char::is_whitespace);
        let check = it.next().unwrap().to_owned();
        let rest = it.next().unwrap_or("").trim_start();
        let (verdict, detail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        assert!(["ok", "missing", "no"].contains(&verdict), "verdict of {line:?}");
        assert!(out.insert(check, (verdict.to_owned(), detail.trim_start().to_owned())).is_none(), "twice: {line:?}");
    }
    out
}

#[test]
fn doctor_finds_the_tests_backend_and_leaves_nothing_behind() {
    assert!(nix::unistd::geteuid().is_root(), "kernel tests must run as root");
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    // The backend the tests' engine gets on this host (kill here: LSM and fmod_ret are refused).
    let expected = {
        let k = Kernel::load();
        k.engine.backend().name()
    };
    let bpffs_before = bpffs_entries();
    assert_eq!(doctor_cgroups(), Vec::<PathBuf>::new(), "a probe cgroup of an earlier run is left");
    let scratch = Scratch::new("doctor");

    let out = doctor(&scratch, &[], |_| {});
    let text = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "doctor exit status\n{text}\n{stderr}");
    let checks = text_checks(&text);
    let names: Vec<&str> = checks.keys().map(String::as_str).collect();
    for c in CHECKS {
        assert!(names.contains(&c), "no `{c}` line in\n{text}");
    }
    let (v, detail) = &checks["backend"];
    assert_eq!(v, "ok", "{text}");
    assert!(detail.starts_with(&format!("{expected} ")), "backend line names {expected}: {detail:?}\n{text}");
    assert_eq!(checks[&format!("backend.{expected}")].0, "ok", "{text}");
    assert_eq!(checks["enforce"].0, "ok", "{text}");
    assert!(text.contains(&format!("channels on the {expected} backend:")), "{text}");
    assert!(text.ends_with(&format!("this host can enforce: {expected} backend\n")), "{text}");
    // Every problem carries its fix, on the line under it.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate().take_while(|(_, l)| !l.is_empty()) {
        let verdict = l.split_whitespace().nth(1);
        if !l.starts_with(' ') && matches!(verdict, Some("no" | "missing")) {
            assert!(lines[i + 1].trim_start().starts_with("fix: "), "no fix under {l:?}\n{text}");
        }
    }

    let out = doctor(&scratch, &["--json"], |_| {});
    assert_eq!(out.status.code(), Some(0), "doctor --json exit status: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("doctor --json prints one JSON object");
    assert_eq!(v["can_enforce"], true, "{v:#}");
    assert_eq!(v["backend"], expected, "{v:#}");
    let json_checks: BTreeMap<String, String> = v["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .map(|c| {
            let verdict = c["verdict"].as_str().unwrap().to_owned();
            assert_eq!(c["fix"].is_string(), verdict != "ok", "a fix exactly for the problems: {c}");
            (c["check"].as_str().unwrap().to_owned(), verdict)
        })
        .collect();
    let text_verdicts: BTreeMap<String, String> = checks.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
    assert_eq!(json_checks, text_verdicts, "text and JSON verdicts differ");
    let channels = v["channels"].as_object().expect("channels object");
    assert_eq!(channels["exec"], if expected == "kill" { "kill" } else { "eperm" }, "{v:#}");
    assert_eq!(channels["connect"], "eperm", "{v:#}");

    assert_eq!(doctor_cgroups(), Vec::<PathBuf>::new(), "doctor left its probe cgroup");
    assert_eq!(bpffs_entries(), bpffs_before, "doctor pinned something under /sys/fs/bpf");
}

#[test]
fn doctor_unprivileged_cannot_enforce() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let scratch = Scratch::new("doctor-nobody");
    // The binary must be reachable by `nobody` (not the case for a checkout under /root).
    let reachable = Command::new(mcpguard_bin()).arg("--version").uid(65534).gid(65534).output();
    if !reachable.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: {} cannot be run as nobody", mcpguard_bin().display());
        return;
    }
    let out = doctor(&scratch, &["--json"], |c| {
        c.uid(65534).gid(65534);
    });
    assert_eq!(out.status.code(), Some(1), "unprivileged doctor: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["can_enforce"], false);
    assert_eq!(v["backend"], Value::Null);
    let root = v["checks"].as_array().unwrap().iter().find(|c| c["check"] == "root").unwrap().clone();
    assert_eq!(root["verdict"], "no", "{root}");
    assert!(root["fix"].as_str().unwrap().starts_with("run as root"), "{root}");
    assert_eq!(doctor_cgroups(), Vec::<PathBuf>::new(), "doctor left a probe cgroup");
}
