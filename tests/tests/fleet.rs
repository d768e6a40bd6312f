//! Running the daemon in a fleet: the HTTP health endpoints the DaemonSet's probes use, policies
//! from a ConfigMap volume (kubelet swaps a `..data` symlink), the Grafana dashboard's queries
//! against what the real daemon exports, and the Kubernetes manifests validated offline.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{ChildStdout, Command},
    time::Duration,
};

use mcpguard_tests::{
    Scratch,
    daemon::{TestDaemon, mcpguard_bin},
    killed, unique_id,
};

fn metrics_addr() -> String {
    format!("127.0.0.1:{}", 20000 + (unique_id() % 20000))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// One HTTP/1.1 request over a plain TCP connection: (status code, body).
fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head in {resp:?}"));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad status in {head:?}"));
    (code, body.to_owned())
}

/// /healthz answers while the process serves; /readyz only while the programs are attached, the
/// control socket is the one bound and the event reader runs; each failure is named.
#[test]
fn health_endpoints_follow_the_daemon_state() {
    let addr = metrics_addr();
    let d = TestDaemon::start("health", None, &["--metrics", &addr]);
    assert_eq!(http(&addr, "GET", "/healthz"), (200, "ok\n".into()));
    let (code, body) = http(&addr, "GET", "/readyz");
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ready: backend kill attached") && body.contains("event reader running"), "{body}");
    let (code, body) = http(&addr, "HEAD", "/readyz?verbose=1");
    assert_eq!((code, body.as_str()), (200, ""), "HEAD has no body");
    let (code, body) = http(&addr, "GET", "/nope");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("\"/nope\"") && body.contains("/readyz"), "{body}");
    assert_eq!(http(&addr, "POST", "/metrics").0, 405);
    assert!(http(&addr, "GET", "/metrics").1.contains("mcpguard_build_info"));

    // The control socket unlinked: clients cannot reach the daemon any more.
    std::fs::remove_file(&d.socket).unwrap();
    let (code, body) = http(&addr, "GET", "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready: control socket") && body.contains(d.socket.to_str().unwrap()), "{body}");
    // A plain file where the socket was is not the socket either.
    std::fs::write(&d.socket, "x").unwrap();
    let (code, body) = http(&addr, "GET", "/readyz");
    assert!(code == 503 && body.contains("replaced by another file"), "{code} {body}");
    assert_eq!(http(&addr, "GET", "/healthz").0, 200, "liveness is only about serving");

    // The pins removed under the running daemon: the programs are detached.
    let out = Command::new(mcpguard_bin()).args(["unpin", "--bpffs-dir", d.bpffs.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "unpin: {}", String::from_utf8_lossy(&out.stderr));
    let (code, body) = http(&addr, "GET", "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("of the kill backend are no longer attached") && body.contains("mcpg_fork"), "{body}");
}

/// Kubelet's layout of a ConfigMap volume: `NAME -> ..data/NAME`, `..data -> ..TIMESTAMP/`.
/// An update writes a new `..TIMESTAMP/`, points `..data_tmp` at it, renames it over `..data`
/// and removes the old directory.
struct ConfigMapVolume {
    dir: PathBuf,
    generation: u32,
}

impl ConfigMapVolume {
    fn new(dir: PathBuf, files: &[(&str, String)]) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let mut v = Self { dir, generation: 0 };
        v.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), v.dir.join(name)).unwrap();
        }
        v
    }

    fn update(&mut self, files: &[(&str, String)]) {
        let old = (self.generation > 0).then(|| self.dir.join(format!("..2026_12_02_00_00_0{}.0", self.generation)));
        self.generation += 1;
        let ts = format!("..2026_12_02_00_00_0{}.0", self.generation);
        std::fs::create_dir(self.dir.join(&ts)).unwrap();
        for (name, text) in files {
            std::fs::write(self.dir.join(&ts).join(name), text).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(old).unwrap();
        }
    }
}

fn line(out: &mut BufReader<ChildStdout>) -> String {
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    l
}

/// The daemon reads a named policy's file at each grant (`resolve_policy`, no cache): a ConfigMap
/// update is used by the next grant; the grant in force keeps the content it was compiled from.
#[test]
fn configmap_policy_update_takes_effect_at_the_next_grant() {
    let ws = Scratch::new("cm-ws");
    for f in ["a", "b"] {
        std::fs::create_dir_all(ws.path(f)).unwrap();
        std::fs::write(ws.path(&format!("{f}/file")), format!("content-{f}\n")).unwrap();
    }
    let policy = |dir: &str| {
        let p = ws.path(dir);
        format!("name = \"cm-task\"\n[[exec]]\npath = \"/usr/bin/cat\"\n[[read]]\npath = \"{}\"\n", p.display())
    };
    let base = mcpguard_tests::daemon::TEST_BASELINE.to_owned();
    let vol_dir = Scratch::new("cm-vol");
    let mut vol = ConfigMapVolume::new(
        vol_dir.path("policies"),
        &[("test-baseline.toml", base.clone()), ("cm-task.toml", policy("a"))],
    );
    let d = TestDaemon::start("cm", Some(&vol.dir), &[]);
    let (a, b) = (ws.path("a/file"), ws.path("b/file"));
    let script = format!(
        "read x; /usr/bin/cat {a}; read x; /usr/bin/cat {a}; read x; /usr/bin/cat {a}; /usr/bin/cat {b}; echo end",
        a = a.display(),
        b = b.display()
    );
    let mut child = d.launch("cm", &script, &[]);
    d.wait_session("cm");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let grant = |task: &str| {
        let o =
            d.cmd().args(["grant", "--session", "cm", "--task", task, "--policy", "cm-task", "--ttl", "5m"]).output();
        let o = o.unwrap();
        assert!(o.status.success(), "grant {task}: {}", String::from_utf8_lossy(&o.stderr));
    };

    grant("t1");
    stdin.write_all(b"go\n").unwrap();
    assert_eq!(line(&mut out), "content-a\n");
    // The ConfigMap changes: the grant in force keeps what it was compiled from.
    vol.update(&[("test-baseline.toml", base), ("cm-task.toml", policy("b"))]);
    assert!(std::fs::read_to_string(vol.dir.join("cm-task.toml")).unwrap().contains("/b\""));
    stdin.write_all(b"go\n").unwrap();
    assert_eq!(line(&mut out), "content-a\n", "the grant in force changed with the file");
    // The next grant reads the new file: a is no longer granted, b is.
    grant("t2");
    stdin.write_all(b"go\n").unwrap();
    assert_eq!(line(&mut out), "content-b\n");
    assert_eq!(line(&mut out), "end\n");
    assert!(child.wait().unwrap().success());
    let l = d.wait_audit(|l| l["session"] == "cm" && l["hook"] == "open");
    assert_eq!((l["task"].as_str(), l["policy"].as_str()), (Some("t2"), Some("cm-task")), "{l}");
    assert_eq!((l["action"].as_str(), l["path"].as_str()), (Some("killed"), a.to_str()), "{l}");
}

/// Metric name -> label names, from a Prometheus text exposition (sample lines).
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name_end = l.find(['{', ' ']).unwrap_or_else(|| panic!("bad sample line {l:?}"));
        let labels = out.entry(l[..name_end].to_owned()).or_default();
        if l[name_end..].starts_with('{') {
            let body = &l[name_end + 1..l.rfind('}').unwrap()];
            // Label values are quoted; names are what precedes each `="`.
            for part in body.split("\",") {
                labels.insert(part.split_once("=\"").unwrap_or_else(|| panic!("bad labels in {l:?}")).0.to_owned());
            }
        }
    }
    out
}

/// The metric names and label names a PromQL expression refers to: identifiers starting with
/// `mcpguard_`, label names in `{...}` matchers and in `by (...)` / `without (...)`, and the
/// label argument of Grafana's `label_values(metric, label)`. String literals and Grafana
/// variables (`$x`, `${x}`) are skipped.
fn promql_refs(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let b = expr.as_bytes();
    let (mut i, mut braces, mut grouping, mut prev_word) = (0, 0, false, String::new());
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'$' {
            i += 1;
            while i < b.len() && (ident(b[i]) || b[i] == b'{' || b[i] == b'}') {
                i += 1;
            }
        } else if c == b'[' {
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
        } else if ident(c) && !c.is_ascii_digit() {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let w = &expr[start..i];
            let next = expr[i..].trim_start();
            if braces > 0 || grouping {
                labels.insert(w.to_owned());
            } else if w.starts_with("mcpguard_") {
                metrics.insert(w.to_owned());
            } else if prev_word == "label_values" && next.starts_with(')') {
                labels.insert(w.to_owned());
            }
            if !(braces > 0 || grouping) && (w == "by" || w == "without") && next.starts_with('(') {
                grouping = true;
                i += expr[i..].find('(').unwrap() + 1;
                continue;
            }
            if !w.starts_with("mcpguard_") && braces == 0 && !grouping {
                prev_word = w.to_owned();
            }
        } else {
            match c {
                b'{' => braces += 1,
                b'}' => braces -= 1,
                b')' if grouping => grouping = false,
                _ => {}
            }
            i += 1;
        }
    }
    (metrics, labels)
}

/// Every string under an `expr` key, or a templating `query` (string or `{query: ...}`).
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

#[test]
fn promql_refs_reads_metrics_and_labels() {
    let (m, l) = promql_refs(
        r#"histogram_quantile(0.5, sum by (le) (rate(mcpguard_x_bucket{instance=~"$instance", a!="}"}[$__rate_interval])))"#,
    );
    assert_eq!(m, BTreeSet::from(["mcpguard_x_bucket".to_owned()]));
    assert_eq!(l, BTreeSet::from(["a".to_owned(), "instance".to_owned(), "le".to_owned()]));
    let (m, l) = promql_refs("label_values(mcpguard_build_info, instance)");
    assert_eq!((m.len(), l.len()), (1, 1), "{m:?} {l:?}");
}

/// Labels Prometheus attaches to every scraped series itself (target labels).
const SCRAPE_LABELS: [&str; 2] = ["instance", "job"];

/// Every query of packaging/grafana-mcpguard.json names metrics the real daemon exports (after
/// a grant and a kill, so the labelled families have series) and only their labels.
#[test]
fn grafana_dashboard_queries_name_exported_metrics() {
    let addr = metrics_addr();
    let d = TestDaemon::start("dash", None, &["--metrics", &addr]);
    let mut child = d.launch("dash", "read x; exec /usr/bin/cat /etc/hostname", &[]);
    d.wait_session("dash");
    let o = d
        .cmd()
        .args(["grant", "--session", "dash", "--task", "t", "--allow-exec", "/usr/bin/cat", "--ttl", "1m"])
        .output()
        .unwrap();
    assert!(o.status.success(), "grant: {}", String::from_utf8_lossy(&o.stderr));
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(killed(child.wait().unwrap()), "the open of /etc/hostname is not granted");
    d.wait_audit(|l| l["session"] == "dash" && l["hook"] == "open");
    let (code, text) = http(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    let exported = exported(&text);
    assert!(exported.contains_key("mcpguard_grant_apply_seconds_bucket"), "{exported:?}");
    assert!(exported.contains_key("mcpguard_decisions_total"), "{text}");
    // The kill is counted for its session.
    let killed_in_dash = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"mcpguard_session_denials_total{action="killed",session="dash"} "#))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(killed_in_dash.is_some_and(|n| n >= 1), "no per-session kill count for dash:\n{text}");

    let path = repo().join("packaging/grafana-mcpguard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dash, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for q in &queries {
        let (metrics, labels) = promql_refs(q);
        if metrics.is_empty() {
            problems.push(format!("{q}: names no mcpguard metric"));
        }
        let mut known: BTreeSet<&str> = SCRAPE_LABELS.into_iter().collect();
        for m in &metrics {
            match exported.get(m) {
                Some(ls) => known.extend(ls.iter().map(String::as_str)),
                None => problems.push(format!("{q}: metric {m} is not exported")),
            }
            used.insert(m.clone());
        }
        for l in labels.iter().filter(|l| !known.contains(l.as_str())) {
            problems.push(format!("{q}: label {l} is on none of {metrics:?}"));
        }
    }
    assert!(problems.is_empty(), "{}:\n{}", path.display(), problems.join("\n"));
    for m in [
        "mcpguard_decisions_total",
        "mcpguard_session_denials_total",
        "mcpguard_events_lost_total",
        "mcpguard_backend_info",
    ] {
        assert!(used.contains(m), "the dashboard does not show {m}");
    }
}

/// The policies ConfigMap is generated from policies/*.toml (a ConfigMap key cannot hold a
/// `/`, so the tools templates under policies/tools/ are not in it). `MCPG_REGEN=1` rewrites it.
#[test]
fn configmap_policies_match_the_policy_files() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut y = String::from(
        "# Generated from policies/*.toml by tests/tests/fleet.rs (MCPG_REGEN=1 cargo test -p mcpguard-tests\n\
         # --test fleet configmap_policies): edit the policy files, not this.\n\
         # Updated in place (no name hash): the daemon reads a policy file at each grant, so an update\n\
         # is used by the next grant once kubelet has synced the volume (up to ~1 min); grants in\n\
         # force keep the content they were compiled from.\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mcpguard-policies\n  namespace: mcpguard\n  labels:\n    app.kubernetes.io/name: mcpguard\ndata:\n",
    );
    for f in &files {
        y.push_str(&format!("  {}: |\n", f.file_name().unwrap().to_str().unwrap()));
        for l in std::fs::read_to_string(f).unwrap().lines() {
            y.push_str(if l.is_empty() { "\n" } else { "    " });
            if !l.is_empty() {
                y.push_str(l);
                y.push('\n');
            }
        }
    }
    let target = repo().join("deploy/kubernetes/configmap-policies.yaml");
    if std::env::var_os("MCPG_REGEN").is_some() {
        std::fs::write(&target, &y).unwrap();
    }
    let have = std::fs::read_to_string(&target).unwrap_or_default();
    assert!(
        have == y,
        "{} is out of date with policies/: run MCPG_REGEN=1 cargo test -p mcpguard-tests --test fleet configmap_policies",
        target.display()
    );
}

fn validate(paths: &[&Path]) -> (bool, String) {
    let out = Command::new("bash").arg(repo().join("scripts/validate-k8s.sh")).args(paths).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Every manifest under deploy/kubernetes/ against the pinned Kubernetes schema (strict), and a
/// broken copy of each kind of mistake is refused with the field named.
#[test]
fn kubernetes_manifests_validate_offline() {
    let dir = repo().join("deploy/kubernetes");
    let (ok, out) = validate(&[&dir]);
    assert!(ok, "{out}");
    let n = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "yaml"))
        .count();
    assert!(out.contains(&format!("{n} document(s), 0 error(s)")), "{out}");
    assert!(out.contains("DaemonSet mcpguard): Kubernetes 1.34.0 schema, strict"), "{out}");

    let broken = Scratch::new("k8s-broken");
    let ds = std::fs::read_to_string(dir.join("daemonset.yaml")).unwrap();
    let sm = std::fs::read_to_string(dir.join("servicemonitor.yaml")).unwrap();
    for (name, text, needle) in [
        ("typo.yaml", ds.replace("hostPID: true", "hostPid: true"), "'hostPid' was unexpected"),
        ("type.yaml", ds.replace("containerPort: 9464", "containerPort: \"9464x\""), "containerPort"),
        ("sm.yaml", sm.replace("interval: 30s", "interval: 30 seconds"), "interval"),
    ] {
        assert_ne!(text, if name == "sm.yaml" { sm.clone() } else { ds.clone() }, "{name}: the mistake was not made");
        std::fs::write(broken.path(name), text).unwrap();
        let (ok, out) = validate(&[&broken.path(name)]);
        assert!(
            !ok && out.contains("ERROR") && out.contains(needle),
            "{name} passed or the error does not name it: {out}"
        );
    }
}

fn rlimit(which: libc::__rlimit_resource_t) -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(which, &raw mut r) }, 0);
    r.rlim_cur
}

/// `podman rm -f` on drop: the container goes whatever the test does.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", "-t", "0", &self.0]).output();
    }
}

/// A bpffs directory of this test's own, unpinned on drop (after the container is gone).
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = Command::new(mcpguard_bin()).args(["unpin", "--bpffs-dir", self.0.to_str().unwrap()]).output();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The image (packaging/Containerfile, static binary, no base image) run privileged in the host's
/// PID namespace with a private directory of the host's bpffs: a process on the host, launched by
/// the host's `mcpguard exec` through the containerized daemon's socket, is enforced on.
#[test]
fn container_image_enforces_on_a_host_process() {
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED container_image_enforces_on_a_host_process: podman is not installed (scripts/setup.sh installs it)"
        );
        return;
    }
    let tag = "localhost/mcpguard:fleet-test";
    let t0 = std::time::Instant::now();
    let st = Command::new("bash").arg(repo().join("packaging/build-image.sh")).arg(tag).status().unwrap();
    assert!(st.success(), "packaging/build-image.sh failed");
    let t_build = t0.elapsed();

    let id = unique_id();
    let dir = Scratch::new("ctr");
    for sub in ["run", "state", "log", "policies", "ws"] {
        std::fs::create_dir_all(dir.path(sub)).unwrap();
    }
    std::fs::write(dir.path("policies/test-baseline.toml"), mcpguard_tests::daemon::TEST_BASELINE).unwrap();
    std::fs::write(dir.path("ws/ok.txt"), "granted-content\n").unwrap();
    std::fs::write(dir.path("secret.txt"), "SECRET\n").unwrap();
    let pins = Pins(PathBuf::from(format!("/sys/fs/bpf/mcpguard-fleet-test-{id}")));
    std::fs::create_dir_all(&pins.0).unwrap();
    let addr = metrics_addr();
    let name = format!("mcpguard-fleet-test-{id}");
    let ctr = Container(name.clone());
    let v = |host: &Path, inside: &str, ro: bool| format!("{}:{inside}{}", host.display(), if ro { ":ro" } else { "" });
    let t1 = std::time::Instant::now();
    // crun (Debian 12's default) refuses hosts with a hybrid cgroup layout (v1 controllers, v2
    // at /sys/fs/cgroup/unified, as this one): runc then.
    let mut podman = Command::new("podman");
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert!(Path::new("/usr/bin/runc").exists(), "hybrid cgroup host: install runc (scripts/setup.sh does)");
        podman.args(["--runtime", "runc"]);
    }
    // Limits no higher than ours: without CAP_SYS_RESOURCE (as here) podman's defaults fail.
    let nofile = rlimit(libc::RLIMIT_NOFILE).min(65536);
    let out = podman
        .args(["run", "-d", "--name", &name, "--privileged", "--pid=host", "--cgroupns=host", "--network=host"])
        .args(["--ulimit", &format!("nofile={nofile}:{nofile}"), "--ulimit", "nproc=4096:4096"])
        // As the DaemonSet (readOnlyRootFilesystem): it writes only to the mounted directories.
        .arg("--read-only")
        .args(["-v", &v(&dir.path("run"), "/run/mcpguard", false)])
        .args(["-v", &v(&dir.path("state"), "/var/lib/mcpguard", false)])
        .args(["-v", &v(&dir.path("log"), "/var/log/mcpguard", false)])
        .args(["-v", &v(&dir.path("policies"), "/test-policies", true)])
        // (Not at its host path: the container's sysfs has no such directory to mount on.)
        .args(["-v", &v(&pins.0, "/bpffs", false)])
        .args(["-v", "/sys/kernel/tracing:/sys/kernel/tracing", "-v", "/sys/kernel/security:/sys/kernel/security:ro"])
        .args(["-v", "/sys/fs/cgroup:/sys/fs/cgroup"])
        // Grant paths resolve in the daemon's mount namespace: the host's, at the same paths.
        .args(["-v", "/usr:/usr:ro", "-v", "/etc/ld.so.cache:/etc/ld.so.cache:ro"])
        .args(["-v", &v(&dir.0, dir.0.to_str().unwrap(), true)])
        .args(["-e", "RUST_LOG=info", tag, "daemon", "--config", "/etc/mcpguard/mcpguard.toml"])
        .args(["--bpffs-dir", "/bpffs", "--metrics", &addr, "--policy-dir", "/test-policies"])
        .args(["--net-cgroup", mcpguard_tests::test_cgroup().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "podman run: {}", String::from_utf8_lossy(&out.stderr));
    let logs = || {
        let o = Command::new("podman").args(["logs", &ctr.0]).output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(&addr).is_ok() && http(&addr, "GET", "/readyz").0 == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the containerized daemon never became ready:\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let t_ready = t1.elapsed();
    let (_, ready) = http(&addr, "GET", "/readyz");
    assert!(ready.contains("backend kill attached"), "{ready}");

    let socket = dir.path("run/mcpguard.sock");
    let cli = || {
        let mut c = Command::new(mcpguard_bin());
        c.arg("--socket").arg(&socket).env("RUST_BACKTRACE", "0");
        c
    };
    let launch = |session: &str, script: &str| {
        cli()
            .args(["exec", "--session", session, "--baseline", "test-baseline", "--", "/usr/bin/dash", "-c", script])
            .env_clear()
            .env("PATH", "/usr/bin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_session = |session: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let o = cli().args(["status", "--json"]).output().unwrap();
            if String::from_utf8_lossy(&o.stdout).contains(&format!("\"{session}\"")) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "session {session} never registered: {}", logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let ws = dir.path("ws");
    let grant = |session: &str| {
        let t = std::time::Instant::now();
        let o = cli()
            .args(["grant", "--session", session, "--task", "t1", "--allow-exec", "/usr/bin/cat", "--ttl", "5m"])
            .arg("--allow-read")
            .arg(&ws)
            .output()
            .unwrap();
        assert!(o.status.success(), "grant: {}", String::from_utf8_lossy(&o.stderr));
        t.elapsed()
    };
    let (ok, secret) = (dir.path("ws/ok.txt"), dir.path("secret.txt"));

    // Allowed: the granted binary reads the granted file and exits 0.
    let mut c = launch("ctr-ok", &format!("read x; exec /usr/bin/cat {}", ok.display()));
    wait_session("ctr-ok");
    let t_grant = grant("ctr-ok");
    c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{:?} {}", o.status, String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "granted-content\n");

    // Denied: an open outside the grant (the cat is killed, the shell goes on), then an exec of
    // a binary the grant does not name (the process itself is killed).
    let script = format!(
        "read x; /usr/bin/cat {ok}; /usr/bin/cat {secret}; exec /usr/bin/head -n1 {ok}",
        ok = ok.display(),
        secret = secret.display()
    );
    let mut c = launch("ctr-deny", &script);
    wait_session("ctr-deny");
    grant("ctr-deny");
    c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let o = c.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(killed(o.status), "the exec of head was not killed: {:?} {stdout}", o.status);
    assert_eq!(stdout, "granted-content\n", "the secret was read, or the allowed cat failed");

    let audit = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.path("log/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let find = |hook: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = audit().into_iter().find(|l| l["session"] == "ctr-deny" && l["hook"] == hook) {
                return l;
            }
            assert!(std::time::Instant::now() < deadline, "no {hook} event in {:#?}\n{}", audit(), logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let open = find("open");
    assert_eq!((open["action"].as_str(), open["reason"].as_str()), (Some("killed"), Some("not_granted")), "{open}");
    assert_eq!(open["path"].as_str(), secret.to_str(), "{open}");
    let exec = find("exec");
    assert_eq!((exec["action"].as_str(), exec["reason"].as_str()), (Some("killed"), Some("not_granted")), "{exec}");
    assert!(exec["path"].as_str().is_some_and(|p| p.ends_with("/head")), "{exec}");
    assert!(!audit().iter().any(|l| l["session"] == "ctr-ok"), "the allowed run was reported: {:#?}", audit());
    eprintln!(
        "container figures: image build {} ms, podman run to /readyz 200 {} ms, first grant through the socket {} ms",
        t_build.as_millis(),
        t_ready.as_millis(),
        t_grant.as_millis()
    );
    drop(ctr);
    let o = Command::new("podman").args(["container", "exists", &name]).status().unwrap();
    assert!(!o.success(), "container {name} still exists");
}
