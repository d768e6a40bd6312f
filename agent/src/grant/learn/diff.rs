//! `mcpguard policy diff A B`: what A grants that B does not, and the other way round. Paths
//! are compared by coverage (`/a/b` is granted by a policy reading `/a`), variables as text
//! (`${repo}/.git` is under `${repo}`); exec entries by binary, then by command line (an entry
//! without `args` allows any). Works on templates and on instantiated grants alike.
use std::path::Path;

use crate::grant::policy::{ExecRule, GrantSpec, Policy, is_under};

/// What a policy grants, in comparable form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub exec: Vec<ExecRule>,
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub connect: Vec<String>,
    pub listen: Vec<String>,
}

impl From<&Policy> for Grants {
    fn from(p: &Policy) -> Self {
        Self {
            exec: p.exec.clone(),
            read: p.read.iter().map(|r| r.path.clone()).collect(),
            write: p.write.iter().map(|r| r.path.clone()).collect(),
            connect: p.connect.clone(),
            listen: p.listen.clone(),
        }
    }
}

impl From<&GrantSpec> for Grants {
    fn from(g: &GrantSpec) -> Self {
        let s = |v: &[std::path::PathBuf]| v.iter().map(|p| p.display().to_string()).collect();
        Self {
            exec: g.exec.clone(),
            read: s(&g.read),
            write: s(&g.write),
            connect: g.connect.clone(),
            listen: g.listen.clone(),
        }
    }
}

impl Grants {
    /// The same, with every existing path resolved (symlinks), as the daemon resolves them when
    /// it grants: `/etc/localtime` and the zone file it names are the same object.
    #[must_use]
    pub fn resolved(&self) -> Self {
        let r = |v: &[String]| {
            v.iter()
                .map(|p| std::fs::canonicalize(p).map_or_else(|_| p.clone(), |c| c.to_string_lossy().into_owned()))
                .collect()
        };
        Self { read: r(&self.read), write: r(&self.write), ..self.clone() }
    }

    /// How many entries it grants: (exec, read, write, connect, listen).
    #[must_use]
    pub fn counts(&self) -> (usize, usize, usize, usize, usize) {
        (self.exec.len(), self.read.len(), self.write.len(), self.connect.len(), self.listen.len())
    }
}

fn covered(p: &str, by: &[String]) -> bool {
    by.iter().any(|b| is_under(Path::new(p), Path::new(b)))
}

fn exec_covered(e: &ExecRule, by: &[ExecRule]) -> Result<(), String> {
    let same: Vec<&ExecRule> = by.iter().filter(|b| b.path == e.path).collect();
    if same.is_empty() {
        return Err(format!("exec {}", e.path.display()));
    }
    if same.iter().any(|b| b.args.is_none() && (b.inline_code || !e.inline_code)) {
        return Ok(());
    }
    match &e.args {
        None => Err(format!(
            "exec {} with any command line (the other: only {})",
            e.path.display(),
            same.iter()
                .filter_map(|b| b.args.as_ref().map(|a| format!("[{}]", a.join(" "))))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Some(a) if same.iter().any(|b| b.args.as_ref() == Some(a)) => Ok(()),
        Some(a) => Err(format!("exec {} [{}]", e.path.display(), a.join(" "))),
    }
}

/// What `a` grants that `b` does not, one line each (empty: `b` grants at least as much).
#[must_use]
pub fn only_in(a: &Grants, b: &Grants) -> Vec<String> {
    let mut out = Vec::new();
    for e in &a.exec {
        if let Err(m) = exec_covered(e, &b.exec) {
            out.push(m);
        }
    }
    out.extend(a.read.iter().filter(|p| !covered(p, &b.read)).map(|p| format!("read {p}")));
    out.extend(a.write.iter().filter(|p| !covered(p, &b.write)).map(|p| format!("write {p}")));
    out.extend(a.connect.iter().filter(|c| !b.connect.contains(c)).map(|c| format!("connect {c}")));
    out.extend(a.listen.iter().filter(|c| !b.listen.contains(c)).map(|c| format!("listen {c}")));
    out.sort();
    out.dedup();
    out
}

/// The text `mcpguard policy diff` prints.
#[must_use]
pub fn render(a_name: &str, a: &Grants, b_name: &str, b: &Grants) -> (String, bool) {
    let mut out = String::new();
    let (ab, ba) = (only_in(a, b), only_in(b, a));
    for (x, y, lines) in [(a_name, b_name, &ab), (b_name, a_name, &ba)] {
        if lines.is_empty() {
            out.push_str(&format!("{x} grants nothing that {y} does not\n"));
        } else {
            out.push_str(&format!("{x} grants, {y} does not:\n"));
            for l in lines {
                out.push_str(&format!("  {l}\n"));
            }
        }
    }
    (out, ab.is_empty() && ba.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol(text: &str) -> Grants {
        Grants::from(&Policy::parse(text, "t").unwrap())
    }

    #[test]
    fn coverage_command_lines_and_both_directions() {
        let hand = pol("name = \"h\"\n[vars.repo]\n[[exec]]\npath = \"/usr/bin/git\"\nargs = [\"version\"]\n\
             [[read]]\npath = \"/usr/lib\"\n[[read]]\npath = \"${repo}\"\n[[write]]\npath = \"${repo}/.git\"\n");
        let learned = pol(
            "name = \"l\"\n[vars.repo]\n[[exec]]\npath = \"/usr/bin/git\"\n[[read]]\npath = \"/usr/lib/python3.11\"\n\
             [[read]]\npath = \"${repo}\"\n[[write]]\npath = \"${repo}/.git\"\n[[connect]]\nto = \"tcp://127.0.0.1:80\"\n",
        );
        assert_eq!(
            only_in(&learned, &hand),
            ["connect tcp://127.0.0.1:80", "exec /usr/bin/git with any command line (the other: only [version])"]
        );
        assert_eq!(only_in(&hand, &learned), ["read /usr/lib"]);
        let (text, same) = render("A", &hand, "B", &learned);
        assert!(!same && text.contains("A grants, B does not:\n  read /usr/lib\n"), "{text}");
        assert!(render("A", &hand, "B", &hand).1);
        assert_eq!(hand.counts(), (1, 2, 1, 0, 0));
    }
}
