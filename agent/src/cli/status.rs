//! The human form of `mcpguard status`: the backend and what it can refuse synchronously, then
//! one table row per grant in force (baseline, task, the orchestrator's task under a tool call).
use serde_json::Value;

/// `9m58s`, `1h02m`, `expired`, `-` (no expiry).
#[must_use]
pub fn remaining(g: &Value) -> String {
    if g["expired"] == true {
        return "expired".into();
    }
    let Some(ms) = g["remaining_ms"].as_u64() else { return "-".into() };
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The whole human status.
#[must_use]
pub fn render(r: &Value) -> String {
    let mut out = String::new();
    let sync = r["synchronous_deny"] == true;
    out.push_str(&format!(
        "backend  {}  ({})\n",
        cell(&r["backend"]),
        if sync {
            "refuses synchronously: EPERM, the process keeps running"
        } else {
            "stops by SIGKILL after the fact where no hook can refuse"
        }
    ));
    if let Some(ch) = r["channels"].as_object() {
        let mut by: std::collections::BTreeMap<String, Vec<&str>> = std::collections::BTreeMap::new();
        for (c, m) in ch {
            by.entry(cell(m)).or_default().push(c);
        }
        for (m, cs) in by {
            out.push_str(&format!("  {m:<9} {}\n", cs.join(" ")));
        }
    }
    let tps = &r["syscall_tracepoints"];
    out.push_str(&format!(
        "syscall tracepoints  open {}  guard {}  unix {}\n\n",
        cell(&tps["open"]),
        cell(&tps["guard"]),
        cell(&tps["unix"])
    ));
    let sessions = r["sessions"].as_array().cloned().unwrap_or_default();
    if sessions.is_empty() {
        out.push_str("no sessions\n");
        return out;
    }
    let mut rows = vec![
        ["SESSION", "ID", "PROCS", "SEALED", "GRANT", "TASK", "TOOL", "CALL", "POLICY", "MODE", "REMAINING"]
            .map(String::from)
            .to_vec(),
    ];
    for s in &sessions {
        let head = [
            cell(&s["name"]),
            cell(&s["session_id"]),
            s["processes"].as_array().map_or(0, Vec::len).to_string(),
            if s["sealed"] == true { "yes" } else { "no" }.to_string(),
        ];
        let grants: Vec<(&str, &Value)> =
            [("baseline", &s["baseline"]), ("task", &s["task"]), ("orchestrator", &s["orchestrator_task"])]
                .into_iter()
                .filter(|(_, g)| g.is_object())
                .collect();
        if grants.is_empty() {
            rows.push(
                head.iter()
                    .cloned()
                    .chain(["none".to_string()])
                    .chain(std::iter::repeat_n("-".to_string(), 6))
                    .collect(),
            );
        }
        for (i, (kind, g)) in grants.iter().enumerate() {
            let lead = if i == 0 { head.to_vec() } else { vec![String::new(); 4] };
            let grant = format!("{kind} #{}", cell(&g["grant_id"]));
            rows.push(
                lead.into_iter()
                    .chain([
                        grant,
                        cell(&g["task"]),
                        cell(&g["tool"]),
                        cell(&g["call_id"]),
                        cell(&g["policy"]),
                        cell(&g["mode"]),
                        remaining(g),
                    ])
                    .collect(),
            );
        }
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_is_readable() {
        let g = |ms: u64| serde_json::json!({"remaining_ms": ms, "expired": false});
        assert_eq!(remaining(&g(9_000)), "9s");
        assert_eq!(remaining(&g(598_000)), "9m58s");
        assert_eq!(remaining(&g(3_720_000)), "1h02m");
        assert_eq!(remaining(&serde_json::json!({"remaining_ms": null})), "-");
        assert_eq!(remaining(&serde_json::json!({"remaining_ms": 0, "expired": true})), "expired");
    }

    #[test]
    fn one_row_per_grant_aligned() {
        let r = serde_json::json!({
        "backend": "kill", "synchronous_deny": false,
        "channels": {"exec": "kill", "connect": "eperm", "open": "kill"},
        "syscall_tracepoints": {"open": true, "guard": false, "unix": false},
        "sessions": [
            {"name": "git1", "session_id": 3, "processes": [10, 11], "sealed": true,
             "baseline": {"grant_id": 5, "task": null, "policy": "baseline-python", "mode": "kill", "remaining_ms": null, "expired": false},
             "task": {"grant_id": 9, "task": "T-42", "tool": "git_status", "call_id": "7", "policy": "mcp-git-status", "mode": "kill", "remaining_ms": 598000, "expired": false}},
            {"name": "bare", "session_id": 4, "processes": [], "sealed": false}
        ]});
        let out = render(&r);
        assert!(out.contains("backend  kill  (stops by SIGKILL"), "{out}");
        assert!(out.contains("  eperm     connect\n  kill      exec open\n"), "{out}");
        let lines: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("SESSION")).collect();
        assert_eq!(lines.len(), 4, "{out}");
        let col = lines[0].find("REMAINING").unwrap();
        assert_eq!(&lines[2][col..], "9m58s");
        assert!(lines[1].starts_with("git1     3   2      yes     baseline #5"), "{out}");
        assert!(lines[2].starts_with(&format!("{}task #9", " ".repeat(28))), "{out}");
        assert!(lines[3].starts_with("bare     4   0      no      none"), "{out}");
        assert!(render(&serde_json::json!({"backend": "lsm", "synchronous_deny": true})).ends_with("no sessions\n"));
    }
}
