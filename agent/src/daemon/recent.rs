//! The most recent audit lines, for `mcpguard events -n N`: a bounded ring the event thread
//! fills as it writes the audit log (one copy into a reused string, no allocation once warm), seeded
//! at start from the tail of the audit log file so the lines of before a restart are there too.
//! And the filter a subscription applies to the backlog and to the stream alike, on fields each
//! [`Line`] carries (no JSON parsed per line and subscriber).
use std::{collections::VecDeque, io::Read as _, io::Seek as _};

use crate::daemon::protocol::{BACKLOG_MAX, ProtoError, Subscribe};

/// How much of the audit log's end is read to seed the ring at start.
const SEED_BYTES: u64 = 1 << 20;

/// An audit line with the fields a subscription filters on, taken when the line was made (live
/// lines) or read back once (lines seeded from the file): filtering never parses JSON.
#[derive(Debug, Default, Clone)]
pub struct Line {
    pub text: String,
    session: Option<String>,
    reason: String,
    ts: Option<jiff::Timestamp>,
}

impl Line {
    #[must_use]
    pub fn new(text: &str, session: Option<&str>, reason: &str, ts: Option<jiff::Timestamp>) -> Self {
        let mut l = Self::default();
        l.set(text, session, reason, ts);
        l
    }

    /// A line of the audit log file: its `session`, `reason` and `ts` read from the JSON.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let v = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(v)) => v,
            _ => serde_json::Map::new(),
        };
        let get = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
        Self::new(text, get("session"), get("reason").unwrap_or(""), line_time(&v))
    }

    /// Overwrites the line in place (its buffers reused: no allocation once warm).
    fn set(&mut self, text: &str, session: Option<&str>, reason: &str, ts: Option<jiff::Timestamp>) {
        self.text.clear();
        self.text.push_str(text);
        match (session, &mut self.session) {
            (Some(s), Some(mine)) => {
                mine.clear();
                mine.push_str(s);
            }
            (Some(s), mine @ None) => *mine = Some(s.to_owned()),
            (None, mine) => *mine = None,
        }
        self.reason.clear();
        self.reason.push_str(reason);
        self.ts = ts;
    }
}

pub struct Recent {
    lines: VecDeque<Line>,
}

impl Default for Recent {
    fn default() -> Self {
        Self { lines: VecDeque::with_capacity(BACKLOG_MAX as usize) }
    }
}

impl Recent {
    /// The last lines of the audit log at `path` (a missing file, or `-`, gives none; a partial
    /// first line is skipped).
    #[must_use]
    pub fn seeded_from(path: &str) -> Self {
        let mut r = Self::default();
        if path == "-" {
            return r;
        }
        let Ok(mut f) = std::fs::File::open(path) else { return r };
        let len = f.metadata().map_or(0, |m| m.len());
        let start = len.saturating_sub(SEED_BYTES);
        let mut buf = Vec::new();
        if f.seek(std::io::SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
            return r;
        }
        let text = String::from_utf8_lossy(&buf);
        let mut lines = text.lines();
        if start > 0 {
            lines.next(); // begins mid-line
        }
        let lines: Vec<&str> = lines.filter(|l| l.starts_with('{')).collect();
        // Only the last BACKLOG_MAX are kept: parse only those.
        for l in &lines[lines.len().saturating_sub(BACKLOG_MAX as usize)..] {
            r.keep(Line::parse(l));
        }
        r
    }

    /// Keeps a line with its filter fields, dropping the oldest beyond [`BACKLOG_MAX`].
    pub fn push(&mut self, text: &str, session: Option<&str>, reason: &str, ts: Option<jiff::Timestamp>) {
        let mut l = if self.lines.len() >= BACKLOG_MAX as usize {
            self.lines.pop_front().unwrap_or_default()
        } else {
            Line::default()
        };
        l.set(text, session, reason, ts);
        self.lines.push_back(l);
    }

    fn keep(&mut self, l: Line) {
        if self.lines.len() >= BACKLOG_MAX as usize {
            self.lines.pop_front();
        }
        self.lines.push_back(l);
    }

    /// The last `n` lines that match `f`, oldest first.
    #[must_use]
    pub fn last(&self, n: usize, f: &Filter) -> Vec<String> {
        let mut out: Vec<String> =
            self.lines.iter().rev().filter(|l| f.matches(l)).take(n).map(|l| l.text.clone()).collect();
        out.reverse();
        out
    }
}

/// A subscription's filters: session name, reason, not before an instant.
#[derive(Debug, Default)]
pub struct Filter {
    session: Option<String>,
    reason: Option<String>,
    since: Option<jiff::Timestamp>,
}

impl Filter {
    pub fn new(s: &Subscribe) -> Result<Self, ProtoError> {
        Ok(Self { session: s.session.clone(), reason: s.reason.clone(), since: s.since_ts()? })
    }

    /// Whether a line passes.
    #[must_use]
    pub fn matches(&self, l: &Line) -> bool {
        self.session.as_deref().is_none_or(|w| l.session.as_deref() == Some(w))
            && self.reason.as_deref().is_none_or(|w| l.reason == w)
            && self.since.is_none_or(|since| l.ts.is_some_and(|t| t >= since))
    }
}

/// The time of an audit line: `ts` as RFC 3339 (format 3) or Unix seconds (format 2).
#[must_use]
pub fn line_time(v: &serde_json::Map<String, serde_json::Value>) -> Option<jiff::Timestamp> {
    match v.get("ts")? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => {
            let secs = n.as_f64()?;
            jiff::Timestamp::from_nanosecond((secs * 1e9) as i128).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(session: &str, reason: &str, ts: &str) -> String {
        format!(r#"{{"v":3,"ts":"{ts}","session":"{session}","hook":"open","reason":"{reason}"}}"#)
    }

    #[test]
    fn keeps_the_last_lines_and_filters_them() {
        let mut r = Recent::default();
        for i in 0..(BACKLOG_MAX + 5) {
            let s = if i % 2 == 0 { "a" } else { "b" };
            let ts = format!("2026-12-02T10:{:02}:{:02}Z", i / 60 % 60, i % 60);
            // Live lines carry their fields; a line read back from the file is parsed once.
            if i % 3 == 0 {
                r.keep(Line::parse(&line(s, "not_granted", &ts)));
            } else {
                r.push(&line(s, "not_granted", &ts), Some(s), "not_granted", ts.parse().ok());
            }
        }
        assert_eq!(r.lines.len(), BACKLOG_MAX as usize);
        let all = Filter::default();
        let last = r.last(3, &all);
        assert_eq!(last.len(), 3);
        assert!(last[2].contains("10:16:44Z"), "{last:?}"); // line 1004, the newest, last
        let only_a = Filter::new(&Subscribe { session: Some("a".into()), ..Subscribe::default() }).unwrap();
        assert!(r.last(5, &only_a).iter().all(|l| l.contains(r#""session":"a""#)));
        let since =
            Filter::new(&Subscribe { since: Some("2026-12-02T10:16:40Z".into()), ..Subscribe::default() }).unwrap();
        assert_eq!(r.last(100, &since).len(), 5);
        let reason = Filter::new(&Subscribe { reason: Some("other_process".into()), ..Subscribe::default() }).unwrap();
        assert!(r.last(100, &reason).is_empty());
        // A line of no known session passes no session filter.
        assert!(!only_a.matches(&Line::parse(r#"{"v":3,"session":null,"reason":"not_granted"}"#)));
        assert!(all.matches(&Line::parse("not json")));
    }

    #[test]
    fn format_2_times_are_understood() {
        let v = serde_json::json!({"ts": 1_764_672_063.5});
        assert_eq!(line_time(v.as_object().unwrap()).unwrap().to_string(), "2025-12-02T10:41:03.5Z");
    }

    #[test]
    fn seeds_from_the_end_of_the_audit_log() {
        let dir = std::env::temp_dir().join(format!("mcpg-recent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("audit.jsonl");
        let mut text = String::new();
        for i in 0..3000 {
            text.push_str(&line("s", "not_granted", &format!("2026-12-02T11:00:00.{i:06}Z")));
            text.push('\n');
        }
        std::fs::write(&p, text).unwrap();
        let r = Recent::seeded_from(p.to_str().unwrap());
        let last = r.last(2, &Filter::default());
        assert!(last[1].contains(".002999Z") && last[0].contains(".002998Z"), "{last:?}");
        assert_eq!(r.lines.len(), BACKLOG_MAX as usize);
        assert!(Recent::seeded_from(dir.join("missing").to_str().unwrap()).lines.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
