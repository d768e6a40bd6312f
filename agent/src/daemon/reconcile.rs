//! After a (re)start: the session table (`state.json`) against the pinned kernel maps.
//!
//! Requests change the kernel first and the table after (the table is saved before the answer;
//! see `state`), so after a crash the saved table can be behind the kernel by changes that were
//! never answered. The kernel is what is enforced, so each session follows it, never the other
//! way round.
use mcpguard_common::SessionState;

use crate::{
    daemon::session,
    daemon::state::{GrantRecord, Session, State},
    kernel::engine::Engine,
};

/// What the table says against what the kernel has in force for a session, after a restart.
#[derive(Debug, PartialEq, Eq)]
pub enum Drift {
    /// Same task grant (or none) in both.
    Agree,
    /// The kernel has no state for the session: it was removed (unregistered, ended, or the
    /// maps are fresh: unpinned or rebooted, so none of its processes is governed any more).
    Gone,
    /// The kernel has no task grant: a revocation was applied and not saved.
    Revoked,
    /// The kernel runs the held-aside orchestrator grant: the call's revocation was not saved.
    CallRevoked,
    /// The kernel runs a grant the table does not know (applied, not saved, never answered).
    Unknown,
}

#[must_use]
pub fn drift(s: &Session, kernel: Option<&SessionState>) -> Drift {
    let Some(k) = kernel else { return Drift::Gone };
    let id = |g: &Option<GrantRecord>| g.as_ref().map_or(0, |g| g.id);
    if k.task_grant == id(&s.task) {
        Drift::Agree
    } else if k.task_grant == 0 {
        Drift::Revoked
    } else if s.orchestrator.is_some() && k.task_grant == id(&s.orchestrator) {
        Drift::CallRevoked
    } else {
        Drift::Unknown
    }
}

/// The pinned kernel maps are the truth for what is in force: the table was
/// saved after the kernel changed, so a crash in between leaves the table one or more changes
/// behind (changes no client was told about). Each session is brought in line with the kernel,
/// never the other way round: a revocation the kernel has stays (a revoked grant never comes
/// back), a session the kernel no longer has is dropped, and a grant the table cannot describe
/// is replaced by the baseline alone (fail closed). Returns true when the table changed.
pub fn reconcile(eng: &mut Engine, st: &mut State) -> bool {
    let names: Vec<String> = st.sessions().keys().cloned().collect();
    let mut changed = false;
    for name in names {
        let s = st.session_mut(&name).expect("listed");
        let d = drift(s, eng.session_state(s.id).as_ref());
        if d != Drift::Agree {
            log::warn!("session {name}: the kernel's state differs from the saved table ({d:?}); following the kernel");
            changed = true;
        }
        let stale: Vec<GrantRecord> = match d {
            Drift::Agree => Vec::new(),
            Drift::Gone => {
                let s = st.remove_session(&name).expect("listed");
                session::end(eng, &s);
                continue;
            }
            Drift::CallRevoked => s.task.replace(s.orchestrator.take().expect("held")).into_iter().collect(),
            Drift::Revoked | Drift::Unknown => [s.task.take(), s.orchestrator.take()].into_iter().flatten().collect(),
        };
        for g in &stale {
            eng.remove_grant(g.id, &g.kernel);
        }
        // Re-inserting what the kernel already has is harmless.
        for g in [&s.base, &s.task, &s.orchestrator].into_iter().flatten() {
            if let Err(e) = eng.install_grant(g.id, &g.kernel) {
                log::error!("session {}: re-installing grant {}: {e}", s.name, g.id);
            }
        }
        if let Err(e) = eng.set_session(s.id, session::kernel_state(s)) {
            log::error!("session {}: restoring state: {e}", s.name);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::policy::Mode;

    fn rec(id: u64) -> Option<GrantRecord> {
        Some(GrantRecord { task: Some(format!("t{id}")), ..GrantRecord::test(id, "inline", Mode::Kill) })
    }

    #[test]
    fn drift_classifies_what_a_crash_can_leave() {
        let mut s: Session = serde_json::from_value(serde_json::json!({
            "name": "s", "id": 1, "root_pid": 1, "command": ["/bin/true"], "uid": 0,
            "created_unix": 0, "cgroup": null, "base": null, "task": null,
        }))
        .unwrap();
        s.base = rec(10);
        s.task = rec(11);
        let k = |task_grant| SessionState { base_grant: 10, task_grant, task_expires_ns: 0, mode: 0, flags: 0 };
        assert_eq!(drift(&s, None), Drift::Gone);
        assert_eq!(drift(&s, Some(&k(11))), Drift::Agree);
        assert_eq!(drift(&s, Some(&k(0))), Drift::Revoked);
        assert_eq!(drift(&s, Some(&k(12))), Drift::Unknown);
        s.orchestrator = rec(9);
        assert_eq!(drift(&s, Some(&k(9))), Drift::CallRevoked);
        s.task = None;
        s.orchestrator = None;
        assert_eq!(drift(&s, Some(&k(0))), Drift::Agree);
        assert_eq!(drift(&s, Some(&k(13))), Drift::Unknown, "a grant applied but never saved");
    }
}
