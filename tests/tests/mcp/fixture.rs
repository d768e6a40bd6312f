//! Fixtures of the MCP tests: the real daemon, the installed servers, the Python client driver.
#[allow(clippy::wildcard_imports, reason = "shares the imports of the mcp test target")]
use super::*;

pub(super) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The shipped policies, copied once per test run, with the checkout's own directory added to
/// the roots of the runtime-prefix variables: the tests install python/node runtimes inside the
/// checkout, which may live anywhere (CI clones it to a path we do not know).
pub(super) fn policy_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dst = std::env::temp_dir().join(format!("mcpg-test-policies-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(&dst).unwrap();
        let root = repo_root();
        for e in std::fs::read_dir(root.join("policies")).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml") {
                let mut text = std::fs::read_to_string(&p).unwrap();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if name.starts_with("mcp-baseline-") {
                    text = text.replace("roots = [", &format!("roots = [\"{}\", ", root.display()));
                }
                std::fs::write(dst.join(&name), text).unwrap();
            }
        }
        dst
    })
    .clone()
}

pub(super) fn bin() -> PathBuf {
    mcpguard_tests::daemon::mcpguard_bin()
}

/// Installs the MCP software once per test binary.
pub(super) fn setup() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = repo_root();
        let st = Command::new("bash").arg(root.join("scripts/setup-mcp.sh")).status().expect("run setup-mcp.sh");
        assert!(st.success(), "scripts/setup-mcp.sh failed");
        root
    })
}

/// The shared test daemon with the shipped policies, plus this file's helpers.
pub(super) struct Daemon(mcpguard_tests::daemon::TestDaemon);

impl std::ops::Deref for Daemon {
    type Target = mcpguard_tests::daemon::TestDaemon;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Daemon {
    pub(super) fn start() -> Self {
        Self::start_with(&[])
    }

    pub(super) fn start_with(extra: &[&str]) -> Self {
        Self(mcpguard_tests::daemon::TestDaemon::start("mcpd", Some(&policy_dir()), extra))
    }

    pub(super) fn raw(&self, req: &Value) -> Value {
        self.0.raw(req.to_string().as_bytes())
    }

    pub(super) fn session(&self, name: &str) -> Value {
        let st = self.raw(&json!({"v": 1, "op": "status"}));
        st["sessions"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap_or(Value::Null)
    }

    /// `mcpguard --socket S exec --mcp ...` as the client's server command.
    pub(super) fn exec_args(
        &self,
        session: &str,
        tools: &Path,
        baseline: &str,
        vars: &[String],
        cmd: &[&str],
    ) -> Vec<String> {
        let mut a: Vec<String> = vec!["--socket".into(), self.socket.display().to_string(), "exec".into()];
        a.extend(["--session", session, "--mcp", "--tools"].map(String::from));
        a.push(tools.display().to_string());
        a.extend(["--baseline".to_owned(), baseline.to_owned()]);
        for v in vars {
            a.extend(["--var".to_owned(), v.clone()]);
        }
        a.push("--".into());
        a.extend(cmd.iter().map(|s| (*s).to_owned()));
        a
    }
}

/// Runs tests/mcp/client.py (the official SDK client) on a plan; returns its JSON report.
pub(super) fn run_client(dir: &Scratch, plan: Value) -> Value {
    let root = setup();
    let id = unique_id();
    let plan_path = dir.path(&format!("plan-{id}.json"));
    let errlog = dir.path(&format!("client-{id}.log"));
    let mut plan = plan;
    plan["errlog"] = json!(errlog);
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let mut child = Command::new(root.join(".mcp-venv/bin/python3"))
        .arg(root.join("tests/mcp/client.py"))
        .arg(&plan_path)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path(&format!("client-{id}.stderr"))).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("MCP client hung; proxy log:\n{}", std::fs::read_to_string(&errlog).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let log = std::fs::read_to_string(&errlog).unwrap_or_default();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("client output {:?}: {e}\n{log}", String::from_utf8_lossy(&out.stdout)));
    assert!(v.get("fatal").is_none(), "client failed: {v}\nproxy log:\n{log}");
    v
}

pub(super) fn env(extra: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in [("PATH", "/usr/bin:/bin"), ("LC_ALL", "C"), ("RUST_LOG", "info"), ("HOME", "/nonexistent")] {
        m.insert(k.into(), v.into());
    }
    for (k, v) in extra {
        m.insert((*k).into(), (*v).into());
    }
    Value::Object(m)
}

pub(super) fn error_reason(step: &Value) -> &str {
    step["error"]["data"]["mcpguard"]["reason"].as_str().unwrap_or_else(|| panic!("not an mcpguard error: {step}"))
}

pub(super) fn git(args: &[&str], dir: &Path) {
    let st = Command::new("/usr/bin/git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "git {args:?}");
}

/// Copies a shipped policy into `dir`, replacing strings (e.g. the approved git binary).
pub(super) fn policy_variant(dir: &Path, name: &str, replace: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(policy_dir().join(format!("{name}.toml"))).unwrap();
    for (a, b) in replace {
        text = text.replace(a, b);
    }
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
}

/// `mcpguard exec --mcp` arguments for the stdlib-only stand-in server (tests/mcp/fake_server.py),
/// with a tools policy made of `tools_body` (its templates are the shipped policies).
pub(super) fn fake_server_args(d: &Daemon, root: &Path, t: &Scratch, session: &str, tools_body: &str) -> Vec<String> {
    let tools = t.path("tools.toml");
    std::fs::write(&tools, format!("template_dirs = [\"{}\"]\n{tools_body}", policy_dir().display())).unwrap();
    let script_dir = root.join("tests/mcp");
    d.exec_args(
        session,
        &tools,
        "mcp-baseline-python",
        &[format!("python_prefix={}", script_dir.display())],
        &["/usr/bin/python3", "-I", "-S", script_dir.join("fake_server.py").to_str().unwrap()],
    )
}
