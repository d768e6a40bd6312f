//! Command lines of governed execs (`args`, interpreters, injected environment), decided on the
//! new process image at `sched_process_exec` on every backend: a refused command line ends the
//! new image before its first instruction.
#[allow(clippy::wildcard_imports, reason = "shared fixtures and imports of the engine target")]
use super::*;
use mcpguard::grant::policy::ExecRule;

fn rule(path: &str, args: Option<&[&str]>) -> ExecRule {
    ExecRule { args: args.map(|a| a.iter().map(|x| (*x).to_owned()).collect()), ..ExecRule::path(path) }
}

/// The runner shell: any command line (it runs the test scripts with `-c`).
fn runner() -> ExecRule {
    ExecRule { inline_code: true, ..ExecRule::path(DASH) }
}

#[test]
fn only_the_granted_command_lines_run() {
    let mut k = Kernel::shared();
    let base = k.baseline();
    let (task, _) = k.grant_rules(
        &[
            runner(),
            rule(TRUE, Some(&["status", "**"])),
            rule(TRUE, Some(&["add", "--", "*"])),
            rule(ECHO, Some(&["*"])),
        ],
        &[],
        &[],
    );
    let session = k.session(base, task, LONG);
    let long = "x".repeat(5000);
    let script = format!(
        "{TRUE} status; echo a=$?; {TRUE} status --porcelain -z; echo b=$?; {TRUE} add -- f; echo c=$?; \
         {TRUE} push; echo d=$?; {TRUE} -c x=y status; echo e=$?; {TRUE} add -- f g; echo f=$?; {TRUE}; echo g=$?; \
         set --; i=0; while [ $i -lt 100 ]; do set -- \"$@\" $i; i=$((i+1)); done; {TRUE} status \"$@\"; echo h=$?; {TRUE} status \"$(printf '\\377\\376')\"; echo i=$?; \
         {TRUE} status {long}; echo j=$?; {ECHO} ''; echo k=$?"
    );
    let (st, out, pid) = run(&mut k, session, &[DASH, "-c", &script]);
    assert!(st.success(), "{st:?} {out}");
    for (var, code) in [
        ("a", 0),
        ("b", 0),
        ("c", 0),
        ("d", 137),
        ("e", 137),
        ("f", 137),
        ("g", 137),
        ("h", 0),
        ("i", 0),
        ("j", 137),
        ("k", 0),
    ] {
        assert!(out.contains(&format!("{var}={code}\n")), "{var}={code} expected: {out}");
    }
    let evs: Vec<Decision> = k.events_for(session, Duration::from_millis(500));
    let refused: Vec<&str> =
        evs.iter().filter(|d| d.hook == "exec" && d.tgid != pid && d.argv.is_none()).map(|d| d.reason).collect();
    assert_eq!(refused.iter().filter(|r| **r == "args_not_granted").count(), 4, "{evs:#?}");
    assert!(refused.contains(&"unresolved"), "an argument past the bound fails closed: {evs:#?}");
    // Each refusal is followed by a record with the refused command line (cut at 256 bytes).
    let argvs: Vec<(&str, bool)> =
        evs.iter().filter_map(|d| d.argv.as_deref().map(|a| (a, d.argv_truncated == Some(true)))).collect();
    assert!(argvs.contains(&(&format!("{TRUE} push")[..], false)), "{argvs:?}");
    assert!(argvs.contains(&(&format!("{TRUE} -c x=y status")[..], false)), "{argvs:?}");
    assert!(argvs.iter().any(|(a, t)| a.starts_with(&format!("{TRUE} status xxx")) && *t), "{argvs:?}");
    let ev = evs.iter().find(|d| d.reason == "args_not_granted" && d.argv.is_none()).unwrap();
    assert_eq!((ev.action, ev.grant_id), ("killed", task), "{ev:#?}");
    assert_object(ev, Path::new(TRUE));
}

/// What runs is what the kernel copied into the new image: a thread of the caller that keeps
/// rewriting the argument while `execve` runs cannot get a refused command line through.
#[test]
fn an_argument_rewritten_during_execve_cannot_pass() {
    let mut k = Kernel::shared();
    let base = k.baseline();
    let (task, _) = k.grant_rules(&[ExecRule::path(HELPER), rule(ECHO, Some(&["status"]))], &[], &[]);
    let session = k.session(base, task, LONG);
    let (st, out, _) = run(&mut k, session, &[HELPER, "race-exec", ECHO, "status", "push", "200"]);
    assert!(st.success(), "{st:?} {out}");
    assert!(!out.lines().any(|l| l == "push"), "echo ran with the refused argument: {out}");
    let ran = out.lines().filter(|l| *l == "status").count();
    let stopped = out.lines().filter(|l| *l == "signal 9").count();
    assert_eq!(ran + stopped, 200, "every child either ran the granted line or was stopped: {out}");
    eprintln!("race: {ran} ran `echo status`, {stopped} were stopped");
}

#[test]
fn interpreters_run_scripts_only_unless_inline_code() {
    let mut k = Kernel::shared();
    let dir = Scratch::new("interp");
    let sh = dir.copy_bin(DASH, "sh");
    let script = dir.path("tool.sh");
    std::fs::write(&script, "echo from-script\n").unwrap();
    let base = k.baseline();
    let (task, _) = k.grant_rules(&[runner(), ExecRule::path(s(&sh))], std::slice::from_ref(&dir.0), &[]);
    let session = k.session(base, task, LONG);
    let (sh, sc) = (s(&sh), s(&script));
    let out = expect_runs(
        &mut k,
        session,
        &[
            DASH,
            "-c",
            &format!(
                "{sh} {sc}; echo a=$?; {sh} -c 'echo inline'; echo b=$?; {sh} -e {sc}; echo c=$?; \
                 echo 'echo stdin' | {sh}; echo d=$?; echo 'echo stdin' | {sh} -s; echo e=$?"
            ),
        ],
    );
    assert!(out.contains("from-script") && out.contains("a=0"), "{out}");
    for refused in ["b=137", "c=137", "d=137", "e=137"] {
        assert!(out.contains(refused), "{refused}: {out}");
    }
    assert!(!out.contains("inline\n") && !out.contains("stdin\n"), "no inline program ran: {out}");
    let ev = k.wait_event(session, |d| d.hook == "exec" && d.reason == "inline_code");
    assert_eq!(ev.action, "killed", "{ev:#?}");
    // With inline_code the same interpreter runs inline text.
    let (task2, _) = k.grant_rules(&[runner(), ExecRule { inline_code: true, ..ExecRule::path(sh) }], &[], &[]);
    let session2 = k.session(base, task2, LONG);
    let out = expect_runs(&mut k, session2, &[DASH, "-c", &format!("{sh} -c 'echo inline'; echo b=$?")]);
    assert!(out.contains("inline\nb=0"), "{out}");
}

#[test]
fn code_injecting_environment_is_refused_unless_named() {
    let mut k = Kernel::shared();
    let base = k.baseline();
    let allowed = ExecRule { env: vec!["PYTHONPATH".into()], ..rule(ECHO, None) };
    let (task, _) = k.grant_rules(&[runner(), ExecRule::path(TRUE), allowed], &[], &[]);
    let session = k.session(base, task, LONG);
    let script = format!(
        "LD_PRELOAD=/nonexistent.so {TRUE}; echo a=$?; NODE_OPTIONS='--require /tmp/x.js' {TRUE}; echo b=$?; \
         PYTHONPATH=/tmp {TRUE}; echo c=$?; PYTHONPATH=/tmp {ECHO} ok; echo d=$?; LD_PRELOAD_X=1 {TRUE}; echo e=$?; \
         ENVX=1 XENV=1 {TRUE}; echo f=$?; ENV=/tmp/rc {TRUE}; echo g=$?; {TRUE}; echo h=$?"
    );
    let out = expect_runs(&mut k, session, &[DASH, "-c", &script]);
    for want in ["a=137", "b=137", "c=137", "ok\nd=0", "e=0", "f=0", "g=137", "h=0"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let ev = k.wait_event(session, |d| d.hook == "exec" && d.reason == "env_injection");
    assert_eq!((ev.action, ev.grant_id), ("killed", task), "{ev:#?}");
}
