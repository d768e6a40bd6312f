//! Command lines through the real daemon: a policy whose `args` bind a variable, and the launch
//! environment of a session (inherited unchanged it passes; changed, it is refused), and the
//! refused command line in the audit log after a daemon restart.
use std::io::Read as _;

use mcpguard_tests::{Scratch, daemon::TestDaemon, unique_id};

#[test]
fn policy_args_bind_variables_and_the_launch_environment_is_inherited_unchanged() {
    let mut d = TestDaemon::start("cmdline", None, &[]);
    let repo = Scratch::new("cmdline-repo");
    let other = Scratch::new("cmdline-other");
    let policy = "name = \"test-cmdline\"\nmode = \"deny\"\n[vars.repo]\nkind = \"path\"\n\
        [[exec]]\npath = \"/usr/bin/true\"\nargs = [\"-C\", \"${repo}\", \"status\", \"**\"]\n\
        [[exec]]\npath = \"/usr/bin/env\"\n[[read]]\npath = \"${repo}\"\n";
    std::fs::write(d.dir.path("policies/test-cmdline.toml"), policy).unwrap();
    let (r, o) = (repo.0.display(), other.0.display());
    let script = format!(
        "read x; /usr/bin/true -C {r} status -s; echo a=$?; /usr/bin/true -C {o} status; echo b=$?; \
         /usr/bin/true status; echo c=$?; /usr/bin/env --version >&2; echo d=$?; \
         PYTHONPATH=/tmp/changed /usr/bin/env --version >&2; echo e=$?; PYTHONPATH=/tmp/given /usr/bin/env --version >&2; echo f=$?; echo end"
    );
    let session = format!("cmdline-{}", unique_id());
    let mut child = d.launch(&session, &script, &[("PYTHONPATH", "/tmp/given")]);
    d.wait_session(&session);
    let var = format!("repo={r}");
    let out = d
        .cmd()
        .args(["grant", "--session", &session, "--task", "t1", "--policy", "test-cmdline", "--var", &var])
        .output()
        .unwrap();
    assert!(out.status.success(), "grant: {}", String::from_utf8_lossy(&out.stderr));
    // The refusals happen under a daemon that adopted the pins of the one that loaded the
    // programs: the pinned program array still holds the command-line reporter.
    d.kill9();
    d.spawn();
    use std::io::Write as _;
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let st = child.wait().unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert!(st.success(), "{st:?} {stdout}");
    // a: the bound repository; b: another one; c: no -C at all; d: `env` inherits PYTHONPATH as
    // launched; e: changed, refused; f: set again to the launch value, passes.
    for want in ["a=0", "b=137", "c=137", "d=0", "e=137", "f=0"] {
        assert!(stdout.contains(want), "{want}: {stdout}\n{}", d.log());
    }
    let line =
        d.wait_audit(|l| l["session"] == session.as_str() && l["reason"] == "args_not_granted" && l["argv"].is_null());
    assert_eq!((line["hook"].as_str(), line["action"].as_str()), (Some("exec"), Some("killed")), "{line}");
    assert_eq!(line["path"], "/usr/bin/true", "{line}");
    let argv = d.wait_audit(|l| l["session"] == session.as_str() && l["argv"].is_string());
    assert_eq!(argv["argv"], format!("/usr/bin/true -C {o} status"), "the refused command line: {argv}");
    assert_eq!((argv["argv_truncated"].as_bool(), argv["reason"].as_str()), (Some(false), Some("args_not_granted")));
    let env =
        d.wait_audit(|l| l["session"] == session.as_str() && l["reason"] == "env_injection" && l["argv"].is_null());
    assert_eq!(env["path"], "/usr/bin/env", "{env}");
}
