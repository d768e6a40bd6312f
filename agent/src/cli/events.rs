//! `mcpguard events`: the subscription it asks for, and the human form of an audit line (one
//! aligned line per event, local time).
use anyhow::bail;
use serde_json::Value;

use crate::daemon::protocol::{BACKLOG_MAX, Subscribe};

/// What `--since` accepts: an RFC 3339 instant, or a duration meaning that long ago (`10m`).
pub fn parse_since(s: &str, now: jiff::Timestamp) -> anyhow::Result<jiff::Timestamp> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    match crate::grant::duration::parse_duration(s) {
        Ok(d) => Ok(now
            .checked_sub(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(jiff::Timestamp::MIN)),
        Err(_) => bail!("--since {s:?}: give an RFC 3339 time (2026-12-02T10:00:00Z) or how long ago (30s, 10m, 2h)"),
    }
}

/// The subscription of `events -n LINES [--follow] [filters]`.
pub fn subscription(
    lines: u32,
    follow: bool,
    session: Option<String>,
    reason: Option<String>,
    since: Option<jiff::Timestamp>,
) -> anyhow::Result<Subscribe> {
    if lines > BACKLOG_MAX {
        bail!("-n {lines}: the daemon keeps the last {BACKLOG_MAX} lines (the audit log file has them all)");
    }
    Ok(Subscribe { backlog: lines, follow, session, reason, since: since.map(|t| t.to_string()) })
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// One event as one aligned line: local time (ms), action, hook, reason, session/task (and
/// tool), pid (comm), then what was decided on (path, address, command line, signal target,
/// syscall). Lines that are not audit records (`{"lagged":N}`) say what they are.
#[must_use]
pub fn human_line(v: &Value, tz: &jiff::tz::TimeZone) -> String {
    if let Some(n) = v.get("lagged") {
        return format!("({n} event(s) not delivered to this subscriber: it fell behind; the audit log has them)");
    }
    let Some(m) = v.as_object() else { return v.to_string() };
    let time = crate::daemon::recent::line_time(m)
        .map_or_else(|| "-".to_string(), |t| t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S%.3f").to_string());
    let mut who = s(&v["session"]).to_string();
    if let Some(t) = v["task"].as_str() {
        who = format!("{who}/{t}");
    }
    if let Some(t) = v["tool"].as_str() {
        who = format!("{who} {t}");
    }
    let proc = format!("pid {} ({})", v["pid"], s(&v["comm"]));
    let what = if let Some(a) = v["argv"].as_str() {
        format!("argv {a}{}", if v["argv_truncated"] == true { " …" } else { "" })
    } else if let Some(n) = v["net"].as_str() {
        n.to_string()
    } else if let Some(t) = v["target_pid"].as_u64() {
        format!("signal {} to pid {t}", v["signal"])
    } else if let Some(sc) = v["syscall"].as_str() {
        format!("syscall {sc}")
    } else if let Some(p) = v["path"].as_str() {
        let access = v["access"].as_str().filter(|a| !a.is_empty()).map(|a| format!(" [{a}]")).unwrap_or_default();
        format!("{p}{access}{}", if v["path_truncated"] == true { " (path cut)" } else { "" })
    } else {
        format!("dev {} ino {}", v["dev"], v["ino"])
    };
    format!(
        "{time:<23}  {:<7}  {:<8}  {:<22}  {:<24}  {:<24}  {what}",
        s(&v["action"]),
        s(&v["hook"]),
        s(&v["reason"]),
        who,
        proc
    )
}

/// The header above [`human_line`]s.
#[must_use]
pub fn human_header() -> String {
    format!(
        "{:<23}  {:<7}  {:<8}  {:<22}  {:<24}  {:<24}  {}",
        "TIME", "ACTION", "HOOK", "REASON", "SESSION/TASK", "PROCESS", "OBJECT"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_instants_and_durations() {
        let now: jiff::Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        assert_eq!(parse_since("2026-12-01T09:00:00Z", now).unwrap().to_string(), "2026-12-01T09:00:00Z");
        assert_eq!(parse_since("10m", now).unwrap().to_string(), "2026-12-02T09:50:00Z");
        let e = parse_since("last tuesday", now).unwrap_err().to_string();
        assert!(e.contains("RFC 3339") && e.contains("10m"), "{e}");
        assert!(subscription(1001, false, None, None, None).unwrap_err().to_string().contains("last 1000"));
        let sub = subscription(20, true, Some("s".into()), None, Some(now)).unwrap();
        assert_eq!((sub.backlog, sub.follow, sub.since.as_deref()), (20, true, Some("2026-12-02T10:00:00Z")));
    }

    #[test]
    fn human_lines_are_aligned_and_name_the_object() {
        let tz = jiff::tz::TimeZone::fixed(jiff::tz::offset(1));
        let open = serde_json::json!({"v":3,"ts":"2026-12-02T10:41:03.120000Z","session":"git1","task":"T-42",
            "tool":null,"pid":1234,"comm":"cat","hook":"open","action":"killed","reason":"not_granted",
            "access":"r","path":"/etc/shadow","path_truncated":false});
        let l = human_line(&open, &tz);
        assert!(l.starts_with("2026-12-02 11:41:03.120  killed   open      not_granted             git1/T-42"), "{l}");
        assert!(l.ends_with("  pid 1234 (cat)            /etc/shadow [r]"), "{l}");
        let argv = serde_json::json!({"ts":1_764_672_063.0,"session":"s","hook":"exec","action":"killed",
            "reason":"args_not_granted","pid":1,"comm":"git","argv":"/usr/bin/git push","argv_truncated":true});
        assert!(human_line(&argv, &tz).ends_with("argv /usr/bin/git push …"));
        let sig = serde_json::json!({"hook":"signal","signal":15,"target_pid":77,"action":"denied"});
        assert!(human_line(&sig, &tz).ends_with("signal 15 to pid 77"));
        assert!(human_line(&serde_json::json!({"lagged":3}), &tz).contains("3 event(s) not delivered"));
        assert_eq!(human_header().find("ACTION"), l.find("killed"));
    }
}
