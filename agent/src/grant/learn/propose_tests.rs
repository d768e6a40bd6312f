use super::*;
use crate::grant::learn::observations::Run;
use crate::grant::learn::render;
use crate::grant::policy::Policy;

fn obs(tool: Option<&str>, call: Option<&str>, hook: &str, access: &str, path: &str) -> Observation {
    Observation {
        tool: tool.map(Into::into),
        call_id: call.map(Into::into),
        ..Observation::audited(hook, access, path)
    }
}

fn call(id: &str, tool: &str, repo: &str) -> CallRecord {
    CallRecord {
        call_id: id.into(),
        tool: tool.into(),
        arguments: serde_json::json!({"repo_path": repo}),
        paths: BTreeMap::from([("repo_path".to_string(), repo.to_string())]),
    }
}

/// A recorded git server session: two git_status calls on two repositories.
fn git_run() -> Run {
    let st = Some("git_status");
    let mut lock = obs(st, Some("1"), "open", "w", "/srv/repos/a/.git/index.lock");
    lock.now = Some("missing".into());
    lock.parent_before = Some("/srv/repos/a/.git".into());
    let mut git = obs(st, Some("1"), "exec", "", "/usr/bin/git");
    git.sha256 = Some("cd".repeat(32));
    let mut line = obs(st, Some("1"), "exec", "", "/usr/bin/git");
    (line.reason, line.argv) = ("args_not_granted".into(), Some("/usr/bin/git -C /srv/repos/a status".into()));
    let mut line_b = line.clone();
    (line_b.call_id, line_b.argv) = (Some("2".into()), Some("/usr/bin/git -C /srv/repos/b status".into()));
    Run {
        session: "git1".into(),
        mcp: true,
        ended: Some("exited with status 0".into()),
        calls: vec![call("1", "git_status", "/srv/repos/a"), call("2", "git_status", "/srv/repos/b")],
        observations: vec![
            obs(None, None, "open", "r", "/usr/lib/python3.11/os.py"),
            obs(None, None, "open", "r", "/etc/ld.so.cache"),
            git,
            line,
            line_b,
            obs(st, Some("1"), "open", "r", "/srv/repos/a/.git/HEAD"),
            obs(st, Some("1"), "open", "r", "/srv/repos/a/a.txt"),
            lock,
            obs(st, Some("1"), "open", "r", "/etc/ld.so.cache"),
            obs(st, Some("2"), "open", "r", "/srv/repos/b/.git/config"),
            obs(st, Some("1"), "open", "r", "/usr/share/git-core/templates/x"),
        ],
        ..Run::default()
    }
}

#[test]
fn tool_paths_under_the_argument_become_its_variable() {
    let mut rec = Recorded { v: 1, runs: Vec::new(), var_names: BTreeMap::new() };
    let mut run = git_run();
    run.listed = vec!["git_status".into(), "git_commit".into()];
    rec.merge(run);
    let p = propose(&rec, "git1", &BTreeMap::new());
    assert_eq!(p.never_called.iter().collect::<Vec<_>>(), ["git_commit"]);
    let t = &p.tools["git_status"];
    assert_eq!(t.args, BTreeMap::from([("repo".to_string(), "repo_path".to_string())]));
    let d = &t.template;
    assert_eq!(d.read.keys().map(String::as_str).collect::<Vec<_>>(), ["${repo}", "/usr/share/git-core/templates/x"]);
    assert_eq!(d.write.keys().map(String::as_str).collect::<Vec<_>>(), ["${repo}/.git"]);
    assert_eq!(d.vars["repo"].iter().collect::<Vec<_>>(), ["/srv/repos"]);
    // The argument in the command line is the variable: one pattern for both repositories.
    let args: Vec<&Vec<String>> = d.exec["/usr/bin/git"].args.iter().collect();
    assert_eq!(args, [&vec!["-C".to_string(), "${repo}".into(), "status".into()]]);
    // The baseline's /etc/ld.so.cache is in force during calls: not repeated in the template.
    assert!(!d.read.contains_key("/etc/ld.so.cache"));
    // Every file parses as what `exec --mcp --tools` reads.
    let files = render::files(&p);
    for (name, text) in &files {
        if name.ends_with(".toml") && name != "tools.toml" {
            Policy::parse(text, name).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        }
    }
    assert!(files["tools.toml"].contains("args = { repo = \"repo_path\" }"), "{}", files["tools.toml"]);
    assert!(files["report.md"].contains("Complete"), "{}", files["report.md"]);
}

#[test]
fn deterministic_merge_and_incomplete_flagged() {
    let mut a = Recorded { v: 1, runs: Vec::new(), var_names: BTreeMap::new() };
    a.merge(git_run());
    let mut b = a.clone();
    let first = render::files(&propose(&a, "git1", &BTreeMap::new()));
    assert_eq!(first, render::files(&propose(&b, "git1", &BTreeMap::new())), "byte for byte");
    // A second run merged in: its repository widens the roots, nothing else is lost.
    let mut second = git_run();
    for c in &mut second.calls {
        c.paths.insert("repo_path".into(), "/home/u/code/r".into());
    }
    second.lost_events = 3;
    b.merge(second);
    let p = propose(&b, "git1", &BTreeMap::new());
    assert_eq!(p.tools["git_status"].template.vars["repo"].iter().collect::<Vec<_>>(), ["/home/u/code", "/srv/repos"]);
    assert!(!p.complete());
    let files = render::files(&p);
    assert!(files["baseline.toml"].starts_with("# Proposed") && files["baseline.toml"].contains("# INCOMPLETE"));
    assert!(files["report.md"].contains("**INCOMPLETE**: 3 event(s)"), "{}", files["report.md"]);
    // Variable names from a tools policy given to `learn --tools`.
    let mut c = a.clone();
    c.name_vars_from("[tools.git_status]\ntemplate = \"x\"\nargs = { work_tree = \"repo_path\" }\n", "t.toml").unwrap();
    let p = propose(&c, "git1", &BTreeMap::new());
    assert!(
        p.tools["git_status"].template.read.contains_key("${work_tree}"),
        "{:?}",
        p.tools["git_status"].template.read
    );
    assert!(c.name_vars_from("[tools.a]\nargs = { v = 3 }\n", "t.toml").unwrap_err().contains("t.toml"));
    assert_eq!(var_name("repo_path"), "repo");
    assert_eq!(var_name("path"), "path");
    assert_eq!(var_name("9x"), "v9x");
    assert_eq!(policy_name("learned-tool-", "Git Status"), "learned-tool-git-status");
}

#[test]
fn runtime_reads_during_one_tool_reach_every_tool() {
    let mut run = git_run();
    run.calls.push(call("3", "git_log", "/srv/repos/a"));
    run.observations.push(obs(Some("git_log"), Some("3"), "open", "r", "/srv/repos/a/.git/HEAD"));
    run.observations.push(obs(Some("git_log"), Some("3"), "open", "r", "/sys/devices/system/cpu/online"));
    let mut rec = Recorded { v: 1, runs: Vec::new(), var_names: BTreeMap::new() };
    rec.merge(run);
    let p = propose(&rec, "git1", &BTreeMap::new());
    for tool in ["git_status", "git_log"] {
        let r = &p.tools[tool].template.read;
        assert!(
            r.contains_key("/sys/devices/system/cpu/online") && r.contains_key("/usr/share/git-core/templates/x"),
            "{tool}: {r:?}"
        );
    }
    // Execs stay the tool's own.
    assert!(!p.tools["git_log"].template.exec.contains_key("/usr/bin/git"));
}
