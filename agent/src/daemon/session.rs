//! Session transitions: the one place a session moves from the grants in force to the next.
//!
//! A session always has its baseline; beyond it, it is in one of the [`Grants`] states. The
//! operations compute the next state without touching the kernel ([`after_task_grant`],
//! [`after_call_grant`], [`after_revoke`]: pure, unit-tested over every pair below), and
//! [`transition`] carries it out: installs the records that are new, makes the one `SESSIONS`
//! update that switches the kernel over at one instant, rolls back on failure, and frees the
//! records nothing references any more. [`begin`] and [`end`] are the first and the last
//! transition (the baseline in, everything out).
//!
//! Lock order (where the locks live, `server::Daemon`): `state` before `engine`, always.
use mcpguard_common::SessionState;

use crate::{
    daemon::state::{GrantRecord, Session},
    kernel::engine::{Engine, EngineError},
};

/// What a session runs under besides its baseline. Persisted as the `task` / `orchestrator`
/// slots of [`Session`] (`into_slots` / `of`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant, reason = "one short-lived value per request, never stored")]
pub enum Grants {
    /// The baseline only.
    Baseline,
    /// A task grant.
    Task(GrantRecord),
    /// A per-call grant, no task grant around it.
    Call(GrantRecord),
    /// A per-call grant (already the intersection with `task`) inside an orchestrator's task
    /// grant, which is held aside, still installed, and back in force when the call ends.
    CallInTask { call: GrantRecord, task: GrantRecord },
}

impl Grants {
    /// The state of `s` (a copy).
    #[must_use]
    pub fn of(s: &Session) -> Self {
        match (s.task.clone(), s.orchestrator.clone()) {
            (None, _) => Self::Baseline,
            (Some(call), Some(task)) => Self::CallInTask { call, task },
            (Some(r), None) if r.call_id.is_some() => Self::Call(r),
            (Some(r), None) => Self::Task(r),
        }
    }

    /// The `task` (in force) and `orchestrator` (held aside) slots of [`Session`].
    #[must_use]
    pub fn into_slots(self) -> (Option<GrantRecord>, Option<GrantRecord>) {
        match self {
            Self::Baseline => (None, None),
            Self::Task(r) | Self::Call(r) => (Some(r), None),
            Self::CallInTask { call, task } => (Some(call), Some(task)),
        }
    }

    fn records(&self) -> Vec<&GrantRecord> {
        match self {
            Self::Baseline => Vec::new(),
            Self::Task(r) | Self::Call(r) => vec![r],
            Self::CallInTask { call, task } => vec![call, task],
        }
    }

    /// Ids of the records beyond the baseline (to tell whether the state changed meanwhile).
    #[must_use]
    pub fn ids(&self) -> Vec<u64> {
        self.records().iter().map(|r| r.id).collect()
    }

    /// [`Grants::ids`] of `s`'s state, without copying its records.
    #[must_use]
    pub fn ids_of(s: &Session) -> Vec<u64> {
        [&s.task, &s.orchestrator].into_iter().flatten().map(|r| r.id).collect()
    }

    /// The task grant a new call composes with: the one in force or the one held aside.
    #[must_use]
    pub fn task_around_calls(&self) -> Option<&GrantRecord> {
        match self {
            Self::Task(t) | Self::CallInTask { task: t, .. } => Some(t),
            Self::Baseline | Self::Call(_) => None,
        }
    }

    /// The call in force, which a new task grant narrows.
    #[must_use]
    pub fn call_in_force(&self) -> Option<&GrantRecord> {
        match self {
            Self::Call(c) | Self::CallInTask { call: c, .. } => Some(c),
            Self::Baseline | Self::Task(_) => None,
        }
    }
}

/// A task grant `task` is issued. With a call in force (`narrowed_call`: that call intersected
/// with the new task, a record of its own) the call continues under it, and `task` is held
/// aside; otherwise `task` is in force and whatever was there ends.
#[must_use]
pub fn after_task_grant(cur: &Grants, task: GrantRecord, narrowed_call: Option<GrantRecord>) -> Grants {
    match (cur.call_in_force(), narrowed_call) {
        (Some(_), Some(call)) => Grants::CallInTask { call, task },
        _ => Grants::Task(task),
    }
}

/// A per-call grant `call` (already composed with [`Grants::task_around_calls`]) is issued: it
/// is in force, inside the task grant if there is one; a previous call ends.
#[must_use]
pub fn after_call_grant(cur: &Grants, call: GrantRecord) -> Grants {
    match cur.task_around_calls() {
        Some(task) => Grants::CallInTask { call, task: task.clone() },
        None => Grants::Call(call),
    }
}

/// Why a revocation does not apply.
#[derive(Debug, PartialEq, Eq)]
pub enum RevokeError {
    NoGrantForTask(String),
    NoTaskGrant,
}

/// The grant of `task` (any grant, without a task) is revoked. Ending the call in force puts
/// the task grant held aside back in force; ending that task grant ends its call too.
pub fn after_revoke(cur: &Grants, task: Option<&str>) -> Result<Grants, RevokeError> {
    let names = |r: &GrantRecord, t: &str| r.task.as_deref() == Some(t);
    match (cur, task) {
        (Grants::Baseline, None) => Err(RevokeError::NoTaskGrant),
        (_, None) => Ok(Grants::Baseline),
        (Grants::CallInTask { call, task }, Some(t)) if names(call, t) => Ok(Grants::Task(task.clone())),
        (Grants::CallInTask { task, .. }, Some(t)) if names(task, t) => Ok(Grants::Baseline),
        (Grants::Task(r) | Grants::Call(r), Some(t)) if names(r, t) => Ok(Grants::Baseline),
        (_, Some(t)) => Err(RevokeError::NoGrantForTask(t.to_owned())),
    }
}

/// What the kernel's `SESSIONS` entry says for `s`.
#[must_use]
pub fn kernel_state(s: &Session) -> SessionState {
    use mcpguard_common::{MODE_AUDIT, MODE_DENY, MODE_KILL};
    let mode = match s.task.as_ref().or(s.base.as_ref()).map(|g| g.mode) {
        Some(crate::grant::policy::Mode::Audit) => MODE_AUDIT,
        Some(crate::grant::policy::Mode::Kill) => MODE_KILL,
        Some(crate::grant::policy::Mode::Deny) | None => MODE_DENY,
    };
    SessionState {
        base_grant: s.base.as_ref().map_or(0, |g| g.id),
        task_grant: s.task.as_ref().map_or(0, |g| g.id),
        task_expires_ns: s.task.as_ref().map_or(0, |g| g.expires_boot_ns),
        mode,
        // Sealed: the launcher's seccomp filter refuses the guard syscalls in every process of
        // the session, so the kernel need not attach the guard tracepoints for it.
        flags: if s.sealed && s.cgroup.is_none() { mcpguard_common::SESSION_SEALED } else { 0 },
    }
}

/// Takes `s` to `next`: installs the records of `next` that are not in force yet, switches the
/// kernel over with one `SESSIONS` update, and removes the records nothing references any
/// more (returned, in the order they were held: in force first). On failure the session and the
/// kernel are as they were.
pub fn transition(eng: &mut Engine, s: &mut Session, next: Grants) -> Result<Vec<GrantRecord>, EngineError> {
    let before = Grants::ids_of(s);
    let mut installed: Vec<(u64, crate::grant::kgrant::KernelGrant)> = Vec::new();
    for r in next.records() {
        if before.contains(&r.id) {
            continue;
        }
        if let Err(e) = eng.install_grant(r.id, &r.kernel) {
            for (id, k) in &installed {
                eng.remove_grant(*id, k);
            }
            return Err(e);
        }
        installed.push((r.id, r.kernel.clone()));
    }
    let (task, orchestrator) = next.into_slots();
    let old_task = std::mem::replace(&mut s.task, task);
    let old_orch = std::mem::replace(&mut s.orchestrator, orchestrator);
    if let Err(e) = eng.set_session(s.id, kernel_state(s)) {
        s.task = old_task;
        s.orchestrator = old_orch;
        for (id, k) in &installed {
            eng.remove_grant(*id, k);
        }
        return Err(e);
    }
    let live = Grants::ids_of(s);
    let freed: Vec<GrantRecord> =
        [old_task, old_orch].into_iter().flatten().filter(|r| !live.contains(&r.id)).collect();
    for r in &freed {
        eng.remove_grant(r.id, &r.kernel);
        s.ended.push(r);
    }
    Ok(freed)
}

/// The first transition: the baseline of a new session in, and its `SESSIONS` entry. On
/// failure nothing of it is left in the kernel.
pub fn begin(eng: &mut Engine, s: &Session) -> Result<(), EngineError> {
    if let Some(b) = &s.base {
        eng.install_grant(b.id, &b.kernel)?;
    }
    eng.set_session(s.id, kernel_state(s)).inspect_err(|_| end(eng, s))
}

/// The last transition: the session's kernel state (its entry, grants, processes, cgroup) out.
pub fn end(eng: &mut Engine, s: &Session) {
    eng.end_session(s.id);
    // An exemption the launched program never used must not pass to a later holder of its pid.
    eng.clear_env_exempt(s.root_pid);
    for g in [&s.base, &s.task, &s.orchestrator].into_iter().flatten() {
        eng.remove_grant(g.id, &g.kernel);
    }
    if let Some(id) = s.cgroup {
        let _ = eng.remove_cgroup(id);
        if let Ok(dir) = crate::kernel::cgroup::session_dir(&s.name, s.id) {
            crate::kernel::cgroup::remove(&dir);
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
