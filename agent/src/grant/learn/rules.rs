//! The generalisation rules of `mcpguard learn` for one path (documented in `docs/learn.md`):
//! which directory a file collapses to, and which directories are never proposed.
use std::path::Path;

use crate::grant::policy::is_under;

/// Why a directory is proposed instead of the files observed in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Collapse {
    /// A directory holding `pyvenv.cfg`.
    Virtualenv,
    /// `site-packages` / `dist-packages`.
    SitePackages,
    /// `node_modules` (the outermost one).
    NodeModules,
    /// `<prefix>/lib/pythonX.Y`: an interpreter's own library directory.
    InterpreterPrefix,
}

impl Collapse {
    #[must_use]
    pub fn why(self) -> &'static str {
        match self {
            Collapse::Virtualenv => "a virtualenv (holds pyvenv.cfg)",
            Collapse::SitePackages => "a site-packages directory",
            Collapse::NodeModules => "a node_modules directory",
            Collapse::InterpreterPrefix => "an interpreter's library directory (<prefix>/lib/pythonX.Y)",
        }
    }
}

/// Directories never proposed (they would grant far more than any server needs): `/`, the
/// top-level system directories, `/etc`, `/proc`, `/home` and every home directory.
#[must_use]
pub fn too_broad(dir: &str) -> Option<&'static str> {
    const TOP: &[&str] = &[
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/work",
        "/usr/bin",
        "/usr/sbin",
        "/usr/lib",
        "/usr/lib64",
        "/usr/local",
        "/usr/share",
        "/usr/include",
        "/usr/libexec",
        "/var/lib",
        "/var/tmp",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/local/lib",
        "/usr/local/bin",
    ];
    let dir = dir.trim_end_matches('/');
    let dir = if dir.is_empty() { "/" } else { dir };
    if dir == "/root" || (dir.starts_with("/home/") && dir[6..].split('/').count() == 1) {
        return Some("a home directory");
    }
    if dir == "/etc" {
        return Some("/etc (every host secret and setting)");
    }
    if dir == "/proc" {
        return Some("/proc (every process)");
    }
    TOP.contains(&dir).then_some("a top-level system directory")
}

fn is_python_version_dir(name: &str) -> bool {
    name.strip_prefix("python").is_some_and(|v| {
        !v.is_empty()
            && v.chars().all(|c| c.is_ascii_digit() || c == '.')
            && v.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// The directory a read of `path` collapses to, and why: the outermost enclosing virtualenv
/// (`venv`, found by the annotation), `site-packages`/`dist-packages`, `node_modules` or
/// `<prefix>/lib/pythonX.Y`; never one of [`too_broad`]. `None`: keep `path` as observed.
#[must_use]
pub fn collapse_root(path: &str, venv: Option<&str>) -> Option<(String, Collapse)> {
    let mut best: Option<(String, Collapse)> = None;
    let mut consider = |dir: String, why: Collapse| {
        if dir != path && too_broad(&dir).is_none() && best.as_ref().is_none_or(|(b, _)| dir.len() < b.len()) {
            best = Some((dir, why));
        }
    };
    if let Some(v) = venv
        && is_under(Path::new(path), Path::new(v))
    {
        consider(v.to_owned(), Collapse::Virtualenv);
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in parts.iter().enumerate() {
        let dir = || format!("/{}", parts[..=i].join("/"));
        // A directory the path is inside of (not the path itself).
        if i + 1 == parts.len() {
            break;
        }
        match *c {
            "node_modules" => consider(dir(), Collapse::NodeModules),
            "site-packages" | "dist-packages" => consider(dir(), Collapse::SitePackages),
            name if is_python_version_dir(name) && i > 0 && matches!(parts[i - 1], "lib" | "lib64") => {
                consider(dir(), Collapse::InterpreterPrefix);
            }
            _ => {}
        }
    }
    best
}

/// `/proc/<pid>/...`, `/proc/self/...`: an entry of a process (the opener's own, since the kernel
/// refuses other processes' entries whatever the grant says).
#[must_use]
pub fn is_process_proc(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/proc/") else { return false };
    let first = rest.split('/').next().unwrap_or("");
    first == "self" || first == "thread-self" || (!first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()))
}

/// The parent directory of an absolute path (`None` for `/`).
#[must_use]
pub fn parent(path: &str) -> Option<String> {
    let p = Path::new(path).parent()?;
    Some(p.to_string_lossy().into_owned())
}

/// Drops every path another one of the set covers (`is_under`), keeping the broadest.
#[must_use]
pub fn minimal<'a>(paths: impl IntoIterator<Item = &'a String>) -> std::collections::BTreeSet<String> {
    let all: std::collections::BTreeSet<String> = paths.into_iter().cloned().collect();
    all.iter()
        .filter(|p| !all.iter().any(|q| q != *p && is_under(Path::new(p.as_str()), Path::new(q.as_str()))))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_picks_the_outermost_package_directory() {
        let v = Some("/work/x/.mcp-venv");
        let p = "/work/x/.mcp-venv/lib/python3.11/site-packages/git/cmd.py";
        assert_eq!(collapse_root(p, v), Some(("/work/x/.mcp-venv".into(), Collapse::Virtualenv)));
        assert_eq!(
            collapse_root(p, None),
            Some(("/work/x/.mcp-venv/lib/python3.11".into(), Collapse::InterpreterPrefix))
        );
        assert_eq!(
            collapse_root("/usr/lib/python3.11/os.py", None),
            Some(("/usr/lib/python3.11".into(), Collapse::InterpreterPrefix))
        );
        assert_eq!(
            collapse_root("/opt/mcpg-py/lib/python3.11/lib-dynload/_ssl.so", None),
            Some(("/opt/mcpg-py/lib/python3.11".into(), Collapse::InterpreterPrefix))
        );
        assert_eq!(
            collapse_root("/srv/app/node_modules/@scope/pkg/dist/index.js", None),
            Some(("/srv/app/node_modules".into(), Collapse::NodeModules))
        );
        assert_eq!(
            collapse_root("/usr/local/lib/python3/dist-packages/x/y.py", None),
            Some(("/usr/local/lib/python3".into(), Collapse::InterpreterPrefix))
        );
        // Not inside a package directory: kept as observed.
        assert_eq!(collapse_root("/usr/lib/x86_64-linux-gnu/libz.so.1", None), None);
        assert_eq!(collapse_root("/etc/ld.so.cache", None), None);
        // The directory itself is not "inside" it.
        assert_eq!(collapse_root("/srv/app/node_modules", None), None);
        // Never a broad directory, whatever it looks like.
        assert_eq!(
            collapse_root("/usr/lib/python3.11/x.py", Some("/usr")),
            Some(("/usr/lib/python3.11".into(), Collapse::InterpreterPrefix))
        );
        assert_eq!(collapse_root("/home/u/x.py", Some("/home/u")), None);
    }

    #[test]
    fn broad_directories_are_named() {
        for d in ["/", "/etc", "/proc", "/home", "/home/alice", "/root", "/usr/lib", "/tmp", "/usr/"] {
            assert!(too_broad(d).is_some(), "{d}");
        }
        for d in ["/home/alice/repo", "/usr/lib/python3.11", "/etc/ssl", "/tmp/x"] {
            assert!(too_broad(d).is_none(), "{d}");
        }
        assert!(is_process_proc("/proc/123/maps") && is_process_proc("/proc/self/cgroup"));
        assert!(!is_process_proc("/proc/meminfo") && !is_process_proc("/procx/1"));
        let set = ["/a/b".to_string(), "/a".into(), "/c/d".into(), "/c/de".into()];
        assert_eq!(minimal(&set).into_iter().collect::<Vec<_>>(), ["/a", "/c/d", "/c/de"]);
    }
}
