use super::*;

fn o(hook: &str, access: &str, path: &str) -> Observation {
    Observation::audited(hook, access, path)
}

/// A recorded python server start (trimmed from a real run of mcp-server-git).
fn python_start() -> Vec<Observation> {
    let venv = "/work/m/.mcp-venv";
    let mut v = vec![
        o("open", "r", "/etc/ld.so.cache"),
        o("mmap", "", "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"),
        o("open", "r", "/usr/lib/python3.11/os.py"),
        o("open", "r", "/usr/lib/python3.11/encodings/__init__.py"),
        o("open", "r", "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so"),
        o("open", "r", "/proc/4242/cgroup"),
        o("open", "r", "/proc/meminfo"),
        o("open", "rw", "/dev/null"),
        o("open", "r", &format!("{venv}/pyvenv.cfg")),
        o("open", "r", &format!("{venv}/lib/python3.11/site-packages/git/cmd.py")),
        o("exec", "", "/usr/bin/git"),
        o("connect", "", "/ignored"),
    ];
    for x in &mut v[8..10] {
        x.venv = Some(venv.into());
    }
    v[10].sha256 = Some("ab".repeat(32));
    v[11].path = None;
    v[11].net = Some("tcp 127.0.0.1:8080".into());
    let mut dir = o("open", "r", "/etc");
    dir.now = Some("dir".into());
    v.push(dir);
    v
}

#[test]
fn python_start_collapses_to_prefix_and_venv_keeps_the_rest_precise() {
    let obs = python_start();
    let refs: Vec<&Observation> = obs.iter().collect();
    let mut d = Draft::default();
    generalise(&mut d, &refs);
    let reads: Vec<&str> = d.read.keys().map(String::as_str).collect();
    assert_eq!(
        reads,
        [
            "/dev/null",
            "/etc/ld.so.cache",
            "/proc",
            "/usr/lib/python3.11",
            "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
            "/work/m/.mcp-venv",
        ]
    );
    assert!(d.read["/proc"].iter().any(|w| w.contains("self-only")));
    assert_eq!(d.write.keys().collect::<Vec<_>>(), ["/dev/null"]);
    assert_eq!(d.exec["/usr/bin/git"].sha256.as_deref(), Some("ab".repeat(32).as_str()));
    assert_eq!(d.connect.iter().collect::<Vec<_>>(), ["tcp://127.0.0.1:8080"]);
    assert_eq!(d.collapsed["/usr/lib/python3.11"].0, 3);
    // Listing /etc is left for a human, never proposed.
    assert!(d.undecided.iter().any(|u| u.contains("/etc") && u.contains("not proposed")), "{:?}", d.undecided);
    assert!(!d.read.contains_key("/etc") && !d.read.contains_key("/"));
}

#[test]
fn writes_stay_narrow_and_never_where_code_ran() {
    let mut created = o("open", "w", "/srv/data/cache/x.tmp");
    created.created = true;
    created.parent_before = Some("/srv/data/cache".into());
    let existing = o("open", "w", "/srv/data/state.json");
    let mut in_tmp = o("open", "w", "/tmp/tmpab12");
    in_tmp.now = Some("missing".into());
    let mut plug = o("open", "w", "/srv/plug/new.so");
    plug.created = true;
    plug.parent_before = Some("/srv/plug".into());
    let ran = o("mmap", "", "/srv/plug/old.so");
    let obs = [created, existing, in_tmp, plug, ran];
    let refs: Vec<&Observation> = obs.iter().collect();
    let mut d = Draft::default();
    generalise(&mut d, &refs);
    assert_eq!(
        d.write.keys().map(String::as_str).collect::<Vec<_>>(),
        ["/srv/data/cache", "/srv/data/state.json", "/srv/plug/new.so", "/tmp/tmpab12"]
    );
    assert!(d.undecided.iter().any(|u| u.contains("/srv/plug") && u.contains("W^X")), "{:?}", d.undecided);
    assert!(d.undecided.iter().any(|u| u.contains("/tmp is")), "{:?}", d.undecided);
}

#[test]
fn same_observations_same_draft_whatever_the_order() {
    let obs = python_start();
    let mut a = Draft::default();
    generalise(&mut a, &obs.iter().collect::<Vec<_>>());
    let mut b = Draft::default();
    generalise(&mut b, &obs.iter().rev().collect::<Vec<_>>());
    assert_eq!(a, b);
    let mut v = a.clone();
    bind_var(&mut v, "python_prefix", "/work/m/.mcp-venv", &BTreeSet::from(["/work/m/.mcp-venv".to_string()]));
    assert!(v.read.contains_key("${python_prefix}"), "{:?}", v.read);
    assert_eq!(v.vars["python_prefix"].len(), 1);
    assert_eq!(net_target("unix @agent", None).as_deref(), Some("unix:@agent"));
    assert_eq!(net_target("unix", Some("/run/a.sock")).as_deref(), Some("unix:/run/a.sock"));
    assert_eq!(net_target("udp [::1]:53", None).as_deref(), Some("udp://[::1]:53"));
}

#[test]
fn command_lines_become_patterns() {
    let sha = "89e18b4e437e79fa31f2fb5126b8fce11efacbb2";
    assert_eq!(
        argv_patterns(&format!("/usr/bin/git rev-list --max-count=10 {sha} --"), false),
        ["rev-list", "--max-count=10", "*", "--"]
    );
    assert_eq!(argv_patterns("/usr/bin/git status", false), ["status"]);
    assert_eq!(argv_patterns("/usr/bin/git log -n 5 --format=x", true), ["log", "-n", "5", "**"]);
    let long = format!("/bin/x {}", "a ".repeat(10));
    assert_eq!(argv_patterns(long.trim_end(), false).len(), 9, "8 then **");
    let set: BTreeSet<Vec<String>> = [
        vec!["show".to_string(), "HEAD".into()],
        vec!["show".to_string(), "v1".into()],
        vec!["status".to_string()],
        vec!["cat-file".to_string(), "--batch".into()],
        vec!["cat-file".to_string(), "--batch-check".into()],
    ]
    .into_iter()
    .collect();
    let merged: Vec<Vec<String>> = merge_alternatives(&set).into_iter().collect();
    let want: [Vec<String>; 4] = [
        vec!["cat-file".into(), "--batch".into()],
        vec!["cat-file".into(), "--batch-check".into()],
        vec!["show".into(), "*".into()],
        vec!["status".into()],
    ];
    assert_eq!(merged, want, "options are not merged");
}
