//! What a learning session recorded: the daemon's aggregated decisions (one [`Observation`] per
//! distinct event, with a count), the proxy's tool calls with their arguments, and whether
//! anything was lost. `DIR/observations.json` keeps every run, so that `learn` again with the same
//! `--out` proposes from the union (`Recorded::merge`). The generalisation (`generalise.rs`) is a
//! pure function of this file.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One distinct kernel decision of a learning session, as the daemon aggregated it. The fields
/// after `count` are annotations the CLI adds when the session ends (`annotate.rs`), from the
/// filesystem as it is then.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// The tool call in force (`--mcp`); `None`: outside any call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Audit vocabulary: `exec`, `open`, `mmap`, `connect`, ...
    pub hook: String,
    pub action: String,
    pub reason: String,
    /// `r`, `w`, `rw` (opens), `wm` (metadata), empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    /// A command line of `path` (a binary the session was seeded with, `cli::learn`): argv
    /// space-separated, `argv_truncated` when the kernel cut it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub dev: u32,
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub ino: u64,
    pub count: u64,
    /// What the path is now (`file`, `dir`, `missing`, `replaced`: another object than the one
    /// observed); `None` before annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    /// The object was created during the session (written, and not there before).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    /// Executed binaries: their sha256 at the end of the session (the object observed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The virtualenv (a directory with `pyvenv.cfg`) the path lies in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venv: Option<String>,
    /// Created objects: the nearest directory above them that existed before the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_before: Option<String>,
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_zero32(v: &u32) -> bool {
    *v == 0
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_zero64(v: &u64) -> bool {
    *v == 0
}

#[cfg(test)]
impl Observation {
    /// For unit tests: one audited, not-granted `hook` on a file `path` with `access`, seen once.
    pub(crate) fn audited(hook: &str, access: &str, path: &str) -> Self {
        Self {
            hook: hook.into(),
            action: "audited".into(),
            reason: "not_granted".into(),
            access: access.into(),
            path: Some(path.into()),
            count: 1,
            now: Some("file".into()),
            ..Self::default()
        }
    }
}

impl Observation {
    /// The part that makes two observations the same (the count and annotations aside).
    #[must_use]
    pub fn key(&self) -> ObsKey {
        ObsKey {
            tool: self.tool.clone(),
            call_id: self.call_id.clone(),
            hook: self.hook.clone(),
            action: self.action.clone(),
            reason: self.reason.clone(),
            access: self.access.clone(),
            path: self.path.clone(),
            net: self.net.clone(),
            argv: self.argv.clone(),
            argv_truncated: self.argv_truncated,
            dev: self.dev,
            ino: self.ino,
        }
    }
}

/// See [`Observation::key`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObsKey {
    pub tool: Option<String>,
    pub call_id: Option<String>,
    pub hook: String,
    pub action: String,
    pub reason: String,
    pub access: String,
    pub path: Option<String>,
    pub net: Option<String>,
    pub argv: Option<String>,
    pub argv_truncated: bool,
    pub dev: u32,
    pub ino: u64,
}

impl ObsKey {
    #[must_use]
    pub fn into_observation(self, count: u64) -> Observation {
        Observation {
            tool: self.tool,
            call_id: self.call_id,
            hook: self.hook,
            action: self.action,
            reason: self.reason,
            access: self.access,
            path: self.path,
            net: self.net,
            argv: self.argv,
            argv_truncated: self.argv_truncated,
            dev: self.dev,
            ino: self.ino,
            count,
            ..Observation::default()
        }
    }
}

/// One `tools/call` the proxy saw while learning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRecord {
    /// As the audit line's `call_id` (the JSON-RPC id as the client sent it).
    pub call_id: String,
    pub tool: String,
    /// The call's `arguments`, as sent.
    #[serde(default)]
    pub arguments: serde_json::Value,
    /// String arguments naming existing absolute paths, canonical (symlinks resolved), as the
    /// proxy resolves them before it checks a template's roots.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paths: BTreeMap<String, String>,
}

/// The daemon's answer to `learn_fetch`, and one run of `observations.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub session: String,
    /// The launched command line (the session's `command`).
    #[serde(default)]
    pub command: Vec<String>,
    /// Events the kernel could not deliver while the session learned (`mcpguard_events_lost_total`
    /// went up by this much; the ring buffer is shared, so some may be other sessions').
    #[serde(default)]
    pub lost_events: u64,
    /// Distinct observations the daemon did not keep (its table was full).
    #[serde(default)]
    pub dropped: u64,
    /// `--mcp`: the proxy learned per tool call.
    #[serde(default)]
    pub mcp: bool,
    /// When the daemon started learning (Unix milliseconds): objects born after it were created
    /// by the session.
    #[serde(default)]
    pub started_unix_ms: u64,
    /// The learner's `--var`s (paths named by variables in the proposed baseline).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// How the server ended (`exited with status 0`, `killed by SIGSEGV`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    #[serde(default)]
    pub calls: Vec<CallRecord>,
    /// `--mcp`: the tools the server listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listed: Vec<String>,
    pub observations: Vec<Observation>,
}

impl Run {
    /// Nothing was lost: every decision the kernel made for the session is in `observations`.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.lost_events == 0 && self.dropped == 0
    }
}

/// `DIR/observations.json`: every run learned into that directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    /// Format version of this file.
    pub v: u32,
    pub runs: Vec<Run>,
    /// tool -> call argument -> template variable, from a tools policy given to `learn --tools`
    /// (otherwise the variable is named after the argument: `repo_path` -> `repo`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub var_names: BTreeMap<String, BTreeMap<String, String>>,
}

pub const RECORDED_FORMAT: u32 = 1;
pub const RECORDED_FILE: &str = "observations.json";

#[derive(Debug, thiserror::Error)]
pub enum RecordedError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{}: not a learn observations file: {source}", path.display())]
    Parse { path: std::path::PathBuf, source: serde_json::Error },
    #[error("{}: observations format {found}, this mcpguard reads {RECORDED_FORMAT}", path.display())]
    Version { path: std::path::PathBuf, found: u32 },
}

impl Recorded {
    /// The file in `dir`, or an empty record when there is none yet.
    pub fn load(dir: &std::path::Path) -> Result<Self, RecordedError> {
        let path = dir.join(RECORDED_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self { v: RECORDED_FORMAT, runs: Vec::new(), var_names: BTreeMap::new() });
            }
            Err(source) => return Err(RecordedError::Io { path, source }),
        };
        let r: Self =
            serde_json::from_str(&text).map_err(|source| RecordedError::Parse { path: path.clone(), source })?;
        if r.v != RECORDED_FORMAT {
            return Err(RecordedError::Version { path, found: r.v });
        }
        Ok(r)
    }

    /// Adds a run; its call ids are prefixed with the run's number (`2:7`), since JSON-RPC ids
    /// start again in every session.
    pub fn merge(&mut self, mut run: Run) {
        let n = self.runs.len() + 1;
        let tag = |id: &str| format!("{n}:{id}");
        for c in &mut run.calls {
            c.call_id = tag(&c.call_id);
        }
        for o in &mut run.observations {
            if let Some(id) = &o.call_id {
                o.call_id = Some(tag(id));
            }
        }
        run.observations.sort();
        run.calls.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        self.runs.push(run);
    }

    /// Pretty JSON, the same bytes for the same record.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    #[must_use]
    pub fn complete(&self) -> bool {
        self.runs.iter().all(Run::complete)
    }

    /// Takes the variable names of a tools policy (`[tools.T] args = { var = "arg" }`).
    pub fn name_vars_from(&mut self, tools_toml: &str, origin: &str) -> Result<(), String> {
        let v: toml::Table = toml::from_str(tools_toml).map_err(|e| format!("{origin}: {e}"))?;
        let Some(tools) = v.get("tools").and_then(toml::Value::as_table) else { return Ok(()) };
        for (tool, t) in tools {
            let Some(args) = t.get("args").and_then(toml::Value::as_table) else { continue };
            for (var, arg) in args {
                let arg = arg.as_str().ok_or_else(|| format!("{origin}: tools.{tool}.args.{var} is not a string"))?;
                self.var_names.entry(tool.clone()).or_default().insert(arg.to_owned(), var.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_tags_call_ids_per_run_and_round_trips() {
        let mut r = Recorded { v: RECORDED_FORMAT, runs: Vec::new(), var_names: BTreeMap::new() };
        let run = Run {
            session: "s".into(),
            calls: vec![CallRecord {
                call_id: "1".into(),
                tool: "t".into(),
                arguments: serde_json::json!({}),
                paths: BTreeMap::new(),
            }],
            observations: vec![Observation {
                tool: Some("t".into()),
                call_id: Some("1".into()),
                hook: "open".into(),
                count: 2,
                ..Observation::default()
            }],
            ..Run::default()
        };
        r.merge(run.clone());
        r.merge(run);
        assert_eq!(r.runs[0].calls[0].call_id, "1:1");
        assert_eq!(r.runs[1].observations[0].call_id.as_deref(), Some("2:1"));
        let back: Recorded = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert!(back.complete());
        let dir = std::env::temp_dir().join(format!("mcpg-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(RECORDED_FILE), "{\"v\":9,\"runs\":[]}").unwrap();
        let e = Recorded::load(&dir).unwrap_err().to_string();
        assert!(e.contains("format 9") && e.contains(RECORDED_FILE), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
