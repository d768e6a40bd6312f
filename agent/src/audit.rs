//! Audit log: one JSON object per kernel decision, joined with the session table.
//! Field names are stable (documented in README "Audit log").
use std::io::Write as _;

use serde::Serialize;

use crate::{events::Decision, state::State};

#[derive(Serialize)]
pub struct AuditLine<'a> {
    /// Unix time in seconds (float), derived from the event's boot-time stamp.
    pub ts: f64,
    pub session: Option<&'a str>,
    pub session_id: u64,
    pub task: Option<&'a str>,
    pub grant_id: u64,
    pub policy: Option<&'a str>,
    pub tool: Option<&'a str>,
    pub call_id: Option<&'a str>,
    pub command: Option<&'a [String]>,
    #[serde(flatten)]
    pub decision: &'a Decision,
}

fn boot_to_unix(ts_boot_ns: u64) -> f64 {
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0);
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    unix - (boot - ts_boot_ns as f64 / 1e9)
}

/// The audit JSON line (without newline) for a decision.
#[must_use]
pub fn line(state: &State, d: &Decision) -> String {
    let session = state.session_by_id(d.session_id);
    let grant = session.and_then(|s| {
        [s.task.as_ref(), s.base.as_ref()].into_iter().flatten().find(|g| g.id == d.grant_id)
    });
    let l = AuditLine {
        ts: boot_to_unix(d.ts_boot_ns),
        session: session.map(|s| s.name.as_str()),
        session_id: d.session_id,
        task: grant.and_then(|g| g.task.as_deref()),
        grant_id: d.grant_id,
        policy: grant.map(|g| g.policy.as_str()),
        tool: grant.and_then(|g| g.tool.as_deref()),
        call_id: grant.and_then(|g| g.call_id.as_deref()),
        command: session.map(|s| s.command.as_slice()),
        decision: d,
    };
    serde_json::to_string(&l).expect("audit line serialises")
}

/// Where audit lines go: a file (appended) or stdout.
pub enum Sink {
    Stdout,
    File(std::fs::File),
}

impl Sink {
    pub fn open(spec: &str) -> std::io::Result<Self> {
        if spec == "-" {
            return Ok(Self::Stdout);
        }
        let p = std::path::Path::new(spec);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self::File(std::fs::OpenOptions::new().create(true).append(true).open(p)?))
    }

    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()
            }
            Self::File(f) => writeln!(f, "{line}"),
        }
    }
}
