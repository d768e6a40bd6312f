//! The daemon's table of sessions and grants, persisted so a restarted daemon adopts it.
//! The kernel maps (pinned) hold the enforcement state; this file holds what is needed to
//! correlate, report and later remove it.
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    kgrant::KernelGrant,
    policy::{GrantSpec, Mode},
};

/// One grant in force (a session's baseline or its current task grant).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: u64,
    /// Task id (absent for a baseline).
    pub task: Option<String>,
    pub policy: String,
    pub mode: Mode,
    /// CLOCK_BOOTTIME ns at which the kernel stops honouring it (0: session lifetime).
    pub expires_boot_ns: u64,
    /// MCP tool name and JSON-RPC id when the grant belongs to one tools/call.
    pub tool: Option<String>,
    pub call_id: Option<String>,
    pub kernel: KernelGrant,
    /// The grant as requested (before any composition), kept so that an orchestrator task
    /// grant and a per-call grant can be intersected when the other one changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<GrantSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    pub id: u64,
    pub root_pid: u32,
    pub command: Vec<String>,
    /// uid of the peer that registered the session.
    pub uid: u32,
    pub created_unix: u64,
    pub cgroup: Option<u64>,
    pub base: Option<GrantRecord>,
    /// The grant in force besides the baseline: a task grant, or a per-call grant (which then
    /// already is the intersection with `orchestrator`).
    pub task: Option<GrantRecord>,
    /// An orchestrator's task grant held aside (still installed in the kernel) while a
    /// per-call grant composed with it is in force; it is put back when the call is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<GrantRecord>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub next_id: u64,
    pub sessions: BTreeMap<String, Session>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("writing state file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl State {
    pub fn load(path: &Path) -> Result<Self, StateError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StateError::Corrupt { path: path.into(), source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Read { path: path.into(), source }),
        }
    }

    /// Atomic replace: write a temporary file, fsync, rename.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write { path: path.into(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// A new id, never reused: the counter is persisted, and starts above the wall clock so a
    /// lost state file cannot collide with ids still pinned in the kernel.
    pub fn alloc_id(&mut self) -> u64 {
        let floor = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            << 16;
        self.next_id = self.next_id.max(floor) + 1;
        self.next_id
    }

    #[must_use]
    pub fn session_by_id(&self, id: u64) -> Option<&Session> {
        self.sessions.values().find(|s| s.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_monotonic_and_state_round_trips() {
        let mut s = State::default();
        let a = s.alloc_id();
        let b = s.alloc_id();
        assert!(b > a);
        s.sessions.insert(
            "x".into(),
            Session {
                name: "x".into(),
                id: a,
                root_pid: 1,
                command: vec!["/bin/true".into()],
                uid: 0,
                created_unix: 0,
                cgroup: None,
                base: None,
                task: None,
                orchestrator: None,
            },
        );
        let dir = std::env::temp_dir().join(format!("mcpg-state-{}", std::process::id()));
        let p = dir.join("state.json");
        s.save(&p).unwrap();
        assert_eq!(State::load(&p).unwrap(), s);
        std::fs::write(&p, b"{not json").unwrap();
        let e = State::load(&p).unwrap_err();
        assert!(e.to_string().contains("state.json"), "{e}");
        assert_eq!(State::load(&dir.join("absent.json")).unwrap(), State::default());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
