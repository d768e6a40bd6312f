//! `mcpguard exec --mcp` with software nobody here wrote: the official `mcp-server-git` (PyPI) and
//! `@modelcontextprotocol/server-filesystem` (npm) servers, driven by the official Python `mcp`
//! SDK client over stdio, through the real daemon and the real kernel. Root only.
//! `scripts/setup-mcp.sh` (run once here, idempotent) installs them into gitignored directories.
#![allow(unused_imports, reason = "the fixture module shares these imports via `use super::*`")]
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use mcpguard_tests::{Scratch, unique_id};
use serde_json::{Value, json};

mod fixture;
mod learn;
use fixture::*;

/// mcp-server-git: a call on the granted repository runs git for real; the same tool on a
/// repository outside the template's roots never reaches the server; an unmapped tool is refused;
/// after the approved git binary is replaced, the call is refused with `binary_changed`. Between
/// calls the session holds no task grant.
#[test]
fn git_server_grant_per_call_outside_refused_binary_changed() {
    let d = Daemon::start();
    let root = setup();
    let t = Scratch::new("mcpgit");
    let gitbin = t.copy_bin("/usr/bin/git", "git");
    std::fs::create_dir_all(t.path("repos/app")).unwrap();
    std::fs::create_dir_all(t.path("elsewhere/other")).unwrap();
    for r in [t.path("repos/app"), t.path("elsewhere/other")] {
        git(&["init", "-q"], &r);
        std::fs::write(r.join("a.txt"), "hello\n").unwrap();
        git(&["add", "a.txt"], &r);
        git(&["commit", "-qm", "first commit"], &r);
    }
    // The shipped policies, with the test's copy of git as the approved binary and the test's
    // repository directory as the only root for `repo_path`.
    let gb = gitbin.to_str().unwrap();
    let roots = format!("roots = [\"{}\"]", t.path("repos").display());
    let std_roots = "roots = [\"/home\", \"/srv\", \"/tmp\", \"/work\"]";
    std::fs::create_dir_all(t.path("pol")).unwrap();
    policy_variant(&t.path("pol"), "mcp-baseline-git", &[("/usr/bin/git", gb)]);
    for tpl in ["mcp-git-status", "mcp-git-log"] {
        policy_variant(&t.path("pol"), tpl, &[("/usr/bin/git", gb), (std_roots, &roots)]);
    }
    // git_diff_staged deliberately on git_status's template: its call may run `git status` only.
    let tools = t.path("pol/tools.toml");
    std::fs::write(
        &tools,
        "ttl = \"30s\"\n[tools.git_status]\ntemplate = \"mcp-git-status\"\nargs = { repo = \"repo_path\" }\n\
         [tools.git_log]\ntemplate = \"mcp-git-log\"\nargs = { repo = \"repo_path\" }\n\
         [tools.git_diff_staged]\ntemplate = \"mcp-git-status\"\nargs = { repo = \"repo_path\" }\n",
    )
    .unwrap();
    let venv = root.join(".mcp-venv");
    let args = d.exec_args(
        "git1",
        &tools,
        t.path("pol/mcp-baseline-git.toml").to_str().unwrap(),
        &[format!("python_prefix={}", venv.display())],
        &[venv.join("bin/python3").to_str().unwrap(), "-I", "-m", "mcp_server_git"],
    );
    let app = t.path("repos/app").display().to_string();
    let other = t.path("elsewhere/other").display().to_string();
    let status = format!("{} --socket {} status --json", bin().display(), d.socket.display());
    let report = run_client(
        &t,
        json!({
            "command": bin(), "args": args,
            "env": env(&[("GIT_PYTHON_GIT_EXECUTABLE", gb), ("GIT_CONFIG_NOSYSTEM", "1"), ("GIT_CONFIG_GLOBAL", "/dev/null")]),
            "steps": [
                {"op": "list"},
                {"op": "call", "name": "git_log", "arguments": {"repo_path": app}},
                {"op": "shell", "cmd": status},
                {"op": "call", "name": "git_status", "arguments": {"repo_path": other}},
                {"op": "call", "name": "git_diff", "arguments": {"repo_path": app, "target": "HEAD"}},
                {"op": "call", "name": "git_status", "arguments": {"repo_path": app}},
                {"op": "call", "name": "git_diff_staged", "arguments": {"repo_path": app}},
                // Replaced (rename over it): GitPython keeps `git cat-file` helpers running, so
                // the file itself is busy.
                {"op": "shell", "cmd": format!("cp {gb} {gb}.new && printf trojan >> {gb}.new && mv {gb}.new {gb}")},
                {"op": "call", "name": "git_status", "arguments": {"repo_path": app}},
            ]
        }),
    );
    let steps = report["steps"].as_array().unwrap();
    assert!(steps[0]["tools"].as_array().unwrap().iter().any(|t| t == "git_status"), "{report}");
    // git really ran, inside the call's grant.
    let text = steps[1]["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("first commit"), "{report}");
    assert_eq!(steps[1]["result"]["isError"], false, "{report}");
    // Between calls: no task grant in force, only the baseline.
    let st: Value = serde_json::from_str(steps[2]["stdout"].as_str().unwrap()).unwrap();
    let s = st["sessions"].as_array().unwrap().iter().find(|s| s["name"] == "git1").unwrap();
    assert!(s["task"].is_null(), "grant outlived its call: {s}");
    // The same tool on a repository outside the grant's roots: refused by the proxy.
    assert_eq!(error_reason(&steps[3]), "outside_policy", "{report}");
    assert!(steps[3]["error"]["message"].as_str().unwrap().contains("outside the allowed roots"));
    // A tool without a template never reaches the server.
    assert_eq!(error_reason(&steps[4]), "no_template", "{report}");
    // Each tool runs the git command lines of its own template: git_status works; a tool whose
    // call grant is git_status's cannot run `git diff` (the kernel ends git before it runs).
    let text = steps[5]["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("On branch"), "{report}");
    assert!(
        steps[6]["result"]["isError"] == true || steps[6].get("error").is_some(),
        "git diff under git_status's grant must fail: {report}"
    );
    let refused = d.wait_audit(|l| l["session"] == "git1" && l["reason"] == "args_not_granted");
    assert_eq!(
        (refused["tool"].as_str(), refused["hook"].as_str()),
        (Some("git_diff_staged"), Some("exec")),
        "{refused}"
    );
    // The approved git was modified after approval: the call's grant is refused.
    assert_eq!(steps[7]["rc"], 0, "{report}");
    assert_eq!(steps[8]["error"]["data"]["mcpguard"]["reason"], "binary_changed", "{report}");
    assert!(steps[8]["error"]["message"].as_str().unwrap().contains(gb), "{report}");
    // Nothing the proxy refused produced a kernel decision, and git never ran unapproved.
    assert!(d.audit().iter().all(|l| l["session"] != "git1" || l["reason"] == "args_not_granted"), "{:#?}", d.audit());
    let calls: Vec<&Value> =
        report["sent"].as_array().unwrap().iter().filter(|m| m["method"] == "tools/call").collect();
    assert_eq!(calls.len(), 6);
}

/// Every mcp-server-git tool through the shipped tools file and per-tool templates (their git
/// command lines measured from GitPython): each works on a real repository, and nothing the
/// kernel refused.
#[test]
fn every_git_tool_works_with_its_shipped_template() {
    let d = Daemon::start();
    let root = setup();
    let t = Scratch::new("mcpgitall");
    let gitbin = t.copy_bin("/usr/bin/git", "git");
    let repo = t.path("repos/app");
    std::fs::create_dir_all(&repo).unwrap();
    git(&["init", "-q"], &repo);
    std::fs::write(repo.join("a.txt"), "hello\n").unwrap();
    git(&["add", "a.txt"], &repo);
    git(&["commit", "-qm", "first commit"], &repo);
    std::fs::write(repo.join("b.txt"), "new\n").unwrap();
    let gb = gitbin.to_str().unwrap();
    let roots = format!("roots = [\"{}\"]", t.path("repos").display());
    let std_roots = "roots = [\"/home\", \"/srv\", \"/tmp\", \"/work\"]";
    std::fs::create_dir_all(t.path("pol/tools")).unwrap();
    policy_variant(&t.path("pol"), "mcp-baseline-git", &[("/usr/bin/git", gb)]);
    for e in std::fs::read_dir(root.join("policies")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(tpl) = name.strip_prefix("mcp-git-").and_then(|n| n.strip_suffix(".toml")) {
            policy_variant(&t.path("pol"), &format!("mcp-git-{tpl}"), &[("/usr/bin/git", gb), (std_roots, &roots)]);
        }
    }
    // GitPython reads /etc/gitconfig in-process for a commit, when the host has one (see the
    // template's comment).
    if Path::new("/etc/gitconfig").exists() {
        let p = t.path("pol/mcp-git-commit.toml");
        let text = std::fs::read_to_string(&p).unwrap() + "\n[[read]]\npath = \"/etc/gitconfig\"\n";
        std::fs::write(&p, text).unwrap();
    }
    let tools = t.path("pol/tools/mcp-git-tools.toml");
    std::fs::copy(root.join("policies/tools/mcp-git-tools.toml"), &tools).unwrap();
    let venv = root.join(".mcp-venv");
    let args = d.exec_args(
        "gitall",
        &tools,
        t.path("pol/mcp-baseline-git.toml").to_str().unwrap(),
        &[format!("python_prefix={}", venv.display())],
        &[venv.join("bin/python3").to_str().unwrap(), "-I", "-m", "mcp_server_git"],
    );
    // git_commit: GitPython chmods the objects it writes (see mcp-git-commit.toml).
    let mut args = args;
    args.insert(3, "--allow-metadata".into());
    let r = repo.display().to_string();
    let calls = [
        ("git_status", json!({})),
        ("git_diff_unstaged", json!({})),
        ("git_diff_staged", json!({})),
        ("git_diff", json!({"target": "HEAD"})),
        ("git_log", json!({})),
        ("git_show", json!({"revision": "HEAD"})),
        ("git_branch", json!({"branch_type": "local"})),
        ("git_add", json!({"files": ["b.txt"]})),
        ("git_commit", json!({"message": "second"})),
        ("git_reset", json!({})),
        ("git_create_branch", json!({"branch_name": "feat"})),
        ("git_checkout", json!({"branch_name": "feat"})),
    ];
    let steps: Vec<Value> = std::iter::once(json!({"op": "list"}))
        .chain(calls.iter().map(|(name, a)| {
            let mut a = a.clone();
            a["repo_path"] = json!(r);
            json!({"op": "call", "name": name, "arguments": a})
        }))
        .collect();
    let report = run_client(
        &t,
        json!({
            "command": bin(), "args": args,
            "env": env(&[("GIT_PYTHON_GIT_EXECUTABLE", gb), ("GIT_CONFIG_NOSYSTEM", "1"), ("GIT_CONFIG_GLOBAL", "/dev/null"),
                         ("GIT_AUTHOR_NAME", "t"), ("GIT_AUTHOR_EMAIL", "t@example.org"),
                         ("GIT_COMMITTER_NAME", "t"), ("GIT_COMMITTER_EMAIL", "t@example.org")]),
            "steps": steps,
        }),
    );
    for (i, (name, _)) in calls.iter().enumerate() {
        let s = &report["steps"][i + 1];
        assert_eq!(s["result"]["isError"], false, "{name}: {s}\naudit {:#?}", d.audit());
    }
    assert!(report["steps"][9]["result"]["content"][0]["text"].as_str().unwrap_or_default().contains("committed"));
    assert!(d.audit().iter().all(|l| l["session"] != "gitall"), "{:#?}", d.audit());
}

/// server-filesystem started with a broad allowed directory, so only the kernel stands between
/// a call and the files: the call's grant covers one directory. Reading inside works; reading
/// outside gets the server killed and the client a JSON-RPC error (no hang); the audit line names
/// the tool and the request id; the proxy restarts the server (replaying initialize) and the
/// next call works.
#[test]
fn filesystem_server_kernel_stops_reads_outside_the_call_grant() {
    let d = Daemon::start();
    let root = setup();
    let t = Scratch::new("mcpfs");
    fs_tree(&t);
    let args = fs_server_args(&d, root, &t, "fs1", "broad/granted");
    let inside = t.path("broad/granted/a.txt").display().to_string();
    let outside = t.path("broad/other/secret.txt").display().to_string();
    let report = run_client(
        &t,
        json!({
            "command": bin(), "args": args, "env": env(&[]),
            "steps": [
                {"op": "list"},
                {"op": "call", "name": "read_text_file", "arguments": {"path": inside}},
                {"op": "call", "name": "read_text_file", "arguments": {"path": outside}},
                {"op": "call", "name": "read_text_file", "arguments": {"path": inside}},
            ]
        }),
    );
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps[1]["result"]["content"][0]["text"], "granted-content\n", "{report}");
    assert_eq!(steps[2]["error"]["code"], -32011, "{report}");
    assert_eq!(error_reason(&steps[2]), "server_killed", "{report}");
    assert!(!report.to_string().contains("SECRET"));
    assert_eq!(steps[3]["result"]["content"][0]["text"], "granted-content\n", "server restarted: {report}");
    // The audit line of the kill names the tool and the client's own request id.
    let sent = report["sent"].as_array().unwrap();
    let outside_id = sent.iter().filter(|m| m["method"] == "tools/call").nth(1).unwrap()["id"].to_string();
    let line = d.wait_audit(|l| l["session"] == "fs1" && l["path"] == outside.as_str());
    assert_eq!(line["tool"], "read_text_file", "{line}");
    assert_eq!(line["call_id"], outside_id.as_str(), "{line}");
    assert_eq!(line["task"], format!("call:{outside_id}"), "{line}");
    assert_eq!((line["action"].as_str(), line["reason"].as_str()), (Some("killed"), Some("not_granted")), "{line}");
    assert_eq!(line["comm"], "node");
}

/// Delegation through the proxy (`exec --mcp --parent`): each call's grant is within the parent
/// session's grant in force. A read the tool's template allows but the parent's grant does not
/// gets the server killed; the audit line names the parent.
#[test]
fn delegated_proxy_calls_stay_within_the_parent_session() {
    let d = Daemon::start();
    let root = setup();
    let t = Scratch::new("mcpdel");
    fs_tree(&t);
    // The parent: a governed process whose task grant reads only broad/granted.
    let mut parent = std::process::Command::new(bin())
        .args([
            "--socket",
            d.socket.to_str().unwrap(),
            "exec",
            "--session",
            "orch",
            "--",
            "/usr/bin/dash",
            "-c",
            "read x",
        ])
        .env_clear()
        .env("PATH", "/usr/bin")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_session("orch");
    let granted = t.path("broad/granted").display().to_string();
    let v = d.raw(
        &json!({"v": 1, "op": "grant", "session": "orch", "task": "O-1", "ttl": "2m", "inline": {"read": [granted]}}),
    );
    assert_eq!(v["ok"], true, "{v}");
    // The tool's template reads all of broad.
    let mut args = fs_server_args(&d, root, &t, "fsdel", "broad");
    let at = args.iter().position(|a| a == "--mcp").unwrap();
    args.splice(at..at, ["--parent".to_string(), "orch".to_string()]);
    let inside = t.path("broad/granted/a.txt").display().to_string();
    let outside = t.path("broad/other/secret.txt").display().to_string();
    let report = run_client(
        &t,
        json!({
            "command": bin(), "args": args, "env": env(&[]),
            "steps": [
                {"op": "list"},
                {"op": "call", "name": "read_text_file", "arguments": {"path": inside}},
                {"op": "call", "name": "read_text_file", "arguments": {"path": outside}},
            ]
        }),
    );
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps[1]["result"]["content"][0]["text"], "granted-content\n", "{report}");
    assert_eq!(steps[2]["error"]["code"], -32011, "the template allows it, the parent does not: {report}");
    assert!(!report.to_string().contains("SECRET"));
    let line = d.wait_audit(|l| l["session"] == "fsdel" && l["path"] == outside.as_str());
    assert_eq!(line["delegated_by"], json!(["orch"]), "{line}");
    assert_eq!((line["action"].as_str(), line["tool"].as_str()), (Some("killed"), Some("read_text_file")), "{line}");
    let _ = parent.kill();
    let _ = parent.wait();
}

/// Orchestrated tasks: a per-call grant under an orchestrator's task grant is their intersection;
/// a new task grant during the call narrows the call and waits for its end; revoking the call
/// puts the task grant back, revoking that leaves the baseline.
#[test]
fn per_call_grant_is_intersected_with_the_orchestrator_task() {
    let d = Daemon::start();
    let t = Scratch::new("mcporch");
    for (dir, text) in [("a", "in-both"), ("b", "task-only"), ("c", "call-only")] {
        std::fs::create_dir_all(t.path(dir)).unwrap();
        std::fs::write(t.path(&format!("{dir}/f.txt")), format!("{text}\n")).unwrap();
    }
    let script =
        format!("while read x; do for d in a b c; do /usr/bin/cat {0}/$d/f.txt; done; echo round; done", t.0.display());
    let mut child = Command::new(bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["exec", "--session", "orch", "--baseline", "baseline-minimal", "--", "/usr/bin/dash", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.session("orch").is_null() {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let p = |s: &str| t.path(s).display().to_string();
    let task = d.raw(&json!({"v": 1, "op": "grant", "session": "orch", "task": "T-1", "ttl": "5m",
        "inline": {"exec": [{"path": "/usr/bin/cat"}], "read": [p("a"), p("b")]}}));
    assert_eq!(task["ok"], true, "{task}");
    let call = d.raw(&json!({"v": 1, "op": "grant", "session": "orch", "task": "call:7", "ttl": "1m",
        "tool": "read", "call_id": "7", "mode": "kill",
        "inline": {"exec": [{"path": "/usr/bin/cat"}, {"path": "/usr/bin/curl"}], "read": [p("a"), p("c")]}}));
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(call["composed_with_task"], "T-1", "{call}");
    let s = d.session("orch");
    assert_eq!(s["task"]["call_id"], "7", "{s}");
    assert_eq!(s["orchestrator_task"]["task"], "T-1", "{s}");
    let paths: Vec<&str> = s["task"]["paths"].as_array().unwrap().iter().map(|x| x["path"].as_str().unwrap()).collect();
    assert_eq!(paths, [p("a").as_str()], "{s}");
    assert_eq!(s["task"]["exec"].as_array().unwrap().len(), 1, "curl is not in the task: {s}");

    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut round = |child: &mut Child| {
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let mut acc = String::new();
        loop {
            let mut l = String::new();
            assert!(stdout.read_line(&mut l).unwrap() > 0, "governed shell died");
            if l.starts_with("round") {
                return acc;
            }
            acc.push_str(&l);
        }
    };
    assert_eq!(round(&mut child), "in-both\n", "inside the call: only the intersection");
    let line = d.wait_audit(|l| l["session"] == "orch" && l["path"] == p("c/f.txt").as_str());
    assert_eq!((line["tool"].as_str(), line["call_id"].as_str()), (Some("read"), Some("7")), "{line}");
    // A new task grant while the call runs: the call continues under call ∩ new task (here
    // nothing of it: T-2 reads only b), and T-2 is held aside for after the call.
    let t2 = d.raw(&json!({"v": 1, "op": "grant", "session": "orch", "task": "T-2", "ttl": "5m",
        "inline": {"exec": [{"path": "/usr/bin/cat"}], "read": [p("b")]}}));
    assert_eq!(t2["ok"], true, "{t2}");
    let s = d.session("orch");
    assert_eq!(
        (s["task"]["call_id"].as_str(), s["orchestrator_task"]["task"].as_str()),
        (Some("7"), Some("T-2")),
        "{s}"
    );
    assert_eq!(round(&mut child), "", "the call narrowed by the new task: a, b and c all refused");
    let r = d.raw(&json!({"v": 1, "op": "revoke", "session": "orch", "task": "call:7"}));
    assert_eq!(r["restored_task"], "T-2", "{r}");
    assert_eq!(round(&mut child), "task-only\n", "after the call: the new task grant");
    let r = d.raw(&json!({"v": 1, "op": "revoke", "session": "orch", "task": "T-2"}));
    assert_eq!((r["task"].as_str(), r["restored_task"].as_str()), (Some("T-2"), None), "{r}");
    assert_eq!(round(&mut child), "", "the baseline alone reads none of them");
    let _ = child.kill();
    let _ = child.wait();
}

/// Proxy behaviours shown with a small stand-in server (tests/mcp/fake_server.py, standard
/// library only, governed like the others): concurrent calls are serialised; a call outliving its
/// TTL gets a timeout error and the server a cancellation; a tool whose definition changed after
/// the first tools/list is refused while the others keep working.
#[test]
fn calls_are_serialised_timed_out_and_changed_tools_refused() {
    let d = Daemon::start();
    let root = setup();
    let t = Scratch::new("mcpfake");
    let args = fake_server_args(
        &d,
        root,
        &t,
        "fake1",
        "ttl = \"20s\"\n[tools.slow]\ntemplate = \"mcp-fs-none\"\n[tools.echo]\ntemplate = \"mcp-fs-none\"\n\
         [tools.hang]\ntemplate = \"mcp-fs-none\"\nttl = \"2s\"\n",
    );
    let report = run_client(
        &t,
        json!({
            "command": bin(), "args": args, "env": env(&[]),
            "steps": [
                {"op": "list"},
                {"op": "parallel", "calls": [{"name": "slow"}, {"name": "slow"}, {"name": "slow"}]},
                {"op": "call", "name": "hang"},
                {"op": "call", "name": "echo", "arguments": {"text": "before"}},
                {"op": "list"},
                {"op": "call", "name": "echo", "arguments": {"text": "after"}},
                {"op": "call", "name": "slow"},
            ]
        }),
    );
    let steps = report["steps"].as_array().unwrap();
    for r in steps[1]["results"].as_array().unwrap() {
        assert_eq!(r["content"][0]["text"], "max_concurrent=1", "calls overlapped: {report}");
    }
    assert_eq!(steps[2]["error"]["code"], -32001, "{report}");
    assert_eq!(error_reason(&steps[2]), "timeout");
    assert_eq!(steps[3]["result"]["content"][0]["text"], "before", "{report}");
    assert_eq!(error_reason(&steps[5]), "tool_changed", "{report}");
    assert_eq!(steps[6]["result"]["content"][0]["text"], "max_concurrent=1", "{report}");
    let hang_id =
        report["sent"].as_array().unwrap().iter().filter(|m| m["method"] == "tools/call").nth(3).unwrap()["id"].clone();
    let log = std::fs::read_to_string(
        t.0.read_dir().unwrap().flatten().find(|e| e.file_name().to_string_lossy().ends_with(".log")).unwrap().path(),
    )
    .unwrap();
    assert!(log.contains(&format!("cancelled {hang_id}")), "server was not told to cancel {hang_id}:\n{log}");
    assert!(d.audit().iter().all(|l| l["session"] != "fake1"), "{:#?}", d.audit());
}

/// A non-root proxy (an allowed uid) registers the server it forked, its own direct child; the
/// server is governed and the proxy is not (it keeps using the socket for every call).
#[test]
fn non_root_proxy_governs_its_child_and_stays_outside() {
    use std::os::unix::process::CommandExt as _;
    let d = Daemon::start_with(&["--allow-uid", "65534"]);
    let root = setup();
    let t = Scratch::new("mcpnobody");
    let args = fake_server_args(&d, root, &t, "nobody1", "[tools.echo]\ntemplate = \"mcp-fs-none\"\n");
    let mut proxy = Command::new(bin())
        .args(&args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C") // else python reads /etc/locale.alias, which the baseline does not grant
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(t.path("proxy.log")).unwrap())
        .spawn()
        .unwrap();
    let mut input = proxy.stdin.take().unwrap();
    let mut output = BufReader::new(proxy.stdout.take().unwrap());
    let mut rpc = |line: Value| -> Value {
        input.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut out = String::new();
        assert!(
            output.read_line(&mut out).unwrap() > 0,
            "proxy closed: {}",
            std::fs::read_to_string(t.path("proxy.log")).unwrap()
        );
        serde_json::from_str(&out).unwrap()
    };
    let init = rpc(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
    assert_eq!(init["result"]["serverInfo"]["name"], "fake", "{init} {:#?}", d.audit());
    let list = rpc(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    assert_eq!(list["result"]["tools"].as_array().unwrap().len(), 3, "{list}");
    let r = rpc(
        json!({"jsonrpc": "2.0", "id": "c-1", "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}),
    );
    assert_eq!(r["result"]["content"][0]["text"], "hi", "{r}");
    let s = d.session("nobody1");
    let server = s["root_pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{server}/status")).unwrap();
    assert!(status.contains(&format!("PPid:\t{}\n", proxy.id())), "the server is the proxy's child");
    let procs: Vec<u64> = s["processes"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert!(procs.contains(&server) && !procs.contains(&u64::from(proxy.id())), "{s}");
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "proxy did not exit after the client closed stdin");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.session("nobody1").is_null(), "session unregistered at the end");
}

/// A local HTTP server for the fetch test: `/page` is a small HTML page, `/redirect` sends the
/// client to `redirect_to`. Counts the connections it accepted.
fn http_server(redirect_to: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Read as _;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let resp = if req.starts_with("GET /redirect") {
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: {redirect_to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            } else {
                let body = "<html><head><title>t</title></head><body><p>mcpguard-fetched-page</p></body></html>";
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let _ = c.write_all(resp.as_bytes());
        }
    });
    (port, hits)
}

/// The official mcp-server-fetch, one grant per call filled from the call's `url`: a URL on the
/// local HTTP server is fetched; a URL naming another port (outside the template's `within`) is
/// refused by the proxy; a redirect to another port is stopped by the kernel (the server's
/// connect gets EPERM, that listener receives nothing, the audit line names the address and the
/// tool); between calls the server can reach nothing.
#[test]
fn fetch_server_reaches_only_the_host_and_port_of_each_call() {
    let d = Daemon::start();
    let root = setup();
    let t = Scratch::new("mcpfetch");
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let op = other.local_addr().unwrap().port();
    let (port, hits) = http_server(format!("http://127.0.0.1:{op}/elsewhere"));
    std::fs::create_dir_all(t.path("pol")).unwrap();
    policy_variant(
        &t.path("pol"),
        "mcp-fetch-url",
        &[(r#"within = ["tcp://0.0.0.0/0:*", "tcp://[::/0]:*"]"#, &format!(r#"within = ["tcp://127.0.0.1:{port}"]"#))],
    );
    let tools = t.path("pol/tools.toml");
    std::fs::write(&tools, "ttl = \"30s\"\n[tools.fetch]\ntemplate = \"mcp-fetch-url\"\nargs = { url = \"url\" }\n")
        .unwrap();
    let venv = root.join(".mcp-venv");
    let args = d.exec_args(
        "fetch1",
        &tools,
        "mcp-baseline-python",
        &[format!("python_prefix={}", venv.display())],
        &[
            venv.join("bin/python3").to_str().unwrap(),
            "-I",
            "-m",
            "mcp_server_fetch",
            "--ignore-robots-txt",
            "--allow-private-ips",
        ],
    );
    let page = format!("http://127.0.0.1:{port}/page");
    let report = run_client(
        &t,
        json!({
            "command": bin(), "args": args, "env": env(&[]),
            "steps": [
                {"op": "list"},
                {"op": "call", "name": "fetch", "arguments": {"url": page, "raw": true}},
                {"op": "call", "name": "fetch", "arguments": {"url": format!("http://127.0.0.1:{op}/x")}},
                {"op": "call", "name": "fetch", "arguments": {"url": format!("http://127.0.0.1:{port}/redirect")}},
                {"op": "call", "name": "fetch", "arguments": {"url": page, "raw": true}},
            ]
        }),
    );
    let steps = report["steps"].as_array().unwrap();
    assert!(steps[0]["tools"].as_array().unwrap().iter().any(|t| t == "fetch"), "{report}");
    let text = |s: &Value| s["result"]["content"][0]["text"].as_str().unwrap_or_default().to_owned();
    let decisions = || {
        d.audit().into_iter().filter(|l| l["session"] == "fetch1").map(|l| l.to_string()).collect::<Vec<_>>().join("\n")
    };
    assert!(text(&steps[1]).contains("mcpguard-fetched-page"), "{report}\n{}", decisions());
    assert_eq!(error_reason(&steps[2]), "outside_policy", "{report}");
    assert!(steps[2]["error"]["message"].as_str().unwrap().contains("not within"), "{report}");
    // The redirect: the server followed it and the kernel refused the connect.
    let redirected = &steps[3];
    assert!(
        redirected["result"]["isError"] == true || redirected.get("error").is_some(),
        "the redirected fetch must fail: {report}"
    );
    assert!(!text(redirected).contains("mcpguard-fetched-page"), "{report}");
    other.set_nonblocking(true).unwrap();
    assert!(other.accept().is_err(), "the redirect target received no connection");
    let line = d.wait_audit(|l| l["session"] == "fetch1" && l["hook"] == "connect");
    assert_eq!(line["net"], format!("tcp 127.0.0.1:{op}"), "{line}");
    assert_eq!((line["action"].as_str(), line["reason"].as_str()), (Some("denied"), Some("not_granted")), "{line}");
    assert_eq!(line["tool"], "fetch", "{line}");
    // The server kept running (EPERM, not a kill) and the next call works.
    assert!(text(&steps[4]).contains("mcpguard-fetched-page"), "{report}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3, "page, redirect, page");
}

/// A `broad/` tree for the filesystem server: `granted/a.txt` and `other/secret.txt`.
fn fs_tree(t: &Scratch) {
    std::fs::create_dir_all(t.path("broad/granted")).unwrap();
    std::fs::create_dir_all(t.path("broad/other")).unwrap();
    std::fs::write(t.path("broad/granted/a.txt"), "granted-content\n").unwrap();
    std::fs::write(t.path("broad/other/secret.txt"), "SECRET\n").unwrap();
}

/// `exec --mcp` arguments for the official filesystem server serving `broad/`, with a tools
/// policy whose `read_text_file` grant (template `mcp-fs-read`) reads `within` (relative to `t`).
fn fs_server_args(d: &Daemon, root: &Path, t: &Scratch, session: &str, within: &str) -> Vec<String> {
    let tools = t.path("tools.toml");
    std::fs::write(
        &tools,
        format!(
            "template_dirs = [\"{}\"]\nttl = \"20s\"\n[tools.read_text_file]\ntemplate = \"mcp-fs-read\"\n\
             vars = {{ path = \"{}\" }}\n",
            policy_dir().display(),
            t.path(within).display()
        ),
    )
    .unwrap();
    let node_prefix = root.join(".mcp-node");
    let server = node_prefix.join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    d.exec_args(
        session,
        &tools,
        "mcp-baseline-node",
        &[format!("node_prefix={}", node_prefix.display())],
        &["/usr/bin/node", server.to_str().unwrap(), t.path("broad").to_str().unwrap()],
    )
}
