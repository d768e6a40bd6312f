//! Task-bound tokens (issue 15) with the real daemon and kernel: a governed server reads its
//! session's JWT-SVID from `MCPGUARD_TOKEN_FILE`; PyJWT (PyPI, not ours) verifies it against the
//! daemon's JWKS and finds the current task; a task switch replaces it within the grant's round
//! trip; revoke removes it; an expired token fails verification; another governed session cannot
//! open it (the kernel stops the open) and an ungoverned non-root user cannot read it.
use std::{
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use mcpguard_tests::{daemon::TestDaemon, read_line_from};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The venv with PyJWT and spiffe (scripts/setup-mcp.sh, idempotent; run once per test binary:
/// the tests run in parallel).
fn python() -> PathBuf {
    static PY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        let root = repo_root();
        let st = Command::new("bash").arg(root.join("scripts/setup-mcp.sh")).status().unwrap();
        assert!(st.success(), "scripts/setup-mcp.sh failed");
        root.join(".mcp-venv/bin/python3")
    })
    .clone()
}

const VERIFY: &str = r#"
import json, sys, jwt
jwks, token, aud = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
keys = jwt.PyJWKSet.from_dict(jwks)
kid = jwt.get_unverified_header(token)["kid"]
key = next(k for k in keys.keys if k.key_id == kid)
try:
    print(json.dumps(jwt.decode(token, key=key, algorithms=["ES256"], audience=aud)))
except jwt.PyJWTError as e:
    print(json.dumps({"error": type(e).__name__}))
"#;

fn verify(py: &Path, d: &TestDaemon, token: &str) -> Value {
    verify_for(py, d, token, "mcpguard")
}

fn verify_for(py: &Path, d: &TestDaemon, token: &str, aud: &str) -> Value {
    let jwks = run(d.cmd().args(["identity", "jwks"]));
    let out = Command::new(py)
        .args(["-c", VERIFY, String::from_utf8_lossy(&jwks.stdout).trim(), token, aud])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The same token as a JWT-SVID, validated by the SPIFFE Python library (PyPI `spiffe`) with the
/// daemon's JWKS as the trust domain's bundle.
const SPIFFE_VERIFY: &str = r#"
import json, sys
from spiffe import JwtBundle, JwtSvid, TrustDomain
bundle = JwtBundle.parse(TrustDomain(sys.argv[3]), sys.argv[1].encode())
svid = JwtSvid.parse_and_validate(sys.argv[2], bundle, {"mcpguard"})
print(json.dumps({"spiffe_id": str(svid.spiffe_id), "audience": sorted(svid.audience), "expiry": svid.expiry}))
"#;

fn spiffe_verify(py: &Path, d: &TestDaemon, token: &str) -> Value {
    let jwks = run(d.cmd().args(["identity", "jwks"]));
    let out = Command::new(py)
        .args(["-c", SPIFFE_VERIFY, String::from_utf8_lossy(&jwks.stdout).trim(), token, "mcpguard.local"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// PyJWT's JWKS client, starting from the daemon's OIDC discovery document over HTTP.
const HTTP_VERIFY: &str = r#"
import json, sys, urllib.request, jwt
conf = json.load(urllib.request.urlopen(sys.argv[1] + "/.well-known/openid-configuration"))
key = jwt.PyJWKClient(conf["jwks_uri"]).get_signing_key_from_jwt(sys.argv[2])
print(json.dumps(jwt.decode(sys.argv[2], key=key, algorithms=["ES256"], audience="mcpguard", issuer=conf["issuer"])))
"#;

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A governed dash that prints its token (or `none`, or its subshell's exit status when the
/// open is stopped) each time it gets a line on stdin.
fn reader(d: &TestDaemon, session: &str, file: Option<&Path>) -> Child {
    let target = file.map_or_else(|| "\"$MCPGUARD_TOKEN_FILE\"".to_string(), |f| f.display().to_string());
    let script = format!(
        "while read x; do if [ -e {target} ]; then (read -r t < {target}; echo \"$t\"); echo rc=$?; else echo none; fi; done"
    );
    d.launch(session, &script, &[])
}

/// One round: a line in, the token (or `none`) and the status out.
fn ask(c: &mut Child) -> (String, String) {
    c.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    let out = c.stdout.as_mut().unwrap();
    let first = read_line_from(out);
    if first == "none" {
        return (first, String::new());
    }
    if first.starts_with("rc=") {
        return (String::new(), first);
    }
    (first, read_line_from(out))
}

fn grant(d: &TestDaemon, session: &str, task: &str, ttl: &str) {
    run(d.cmd().args(["grant", "--session", session, "--task", task, "--allow-read", "/etc/hostname", "--ttl", ttl]));
}

#[test]
fn a_session_reads_its_own_task_token_and_nobody_else_can() {
    let py = python();
    let metrics = format!("127.0.0.1:{}", 20000 + (mcpguard_tests::unique_id() % 20000));
    let mut d = TestDaemon::start("identity", None, &["--metrics", &metrics]);
    let mut a = reader(&d, "ida", None);
    d.wait_session("ida");
    assert_eq!(ask(&mut a).0, "none", "no token before a task grant");

    grant(&d, "ida", "T-1", "5m");
    let (token, rc) = ask(&mut a);
    assert_eq!(rc, "rc=0");
    let c = verify(&py, &d, &token);
    assert_eq!(c["task"], "T-1", "{c}");
    assert!(
        c["sub"].as_str().unwrap().starts_with("spiffe://mcpguard.local/mcpguard/")
            && c["sub"].as_str().unwrap().ends_with("/ida"),
        "{c}"
    );
    let lifetime = c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
    assert!(lifetime <= 600, "at most the configured 10 minutes: {c}");
    assert!(c["binary_sha256"].as_str().is_some_and(|s| s.len() == 64), "{c}");
    let out = Command::new(&py).args(["-c", HTTP_VERIFY, &format!("http://{metrics}"), &token]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let via_http: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((via_http["task"].as_str(), via_http["iss"].as_str()), (Some("T-1"), Some("spiffe://mcpguard.local")));
    let svid = spiffe_verify(&py, &d, &token);
    assert_eq!((svid["spiffe_id"].as_str(), svid["expiry"].as_u64()), (c["sub"].as_str(), c["exp"].as_u64()), "{svid}");
    let st = run(d.cmd().args(["status", "--json"]));
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    let file = PathBuf::from(st["token_dir"].as_str().unwrap()).join("ida/token");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o400);

    // A task switch: the next read after the grant returns has the new task.
    grant(&d, "ida", "T-2", "5m");
    let (token2, _) = ask(&mut a);
    assert_eq!(verify(&py, &d, &token2)["task"], "T-2");

    // Another governed session cannot open it (stopped by the kernel: the subshell is killed).
    let mut b = reader(&d, "idb", Some(&file));
    d.wait_session("idb");
    grant(&d, "idb", "T-b", "5m");
    let (got, rc) = ask(&mut b);
    assert_eq!((got.as_str(), rc.as_str()), ("", "rc=137"), "another session read the token");
    let line = d.wait_audit(|l| l["session"] == "idb" && l["hook"] == "open");
    assert_eq!((line["path"].as_str(), line["reason"].as_str()), (file.to_str(), Some("not_granted")));
    // An ungoverned user other than the owner cannot read it either.
    let nobody = Command::new("/usr/bin/cat").arg(&file).uid(65534).gid(65534).stderr(Stdio::piped()).output().unwrap();
    assert!(!nobody.status.success() && String::from_utf8_lossy(&nobody.stderr).contains("Permission denied"));

    // Revoke: the file is gone by the time the revoke returns.
    run(d.cmd().args(["revoke", "--session", "ida"]));
    assert!(!file.exists());
    assert_eq!(ask(&mut a).0, "none");

    // Expiry: a 2 s grant's token expires with it (and the file goes).
    grant(&d, "ida", "T-3", "2s");
    let (token3, _) = ask(&mut a);
    let c3 = verify(&py, &d, &token3);
    assert_eq!(c3["task"], "T-3");
    assert!(c3["exp"].as_u64().unwrap() - c3["iat"].as_u64().unwrap() <= 2, "{c3}");
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(verify(&py, &d, &token3)["error"], "ExpiredSignatureError");
    let deadline = Instant::now() + Duration::from_secs(5);
    while file.exists() {
        assert!(Instant::now() < deadline, "expired token file still there");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A grant that expires while the daemon is down: its token is gone soon after the restart;
    // one still in force is there, valid, after it.
    grant(&d, "ida", "T-4", "2s");
    assert!(file.exists());
    d.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    d.spawn();
    let deadline = Instant::now() + Duration::from_secs(5);
    while file.exists() {
        assert!(Instant::now() < deadline, "a token outlived its grant across a restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    grant(&d, "ida", "T-5", "5m");
    d.kill9();
    d.spawn();
    std::thread::sleep(Duration::from_millis(1000));
    let (token5, _) = ask(&mut a);
    assert_eq!(verify(&py, &d, &token5)["task"], "T-5");
    for mut c in [a, b] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A sandbox-only policy is refused on a prod daemon; a labelled path is refused without the
/// label and granted with it; the environment and label are in the audit line and the token.
#[test]
fn environments_and_path_labels_bind_grants_to_where_they_were_approved() {
    let py = python();
    let scratch = mcpguard_tests::Scratch::new("idenv");
    let prod = scratch.path("prod");
    std::fs::create_dir_all(&prod).unwrap();
    std::fs::write(prod.join("db"), "rows\n").unwrap();
    let config = scratch.path("mcpguard.toml");
    std::fs::write(&config, format!("environment = \"prod\"\n[labels]\nprod-data = [\"{}\"]\n", prod.display()))
        .unwrap();
    let pol = scratch.path("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(pol.join("test-baseline.toml"), mcpguard_tests::daemon::TEST_BASELINE).unwrap();
    std::fs::write(
        pol.join("sandbox-only.toml"),
        "name = \"sandbox-only\"\nenvironments = [\"sandbox\", \"dev\"]\n[[read]]\npath = \"/etc/hostname\"\n",
    )
    .unwrap();
    let read_prod = |name: &str, labels: &str| {
        format!("name = \"{name}\"\n{labels}environments = [\"prod\"]\n[[read]]\npath = \"{}\"\n", prod.display())
    };
    std::fs::write(pol.join("prod-unlabelled.toml"), read_prod("prod-unlabelled", "")).unwrap();
    std::fs::write(
        pol.join("prod-labelled.toml"),
        read_prod("prod-labelled", "labels = [\"prod-data\"]\naudience = [\"https://db.prod.example\"]\n"),
    )
    .unwrap();
    let d = TestDaemon::start("idenv", Some(&pol), &["--config", config.to_str().unwrap()]);
    let file = prod.join("db");
    let mut c = reader(&d, "env1", Some(&file));
    d.wait_session("env1");
    let refused = |args: &[&str]| {
        let out =
            d.cmd().args(["grant", "--session", "env1", "--task", "T", "--ttl", "1m"]).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} was granted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = refused(&["--policy", "sandbox-only"]);
    assert!(e.contains("wrong_environment") && e.contains("[sandbox, dev]") && e.contains("`prod`"), "{e}");
    let e = refused(&["--policy", "prod-unlabelled"]);
    assert!(e.contains("label_not_declared") && e.contains("prod-data"), "{e}");
    let e = refused(&["--allow-read", scratch.0.to_str().unwrap()]);
    assert!(e.contains("label_not_declared") && e.contains("contains"), "a parent of a labelled path: {e}");
    // Nothing was granted: the read is stopped.
    assert_eq!(ask(&mut c).1, "rc=137");
    let denied = d.wait_audit(|l| l["session"] == "env1" && l["hook"] == "open");
    assert_eq!(denied["environment"], "prod");
    run(d.cmd().args(["grant", "--session", "env1", "--task", "T-prod", "--policy", "prod-labelled", "--ttl", "1m"]));
    assert_eq!(ask(&mut c), ("rows".to_string(), "rc=0".to_string()));
    let st: Value = serde_json::from_slice(&run(d.cmd().args(["status", "--json"])).stdout).unwrap();
    let token = std::fs::read_to_string(PathBuf::from(st["token_dir"].as_str().unwrap()).join("env1/token")).unwrap();
    // The policy's own audience: the token is for that service, not for the daemon's default.
    assert_eq!(verify(&py, &d, &token)["error"], "InvalidAudienceError");
    let claims = verify_for(&py, &d, &token, "https://db.prod.example");
    assert_eq!(
        (claims["environment"].as_str(), claims["labels"][0].as_str()),
        (Some("prod"), Some("prod-data")),
        "{claims}"
    );
    let _ = c.kill();
    let _ = c.wait();
}

/// Delegation: a child session cannot exceed its parent; the parent's task switch narrows the
/// child at once (an open it could do a moment before is stopped right after); the parent's
/// revoke ends the child's access; the child's token names the parent in `act`; cycles and
/// unknown parents are refused.
#[test]
fn a_delegated_session_never_exceeds_its_parent() {
    let py = python();
    let d = TestDaemon::start("iddel", None, &[]);
    let scratch = mcpguard_tests::Scratch::new("iddel");
    let (a, b) = (scratch.path("a"), scratch.path("b"));
    for p in [&a, &b] {
        std::fs::write(p, "data\n").unwrap();
    }
    let parent = reader(&d, "par", None);
    d.wait_session("par");
    let child_cmd = |file: &Path| {
        let script = format!("while read x; do (read -r t < {f}; echo \"$t\"); echo rc=$?; done", f = file.display());
        d.cmd()
            .args([
                "exec",
                "--session",
                "kid",
                "--parent",
                "par",
                "--baseline",
                "test-baseline",
                "--",
                "/usr/bin/dash",
                "-c",
                &script,
            ])
            .env_clear()
            .env("PATH", "/usr/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let grant_paths = |session: &str, task: &str, paths: &[&Path]| {
        let mut c = d.cmd();
        c.args(["grant", "--session", session, "--task", task, "--ttl", "5m"]);
        for p in paths {
            c.arg("--allow-read").arg(p);
        }
        run(&mut c)
    };
    grant_paths("par", "P-1", &[&a, &b]);
    let mut kid = child_cmd(&a);
    d.wait_session("kid");
    // The child asks for a and b and /etc/hostname; it gets what the parent has: a and b.
    grant_paths("kid", "K-1", &[&a, &b, Path::new("/etc/hostname")]);
    assert_eq!(ask(&mut kid), ("data".to_string(), "rc=0".to_string()));
    let st: Value = serde_json::from_slice(&run(d.cmd().args(["status", "--json"])).stdout).unwrap();
    let kid_st = st["sessions"].as_array().unwrap().iter().find(|s| s["name"] == "kid").unwrap().clone();
    let paths: Vec<&str> =
        kid_st["task"]["paths"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert!(!paths.contains(&"/etc/hostname"), "the child exceeds its parent: {paths:?}");
    let token = std::fs::read_to_string(PathBuf::from(st["token_dir"].as_str().unwrap()).join("kid/token")).unwrap();
    let claims = verify(&py, &d, &token);
    assert!(claims["act"]["sub"].as_str().unwrap().ends_with("/par"), "{claims}");
    // The parent switches to a task that reads only b: the child's next read of a is stopped.
    grant_paths("par", "P-2", &[&b]);
    assert_eq!(ask(&mut kid).1, "rc=137");
    let line = d.wait_audit(|l| l["session"] == "kid" && l["hook"] == "open");
    assert_eq!(line["delegated_by"], serde_json::json!(["par"]));
    assert_eq!(line["path"], a.to_str().unwrap());
    // The parent's revoke ends the child's task grant.
    run(d.cmd().args(["revoke", "--session", "par"]));
    let st: Value = serde_json::from_slice(&run(d.cmd().args(["status", "--json"])).stdout).unwrap();
    let kid_st = st["sessions"].as_array().unwrap().iter().find(|s| s["name"] == "kid").unwrap().clone();
    assert!(kid_st["task"].is_null(), "{kid_st}");
    // Refused: a parent that does not exist; the child granted while its parent has nothing.
    let out = d
        .cmd()
        .args(["grant", "--session", "kid", "--task", "K-2", "--allow-read", b.to_str().unwrap(), "--ttl", "1m"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("has no grant in force"));
    let out = d
        .cmd()
        .args([
            "exec",
            "--session",
            "orphan",
            "--parent",
            "nobody",
            "--baseline",
            "test-baseline",
            "--",
            "/usr/bin/true",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("parent session `nobody` does not exist")
    );
    for mut c in [parent, kid] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Per-call grants (what the MCP proxy issues for each `tools/call`) in a delegated session stay
/// within the parent's grant too, and a parent's task switch narrows the call in force.
#[test]
fn per_call_grants_of_a_delegated_session_stay_within_the_parent() {
    let d = TestDaemon::start("idcall", None, &[]);
    let scratch = mcpguard_tests::Scratch::new("idcall");
    let (a, b) = (scratch.path("a"), scratch.path("b"));
    for p in [&a, &b] {
        std::fs::write(p, "data\n").unwrap();
    }
    let parent = reader(&d, "cpar", None);
    d.wait_session("cpar");
    let raw_grant = |session: &str, task: &str, reads: &[&Path], call: Option<&str>| {
        let mut req = serde_json::json!({"v": 1, "op": "grant", "session": session, "task": task, "ttl": "5m",
            "inline": {"read": reads.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>()}});
        if let Some(c) = call {
            req["tool"] = "read_file".into();
            req["call_id"] = c.into();
        }
        let v = d.raw(req.to_string().as_bytes());
        assert_eq!(v["ok"], true, "{v}");
    };
    raw_grant("cpar", "P-1", &[&a, &b], None);
    let script = format!("while read x; do (read -r t < {f}; echo \"$t\"); echo rc=$?; done", f = a.display());
    let mut kid = d
        .cmd()
        .args([
            "exec",
            "--session",
            "ckid",
            "--parent",
            "cpar",
            "--baseline",
            "test-baseline",
            "--",
            "/usr/bin/dash",
            "-c",
            &script,
        ])
        .env_clear()
        .env("PATH", "/usr/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_session("ckid");
    raw_grant("ckid", "K-1", &[&a, Path::new("/etc/hostname")], Some("1"));
    assert_eq!(ask(&mut kid), ("data".to_string(), "rc=0".to_string()));
    let st = d.raw(br#"{"v":1,"op":"status"}"#);
    let k = st["sessions"].as_array().unwrap().iter().find(|s| s["name"] == "ckid").unwrap().clone();
    assert_eq!(k["task"]["call_id"], "1", "{k}");
    let paths: Vec<&str> = k["task"]["paths"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(paths, [a.to_str().unwrap()], "the call exceeds the parent");
    raw_grant("cpar", "P-2", &[&b], None);
    assert_eq!(ask(&mut kid).1, "rc=137", "the parent's switch did not narrow the call in force");
    for mut c in [parent, kid] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// While the grant lasts, the token is minted again before it runs out (here `token_max_ttl` is
/// 6 s and the grant 1 min; renewal at a third of the life left, 2 s): a reader always finds a
/// token that verifies.
#[test]
fn tokens_are_renewed_before_they_expire_while_the_grant_lasts() {
    let py = python();
    let scratch = mcpguard_tests::Scratch::new("idrenew");
    let config = scratch.path("mcpguard.toml");
    std::fs::write(&config, "token_max_ttl = \"6s\"\n").unwrap();
    let d = TestDaemon::start("idrenew", None, &["--config", config.to_str().unwrap()]);
    let mut a = reader(&d, "ren", None);
    d.wait_session("ren");
    grant(&d, "ren", "T-r", "1m");
    let (t1, _) = ask(&mut a);
    let c1 = verify(&py, &d, &t1);
    assert!(c1["exp"].as_u64().unwrap() - c1["iat"].as_u64().unwrap() <= 6, "{c1}");
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1500));
        let (t, _) = ask(&mut a);
        let c = verify(&py, &d, &t);
        assert!(c.get("error").is_none(), "an expired token was in the file: {c}");
        assert_eq!(c["task"], "T-r");
    }
    let (t5, _) = ask(&mut a);
    let c5 = verify(&py, &d, &t5);
    assert!(c5["exp"].as_u64() > c1["exp"].as_u64() && c5["jti"] != c1["jti"], "{c1} {c5}");
    let _ = a.kill();
    let _ = a.wait();
}
