//! `mcpguard learn`: a server run in audit mode (nothing stopped, everything recorded), the
//! proposal written, then enforced with the learned files only — the real daemon, the real
//! kernel, the official servers and SDK client. Root only.
#[allow(clippy::wildcard_imports, reason = "shares the imports of the mcp test target")]
use super::*;

/// `mcpguard learn` without `--mcp`; returns (exit status, stderr).
fn learn_plain(d: &Daemon, session: &str, out: &Path, cmd: &[&str], stdin: &str) -> (i32, String) {
    let mut c = d
        .cmd()
        .args(["learn", "--session", session, "--out", out.to_str().unwrap(), "--"])
        .args(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// `mcpguard exec` under a learned baseline; returns (exit status or -signal, stdout).
fn enforce_plain(d: &Daemon, session: &str, baseline: &Path, cmd: &[&str]) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt as _;
    let o = d
        .cmd()
        .args(["exec", "--session", session, "--baseline", baseline.to_str().unwrap(), "--"])
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let code = o.status.code().unwrap_or_else(|| -o.status.signal().unwrap_or(0));
    (code, String::from_utf8_lossy(&o.stdout).into_owned())
}

fn refusals(d: &Daemon, session: &str) -> Vec<Value> {
    d.audit().into_iter().filter(|l| l["session"] == session && l["action"] != "audited").collect()
}

/// A python program that reads a data file, writes into a directory, runs git: learned from
/// nothing, then the same program runs under the learned baseline alone and is not refused
/// anything; a read it never did is refused. Learning it again into the same directory gives the
/// same policy byte for byte. A server that crashes still gets its proposal.
#[test]
fn learn_plain_then_enforce_merge_and_crash() {
    let d = Daemon::start();
    let t = Scratch::new("learnplain");
    std::fs::create_dir_all(t.path("data")).unwrap();
    std::fs::create_dir_all(t.path("outdir")).unwrap();
    std::fs::write(t.path("data/in.txt"), "hello\n").unwrap();
    let script = format!(
        "import subprocess,sys\nd=open('{}').read()\nopen('{}/o-%d.txt' % len(sys.argv),'w').write(d)\n\
         print(subprocess.run(['/usr/bin/git','--version'],capture_output=True).stdout.decode().strip())\n\
         if len(sys.argv) > 1: open(sys.argv[1]).read()\n",
        t.path("data/in.txt").display(),
        t.path("outdir").display()
    );
    std::fs::write(t.path("prog.py"), &script).unwrap();
    let prog = t.path("prog.py").display().to_string();
    let out = t.path("learned");
    let (rc, err) = learn_plain(&d, "lp1", &out, &["/usr/bin/python3", "-I", &prog], "");
    assert_eq!(rc, 0, "{err}\n{}", d.log());
    let baseline = std::fs::read_to_string(out.join("baseline.toml")).unwrap();
    // Generalised where the rules say, precise elsewhere, never broad.
    assert!(baseline.contains("path = \"/usr/lib/python3.11\""), "{baseline}");
    assert!(baseline.contains(&format!("path = \"{}\"", t.path("data/in.txt").display())), "{baseline}");
    assert!(baseline.contains(&format!("path = \"{}\"", t.path("outdir").display())), "{baseline}");
    assert!(baseline.contains("path = \"/usr/bin/git\"\nsha256 = "), "{baseline}");
    for broad in ["\"/\"", "\"/etc\"", "\"/usr\"", "\"/usr/lib\"", "\"/tmp\"", "\"/home\""] {
        assert!(!baseline.contains(&format!("path = {broad}\n")), "{broad} proposed: {baseline}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Complete: no event was lost"), "{report}");
    mcpguard::grant::policy::Policy::load(&out.join("baseline.toml")).unwrap();

    // Enforced with the learned baseline only: the same program runs, nothing refused.
    let (rc, stdout) = enforce_plain(&d, "ep1", &out.join("baseline.toml"), &["/usr/bin/python3", "-I", &prog]);
    assert_eq!(rc, 0, "{stdout}\n{:#?}", refusals(&d, "ep1"));
    assert!(stdout.contains("git version"), "{stdout}");
    assert!(refusals(&d, "ep1").is_empty(), "{:#?}", refusals(&d, "ep1"));
    // What it never did during learning is refused (the kill backend ends it).
    let (rc, _) =
        enforce_plain(&d, "ep2", &out.join("baseline.toml"), &["/usr/bin/python3", "-I", &prog, "/etc/hostname"]);
    assert_ne!(rc, 0);
    let refused = d.wait_audit(|l| l["session"] == "ep2" && l["path"] == "/etc/hostname");
    assert_eq!(refused["reason"], "not_granted", "{refused}");

    // Again into the same directory: observations merge; the same behaviour, the same files.
    let (rc, err) = learn_plain(&d, "lp1", &out, &["/usr/bin/python3", "-I", &prog], "");
    assert_eq!(rc, 0, "{err}");
    assert_eq!(std::fs::read_to_string(out.join("baseline.toml")).unwrap(), baseline, "not byte-for-byte the same");
    let rec = mcpguard::grant::learn::observations::Recorded::load(&out).unwrap();
    assert_eq!(rec.runs.len(), 2);
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("Runs: 2"));

    // A server that crashes (SIGSEGV) after doing something still gets its proposal.
    let crash = t.path("crash");
    let code = format!(
        "import os,signal\nopen('{}').read()\nos.kill(os.getpid(), signal.SIGSEGV)\n",
        t.path("data/in.txt").display()
    );
    let (rc, err) = learn_plain(&d, "lp2", &crash, &["/usr/bin/python3", "-I", "-c", &code], "");
    assert_eq!(rc, 0, "{err}");
    let report = std::fs::read_to_string(crash.join("report.md")).unwrap();
    assert!(report.contains("server killed by SIGSEGV"), "{report}");
    let b = std::fs::read_to_string(crash.join("baseline.toml")).unwrap();
    assert!(b.contains(&format!("path = \"{}\"", t.path("data/in.txt").display())), "{b}");
}
