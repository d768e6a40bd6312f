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
    let learn = || learn_plain(&d, "lp1", &out, &["/usr/bin/python3", "-I", &prog], "");
    let (rc, err) = learn();
    assert_eq!(rc, 0, "{err}\n{}", d.log());
    let first = std::fs::read_to_string(out.join("baseline.toml")).unwrap();
    // The first run sees that git ran, not with which command line: flagged for a human.
    assert!(
        first.contains("path = \"/usr/bin/git\"\nsha256 = ")
            && first.contains("# DECIDE: /usr/bin/git: its command lines"),
        "{first}"
    );
    // Again into the same directory: observations merge, and git, known now, has its command
    // line recorded.
    let (rc, err) = learn();
    assert_eq!(rc, 0, "{err}");
    let baseline = std::fs::read_to_string(out.join("baseline.toml")).unwrap();
    assert!(baseline.contains("args = [\"--version\"]") && !baseline.contains("DECIDE: /usr/bin/git"), "{baseline}");
    // Generalised where the rules say, precise elsewhere, never broad.
    assert!(baseline.contains("path = \"/usr/lib/python3.11\""), "{baseline}");
    assert!(baseline.contains(&format!("path = \"{}\"", t.path("data/in.txt").display())), "{baseline}");
    assert!(baseline.contains(&format!("path = \"{}\"", t.path("outdir").display())), "{baseline}");
    for broad in ["\"/\"", "\"/etc\"", "\"/usr\"", "\"/usr/lib\"", "\"/tmp\"", "\"/home\""] {
        assert!(!baseline.contains(&format!("path = {broad}\n")), "{broad} proposed: {baseline}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Complete: no event was lost") && report.contains("Runs: 2"), "{report}");
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

    // The same behaviour learned once more: the same policy, byte for byte.
    let (rc, err) = learn();
    assert_eq!(rc, 0, "{err}");
    assert_eq!(std::fs::read_to_string(out.join("baseline.toml")).unwrap(), baseline, "not byte-for-byte the same");
    assert_eq!(mcpguard::grant::learn::observations::Recorded::load(&out).unwrap().runs.len(), 3);

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

fn init_repo(dir: &Path, dirty: bool) {
    std::fs::create_dir_all(dir).unwrap();
    git(&["init", "-q"], dir);
    // Content of its own: every repository has other commit ids.
    std::fs::write(dir.join("a.txt"), format!("hello from {}\n", dir.display())).unwrap();
    git(&["add", "a.txt"], dir);
    git(&["commit", "-qm", "first commit"], dir);
    if dirty {
        std::fs::write(dir.join("a.txt"), "hello again\n").unwrap();
    }
}

/// Waits until `learn` (which outlives the client by a moment) has written `file` of run `runs`.
fn wait_proposal(out: &Path, runs: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = mcpguard::grant::learn::observations::Recorded::load(out).map_or(0, |r| r.runs.len());
        if n >= runs && out.join("report.md").exists() {
            return;
        }
        assert!(Instant::now() < deadline, "no proposal in {}", out.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn learn_args(d: &Daemon, session: &str, out: &Path, vars: &[String], cmd: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["--socket".into(), d.socket.display().to_string(), "learn".into()];
    a.extend(["--session", session, "--out", out.to_str().unwrap(), "--mcp"].map(String::from));
    for v in vars {
        a.extend(["--var".to_owned(), v.clone()]);
    }
    a.push("--".into());
    a.extend(cmd.iter().map(|s| (*s).to_owned()));
    a
}

fn calls_on(repo: &Path, tools: &[(&str, Value)]) -> Vec<Value> {
    tools
        .iter()
        .map(|(name, a)| {
            let mut a = a.clone();
            a["repo_path"] = json!(repo);
            json!({"op": "call", "name": name, "arguments": a})
        })
        .collect()
}

fn assert_all_ok(report: &Value, steps: impl std::ops::RangeBounds<usize>) {
    for (i, s) in report["steps"].as_array().unwrap().iter().enumerate().filter(|(i, _)| steps.contains(i)) {
        assert!(s.get("result").is_some() && s["result"]["isError"] == false, "step {i}: {s}\n{report}");
    }
}

/// mcp-server-git learned from an empty policy through the official SDK client, then enforced
/// with the learned files only: the same calls pass (also on another repository beside the
/// learned ones), a repository outside what was learned and a tool never called are refused by
/// the proxy, nothing is refused by the kernel; the learned baseline grants nothing the
/// hand-written one does not, except where it says so.
#[test]
fn learn_git_server_then_enforce_per_tool() {
    let d = Daemon::start();
    let root = setup();
    let t = Scratch::new("learngit");
    for (r, dirty) in [("repos/a", false), ("repos/b", true), ("repos/c", true), ("elsewhere/x", false)] {
        init_repo(&t.path(r), dirty);
    }
    let venv = root.join(".mcp-venv");
    let py = venv.join("bin/python3");
    let server = [py.to_str().unwrap(), "-I", "-m", "mcp_server_git"];
    let genv = env(&[
        ("GIT_PYTHON_GIT_EXECUTABLE", "/usr/bin/git"),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ]);
    let tools = [
        ("git_status", json!({})),
        ("git_log", json!({})),
        ("git_diff_unstaged", json!({})),
        ("git_branch", json!({"branch_type": "local"})),
    ];
    let out = t.path("learned");
    let vars = [format!("python_prefix={}", venv.display())];
    let mut steps = vec![json!({"op": "list"})];
    steps.extend(calls_on(&t.path("repos/a"), &tools));
    steps.extend(calls_on(&t.path("repos/b"), &tools));
    // Twice: the second run records the command lines of the binaries the first saw run.
    for run in 1..=2 {
        let plan =
            json!({"command": bin(), "args": learn_args(&d, "lg1", &out, &vars, &server), "env": genv, "steps": steps});
        assert_all_ok(&run_client(&t, plan), 1..);
        wait_proposal(&out, run);
    }
    let tools_toml = std::fs::read_to_string(out.join("tools.toml")).unwrap();
    assert!(
        tools_toml.contains("[tools.\"git_status\"]") && tools_toml.contains("args = { repo = \"repo_path\" }"),
        "{tools_toml}"
    );
    let tpl = std::fs::read_to_string(out.join("learned-tool-git_status.toml")).unwrap();
    assert!(
        tpl.contains("path = \"${repo}\"") && tpl.contains(&format!("roots = [\"{}\"]", t.path("repos").display())),
        "{tpl}"
    );
    assert!(tpl.contains("path = \"${repo}/.git\""), "{tpl}");
    // The tools the server listed and no call used are named for a human.
    let report_md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report_md.contains("never called while learning") && report_md.contains("`git_commit`"), "{report_md}");
    assert!(
        tools_toml.contains("# DECIDE: listed by the server, never called while learning: git_add"),
        "{tools_toml}"
    );

    // Enforced with the learned files only.
    let args = d.exec_args("eg1", &out.join("tools.toml"), out.join("baseline.toml").to_str().unwrap(), &vars, &server);
    let mut steps = vec![json!({"op": "list"})];
    steps.extend(calls_on(&t.path("repos/a"), &tools));
    steps.extend(calls_on(&t.path("repos/c"), &tools));
    steps.extend(calls_on(&t.path("elsewhere/x"), &tools[..1]));
    steps.extend(calls_on(&t.path("repos/a"), &[("git_show", json!({"revision": "HEAD"}))]));
    let report = run_client(&t, json!({"command": bin(), "args": args, "env": genv, "steps": steps}));
    let s = report["steps"].as_array().unwrap();
    for (i, step) in s.iter().enumerate().take(9).skip(1) {
        assert!(step.get("result").is_some() && step["result"]["isError"] == false, "step {i}: {step}\n{report}");
    }
    assert!(s[2]["result"]["content"][0]["text"].as_str().unwrap().contains("first commit"), "{report}");
    assert_eq!(error_reason(&s[9]), "outside_policy", "{report}");
    assert_eq!(error_reason(&s[10]), "no_template", "{report}");
    assert!(refusals(&d, "eg1").is_empty(), "refused during enforcement: {:#?}", refusals(&d, "eg1"));

    // Breadth: against the hand-written baseline, both instantiated for the same venv.
    let (l, h) = no_broader_than(&out.join("baseline.toml"), "mcp-baseline-git", "python_prefix", &venv);
    assert!(l.0 <= h.0 && l.2 <= h.2 && l.3 <= h.3 && l.4 <= h.4, "{l:?} vs {h:?}");
    // The same answer from `mcpguard policy diff` (exit 1: they differ, the other way).
    let o = d
        .cmd()
        .args(["policy", "diff"])
        .arg(out.join("baseline.toml"))
        .arg(policy_dir().join("mcp-baseline-git.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.starts_with(&format!("{} grants nothing that", out.join("baseline.toml").display())), "{text}");
    assert!(text.contains("  read /usr/lib\n"), "{text}");
    // git runs in the calls with the command lines each tool used, nothing else.
    let tpl = std::fs::read_to_string(out.join("learned-tool-git_status.toml")).unwrap();
    assert!(tpl.contains("args = [\"status\"]") && !tpl.contains("args = [\"diff"), "{tpl}");
}

/// @modelcontextprotocol/server-filesystem learned from an empty policy, the learning ended by
/// `mcpguard learn --finish` from another process while the server runs; then enforced with the
/// learned files only: the same reads pass (and a new file beside the learned ones), a file
/// outside what was learned is refused by the proxy, nothing by the kernel; the learned baseline
/// grants nothing the hand-written one does not.
#[test]
fn learn_filesystem_server_finish_then_enforce() {
    let d = Daemon::start();
    let root = setup();
    let t = Scratch::new("learnfs");
    for (f, text) in [("broad/data/a.txt", "alpha\n"), ("broad/data/b.txt", "beta\n"), ("broad/data/c.txt", "gamma\n")]
    {
        std::fs::create_dir_all(t.path(f).parent().unwrap()).unwrap();
        std::fs::write(t.path(f), text).unwrap();
    }
    std::fs::create_dir_all(t.path("broad/other")).unwrap();
    std::fs::write(t.path("broad/other/secret.txt"), "SECRET\n").unwrap();
    let node_prefix = root.join(".mcp-node");
    let js = node_prefix.join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    let broad = t.path("broad");
    let server = ["/usr/bin/node", js.to_str().unwrap(), broad.to_str().unwrap()];
    let out = t.path("learned");
    let vars = [format!("node_prefix={}", node_prefix.display())];
    let read = |f: &str| json!({"op": "call", "name": "read_text_file", "arguments": {"path": t.path(f)}});
    let list = json!({"op": "call", "name": "list_directory", "arguments": {"path": t.path("broad/data")}});
    let finish =
        format!("{} --socket {} learn --finish lf1 --out {}", bin().display(), d.socket.display(), out.display());
    let steps = json!([{"op": "list"}, read("broad/data/a.txt"), read("broad/data/b.txt"), list, {"op": "shell", "cmd": finish}]);
    let report = run_client(
        &t,
        json!({"command": bin(), "args": learn_args(&d, "lf1", &out, &vars, &server), "env": env(&[]), "steps": steps}),
    );
    assert_all_ok(&report, 1..4);
    assert_eq!(report["steps"][4]["rc"], 0, "{report}");
    wait_proposal(&out, 1);
    let tools_toml = std::fs::read_to_string(out.join("tools.toml")).unwrap();
    assert!(
        tools_toml.contains("[tools.\"read_text_file\"]") && tools_toml.contains("args = { path = \"path\" }"),
        "{tools_toml}"
    );
    let tpl = std::fs::read_to_string(out.join("learned-tool-read_text_file.toml")).unwrap();
    assert!(
        tpl.contains("path = \"${path}\"")
            && tpl.contains(&format!("roots = [\"{}\"]", t.path("broad/data").display())),
        "{tpl}"
    );
    assert!(!tpl.contains("[[write]]"), "{tpl}");
    let report_md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report_md.contains("finished by `mcpguard learn --finish`"), "{report_md}");

    let args = d.exec_args("ef1", &out.join("tools.toml"), out.join("baseline.toml").to_str().unwrap(), &vars, &server);
    let list = json!({"op": "call", "name": "list_directory", "arguments": {"path": t.path("broad/data")}});
    let steps = json!([{"op": "list"}, read("broad/data/a.txt"), read("broad/data/b.txt"), list, read("broad/data/c.txt"), read("broad/other/secret.txt")]);
    let report = run_client(&t, json!({"command": bin(), "args": args, "env": env(&[]), "steps": steps}));
    assert_all_ok(&report, 1..5);
    assert_eq!(report["steps"][1]["result"]["content"][0]["text"], "alpha\n", "{report}");
    assert_eq!(report["steps"][4]["result"]["content"][0]["text"], "gamma\n", "{report}");
    assert_eq!(error_reason(&report["steps"][5]), "outside_policy", "{report}");
    assert!(!report.to_string().contains("SECRET"));
    assert!(refusals(&d, "ef1").is_empty(), "refused during enforcement: {:#?}", refusals(&d, "ef1"));

    no_broader_than(&out.join("baseline.toml"), "mcp-baseline-node", "node_prefix", &node_prefix);
}

/// A Python installed under another prefix (`/opt/mcpg-py-ID/{bin,lib}`, copied from the system
/// one: CPython finds its prefix from where its executable is), removed on drop.
struct OtherPython(PathBuf);

impl OtherPython {
    fn install() -> Self {
        let real = std::fs::canonicalize("/usr/bin/python3").unwrap();
        let ver = real.file_name().unwrap().to_str().unwrap().to_owned(); // python3.11
        let prefix = PathBuf::from(format!("/opt/mcpg-py-{}", unique_id()));
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        std::fs::create_dir_all(prefix.join("lib")).unwrap();
        std::fs::copy(&real, prefix.join("bin").join(&ver)).unwrap();
        let st = Command::new("cp").arg("-a").arg(format!("/usr/lib/{ver}")).arg(prefix.join("lib")).status().unwrap();
        assert!(st.success());
        Self(prefix)
    }

    fn python(&self) -> PathBuf {
        let real = std::fs::canonicalize("/usr/bin/python3").unwrap();
        self.0.join("bin").join(real.file_name().unwrap())
    }
}

impl Drop for OtherPython {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The case: a virtualenv made from a Python outside /usr. mcp-server-git in it is
/// learned and enforced with the learned files only; its interpreter's library directory is in
/// the learned baseline (collapsed), nothing is refused.
#[test]
fn learn_with_an_interpreter_outside_usr() {
    let d = Daemon::start();
    let root = setup();
    let t = Scratch::new("learnvenv");
    let py = OtherPython::install();
    let venv = t.path("venv");
    let st = Command::new(py.python()).args(["-I", "-m", "venv", "--without-pip"]).arg(&venv).status().unwrap();
    assert!(st.success(), "venv from {}", py.python().display());
    let ver = py.python().file_name().unwrap().to_str().unwrap().to_owned();
    let site = format!("lib/{ver}/site-packages");
    let st = Command::new("cp")
        .arg("-a")
        .arg(root.join(".mcp-venv").join(&site).join("."))
        .arg(venv.join(&site))
        .status()
        .unwrap();
    assert!(st.success());
    init_repo(&t.path("repos/a"), true);
    let vpy = venv.join("bin/python3");
    let server = [vpy.to_str().unwrap(), "-I", "-m", "mcp_server_git"];
    let genv = env(&[
        ("GIT_PYTHON_GIT_EXECUTABLE", "/usr/bin/git"),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ]);
    let out = t.path("learned");
    let vars = [format!("python_prefix={}", venv.display())];
    let tools = [("git_status", json!({})), ("git_log", json!({}))];
    let mut steps = vec![json!({"op": "list"})];
    steps.extend(calls_on(&t.path("repos/a"), &tools));
    let plan =
        json!({"command": bin(), "args": learn_args(&d, "lv1", &out, &vars, &server), "env": genv, "steps": steps});
    assert_all_ok(&run_client(&t, plan), 1..);
    wait_proposal(&out, 1);
    let baseline = std::fs::read_to_string(out.join("baseline.toml")).unwrap();
    let stdlib = format!("path = \"{}/lib/{ver}\"", py.0.display());
    assert!(baseline.contains(&stdlib) && baseline.contains("path = \"${python_prefix}\""), "{baseline}");

    let args = d.exec_args("ev1", &out.join("tools.toml"), out.join("baseline.toml").to_str().unwrap(), &vars, &server);
    let report = run_client(&t, json!({"command": bin(), "args": args, "env": genv, "steps": steps}));
    assert_all_ok(&report, 1..);
    assert!(
        report["steps"][1]["result"]["content"][0]["text"].as_str().unwrap().contains("Changes not staged"),
        "{report}"
    );
    assert!(refusals(&d, "ev1").is_empty(), "refused during enforcement: {:#?}", refusals(&d, "ev1"));
}

/// Loss is never silent: while the daemon is stopped (SIGSTOP, our own child), the learned
/// program makes far more audited opens than the kernel's ring buffer holds; the kernel counts
/// what it dropped, and the proposal is written flagged INCOMPLETE (banner in every file, the
/// report, exit status 3).
#[test]
fn lost_events_flag_the_proposal_incomplete() {
    use std::io::BufRead as _;
    let d = Daemon::start();
    let t = Scratch::new("learnlost");
    std::fs::create_dir_all(t.path("d/e/f")).unwrap();
    std::fs::write(t.path("d/e/f/x"), "x").unwrap();
    let code = format!(
        "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n\
         for i in range(60000):\n    open('{}').close()\nprint('done', flush=True)\nsys.stdin.readline()\n",
        t.path("d/e/f/x").display()
    );
    let out = t.path("learned");
    let mut c = d
        .cmd()
        .args([
            "learn",
            "--session",
            "ll1",
            "--out",
            out.to_str().unwrap(),
            "--",
            "/usr/bin/python3",
            "-I",
            "-c",
            &code,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let daemon = nix::unistd::Pid::from_raw(i32::try_from(d.child.as_ref().unwrap().id()).unwrap());
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGSTOP).unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    let done = lines.next().unwrap().unwrap();
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(done, "done");
    stdin.write_all(b"end\n").unwrap();
    drop(stdin);
    let o = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("INCOMPLETE"), "{err}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("**INCOMPLETE**"), "{report}");
    let text = std::fs::read_to_string(out.join("baseline.toml")).unwrap();
    assert!(text.lines().nth(1).unwrap().starts_with("# INCOMPLETE:"), "{text}");
    let rec = mcpguard::grant::learn::observations::Recorded::load(&out).unwrap();
    assert!(rec.runs[0].lost_events > 0 && !rec.complete());
}

/// An MCP server that crashes during learning (SIGSEGV, sent from a step of the client's plan to
/// the session's own process, found in `mcpguard status`) ends the session: the proposal of
/// what it did until then is still written, saying how it ended.
#[test]
fn learn_mcp_server_that_crashes_still_proposes() {
    let d = Daemon::start();
    let root = setup();
    let t = Scratch::new("learncrash");
    std::fs::create_dir_all(t.path("broad/data")).unwrap();
    std::fs::write(t.path("broad/data/a.txt"), "alpha\n").unwrap();
    let js = root.join(".mcp-node/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    let broad = t.path("broad");
    let server = ["/usr/bin/node", js.to_str().unwrap(), broad.to_str().unwrap()];
    let out = t.path("learned");
    let crash = format!(
        "kill -SEGV $({} --socket {} status --json | {} -c 'import json,sys; print(*[p for s in json.load(sys.stdin)[\"sessions\"] if s[\"name\"] == \"lc1\" for p in s[\"processes\"]])')",
        bin().display(),
        d.socket.display(),
        root.join(".mcp-venv/bin/python3").display()
    );
    let steps = json!([
        {"op": "list"},
        {"op": "call", "name": "read_text_file", "arguments": {"path": t.path("broad/data/a.txt")}},
        {"op": "shell", "cmd": crash},
        // The proxy sees the server end before the client closes.
        {"op": "shell", "cmd": "sleep 1"},
    ]);
    let report = run_client(
        &t,
        json!({"command": bin(), "args": learn_args(&d, "lc1", &out, &[], &server), "env": env(&[]), "steps": steps}),
    );
    assert_all_ok(&report, 1..2);
    assert_eq!(report["steps"][2]["rc"], 0, "{report}");
    wait_proposal(&out, 1);
    let report_md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report_md.contains("server killed by SIGSEGV (proxy status 1)"), "{report_md}");
    let tools_toml = std::fs::read_to_string(out.join("tools.toml")).unwrap();
    assert!(tools_toml.contains("[tools.\"read_text_file\"]"), "{tools_toml}");
    mcpguard::grant::policy::Policy::load(&out.join("learned-tool-read_text_file.toml")).unwrap();
}

/// Entries a policy grants: (exec, read, write, connect, listen).
type Counts = (usize, usize, usize, usize, usize);

/// Asserts that the learned baseline grants nothing the shipped one `hand` does not, both
/// instantiated with `var` = `value`; returns their entry counts (learned, hand-written).
fn no_broader_than(learned: &Path, hand: &str, var: &str, value: &Path) -> (Counts, Counts) {
    use mcpguard::grant::{
        learn::diff::{Grants, only_in},
        policy::Policy,
    };
    let v = std::collections::BTreeMap::from([(var.to_string(), value.display().to_string())]);
    let learned = Grants::from(&Policy::load(learned).unwrap().instantiate(&v).unwrap()).resolved();
    let hand =
        Grants::from(&Policy::load(&policy_dir().join(format!("{hand}.toml"))).unwrap().instantiate(&v).unwrap())
            .resolved();
    let broader = only_in(&learned, &hand);
    eprintln!(
        "learned {:?} vs hand-written {:?}; learned-only: {broader:?}; hand-only: {:?}",
        learned.counts(),
        hand.counts(),
        only_in(&hand, &learned)
    );
    assert!(broader.is_empty(), "learned baseline broader than the hand-written one: {broader:?}");
    (learned.counts(), hand.counts())
}
