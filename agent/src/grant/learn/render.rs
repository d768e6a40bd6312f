//! Writing a proposal: policies in the format `policies/README.md` describes, the tools policy
//! `exec --mcp --tools` reads, and the report. Byte-for-byte deterministic (ordered maps, no
//! times); every file is parsed back before it is written (`cli::learn`).
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::generalise::Draft;
use super::propose::Proposal;

/// A TOML basic string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn incomplete_banner(p: &Proposal) -> String {
    if p.complete() {
        return String::new();
    }
    format!(
        "# INCOMPLETE: {} event(s) were lost by the kernel and {} dropped by the daemon while learning;\n\
         # this proposal may lack what the server did then. Learn again (same --out) before using it.\n",
        p.lost_events, p.dropped
    )
}

fn comment_lines(out: &mut String, prefix: &str, items: impl IntoIterator<Item = impl AsRef<str>>) {
    for i in items {
        let _ = writeln!(out, "# {prefix}{}", i.as_ref());
    }
}

/// One policy file.
#[must_use]
pub fn policy(p: &Proposal, d: &Draft) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Proposed by `mcpguard learn` (session {}); review before use.", p.session);
    out.push_str(&incomplete_banner(p));
    comment_lines(&mut out, "DECIDE: ", &d.undecided);
    let _ = writeln!(out, "name = {}", q(&d.name));
    let _ = writeln!(out, "description = {}", q(&d.description));
    out.push_str("mode = \"deny\"\n");
    for (var, roots) in &d.vars {
        let _ = writeln!(out, "\n[vars.{var}]\nkind = \"path\"");
        let r: Vec<String> = roots.iter().map(|r| q(r)).collect();
        let _ = writeln!(out, "roots = [{}]   # from the values observed", r.join(", "));
    }
    for (path, e) in &d.exec {
        let alternatives: Vec<Option<&Vec<String>>> =
            if e.args.is_empty() { vec![None] } else { e.args.iter().map(Some).collect() };
        for args in alternatives {
            let _ = writeln!(out, "\n[[exec]]   # {}", e.notes.iter().cloned().collect::<Vec<_>>().join("; "));
            let _ = writeln!(out, "path = {}", q(path));
            if let Some(s) = &e.sha256 {
                let _ = writeln!(out, "sha256 = {}", q(s));
            }
            if let Some(a) = args {
                let a: Vec<String> = a.iter().map(|x| q(x)).collect();
                let _ = writeln!(out, "args = [{}]", a.join(", "));
            }
        }
    }
    for (kind, map) in [("read", &d.read), ("write", &d.write)] {
        for (path, why) in map {
            let _ = writeln!(out, "\n[[{kind}]]   # {}", why.iter().cloned().collect::<Vec<_>>().join("; "));
            let _ = writeln!(out, "path = {}", q(path));
        }
    }
    for c in &d.connect {
        let _ = writeln!(out, "\n[[connect]]\nto = {}", q(c));
    }
    for l in &d.listen {
        let _ = writeln!(out, "\n[[listen]]\non = {}", q(l));
    }
    out
}

/// `tools.toml`: every tool called while learning, on its learned template (in the same
/// directory). Tools never called have no template: the proxy refuses them.
#[must_use]
pub fn tools(p: &Proposal) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Tools policy proposed by `mcpguard learn` (session {}); review before use.", p.session);
    out.push_str(&incomplete_banner(p));
    out.push_str("# Tools not called while learning have no template here: the proxy refuses them.\n");
    if !p.never_called.is_empty() {
        let n: Vec<&str> = p.never_called.iter().map(String::as_str).collect();
        let _ = writeln!(out, "# DECIDE: listed by the server, never called while learning: {}", n.join(", "));
    }
    out.push_str("ttl = \"30s\"\n");
    for (tool, t) in &p.tools {
        let _ = writeln!(out, "\n[tools.{}]   # learned from {} call(s)", q(tool), t.calls);
        let _ = writeln!(out, "template = {}", q(&t.template.name));
        if !t.args.is_empty() {
            let a: Vec<String> = t.args.iter().map(|(v, a)| format!("{v} = {}", q(a))).collect();
            let _ = writeln!(out, "args = {{ {} }}", a.join(", "));
        }
    }
    out
}

/// File name of each policy of the proposal: `baseline.toml`, `<template>.toml`.
#[must_use]
pub fn files(p: &Proposal) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    f.insert("baseline.toml".to_owned(), policy(p, &p.baseline));
    if p.mcp {
        f.insert("tools.toml".to_owned(), tools(p));
        for t in p.tools.values() {
            f.insert(format!("{}.toml", t.template.name), policy(p, &t.template));
        }
    }
    f.insert("report.md".to_owned(), report(p));
    f
}

fn report_draft(out: &mut String, title: &str, d: &Draft) {
    let _ = writeln!(out, "\n## {title} (`{}`)\n", d.name);
    let _ = writeln!(
        out,
        "{} exec, {} read, {} write, {} connect, {} listen entries.",
        d.exec.len(),
        d.read.len(),
        d.write.len(),
        d.connect.len(),
        d.listen.len()
    );
    if !d.collapsed.is_empty() {
        out.push_str("\nGeneralised (files observed -> the directory proposed):\n\n");
        for (dir, (n, why)) in &d.collapsed {
            let _ = writeln!(out, "- `{dir}`: {n} file(s), {why}");
        }
    }
    if !d.vars.is_empty() {
        out.push_str("\nVariables:\n\n");
        for (v, roots) in &d.vars {
            let r: Vec<&str> = roots.iter().map(String::as_str).collect();
            let _ = writeln!(out, "- `${{{v}}}`, roots `{}`", r.join("`, `"));
        }
    }
    let precise: Vec<&String> = d
        .read
        .iter()
        .chain(&d.write)
        .filter(|(_, why)| why.iter().any(|w| w == "read" || w == "written"))
        .map(|(p, _)| p)
        .collect();
    if !precise.is_empty() {
        out.push_str("\nKept as precise as observed:\n\n");
        for p in precise {
            let _ = writeln!(out, "- `{p}`");
        }
    }
    if !d.undecided.is_empty() {
        out.push_str("\nCould not be inferred (for a human to decide; `# DECIDE:` in the file):\n\n");
        for u in &d.undecided {
            let _ = writeln!(out, "- {u}");
        }
    }
}

/// `report.md`.
#[must_use]
pub fn report(p: &Proposal) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# mcpguard learn: session {}\n", p.session);
    if p.complete() {
        out.push_str("Complete: no event was lost while learning.\n");
    } else {
        let _ = writeln!(
            out,
            "**INCOMPLETE**: {} event(s) lost by the kernel (ring buffer full), {} dropped by the daemon. \
             The proposal may lack what the server did then; learn again into the same directory.",
            p.lost_events, p.dropped
        );
    }
    let _ = writeln!(out, "\nRuns: {}; distinct observations: {}.", p.runs, p.observations);
    for c in &p.commands {
        let _ = writeln!(out, "- command: `{c}`");
    }
    for e in &p.ended {
        let _ = writeln!(out, "- server {e}");
    }
    if !p.never_called.is_empty() {
        let n: Vec<&str> = p.never_called.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "\nListed by the server, never called while learning (no template: the proxy refuses them; \
             learn again with calls of them): `{}`.",
            n.join("`, `")
        );
    }
    report_draft(&mut out, "Baseline", &p.baseline);
    for (tool, t) in &p.tools {
        report_draft(&mut out, &format!("Tool `{tool}`, {} call(s)", t.calls), &t.template);
    }
    out
}
