//! Unit tests of policy parsing, validation, instantiation and intersection.
use super::*;

const GIT: &str = r#"name = "git"
description = "git on one repo"
mode = "kill"
ttl = "10m"

[vars.repo]
kind = "path"
roots = ["/home", "/srv/", "/tmp"]

[[exec]]
path = "/usr/bin/git"
sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

[[read]]
path = "${repo}"

[[read]]
path = "${repo}/../etc"
"#;

fn git() -> Policy {
    Policy::parse(
        &GIT.replace("\n[[read]]\npath = \"${repo}/../etc\"\n", "\n[[write]]\npath = \"${repo}/.git\"\n"),
        "git.toml",
    )
    .unwrap()
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn err(text: &str) -> String {
    Policy::parse(text, "p.toml").unwrap_err().to_string()
}

fn assert_has(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "{n:?} not in {msg:?}");
    }
}

#[test]
fn parses_template() {
    let p = git();
    assert_eq!(p.name, "git");
    assert_eq!(p.mode, Mode::Kill);
    assert_eq!(p.ttl, Some(Duration::from_secs(600)));
    assert_eq!(p.vars["repo"].roots, [PathBuf::from("/home"), "/srv".into(), "/tmp".into()]);
    assert_eq!(p.exec[0].path, Path::new("/usr/bin/git"));
    assert_eq!(p.read[0].path, "${repo}");
    assert_eq!(p.write[0].path, "${repo}/.git");
    let min = Policy::parse("name = \"fetch\"", "f").unwrap();
    assert_eq!((min.mode, min.ttl, min.exec.len()), (Mode::Deny, None, 0));
}

#[test]
fn syntax_errors_name_origin_line_and_field() {
    let e = err("name = \"x\"\n\n[[exek]]\npath = \"/bin/x\"\n");
    assert_has(&e, &["p.toml:3:", "unknown field `exek`", "expected one of"]);
    let e = err("name = \"x\"\n[[exec]]\npath = \"/bin/x\"\nsha = \"ab\"\n");
    assert_has(&e, &["p.toml:4:", "unknown field `sha`"]);
    let e = err("name = \"x\"\n\nmode = 5\n");
    assert_has(&e, &["p.toml:3:8:", "`mode`"]);
    let e = err("\nname = 5\n");
    assert_has(&e, &["p.toml:2:8:", "invalid type: integer `5`, expected a string", "(in field `name`)"]);
    let e = err("name = \"x\"\n[[exec]]\npath = [\"/bin/x\"]\n");
    assert_has(&e, &["p.toml:3:8:", "invalid type", "(in field `exec.path`)"]);
    let e = err("name = \"x\"\n[vars.repo]\nroots = \"/home\"\n[[read]]\npath = \"${repo}\"\n");
    assert_has(&e, &["p.toml:3:", "`vars.repo.roots`"]);
    let e = err("name = \"x\"\nmode = \"strict\"\n");
    assert_has(&e, &["p.toml:2:", "`mode`", "strict"]);
    assert_has(&err("name = \"x\"\nttl = \"10\"\n"), &["p.toml:2:", "`ttl`", "`10`"]);
    assert_has(&err("description = \"d\"\n"), &["p.toml:", "missing field `name`"]);
    assert_has(&err("name = \"x\"\nname = \"y\"\n"), &["p.toml:2:", "duplicate key"]);
    let dup = "name = \"x\"\n[vars.a]\n[vars.a]\n[[read]]\npath = \"${a}\"\n";
    assert_has(&err(dup), &["p.toml:3:", "duplicate"]);
    assert!(matches!(Policy::parse("name = ", "f"), Err(PolicyError::Syntax { line: 1, .. })));
}

#[test]
fn validation_errors_name_origin_field_and_line() {
    assert_has(&err("name = \"Git!\""), &["p.toml:1: field `name`", "Git!"]);
    let cases = [
        (GIT.replace("0123456789abcdef0123", "0123456789ABCDEF0123"), "p.toml:12: field `exec[0].sha256`"),
        (GIT.replace("/usr/bin/git", "${repo}/git"), "p.toml:11: field `exec[0].path`: `${repo}/git`: exec paths"),
        (GIT.replace("/usr/bin/git", "git"), "field `exec[0].path`: `git`: path is not absolute"),
        (GIT.to_string(), "p.toml:18: field `read[1].path`: `${repo}/../etc`: path contains a `..`"),
        (GIT.replace("${repo}/../etc", "${rep}"), "p.toml:18: field `read[1].path`: variable `rep` is not declared"),
        (GIT.replace("${repo}/../etc", "${repo"), "field `read[1].path`: unterminated"),
        (GIT.replace("${repo}/../etc", "${re po}"), "invalid variable name `re po`"),
        (GIT.replace("${repo}/../etc", "etc"), "`etc`: path is not absolute"),
        (GIT.replace("${repo}/../etc", "x${repo}"), "`x${repo}`: path is not absolute"),
        (GIT.replace("${repo}/../etc", "/"), "field `read[1].path`: `/`: path is `/`"),
        (GIT.replace("\"/srv/\"", "\"srv\""), "p.toml:8: field `vars.repo.roots[1]`: `srv`: path is not absolute"),
        (
            GIT.replace("[vars.repo]", "[vars.unused]\n[vars.repo]").replace("${repo}/../etc", "/etc/gitconfig"),
            "field `vars.unused`: variable `unused` is declared but never used",
        ),
        (GIT.replace("[vars.repo]", "[vars.\"bad-name\"]"), "field `vars.bad-name`: invalid variable name"),
    ];
    for (text, needle) in cases {
        assert_has(&err(&text), &[needle]);
    }
}

#[test]
fn instantiate_substitutes_and_normalises() {
    let g = git().instantiate(&vars(&[("repo", "/home/alice//src/./app/")])).unwrap();
    assert_eq!(g.policy_name, "git");
    assert_eq!(g.mode, Mode::Kill);
    assert_eq!(g.ttl, Some(Duration::from_secs(600)));
    assert_eq!(g.read, [PathBuf::from("/home/alice/src/app")]);
    assert_eq!(g.write, [PathBuf::from("/home/alice/src/app/.git")]);
    assert_eq!(g.exec.len(), 1);
    // At a root exactly is allowed.
    assert!(git().instantiate(&vars(&[("repo", "/tmp")])).is_ok());
}

#[test]
fn instantiate_rejects_bad_values() {
    let p = git();
    let e = |pairs: &[(&str, &str)]| p.instantiate(&vars(pairs)).unwrap_err().to_string();
    assert_has(&e(&[]), &["variable `repo` is required"]);
    assert_has(&e(&[("repo", "/tmp/r"), ("branch", "x")]), &["unknown variable `branch`", "declared: [repo]"]);
    assert_has(&e(&[("repo", "/etc")]), &["variable `repo` = `/etc` is outside the allowed roots [/home, /srv, /tmp]"]);
    assert_has(&e(&[("repo", "/home2/x")]), &["`/home2/x` is outside the allowed roots"]);
    assert_has(&e(&[("repo", "/home/../etc")]), &["`/home/../etc` is invalid", "`..`"]);
    assert_has(&e(&[("repo", "/home/a/..")]), &["`..`"]);
    assert_has(&e(&[("repo", "/")]), &["path is `/`"]);
    assert_has(&e(&[("repo", "//")]), &["path is `/`"]);
    assert_has(&e(&[("repo", "home/x")]), &["not absolute"]);
    assert_has(&e(&[("repo", "")]), &["empty"]);
    assert_has(&e(&[("repo", "/tmp/a\0b")]), &["NUL"]);
    assert_has(&e(&[("repo", "/tmp/a\nb")]), &["control character"]);
    // No roots declared: any absolute path is accepted.
    let free = Policy::parse("name = \"f\"\n[vars.d]\n[[read]]\npath = \"${d}\"\n", "f").unwrap();
    assert_eq!(free.instantiate(&vars(&[("d", "/etc")])).unwrap().read, [PathBuf::from("/etc")]);
}

#[test]
fn inline_grants_validate() {
    let exec = vec![ExecRule { path: "/usr/bin//git".into(), sha256: None, ..Default::default() }];
    let g = GrantSpec::inline(exec, vec!["/srv/a/./b/".into(), "/srv/a/b".into()], vec![], Mode::Audit, None).unwrap();
    assert_eq!(g.policy_name, "inline");
    assert_eq!(g.exec[0].path, Path::new("/usr/bin/git"));
    assert_eq!(g.read, [PathBuf::from("/srv/a/b")]);
    let bad =
        |read: &str| GrantSpec::inline(vec![], vec![read.into()], vec![], Mode::Deny, None).unwrap_err().to_string();
    assert_has(&bad("/"), &["inline grant read[0]", "path is `/`"]);
    assert_has(&bad("rel"), &["not absolute"]);
    assert_has(&bad("/a/../b"), &["`..`"]);
    let e = GrantSpec::inline(vec![], vec![], vec!["/x\n".into()], Mode::Deny, None).unwrap_err();
    assert_has(&e.to_string(), &["inline grant write[0]", "control"]);
    let digest = vec![ExecRule { path: "/bin/x".into(), sha256: Some("abc".into()), ..Default::default() }];
    let e = GrantSpec::inline(digest, vec![], vec![], Mode::Deny, None).unwrap_err();
    assert_has(&e.to_string(), &["exec[0]", "sha256 `abc`"]);
}

#[test]
fn intersect_takes_the_narrower_grant() {
    let pin = |s: &str| Some(s.repeat(64));
    let task = GrantSpec {
        policy_name: "git".into(),
        mode: Mode::Deny,
        ttl: Some(Duration::from_secs(600)),
        exec: vec![
            ExecRule { path: "/usr/bin/git".into(), sha256: None, ..Default::default() },
            ExecRule { path: "/usr/bin/ls".into(), sha256: pin("a"), ..Default::default() },
            ExecRule { path: "/usr/bin/cat".into(), sha256: None, ..Default::default() },
        ],
        read: vec!["/srv/repo".into(), "/etc/gitconfig".into()],
        write: vec!["/srv/repo".into()],
        metadata: Vec::new(),
        connect: vec!["tcp://10.0.0.1:443".into(), "unix:/run/a.sock".into()],
        listen: Vec::new(),
        environments: Vec::new(),
        labels: Vec::new(),
        audience: Vec::new(),
    };
    let call = GrantSpec::inline(
        vec![
            ExecRule { path: "/usr/bin/git".into(), sha256: pin("b"), ..Default::default() },
            ExecRule { path: "/usr/bin/ls".into(), sha256: pin("c"), ..Default::default() },
            ExecRule { path: "/usr/bin/sh".into(), sha256: None, ..Default::default() },
        ],
        vec!["/srv/repo/src".into(), "/srv".into(), "/srv/repo2".into(), "/etc".into()],
        vec!["/srv/repo/.git".into(), "/tmp".into()],
        Mode::Kill,
        Some(Duration::from_secs(30)),
    )
    .unwrap();
    let g = task.intersect(&call);
    assert_eq!(g.policy_name, "git&inline");
    assert_eq!(g.mode, Mode::Kill);
    assert_eq!(g.ttl, Some(Duration::from_secs(30)));
    assert_eq!(g.exec, [ExecRule { path: "/usr/bin/git".into(), sha256: pin("b"), ..Default::default() }]);
    assert_eq!(g.read, [PathBuf::from("/srv/repo/src"), "/srv/repo".into(), "/etc/gitconfig".into()]);
    assert_eq!(g.write, [PathBuf::from("/srv/repo/.git")]);
    // Symmetric in content, idempotent, TTL falls back to the one that is set.
    let h = call.intersect(&task);
    assert_eq!((h.mode, h.ttl, h.exec.len(), h.read.len(), h.write.len()), (Mode::Kill, g.ttl, 1, 3, 1));
    assert_eq!(task.intersect(&task), task);
    let no_ttl = GrantSpec { ttl: None, ..task.clone() };
    assert_eq!(no_ttl.intersect(&task).ttl, task.ttl);
    assert_eq!(Mode::Audit.stricter(Mode::Deny), Mode::Deny);
}

#[test]
fn is_under_is_component_wise() {
    assert!(is_under(Path::new("/home"), Path::new("/home")));
    assert!(is_under(Path::new("/home/a/b"), Path::new("/home")));
    assert!(is_under(Path::new("/home/a"), Path::new("/home/")));
    assert!(!is_under(Path::new("/home2"), Path::new("/home")));
    assert!(!is_under(Path::new("/hom"), Path::new("/home")));
    assert!(!is_under(Path::new("/home/../etc"), Path::new("/home")));
    assert_eq!(normalize_path(Path::new("/a//b/./c/")), Ok(PathBuf::from("/a/b/c")));
}

#[test]
fn mode_strings() {
    for m in [Mode::Audit, Mode::Deny, Mode::Kill] {
        assert_eq!(m.to_string().parse::<Mode>(), Ok(m));
        assert_eq!(serde_json::to_value(m).unwrap(), serde_json::Value::from(m.to_string()));
    }
    assert_eq!("x".parse::<Mode>().unwrap_err().to_string(), "unknown mode `x` (expected deny, kill or audit)");
}

#[test]
fn resolve_by_name_or_file() {
    let dir = std::env::temp_dir().join(format!("mcpguard-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mine.toml"), "name = \"mine\"\n").unwrap();
    let dirs = [PathBuf::from("/nonexistent/policies"), dir.clone()];
    let (p, path) = resolve_policy("mine", &dirs).unwrap();
    assert_eq!((p.name.as_str(), path), ("mine", dir.join("mine.toml")));
    let file = dir.join("mine.toml").display().to_string();
    assert_eq!(resolve_policy(&file, &[]).unwrap().0.name, "mine");
    let e = resolve_policy("nope", &dirs).unwrap_err().to_string();
    assert_has(
        &e,
        &["policy `nope` not found", "/nonexistent/policies/nope.toml", &dir.join("nope.toml").display().to_string()],
    );
    assert_has(&resolve_policy("../x", &dirs).unwrap_err().to_string(), &["cannot read policy file ../x"]);
    assert!(matches!(resolve_policy("Bad Name", &dirs), Err(PolicyError::BadName { .. })));
    std::fs::write(dir.join("broken.toml"), "name = \"b\"\nexek = 1\n").unwrap();
    let e = resolve_policy("broken", &dirs).unwrap_err().to_string();
    assert_has(&e, &["broken.toml:2:", "`exek`"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shipped_policies_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(Some(p.name.as_str()), path.file_stem().and_then(|s| s.to_str()), "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 7, "only {n} policies in {}", dir.display());
    let (git, _) = resolve_policy("git", std::slice::from_ref(&dir)).unwrap();
    let g = git.instantiate(&vars(&[("repo", "/work/proj")])).unwrap();
    assert_eq!(g.write, [PathBuf::from("/work/proj")]);
    let (fetch, _) = resolve_policy("fetch", &[dir]).unwrap();
    let f = fetch.instantiate(&BTreeMap::new()).unwrap();
    assert!(f.exec.is_empty() && f.read.is_empty() && f.write.is_empty());
}

#[test]
fn network_targets_parse_and_intersect() {
    let p = Policy::parse(
        r#"
name = "net"
[[connect]]
to = "tcp://127.0.0.1:8000-8080"
[[connect]]
to = "unix:@agent"
[[listen]]
on = "tcp://127.0.0.1:9000"
"#,
        "net.toml",
    )
    .unwrap();
    assert_eq!(p.connect, vec!["tcp://127.0.0.1:8000-8080".to_string(), "unix:@agent".to_string()]);
    assert_eq!(p.listen, vec!["tcp://127.0.0.1:9000".to_string()]);
    let spec = p.instantiate(&BTreeMap::new()).unwrap();
    let other = GrantSpec::inline(Vec::new(), Vec::new(), Vec::new(), Mode::Deny, None)
        .unwrap()
        .with_net(&["unix:@agent".into()], &[])
        .unwrap();
    let both = spec.intersect(&other);
    assert_eq!(both.connect, vec!["unix:@agent".to_string()]);
    assert!(both.listen.is_empty());
    let e = Policy::parse("name = \"n\"\n[[connect]]\nto = \"http://x:1\"\n", "n.toml").unwrap_err();
    assert_has(&e.to_string(), &["n.toml:3", "connect[0].to", "http"]);
    let e = GrantSpec::inline(Vec::new(), Vec::new(), Vec::new(), Mode::Deny, None)
        .unwrap()
        .with_net(&[], &["tcp://example.com:80".into()])
        .unwrap_err();
    assert_has(&e.to_string(), &["listen[0]", "example.com"]);
}

#[test]
fn url_variables_fill_connect_targets_with_the_urls_host_and_port() {
    let p = Policy::parse(
        r#"
name = "fetch-url"
[vars.url]
kind = "url"
within = ["tcp://127.0.0.0/8:*", "tcp://example.com:443"]
[[connect]]
to = "tcp://${url}"
"#,
        "f.toml",
    )
    .unwrap();
    let one = |u: &str| p.instantiate(&vars(&[("url", u)])).map(|g| g.connect);
    assert_eq!(one("http://127.0.0.1:8080/x?y").unwrap(), vec!["tcp://127.0.0.1:8080".to_string()]);
    assert_eq!(one("http://127.0.0.2/").unwrap(), vec!["tcp://127.0.0.2:80".to_string()]);
    assert_eq!(one("https://EXAMPLE.com/a").unwrap(), vec!["tcp://example.com:443".to_string()]);
    // Userinfo is not the host (WHATWG parsing, as HTTP clients do).
    let e = one("http://127.0.0.1:80@evil.test/").unwrap_err();
    assert_has(&e.to_string(), &["evil.test:80", "not within"]);
    assert_has(&one("http://example.com:8443/").unwrap_err().to_string(), &["example.com:8443", "not within"]);
    assert_has(&one("file:///etc/passwd").unwrap_err().to_string(), &["scheme `file`"]);
    assert_has(&one("not a url").unwrap_err().to_string(), &["not a URL"]);
    // A url variable cannot name a path, and a path variable cannot fill a connect target.
    let e = Policy::parse("name = \"x\"\n[vars.u]\nkind = \"url\"\n[[read]]\npath = \"${u}\"\n", "x.toml").unwrap_err();
    assert_has(&e.to_string(), &["url variable", "not paths"]);
    let e = Policy::parse("name = \"x\"\n[vars.p]\nkind = \"path\"\n[[connect]]\nto = \"tcp://${p}\"\n", "x.toml")
        .unwrap_err();
    assert_has(&e.to_string(), &["path variable"]);
}

#[test]
fn environments_and_labels_are_names_and_intersect_narrowly() {
    let p = Policy::parse("name = \"x\"\nenvironments = [\"sandbox\", \"dev\"]\nlabels = [\"prod-data\"]\n", "x.toml")
        .unwrap();
    assert_eq!(
        (p.environments.as_slice(), p.labels.as_slice()),
        (&["sandbox".to_string(), "dev".to_string()][..], &["prod-data".to_string()][..])
    );
    let e = Policy::parse("name = \"x\"\nenvironments = [\"Prod!\"]\n", "x.toml").unwrap_err().to_string();
    assert_has(&e, &["x.toml:2", "`environments`", "Prod!"]);
    let e = Policy::parse("name = \"x\"\nlabels = [\"a\", \"a\"]\n", "x.toml").unwrap_err().to_string();
    assert_has(&e, &["`labels`", "twice"]);
    let spec = |envs: &[&str], labels: &[&str]| GrantSpec {
        environments: envs.iter().map(|s| (*s).to_string()).collect(),
        labels: labels.iter().map(|s| (*s).to_string()).collect(),
        ..GrantSpec::inline(Vec::new(), Vec::new(), Vec::new(), Mode::Deny, None).unwrap()
    };
    let i = spec(&["dev", "prod"], &["a", "b"]).intersect(&spec(&["prod"], &["b"]));
    assert_eq!((i.environments, i.labels), (vec!["prod".to_string()], vec!["b".to_string()]));
    let i = spec(&[], &["a"]).intersect(&spec(&["dev"], &[]));
    assert_eq!((i.environments, i.labels), (vec!["dev".to_string()], Vec::<String>::new()));
}

#[test]
fn audience_is_checked_and_the_inner_grant_names_it() {
    let p = Policy::parse("name = \"x\"\naudience = [\"https://api.example.org\"]\n", "x.toml").unwrap();
    assert_eq!(p.audience, ["https://api.example.org"]);
    let e = Policy::parse("name = \"x\"\naudience = [\"\"]\n", "x.toml").unwrap_err().to_string();
    assert_has(&e, &["`audience`", "1-255 bytes"]);
    let spec = |aud: &[&str]| GrantSpec {
        audience: aud.iter().map(|s| (*s).to_string()).collect(),
        ..GrantSpec::inline(Vec::new(), Vec::new(), Vec::new(), Mode::Deny, None).unwrap()
    };
    assert_eq!(spec(&["task"]).intersect(&spec(&["call"])).audience, ["call"]);
    assert_eq!(spec(&["task"]).intersect(&spec(&[])).audience, ["task"]);
}
