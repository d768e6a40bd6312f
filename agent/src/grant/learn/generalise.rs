//! From recorded observations to a proposal: the rules of `rules.rs` applied to what one scope
//! (outside any call, or one tool's calls) did. Pure: the same observations give the same
//! proposal (every collection here is ordered).
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::observations::Observation;
use super::rules::{collapse_root, is_process_proc, minimal, parent, too_broad};
use crate::grant::policy::is_under;

/// One `[[exec]]` of a proposal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecDraft {
    pub sha256: Option<String>,
    pub notes: BTreeSet<String>,
    /// The command lines observed (arguments after argv[0], as patterns); none: any.
    pub args: BTreeSet<Vec<String>>,
}

/// One policy to write: entries with the reason each was proposed (comments in the file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draft {
    pub name: String,
    pub description: String,
    /// Variable -> roots.
    pub vars: BTreeMap<String, BTreeSet<String>>,
    pub exec: BTreeMap<String, ExecDraft>,
    pub read: BTreeMap<String, BTreeSet<String>>,
    pub write: BTreeMap<String, BTreeSet<String>>,
    pub connect: BTreeSet<String>,
    pub listen: BTreeSet<String>,
    /// For a human to decide (written as `# DECIDE:` comments, and in the report).
    pub undecided: BTreeSet<String>,
    /// Directories proposed instead of the files observed: dir -> (files, why).
    pub collapsed: BTreeMap<String, (u64, String)>,
}

impl Draft {
    /// True when `path` is readable under this draft's read entries (variables compared as text).
    #[must_use]
    pub fn reads(&self, path: &str) -> bool {
        self.read.keys().any(|r| is_under(Path::new(path), Path::new(r)))
    }

    #[must_use]
    pub fn writes(&self, path: &str) -> bool {
        self.write.keys().any(|r| is_under(Path::new(path), Path::new(r)))
    }
}

fn note(map: &mut BTreeMap<String, BTreeSet<String>>, path: &str, why: &str) {
    map.entry(path.to_owned()).or_default().insert(why.to_owned());
}

/// Hooks whose event names a directory entry being created, removed or renamed: the directory
/// holding it needs write access.
fn is_entry_op(hook: &str) -> bool {
    matches!(hook, "unlink" | "rmdir" | "mkdir" | "mknod" | "symlink" | "link" | "rename")
}

/// Network audit text (`tcp 127.0.0.1:80`, `udp [::1]:53`, `unix @x`, `unix /p`) as a grant
/// target (`tcp://127.0.0.1:80`, `unix:@x`).
#[must_use]
pub fn net_target(net: &str, path: Option<&str>) -> Option<String> {
    let (proto, rest) = net.split_once(' ').unwrap_or((net, ""));
    match proto {
        "tcp" | "udp" if !rest.is_empty() => Some(format!("{proto}://{rest}")),
        "unix" if !rest.is_empty() => Some(format!("unix:{rest}")),
        "unix" => path.map(|p| format!("unix:{p}")),
        _ => None,
    }
}

/// What one scope's observations ask for, before they are written as a policy.
#[derive(Default)]
struct Facts {
    reads: BTreeMap<String, (u64, Option<String>, bool)>,
    writes: BTreeMap<String, (bool, Option<String>)>,
    entry_dirs: BTreeSet<String>,
    execs: BTreeMap<String, Option<String>>,
    argvs: BTreeMap<String, BTreeSet<Vec<String>>>,
    mapped: BTreeSet<String>,
}

/// The longest literal a command-line pattern may hold (`policies/README.md`).
const MAX_LITERAL: usize = 126;

/// An object id (a git commit, a digest): 32 or more hex digits. It names data, not behaviour,
/// and differs in every repository.
fn is_object_id(t: &str) -> bool {
    t.len() >= 32 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Command lines of one binary that differ in exactly one argument, neither of them an option
/// (`-x`: options are behaviour, not data), become one pattern with `*` there (repeated until no
/// two do).
#[must_use]
pub fn merge_alternatives(set: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut cur = set.clone();
    loop {
        let v: Vec<&Vec<String>> = cur.iter().collect();
        let pair = v.iter().enumerate().find_map(|(i, a)| {
            v[i + 1..].iter().find_map(|b| {
                let diff: Vec<usize> = (0..a.len()).filter(|k| a.len() == b.len() && a[*k] != b[*k]).collect();
                let data = |t: &str| t != "**" && !t.starts_with('-');
                (a.len() == b.len() && diff.len() == 1 && data(&a[diff[0]]) && data(&b[diff[0]]))
                    .then(|| ((*a).clone(), (*b).clone(), diff[0]))
            })
        });
        let Some((a, b, k)) = pair else { return cur };
        cur.remove(&a);
        cur.remove(&b);
        let mut m = a;
        m[k] = "*".into();
        cur.insert(m);
    }
}

/// A command line as observed (`/usr/bin/git status --porcelain`) as the patterns of an exec
/// entry (`["status", "--porcelain"]`): arguments after argv[0]; an object id, an argument too
/// long for a literal or holding `*` becomes `*`; beyond 8, or where the kernel cut the line, `**`.
#[must_use]
pub fn argv_patterns(argv: &str, truncated: bool) -> Vec<String> {
    let mut toks: Vec<String> = argv.split(' ').skip(1).map(str::to_owned).collect();
    let mut rest = false;
    if truncated {
        toks.pop();
        rest = true;
    }
    if toks.len() > 8 {
        toks.truncate(8);
        rest = true;
    }
    for t in &mut toks {
        if t.len() > MAX_LITERAL || t.contains('*') || is_object_id(t) {
            *t = "*".into();
        }
    }
    if rest {
        toks.push("**".into());
    }
    toks
}

/// Applies the generalisation rules to `obs` into `d` (read, write, exec, connect, listen and
/// what is left for a human).
pub fn generalise(d: &mut Draft, obs: &[&Observation]) {
    let mut f = Facts::default();
    for o in obs {
        classify(d, &mut f, o);
    }
    propose_execs(d, &f);
    propose_reads(d, &f);
    propose_writes(d, &f);
}

fn classify(d: &mut Draft, f: &mut Facts, o: &Observation) {
    let path = o.path.as_deref();
    match o.reason.as_str() {
        "not_granted" | "binary_changed" | "no_grant" => {}
        "other_process" => {
            d.undecided.insert(format!(
                "read another process's /proc entry {}: refused whatever a grant says (not proposed)",
                path.unwrap_or("?")
            ));
            return;
        }
        // A binary the session was seeded with (`cli::learn`): its command line was recorded.
        "args_not_granted" | "inline_code" if o.hook == "exec" && path.is_some() => {
            let p = path.unwrap_or_default().to_owned();
            if let Some(a) = &o.argv {
                f.argvs.entry(p).or_default().insert(argv_patterns(a, o.argv_truncated));
            } else {
                let sha = if o.now.as_deref() == Some("file") { o.sha256.clone() } else { None };
                f.execs.entry(p).or_insert(sha);
            }
            return;
        }
        "args_not_granted" | "inline_code" | "env_injection" => {
            d.undecided.insert(format!(
                "exec {} refused for its command line ({}): {}",
                path.unwrap_or("?"),
                o.reason,
                o.net.as_deref().unwrap_or("")
            ));
            return;
        }
        "signal_outside_session" => {
            d.undecided.insert("signalled a process outside the session: refused whatever a grant says".into());
            return;
        }
        other => {
            d.undecided.insert(format!("{} {}: reason {other} (not proposed)", o.hook, path.unwrap_or("?")));
            return;
        }
    }
    if let Some(p) = path
        && (p.starts_with("...") || !p.starts_with('/'))
    {
        d.undecided.insert(format!("{} of a path too deep to report ({p}): not proposed", o.hook));
        return;
    }
    match (o.hook.as_str(), path) {
        ("exec", Some(p)) => {
            let sha = if o.now.as_deref() == Some("file") { o.sha256.clone() } else { None };
            if sha.is_none() {
                d.undecided.insert(format!(
                    "exec {p}: the binary is no longer the object observed ({}); proposed without a sha256",
                    o.now.as_deref().unwrap_or("not checked")
                ));
            }
            f.execs.insert(p.to_owned(), sha);
        }
        ("open" | "io_uring", Some(p)) | ("mmap" | "mprotect", Some(p)) => {
            if o.hook.starts_with('m') {
                f.mapped.insert(p.to_owned());
            }
            if o.access.contains('r') || o.hook.starts_with('m') {
                let e = f.reads.entry(p.to_owned()).or_insert((0, o.venv.clone(), false));
                e.0 += o.count;
                e.2 |= o.now.as_deref() == Some("dir");
            }
            if o.access.contains('w') {
                let created = o.created || matches!(o.now.as_deref(), Some("missing" | "replaced"));
                let e = f.writes.entry(p.to_owned()).or_insert((false, None));
                e.0 |= created;
                if e.1.is_none() {
                    e.1.clone_from(&o.parent_before);
                }
            }
        }
        ("truncate", Some(p)) => {
            f.writes.entry(p.to_owned()).or_insert((false, None));
        }
        (h, Some(p)) if is_entry_op(h) => {
            if let Some(dir) = o.parent_before.clone().or_else(|| parent(p)) {
                f.entry_dirs.insert(dir);
            }
        }
        ("setattr" | "xattr", p) => {
            d.undecided.insert(format!(
                "changed mode/owner/attributes of {}: needs `--allow-metadata` and `metadata = true` (not proposed)",
                p.unwrap_or("?")
            ));
        }
        ("connect" | "sendmsg", p) => match o.net.as_deref().and_then(|n| net_target(n, p)) {
            Some(t) => {
                d.connect.insert(t);
            }
            None => {
                d.undecided.insert(format!("{} {}: no target to propose", o.hook, o.net.as_deref().unwrap_or("?")));
            }
        },
        ("bind", _) => match o.net.as_deref().and_then(|n| net_target(n, None)) {
            Some(t) if t.starts_with("tcp://") => {
                d.listen.insert(t);
            }
            _ => {
                d.undecided.insert(format!(
                    "bound {}: only TCP listen addresses are proposed",
                    o.net.as_deref().unwrap_or("?")
                ));
            }
        },
        (h, p) => {
            d.undecided.insert(format!("{h} {}: not proposed", p.or(o.net.as_deref()).unwrap_or("?")));
        }
    }
}

fn propose_execs(d: &mut Draft, f: &Facts) {
    for (p, sha) in &f.execs {
        let e = d.exec.entry(p.clone()).or_default();
        if e.sha256.is_none() {
            e.sha256.clone_from(sha);
        }
        e.notes.insert("executed".into());
        match f.argvs.get(p) {
            Some(a) => {
                e.args = merge_alternatives(&e.args.iter().chain(a).cloned().collect());
                e.notes.insert("the command lines observed".into());
            }
            None => {
                d.undecided.insert(format!(
                    "{p}: its command lines were not recorded (the first run that executes a binary only sees that it ran); \
                     proposed with any command line: learn again into the same --out to record them"
                ));
            }
        }
        if e.args.is_empty() && crate::grant::cmdline::interpreter(Path::new(p)).unwrap_or(true) {
            d.undecided.insert(format!(
                "{p} is an interpreter: proposed for scripts only; add `inline_code = true` if it runs `-c`/`-e`"
            ));
        }
    }
}

fn propose_reads(d: &mut Draft, f: &Facts) {
    let mut reads: BTreeMap<String, String> = BTreeMap::new();
    let mut own_proc = false;
    for (p, (_, venv, is_dir)) in &f.reads {
        if is_process_proc(p) {
            own_proc = true;
            continue;
        }
        if let Some((root, why)) = collapse_root(p, venv.as_deref()) {
            let c = d.collapsed.entry(root.clone()).or_insert((0, why.why().to_owned()));
            c.0 += 1;
            reads.insert(root, format!("collapsed: {}", why.why()));
            continue;
        }
        if *is_dir {
            if let Some(why) = too_broad(p) {
                d.undecided.insert(format!(
                    "listed the directory {p} ({why}): granting it would grant everything beneath (not proposed)"
                ));
                continue;
            }
            reads.insert(p.clone(), "directory listed (its subtree is granted)".into());
            continue;
        }
        reads.insert(p.clone(), "read".into());
    }
    if own_proc {
        reads.insert(
            "/proc".into(),
            "its own /proc entries: the kernel refuses other processes' entries whatever the grant (self-only rule)"
                .into(),
        );
    }
    let keep = minimal(reads.keys());
    for (p, why) in &reads {
        if keep.contains(p) && !d.reads(p) {
            note(&mut d.read, p, why);
        }
    }
}

fn propose_writes(d: &mut Draft, f: &Facts) {
    let executed: Vec<&String> = f.execs.keys().chain(f.mapped.iter()).collect();
    let holds_code = |dir: &str| executed.iter().find(|x| is_under(Path::new(x.as_str()), Path::new(dir)));
    let mut writes: BTreeMap<String, String> = BTreeMap::new();
    let mut dir_or_file = |dir: Option<String>,
                           file: Option<&String>,
                           why: &str,
                           writes: &mut BTreeMap<String, String>| {
        let Some(dir) = dir else { return };
        let refuse = too_broad(&dir)
            .map(|w| format!("{dir} is {w}"))
            .or_else(|| holds_code(&dir).map(|x| format!("{dir} holds {x}, which ran (W^X)")));
        match (refuse, file) {
            (None, _) => {
                writes.insert(dir, why.into());
            }
            (Some(r), Some(f)) => {
                d.undecided.insert(format!(
                    "created {f}: its directory is not proposed ({r}); only the file is, so creating it again will be refused"
                ));
                writes.insert(f.clone(), "written".into());
            }
            (Some(r), None) => {
                d.undecided.insert(format!("changed entries in {r}: not proposed"));
            }
        }
    };
    for (p, (created, before)) in &f.writes {
        if *created {
            dir_or_file(before.clone().or_else(|| parent(p)), Some(p), "files created here", &mut writes);
        } else {
            writes.insert(p.clone(), "written".into());
        }
    }
    for dir in &f.entry_dirs {
        dir_or_file(Some(dir.clone()), None, "entries created, removed or renamed here", &mut writes);
    }
    let keep = minimal(writes.keys());
    for (p, why) in &writes {
        if keep.contains(p) && !d.writes(p) {
            note(&mut d.write, p, why);
        }
    }
}

/// Replaces `value` at the start of each path of `d` (not exec: binaries are concrete) by
/// `${var}`, declaring `var` with `roots`.
pub fn bind_var(d: &mut Draft, var: &str, value: &str, roots: &BTreeSet<String>) {
    let sub = |p: &str| -> Option<String> {
        is_under(Path::new(p), Path::new(value))
            .then(|| format!("${{{var}}}{}", &p[value.trim_end_matches('/').len()..]))
    };
    let mut used = false;
    for map in [&mut d.read, &mut d.write] {
        let old = std::mem::take(map);
        for (p, why) in old {
            let p = sub(&p).inspect(|_| used = true).unwrap_or(p);
            map.entry(p).or_default().extend(why);
        }
    }
    if used {
        d.vars.entry(var.to_owned()).or_default().extend(roots.iter().cloned());
    }
}

#[cfg(test)]
#[path = "generalise_tests.rs"]
mod tests;
