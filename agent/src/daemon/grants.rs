//! `grant` and `revoke`: a task or call grant resolved (policy, inline, variables), composed
//! with what the session already runs under (a call within its task; a delegated session within
//! its parent), compiled and swapped into the kernel in one step, and recorded.

use std::time::Instant;

use serde_json::{Value, json};

use crate::{
    daemon::handlers::{boot_ns, compile, err, unix_now},
    daemon::protocol::{ErrorCode, Grant, ProtoError, Revoke},
    daemon::server::Daemon,
    daemon::session::{self, Grants, RevokeError},
    daemon::state::{GrantRecord, State},
    grant::kgrant,
    grant::policy::{GrantSpec, resolve_policy},
};

/// What a session runs under when a per-call grant (`call`) is composed with an orchestrator's
/// task grant (`task`): the intersection, so a call never exceeds the task it runs in.
pub fn compose(task: Option<&GrantSpec>, call: &GrantSpec) -> GrantSpec {
    task.map_or_else(|| call.clone(), |t| t.intersect(call))
}

/// The spec of a held record, needed for composition (absent only in state files written
/// before composition existed).
fn held_spec(r: &GrantRecord) -> Result<&GrantSpec, ProtoError> {
    r.spec.as_ref().ok_or_else(|| {
        err(ErrorCode::BadRequest, format!("grant {} predates per-call composition; re-issue the task grant", r.id))
    })
}

/// The session's grants now (a copy, composed with and compiled without the locks).
fn current_grants(d: &Daemon, session: &str) -> Result<Grants, ProtoError> {
    let st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    st.sessions()
        .get(session)
        .map(Grants::of)
        .ok_or_else(|| err(ErrorCode::UnknownSession, format!("no session named `{session}`")))
}

/// A grant compiled and ready to go in: its record, for a task grant issued while a call is in
/// force the narrowed call (that call's compiled intersection with the task, its expiry, its
/// spec), and the policy name it is reported under.
struct Prepared {
    rec: GrantRecord,
    narrowed: Option<(kgrant::KernelGrant, u64, GrantSpec)>,
    policy: String,
}

/// A record for `g` (id assigned at install) enforcing `effective`, remembering `own` (the grant as
/// requested) for later composition.
fn record(g: &Grant, own: &GrantSpec, kernel: kgrant::KernelGrant, expires: u64, effective: &GrantSpec) -> GrantRecord {
    GrantRecord {
        id: 0,
        task: Some(g.task.clone()),
        policy: effective.policy_name.clone(),
        mode: effective.mode,
        expires_boot_ns: expires,
        tool: g.tool.clone(),
        call_id: g.call_id.clone(),
        kernel,
        spec: Some(own.clone()),
        labels: effective.labels.clone(),
        audience: effective.audience.clone(),
        own_expires_boot_ns: 0,
    }
}

/// Composition: a per-call grant (`call_id` set) runs inside the orchestrator's task grant,
/// and a task grant issued while a call is in force narrows that call. Either way what goes
/// into the kernel is the intersection; it is computed and compiled (binaries hashed) without
/// the locks, and returned with the state lock held only if the grants it was built from are
/// still the ones in force (else computed again, three times at most).
fn prepare_grant<'a>(
    d: &'a Daemon,
    g: &Grant,
    spec: &GrantSpec,
    ttl_ns: u64,
) -> Result<(std::sync::MutexGuard<'a, State>, Prepared), ProtoError> {
    let per_call = g.call_id.is_some();
    let parent = d
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .session(&g.session)
        .and_then(|s| s.parent.clone());
    // A delegated session's grants go in within its parent's (delegation.rs); identity without.
    let bound = |eff: GrantSpec, expires: u64| -> Result<(GrantSpec, u64), ProtoError> {
        match &parent {
            None => Ok((eff, expires)),
            Some(p) => {
                let st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                crate::daemon::delegation::within_parent(&st, p, &eff, expires, boot_ns())
            }
        }
    };
    let lineage = || {
        crate::daemon::delegation::lineage(
            &d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            &g.session,
        )
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let cur = current_grants(d, &g.session)?;
        let ancestors = lineage();
        let own_expires = boot_ns().saturating_add(ttl_ns);
        let mut prepared = match (per_call, cur.task_around_calls(), cur.call_in_force()) {
            // A call inside the orchestrator's task: call ∩ task, expiring with the earlier.
            (true, Some(task), _) => {
                let (eff, expires) =
                    bound(compose(Some(held_spec(task)?), spec), own_expires.min(task.expires_boot_ns))?;
                let rec = record(g, spec, compile(&eff)?, expires, &eff);
                Prepared { rec, narrowed: None, policy: eff.policy_name }
            }
            // A task grant while a call is in force: held aside; the call narrows (never widens).
            (false, _, Some(call)) => {
                let (eff, expires) =
                    bound(compose(Some(spec), held_spec(call)?), own_expires.min(call.expires_boot_ns))?;
                let narrowed = (compile(&eff)?, expires, eff.clone());
                let (task_eff, task_expires) = bound(spec.clone(), own_expires)?;
                let rec = record(g, spec, compile(&task_eff)?, task_expires, &task_eff);
                Prepared { rec, narrowed: Some(narrowed), policy: eff.policy_name }
            }
            // Nothing to compose with (a delegated session: within its parent's).
            _ => {
                let (eff, expires) = bound(spec.clone(), own_expires)?;
                Prepared {
                    rec: record(g, spec, compile(&eff)?, expires, &eff),
                    narrowed: None,
                    policy: eff.policy_name,
                }
            }
        };
        if parent.is_some() {
            prepared.rec.own_expires_boot_ns = own_expires;
        }
        // Install only if the grants this was composed from are still the ones in force.
        let st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.session(&g.session).map(Grants::ids_of) == Some(cur.ids())
            && crate::daemon::delegation::lineage(&st, &g.session) == ancestors
        {
            return Ok((st, prepared));
        }
        drop(st);
        if attempts >= 3 {
            return Err(err(ErrorCode::Internal, "the session's grants kept changing during the request; retry"));
        }
    }
}

/// The grant `g` asks for, resolved (policy or inline, its mode and TTL) and checked against the
/// daemon's maximum TTL and the session's write ceiling.
fn grant_spec(d: &Daemon, g: &Grant) -> Result<(GrantSpec, std::time::Duration), ProtoError> {
    if !d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).sessions().contains_key(&g.session) {
        return Err(err(ErrorCode::UnknownSession, format!("no session named `{}`", g.session)));
    }
    let spec = if let Some(p) = &g.policy {
        resolve_policy(p, &d.cfg.policy_dirs)?.0.instantiate(&g.vars)?
    } else {
        let i = g.inline.clone().unwrap_or_default();
        GrantSpec::inline(i.exec, i.read, i.write, g.mode.unwrap_or_default(), None)?.with_net(&i.connect, &i.listen)?
    };
    let ttl = g.ttl()?.or(spec.ttl).unwrap_or(d.cfg.default_ttl);
    if ttl > d.cfg.max_ttl {
        return Err(err(
            ErrorCode::TtlTooLong,
            format!(
                "ttl {} exceeds the maximum {}",
                crate::grant::duration::format_duration(ttl),
                crate::grant::duration::format_duration(d.cfg.max_ttl)
            ),
        ));
    }
    let mode = g.mode.unwrap_or(spec.mode);
    let mut spec = spec;
    spec.mode = mode;
    crate::daemon::scope::check(d.cfg.environment.as_deref(), &d.cfg.labels, &spec)?;
    // A write outside the ceiling the launcher applied could open existing files but never
    // create, remove or rename there: refuse it now, with the fix, rather than let the task fail.
    if let Some(ceiling) = d
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .sessions()
        .get(&g.session)
        .and_then(|s| s.write_ceiling.clone())
        && let Some(w) = spec.write.iter().find(|w| !ceiling.iter().any(|c| w.starts_with(c)))
    {
        return Err(err(
            ErrorCode::OutsideCeiling,
            format!(
                "session `{}` was launched with the write ceiling [{}]; `{}` is outside it (relaunch with --write-ceiling covering it)",
                g.session,
                ceiling.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "),
                w.display()
            ),
        ));
    }
    Ok((spec, ttl))
}

pub(crate) fn grant(d: &Daemon, g: Grant) -> Result<Value, ProtoError> {
    let started = Instant::now();
    let (spec, ttl) = grant_spec(d, &g)?;
    let per_call = g.call_id.is_some();
    let ttl_ns = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
    let (mut st, prepared) = prepare_grant(d, &g, &spec, ttl_ns)?;
    let mut eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let id = st.alloc_id();
    let call_rebuild_id = prepared.narrowed.as_ref().map(|_| st.alloc_id());
    let Some(session) = st.session_mut(&g.session) else {
        return Err(err(ErrorCode::UnknownSession, format!("no session named `{}`", g.session)));
    };
    let rec = GrantRecord { id, ..prepared.rec };
    let cur = Grants::of(session);
    let next = if per_call {
        session::after_call_grant(&cur, rec.clone())
    } else {
        // The call in force continues under call ∩ new task, as a record of its own.
        let narrowed = prepared.narrowed.zip(call_rebuild_id).zip(cur.call_in_force()).map(
            |(((kernel, expires, eff), cid), call)| GrantRecord {
                id: cid,
                policy: eff.policy_name,
                mode: eff.mode,
                expires_boot_ns: expires,
                kernel,
                ..call.clone()
            },
        );
        session::after_task_grant(&cur, rec.clone(), narrowed)
    };
    session::transition(&mut eng, session, next).map_err(|e| err(ErrorCode::KernelError, e.to_string()))?;
    let composed = session.orchestrator.as_ref().map(|o| o.task.clone());
    // The sessions delegated from this one, narrowed in the same step.
    crate::daemon::delegation::propagate(&mut st, &mut eng, &g.session, boot_ns())?;
    d.metrics.grant_apply.observe(started.elapsed().as_secs_f64());
    let effective_policy = prepared.policy;
    drop(eng);
    drop(st);
    let out = json!({
        "session": g.session, "task": g.task, "grant_id": id, "policy": effective_policy,
        "mode": rec.mode, "ttl_ms": u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        "expires_unix": unix_now() + ttl.as_secs(),
        "composed_with_task": composed,
    });
    log::info!("grant {id}: session {} task {} policy {} ttl {:?}", g.session, g.task, effective_policy, ttl);
    Ok(out)
}

pub(crate) fn revoke(d: &Daemon, r: Revoke) -> Result<Value, ProtoError> {
    let mut st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(session) = st.session_mut(&r.session) else {
        return Err(err(ErrorCode::UnknownSession, format!("no session named `{}`", r.session)));
    };
    let next = session::after_revoke(&Grants::of(session), r.task.as_deref()).map_err(|e| match e {
        RevokeError::NoGrantForTask(t) => {
            err(ErrorCode::BadRequest, format!("session `{}` has no grant for task `{t}`", r.session))
        }
        RevokeError::NoTaskGrant => err(ErrorCode::BadRequest, format!("session `{}` has no task grant", r.session)),
    })?;
    let mut eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let freed = session::transition(&mut eng, session, next).map_err(|e| err(ErrorCode::KernelError, e.to_string()))?;
    let restored = session.task.as_ref().and_then(|g| g.task.clone());
    crate::daemon::delegation::propagate(&mut st, &mut eng, &r.session, boot_ns())?;
    drop(eng);
    drop(st);
    let (id, task) = freed.first().map_or((0, None), |g| (g.id, g.task.clone()));
    Ok(json!({"session": r.session, "revoked_grant_id": id, "task": task, "restored_task": restored}))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::grant::policy::{ExecRule, Mode};

    fn spec(name: &str, exec: &[&str], read: &[&str], mode: Mode) -> GrantSpec {
        let mut s = GrantSpec::inline(
            exec.iter().map(|p| ExecRule { path: PathBuf::from(p), sha256: None, ..Default::default() }).collect(),
            read.iter().map(PathBuf::from).collect(),
            Vec::new(),
            mode,
            None,
        )
        .unwrap();
        s.policy_name = name.into();
        s
    }

    #[test]
    fn a_call_never_exceeds_its_task() {
        let task = spec("task", &["/usr/bin/git", "/usr/bin/cat"], &["/srv/repos", "/etc/gitconfig"], Mode::Deny);
        let call = spec("call", &["/usr/bin/git", "/usr/bin/curl"], &["/srv/repos/app", "/home/u"], Mode::Kill);
        let eff = compose(Some(&task), &call);
        assert_eq!(eff.exec.iter().map(|e| e.path.to_str().unwrap()).collect::<Vec<_>>(), ["/usr/bin/git"]);
        assert_eq!(eff.read, [PathBuf::from("/srv/repos/app")]);
        assert_eq!(eff.mode, Mode::Kill);
        assert_eq!(eff.policy_name, "task&call");
        assert_eq!(compose(None, &call), call);
    }

    #[test]
    fn a_composed_grant_records_the_effective_audience() {
        let mut task = spec("task", &["/usr/bin/git"], &["/srv/repos"], Mode::Deny);
        task.audience = vec!["https://git.example".into()];
        let call = spec("call", &["/usr/bin/git"], &["/srv/repos/app"], Mode::Deny);
        let g: Grant = serde_json::from_value(serde_json::json!({
            "session": "s", "task": "T", "call_id": "1", "tool": "git_status", "policy": "call"
        }))
        .unwrap();
        let eff = compose(Some(&task), &call);
        let r = record(&g, &call, kgrant::KernelGrant::default(), 0, &eff);
        assert_eq!(r.audience, ["https://git.example"], "the call names none: the task's audience holds");
        let mut inner = call.clone();
        inner.audience = vec!["https://other.example".into()];
        let r = record(&g, &inner, kgrant::KernelGrant::default(), 0, &compose(Some(&task), &inner));
        assert_eq!(r.audience, ["https://other.example"], "the inner grant's wins");
    }
}
