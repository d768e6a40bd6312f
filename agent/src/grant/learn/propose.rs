//! The whole proposal from everything recorded in a directory: the baseline (what the server
//! did outside any tool call) and, for `--mcp`, one template per tool whose paths under a call's
//! path arguments become variables bound to those arguments.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::generalise::{Draft, bind_var, generalise};
use super::observations::{CallRecord, Observation, Recorded};
use super::rules::{minimal, parent, too_broad};
use crate::grant::policy::is_under;

/// One tool's template and which call argument fills which of its variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolDraft {
    pub template: Draft,
    /// variable -> argument name
    pub args: BTreeMap<String, String>,
    pub calls: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proposal {
    pub session: String,
    pub baseline: Draft,
    pub tools: BTreeMap<String, ToolDraft>,
    pub mcp: bool,
    pub runs: usize,
    pub observations: usize,
    pub lost_events: u64,
    pub dropped: u64,
    /// How each run's server ended.
    pub ended: Vec<String>,
    pub commands: BTreeSet<String>,
    /// Tools the server listed that no learned call used (no template: refused).
    pub never_called: BTreeSet<String>,
}

impl Proposal {
    /// Every decision of every run is in it.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.lost_events == 0 && self.dropped == 0
    }
}

/// A policy name from free text: lowercase, `[a-z0-9_-]`, at most 64 characters.
#[must_use]
pub fn policy_name(prefix: &str, s: &str) -> String {
    let mut n: String = format!("{prefix}{s}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    n.truncate(64);
    n
}

/// The template variable for a call argument: `repo_path` -> `repo`, `path` -> `path`.
#[must_use]
pub fn var_name(arg: &str) -> String {
    let mut v: String =
        arg.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    for suffix in ["_path", "_dir", "_file"] {
        if let Some(s) = v.strip_suffix(suffix)
            && !s.is_empty()
        {
            v = s.to_owned();
            break;
        }
    }
    if !v.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        v.insert(0, 'v');
    }
    v
}

/// `path` relative to `root` (`""` for `root` itself), if under it.
fn rel<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    is_under(Path::new(path), Path::new(root)).then(|| path[root.trim_end_matches('/').len()..].trim_start_matches('/'))
}

fn with_var(var: &str, rel: &str) -> String {
    if rel.is_empty() { format!("${{{var}}}") } else { format!("${{{var}}}/{rel}") }
}

/// Builds the proposal for `rec`; `vars` (`--var K=V`, over those the runs were learned with)
/// become baseline variables.
#[must_use]
pub fn propose(rec: &Recorded, session: &str, vars: &BTreeMap<String, String>) -> Proposal {
    let mut all_vars: BTreeMap<String, String> = rec.runs.iter().flat_map(|r| r.vars.clone()).collect();
    all_vars.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    let vars = &all_vars;
    let all: Vec<&Observation> = rec.runs.iter().flat_map(|r| &r.observations).collect();
    let mut p = Proposal {
        session: session.to_owned(),
        mcp: rec.runs.iter().any(|r| r.mcp),
        runs: rec.runs.len(),
        observations: all.len(),
        lost_events: rec.runs.iter().map(|r| r.lost_events).sum(),
        dropped: rec.runs.iter().map(|r| r.dropped).sum(),
        ended: rec.runs.iter().map(|r| r.ended.clone().unwrap_or_else(|| "not recorded".into())).collect(),
        commands: rec.runs.iter().map(|r| r.command.join(" ")).collect(),
        ..Proposal::default()
    };
    let mut base = Draft {
        name: policy_name("learned-", session),
        description: format!(
            "learned by `mcpguard learn` from session {session}: what the server did outside tool calls"
        ),
        ..Draft::default()
    };
    let outside: Vec<&Observation> = all.iter().copied().filter(|o| o.tool.is_none()).collect();
    generalise(&mut base, &outside);
    let unbound = base.clone();
    for (k, v) in vars {
        bind_var(&mut base, k, v, &BTreeSet::from([v.clone()]));
    }
    p.baseline = base;
    let calls: Vec<&CallRecord> = rec.runs.iter().flat_map(|r| &r.calls).collect();
    let mut by_tool: BTreeMap<&str, Vec<&CallRecord>> = BTreeMap::new();
    for c in &calls {
        by_tool.entry(c.tool.as_str()).or_default().push(c);
    }
    for (tool, tcalls) in by_tool {
        let obs: Vec<&Observation> = all.iter().copied().filter(|o| o.tool.as_deref() == Some(tool)).collect();
        let names = rec.var_names.get(tool).cloned().unwrap_or_default();
        p.tools.insert(tool.to_owned(), tool_draft(tool, &tcalls, &obs, &unbound, &names));
    }
    // Reads outside a call's arguments are the runtime's (a module loaded lazily, a CPU count)
    // at whichever call came first: every tool gets them.
    let shared: BTreeSet<String> =
        p.tools.values().flat_map(|t| t.template.read.keys().filter(|r| !r.starts_with("${")).cloned()).collect();
    for t in p.tools.values_mut() {
        for r in &shared {
            if !t.template.reads(r) {
                t.template.read.entry(r.clone()).or_default().insert(
                    "read during another tool's call, outside its arguments (the runtime's: every tool gets it)".into(),
                );
            }
        }
    }
    p.never_called = rec.runs.iter().flat_map(|r| &r.listed).filter(|t| !p.tools.contains_key(*t)).cloned().collect();
    p
}

/// One tool: observations under a path argument of their call become `${var}` entries, the others
/// are generalised like the baseline, minus what the baseline already grants.
fn tool_draft(
    tool: &str,
    calls: &[&CallRecord],
    obs: &[&Observation],
    baseline: &Draft,
    names: &BTreeMap<String, String>,
) -> ToolDraft {
    let mut t = Draft {
        name: policy_name("learned-tool-", tool),
        description: format!("learned by `mcpguard learn`: one `{tool}` call"),
        ..Draft::default()
    };
    // Arguments that named an existing absolute path in every call of the tool.
    let mut cand: BTreeSet<&str> =
        calls.first().map(|c| c.paths.keys().map(String::as_str).collect()).unwrap_or_default();
    for c in calls {
        cand.retain(|a| c.paths.get(*a).is_some_and(|v| too_broad(v).is_none()));
    }
    let by_id: BTreeMap<&str, &CallRecord> = calls.iter().map(|c| (c.call_id.as_str(), *c)).collect();
    let mut fixed: Vec<&Observation> = Vec::new();
    let mut under: BTreeMap<&str, Vec<(String, &Observation)>> = BTreeMap::new();
    for o in obs {
        let call = o.call_id.as_deref().and_then(|id| by_id.get(id));
        let hit = match (call, o.path.as_deref()) {
            (Some(c), Some(p)) => cand
                .iter()
                .filter_map(|a| c.paths.get(*a).and_then(|v| rel(p, v).map(|r| (*a, v.len(), r.to_owned()))))
                .max_by_key(|(_, len, _)| *len),
            _ => None,
        };
        match hit {
            Some((a, _, r)) => under.entry(a).or_default().push((r, o)),
            None => fixed.push(o),
        }
    }
    // The variable of each argument a call touched paths under (not only ran something from).
    let mut var_of: BTreeMap<&str, String> = BTreeMap::new();
    for (arg, items) in &under {
        if items.iter().all(|(_, o)| o.hook == "exec") {
            continue;
        }
        let mut var = names.get(*arg).filter(|n| var_name(n) == **n).cloned().unwrap_or_else(|| var_name(arg));
        while var_of.values().any(|v| *v == var) {
            var.push('_');
        }
        var_of.insert(arg, var);
    }
    // A call's path argument in its command lines (`git -C /srv/r status`) is the variable too.
    let bound: Vec<Observation> = fixed
        .iter()
        .map(|o| {
            let mut o = (*o).clone();
            let call = o.call_id.as_deref().and_then(|id| by_id.get(id));
            if let (Some(a), Some(c)) = (&o.argv, call) {
                let toks: Vec<String> = a
                    .split(' ')
                    .map(|tok| {
                        var_of
                            .iter()
                            .find_map(|(arg, var)| {
                                c.paths
                                    .get(*arg)
                                    .and_then(|v| rel(tok, v))
                                    .filter(|_| tok.starts_with('/'))
                                    .map(|r| with_var(var, r))
                            })
                            .unwrap_or_else(|| tok.to_owned())
                    })
                    .collect();
                o.argv = Some(toks.join(" "));
            }
            o
        })
        .collect();
    generalise(&mut t, &bound.iter().collect::<Vec<_>>());
    // What the baseline grants is in force during every call too.
    t.read.retain(|p, _| !baseline.reads(p));
    t.write.retain(|p, _| !baseline.writes(p));
    // An exec the baseline allows with every command line the call used.
    t.exec.retain(|p, e| match baseline.exec.get(p) {
        None => true,
        Some(b) if b.args.is_empty() => false,
        Some(b) => {
            e.args.retain(|a| !b.args.contains(a));
            !e.args.is_empty()
        }
    });
    t.connect.retain(|c| !baseline.connect.contains(c));
    t.listen.retain(|c| !baseline.listen.contains(c));
    let mut args = BTreeMap::new();
    for (arg, items) in under {
        let Some(var) = var_of.get(arg).cloned() else {
            for (_, o) in &items {
                t.undecided.insert(format!(
                    "`{tool}` executed {} under its `{arg}` argument: exec grants name one binary, not proposed",
                    o.path.as_deref().unwrap_or("?")
                ));
            }
            continue;
        };
        let mut writes: BTreeSet<String> = BTreeSet::new();
        let mut reads = false;
        for (r, o) in &items {
            let value = o.call_id.as_deref().and_then(|id| by_id.get(id)).and_then(|c| c.paths.get(arg));
            let value = value.map_or("", String::as_str);
            let created = o.created || matches!(o.now.as_deref(), Some("missing" | "replaced"));
            let entry_op =
                matches!(o.hook.as_str(), "unlink" | "rmdir" | "mkdir" | "mknod" | "symlink" | "link" | "rename");
            match o.hook.as_str() {
                "exec" => {
                    t.undecided.insert(format!(
                        "`{tool}` executed {} under its `{arg}` argument: exec grants name one binary, not proposed",
                        o.path.as_deref().unwrap_or("?")
                    ));
                    continue;
                }
                "open" | "mmap" | "mprotect" | "io_uring" | "truncate" => {}
                _ if entry_op => {}
                h => {
                    t.undecided.insert(format!("`{tool}` {h} under `{arg}`: not proposed"));
                    continue;
                }
            }
            if o.access.contains('r') || o.hook.starts_with('m') {
                reads = true;
            }
            if o.access.contains('w') || entry_op || o.hook == "truncate" {
                let target = if created || entry_op {
                    let dir = o.parent_before.clone().or_else(|| o.path.as_deref().and_then(parent));
                    dir.as_deref().and_then(|d| rel(d, value)).map(str::to_owned)
                } else {
                    Some(r.clone())
                };
                match target {
                    Some(w) => {
                        writes.insert(with_var(&var, &w));
                    }
                    None => {
                        t.undecided.insert(format!(
                            "`{tool}` created its `{arg}` argument's object itself: the directory above it cannot be named from the argument; `${{{var}}}` proposed (a new path will be refused)"
                        ));
                        writes.insert(with_var(&var, ""));
                    }
                }
            }
        }
        if !reads && writes.is_empty() {
            continue;
        }
        if reads {
            t.read.entry(with_var(&var, "")).or_default().insert(format!("what the call's `{arg}` argument names"));
        }
        for w in minimal(writes.iter()) {
            t.write.entry(w).or_default().insert(format!("written under the call's `{arg}` argument"));
        }
        let roots: BTreeSet<String> = calls
            .iter()
            .filter_map(|c| c.paths.get(arg))
            .map(|v| parent(v).filter(|p| too_broad(p).is_none()).unwrap_or_else(|| v.clone()))
            .collect();
        t.vars.insert(var.clone(), minimal(roots.iter()));
        args.insert(var, arg.to_owned());
    }
    ToolDraft { template: t, args, calls: calls.len() }
}

#[cfg(test)]
#[path = "propose_tests.rs"]
mod tests;
