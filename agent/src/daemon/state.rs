//! The daemon's table of sessions and grants, persisted so a restarted daemon adopts it.
//! The kernel maps (pinned) hold the enforcement state; this file holds what is needed to
//! correlate, report and later remove it.
//!
//! Ordering and crash safety (see also `reconcile`): a request changes the kernel
//! first (that is the enforcement the client is waiting for), then the table in memory, and is
//! answered only once a [`Persister`] save that includes the change is on disk. A crash can
//! therefore only lose changes nobody was told about, and those are already in the pinned kernel
//! maps: on restart `reconcile` takes the kernel's session state as the truth (a revocation the
//! kernel has is never undone; a grant the table does not know is dropped, fail closed).
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, PoisonError},
};

use serde::{Deserialize, Serialize};

use crate::{
    grant::kgrant::KernelGrant,
    grant::policy::{GrantSpec, Mode},
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
    /// Path labels the grant in force declares (audit lines and tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Token audience of the grant in force (composed: the inner grant's, else the outer's;
    /// none: the daemon's `token_audience`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    /// When the grant as requested expires, if a parent's expiry cut `expires_boot_ns` shorter
    /// (delegated sessions; 0: the same).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub own_expires_boot_ns: u64,
}

#[cfg(test)]
impl GrantRecord {
    /// A record for unit tests: grant `id` of policy `policy` in `mode`, no task, tool or call,
    /// an empty kernel grant, no expiry.
    pub(crate) fn test(id: u64, policy: &str, mode: crate::grant::policy::Mode) -> Self {
        Self {
            id,
            task: None,
            policy: policy.into(),
            mode,
            expires_boot_ns: 0,
            tool: None,
            call_id: None,
            kernel: crate::grant::kgrant::KernelGrant::default(),
            spec: None,
            labels: Vec::new(),
            audience: Vec::new(),
            own_expires_boot_ns: 0,
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What the audit join needs of a grant that has ended.
#[derive(Clone, Debug, Default)]
pub struct EndedGrant {
    pub id: u64,
    pub task: Option<String>,
    pub policy: String,
    pub tool: Option<String>,
    pub call_id: Option<String>,
    pub labels: Vec<String>,
}

/// A session's recently ended grants. Not part of the table's identity: equal whatever it holds.
#[derive(Clone, Debug, Default)]
pub struct Ended(pub std::collections::VecDeque<EndedGrant>);

impl Ended {
    pub const KEEP: usize = 16;

    pub fn push(&mut self, r: &GrantRecord) {
        if self.0.len() >= Self::KEEP {
            self.0.pop_front();
        }
        self.0.push_back(EndedGrant {
            id: r.id,
            task: r.task.clone(),
            policy: r.policy.clone(),
            tool: r.tool.clone(),
            call_id: r.call_id.clone(),
            labels: r.labels.clone(),
        });
    }

    #[must_use]
    pub fn find(&self, id: u64) -> Option<&EndedGrant> {
        self.0.iter().rev().find(|g| g.id == id)
    }
}

impl PartialEq for Ended {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Ended {}

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
    /// Every process carries the launcher's seccomp guard filter (`Register::sealed`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
    /// Landlock write ceiling the launcher applied (`Register::write_ceiling`), for status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_ceiling: Option<Vec<PathBuf>>,
    pub base: Option<GrantRecord>,
    /// The grant in force besides the baseline: a task grant, or a per-call grant (which then
    /// already is the intersection with `orchestrator`).
    pub task: Option<GrantRecord>,
    /// An orchestrator's task grant held aside (still installed in the kernel) while a
    /// per-call grant composed with it is in force; it is put back when the call is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<GrantRecord>,
    /// Grants of this session that ended lately (newest last, at most [`Ended::KEEP`]): the audit
    /// join of an event the kernel reported just before its grant ended (a killed call whose
    /// grant the proxy revoked at once) still names the task, tool and call. Not persisted.
    #[serde(skip)]
    pub ended: Ended,
    /// The session this one was delegated from (`Register::parent`; `daemon::delegation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// sha256 of the launched binary when it was registered (in the session's tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_sha256: Option<String>,
}

/// The names of the grant a decision was made under, as the audit line and learning report
/// them.
pub struct GrantNames<'a> {
    pub task: Option<&'a str>,
    pub policy: &'a str,
    pub tool: Option<&'a str>,
    pub call_id: Option<&'a str>,
    pub labels: &'a [String],
}

impl Session {
    /// The grant `id`: in force, held aside, or (an event drained just after its grant ended)
    /// lately ended.
    #[must_use]
    pub fn grant_names(&self, id: u64) -> Option<GrantNames<'_>> {
        [self.task.as_ref(), self.base.as_ref(), self.orchestrator.as_ref()]
            .into_iter()
            .flatten()
            .find(|g| g.id == id)
            .map(|g| GrantNames {
                task: g.task.as_deref(),
                policy: &g.policy,
                tool: g.tool.as_deref(),
                call_id: g.call_id.as_deref(),
                labels: &g.labels,
            })
            .or_else(|| {
                self.ended.find(id).map(|g| GrantNames {
                    task: g.task.as_deref(),
                    policy: &g.policy,
                    tool: g.tool.as_deref(),
                    call_id: g.call_id.as_deref(),
                    labels: &g.labels,
                })
            })
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub next_id: u64,
    /// By name; changed only through [`State::insert_session`] and [`State::remove_session`],
    /// which keep `by_id` in step.
    sessions: BTreeMap<String, Session>,
    /// Session id -> name: the event path looks a session up by id, once per event.
    #[serde(skip)]
    by_id: BTreeMap<u64, String>,
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

/// How far the id counter jumps on every load. Ids handed out after the last save may already
/// name grant entries in the pinned maps (a crash between the kernel update and the save); a
/// reused id would merge a new grant with those stale entries, i.e. widen it. No daemon run
/// hands out anywhere near 2^32 ids between two saves.
pub const ID_LEAP_ON_LOAD: u64 = 1 << 32;

impl State {
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let mut st: Self = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StateError::Corrupt { path: path.into(), source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(source) => return Err(StateError::Read { path: path.into(), source }),
        };
        st.next_id = st.next_id.saturating_add(ID_LEAP_ON_LOAD);
        st.by_id = st.sessions().values().map(|s| (s.id, s.name.clone())).collect();
        Ok(st)
    }

    /// Atomic replace: write a temporary file, `fdatasync` it, rename over the old one.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write { path: path.into(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| err(std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_data().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// A new id, never reused: the counter is persisted, and starts above the wall clock so a
    /// lost state file cannot collide with ids still pinned in the kernel.
    pub fn alloc_id(&mut self) -> u64 {
        let floor = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) << 16;
        self.next_id = self.next_id.max(floor) + 1;
        self.next_id
    }

    #[must_use]
    pub fn session_by_id(&self, id: u64) -> Option<&Session> {
        self.by_id.get(&id).and_then(|name| self.sessions.get(name))
    }

    #[must_use]
    pub fn sessions(&self) -> &BTreeMap<String, Session> {
        &self.sessions
    }

    #[must_use]
    pub fn session(&self, name: &str) -> Option<&Session> {
        self.sessions.get(name)
    }

    /// The session named `name`, to change its grants (never its name or id: they are keys).
    pub fn session_mut(&mut self, name: &str) -> Option<&mut Session> {
        self.sessions.get_mut(name)
    }

    /// Adds `s` under its name; returns the session it replaced.
    pub fn insert_session(&mut self, s: Session) -> Option<Session> {
        let old = self.remove_session(&s.name);
        self.by_id.insert(s.id, s.name.clone());
        self.sessions.insert(s.name.clone(), s);
        old
    }

    pub fn remove_session(&mut self, name: &str) -> Option<Session> {
        let s = self.sessions.remove(name)?;
        self.by_id.remove(&s.id);
        Some(s)
    }
}

/// Group commit of the session table, on a thread of its own, off the request path.
///
/// A request that changed the table takes a ticket ([`Persister::request`], after its change);
/// the thread snapshots the whole table, writes and syncs it, and publishes the newest ticket
/// the snapshot covers. The request is answered once its ticket is durable ([`Persister::durable`]).
/// Requests arriving while a save is in progress share the next one. The ticket is read under
/// the table's lock, so a snapshot covers every change whose ticket is at most its number.
pub struct Persister {
    path: PathBuf,
    wanted: Mutex<Wanted>,
    cv: Condvar,
    done: tokio::sync::watch::Sender<Durable>,
}

#[derive(Default)]
struct Wanted {
    ticket: u64,
    stop: bool,
}

/// Newest ticket on disk, and the newest whose save failed (with why).
#[derive(Clone, Debug, Default)]
struct Durable {
    saved: u64,
    failed: u64,
    error: Option<Arc<str>>,
}

impl Persister {
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            wanted: Mutex::default(),
            cv: Condvar::new(),
            done: tokio::sync::watch::Sender::new(Durable::default()),
        }
    }

    /// Asks for a save that includes every change made before this call; returns its ticket.
    pub fn request(&self) -> u64 {
        let mut w = self.wanted.lock().unwrap_or_else(PoisonError::into_inner);
        w.ticket += 1;
        self.cv.notify_one();
        w.ticket
    }

    /// Resolves once `ticket` is on disk; `Err` if the save that covered it failed.
    pub async fn durable(&self, ticket: u64) -> Result<(), Arc<str>> {
        let mut rx = self.done.subscribe();
        let d = rx
            .wait_for(|d| d.saved >= ticket || d.failed >= ticket)
            .await
            .map_err(|_| Arc::<str>::from("the state writer stopped"))?;
        if d.saved >= ticket { Ok(()) } else { Err(d.error.clone().unwrap_or_else(|| "save failed".into())) }
    }

    /// Blocking form of [`Persister::durable`] (for callers outside the runtime).
    pub fn wait_durable(&self, ticket: u64) -> Result<(), Arc<str>> {
        let rt = tokio::runtime::Builder::new_current_thread().build().map_err(|e| Arc::<str>::from(e.to_string()))?;
        rt.block_on(self.durable(ticket))
    }

    /// The writer thread's loop: returns after [`Persister::stop`], once everything requested
    /// before it is saved.
    pub fn run(&self, state: &Mutex<State>) {
        let mut attempted = 0;
        loop {
            {
                let mut w = self.wanted.lock().unwrap_or_else(PoisonError::into_inner);
                while w.ticket <= attempted && !w.stop {
                    w = self.cv.wait(w).unwrap_or_else(PoisonError::into_inner);
                }
                if w.ticket <= attempted {
                    return;
                }
            }
            // Clone under the lock (fast), serialise and write without it.
            let (ticket, snapshot) = {
                let st = state.lock().unwrap_or_else(PoisonError::into_inner);
                (self.wanted.lock().unwrap_or_else(PoisonError::into_inner).ticket, st.clone())
            };
            let r = snapshot.save(&self.path);
            attempted = ticket;
            self.done.send_modify(|d| match r {
                Ok(()) => d.saved = ticket,
                Err(e) => {
                    log::error!("{e}");
                    d.failed = ticket;
                    d.error = Some(e.to_string().into());
                }
            });
        }
    }

    /// Ends [`Persister::run`] after a last save of what was requested.
    pub fn stop(&self) {
        self.wanted.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        self.cv.notify_one();
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
        s.insert_session(Session {
            write_ceiling: None,
            name: "x".into(),
            id: a,
            root_pid: 1,
            command: vec!["/bin/true".into()],
            uid: 0,
            created_unix: 0,
            cgroup: None,
            sealed: true,
            base: None,
            task: None,
            orchestrator: None,
            binary_sha256: None,
            ended: Ended::default(),
            parent: None,
        });
        let dir = std::env::temp_dir().join(format!("mcpg-state-{}", std::process::id()));
        let p = dir.join("state.json");
        s.save(&p).unwrap();
        let back = State::load(&p).unwrap();
        assert_eq!(back.sessions, s.sessions);
        assert_eq!(back.next_id, s.next_id + ID_LEAP_ON_LOAD, "ids handed out after the last save are never reused");
        let mut back = back;
        assert!(back.alloc_id() > s.next_id + ID_LEAP_ON_LOAD);
        std::fs::write(&p, b"{not json").unwrap();
        let e = State::load(&p).unwrap_err();
        assert!(e.to_string().contains("state.json"), "{e}");
        assert_eq!(State::load(&dir.join("absent.json")).unwrap().sessions, BTreeMap::new());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn persister_answers_once_saved_and_coalesces() {
        let dir = std::env::temp_dir().join(format!("mcpg-persist-{}", std::process::id()));
        let p = dir.join("state.json");
        let state = Mutex::new(State::default());
        let ps = Persister::new(p.clone());
        std::thread::scope(|s| {
            s.spawn(|| ps.run(&state));
            let mut tickets = Vec::new();
            for i in 0..20 {
                let mut st = state.lock().unwrap();
                st.next_id = i + 1;
                tickets.push(ps.request());
            }
            // Each ticket is covered by a save that includes its change.
            for (i, t) in tickets.iter().enumerate() {
                ps.wait_durable(*t).unwrap();
                assert!(State::load(&p).unwrap().next_id - ID_LEAP_ON_LOAD > i as u64);
            }
            ps.stop();
        });
        assert_eq!(State::load(&p).unwrap().next_id, 20 + ID_LEAP_ON_LOAD);
        // A failed save is reported to the requests it covered, not silently answered.
        let blocked = dir.join("file-not-dir");
        std::fs::write(&blocked, b"x").unwrap();
        let ps = Persister::new(blocked.join("state.json"));
        std::thread::scope(|s| {
            s.spawn(|| ps.run(&state));
            let t = ps.request();
            let e = ps.wait_durable(t).unwrap_err();
            assert!(e.contains("state.json"), "{e}");
            ps.stop();
        });
        std::fs::remove_dir_all(dir).unwrap();
    }
}
