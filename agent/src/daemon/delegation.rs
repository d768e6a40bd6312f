//! Delegation (issue 15): a session registered with a parent runs, at every instant, under its
//! own task grant intersected with its parent's effective grant, expiring no later than it. The
//! intersection is what goes into the kernel, so a child never exceeds or outlives its parent
//! there; it is recomputed under the same locks as the parent's change (grant, revoke, end), so
//! there is no instant with the parent narrowed and the child not. A parent with no grant in
//! force leaves its children only their baselines. Depth is bounded ([`MAX_DEPTH`]); cycles are
//! refused at registration.
use crate::{
    daemon::{
        handlers::compile,
        protocol::{ErrorCode, ProtoError},
        session::{self, Grants},
        state::{GrantRecord, State},
    },
    grant::policy::GrantSpec,
    kernel::engine::Engine,
};

/// Ancestors a session may have.
pub const MAX_DEPTH: usize = 4;

/// The sessions that delegated to `name`, nearest first (bounded by [`MAX_DEPTH`]; a cycle
/// ends it), without allocating: the audit line of every event of a delegated session has it.
pub fn ancestors<'a>(st: &'a State, name: &str) -> impl Iterator<Item = &'a str> + use<'a> {
    let mut seen: [&str; MAX_DEPTH] = [""; MAX_DEPTH];
    let mut n = 0;
    let mut cur = st.session(name).and_then(|s| s.parent.as_deref());
    std::iter::from_fn(move || {
        let p = cur.take()?;
        if n >= MAX_DEPTH || seen[..n].contains(&p) {
            return None;
        }
        seen[n] = p;
        n += 1;
        cur = st.session(p).and_then(|s| s.parent.as_deref());
        Some(p)
    })
}

/// [`ancestors`], owned.
#[must_use]
pub fn chain(st: &State, name: &str) -> Vec<String> {
    ancestors(st, name).map(str::to_owned).collect()
}

/// `session` may be registered under `parent`: it exists, is not `session` or one of its
/// descendants (no cycle), and the chain stays within [`MAX_DEPTH`].
pub fn check_parent(st: &State, session: &str, parent: &str) -> Result<(), ProtoError> {
    if st.session(parent).is_none() {
        return Err(ProtoError::new(ErrorCode::UnknownSession, format!("parent session `{parent}` does not exist")));
    }
    let mut ancestors = vec![parent.to_string()];
    ancestors.extend(chain(st, parent));
    if ancestors.iter().any(|a| a == session) {
        return Err(ProtoError::new(
            ErrorCode::BadRequest,
            format!("`{session}` under `{parent}` would be a delegation cycle ({})", ancestors.join(" <- ")),
        ));
    }
    if ancestors.len() > MAX_DEPTH {
        return Err(ProtoError::new(
            ErrorCode::BadRequest,
            format!("delegation deeper than {MAX_DEPTH} ({} <- {})", session, ancestors.join(" <- ")),
        ));
    }
    Ok(())
}

/// What `name` may do beyond its baseline now, and until when: its own grant in force (a call
/// composed with its task), intersected with its parent's effective grant. `None`: nothing (no
/// grant, an expired one, or a parent with none).
#[must_use]
pub fn effective(st: &State, name: &str, now_boot_ns: u64) -> Option<(GrantSpec, u64)> {
    effective_at(st, name, now_boot_ns, 0)
}

fn effective_at(st: &State, name: &str, now: u64, depth: usize) -> Option<(GrantSpec, u64)> {
    let s = st.session(name)?;
    let own = match Grants::of(s) {
        Grants::Baseline => return None,
        Grants::Task(r) | Grants::Call(r) => (r.spec.clone()?, r.expires_boot_ns),
        Grants::CallInTask { call, task } => {
            (crate::daemon::handlers::compose(task.spec.as_ref(), call.spec.as_ref()?), call.expires_boot_ns)
        }
    };
    if own.1 <= now {
        return None;
    }
    match &s.parent {
        None => Some(own),
        Some(_) if depth >= MAX_DEPTH => None,
        Some(p) => {
            let (ps, pe) = effective_at(st, p, now, depth + 1)?;
            Some((ps.intersect(&own.0), own.1.min(pe)))
        }
    }
}

/// The grant ids in force of each ancestor of `name`, nearest first: a grant composed with them
/// goes in only if they are still the ones in force.
#[must_use]
pub fn lineage(st: &State, name: &str) -> Vec<Vec<u64>> {
    chain(st, name).iter().filter_map(|p| st.session(p)).map(Grants::ids_of).collect()
}

/// The own grant a delegated session asked for, composed with its parent's effective grant
/// (what goes into the kernel) and the earlier expiry. Refused when the parent has none.
pub fn within_parent(
    st: &State,
    parent: &str,
    own: &GrantSpec,
    own_expires: u64,
    now: u64,
) -> Result<(GrantSpec, u64), ProtoError> {
    let (ps, pe) = effective(st, parent, now).ok_or_else(|| {
        ProtoError::new(
            ErrorCode::BadRequest,
            format!(
                "parent session `{parent}` has no grant in force: a delegated session gets nothing beyond its baseline"
            ),
        )
    })?;
    Ok((ps.intersect(own), own_expires.min(pe)))
}

/// Re-derives every session delegated from `parent` (and theirs, recursively) from its own
/// task grant and its parent's effective grant, with the locks the parent's change holds.
pub fn propagate(st: &mut State, eng: &mut Engine, parent: &str, now: u64) -> Result<(), ProtoError> {
    propagate_at(st, eng, parent, now, 0)
}

fn propagate_at(st: &mut State, eng: &mut Engine, parent: &str, now: u64, depth: usize) -> Result<(), ProtoError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let children: Vec<String> =
        st.sessions().values().filter(|s| s.parent.as_deref() == Some(parent)).map(|s| s.name.clone()).collect();
    for c in children {
        let cur = Grants::of(st.session(&c).expect("listed"));
        let Some((ps, pe)) = effective(st, parent, now) else {
            // The parent has nothing in force: the child keeps only its baseline.
            let s = st.session_mut(&c).expect("listed");
            session::transition(eng, s, Grants::Baseline)
                .map_err(|e| ProtoError::new(ErrorCode::KernelError, e.to_string()))?;
            propagate_at(st, eng, &c, now, depth + 1)?;
            continue;
        };
        // Each record again from what it asked for, within the parent's grant.
        let mut rebuild = |r: &GrantRecord, own: GrantSpec, own_exp: u64| -> Result<GrantRecord, ProtoError> {
            let eff = ps.intersect(&own);
            Ok(GrantRecord {
                id: st.alloc_id(),
                policy: eff.policy_name.clone(),
                mode: eff.mode,
                expires_boot_ns: own_exp.min(pe),
                own_expires_boot_ns: own_exp,
                kernel: compile(&eff)?,
                labels: eff.labels.clone(),
                audience: eff.audience.clone(),
                ..r.clone()
            })
        };
        let own_exp =
            |r: &GrantRecord| if r.own_expires_boot_ns > 0 { r.own_expires_boot_ns } else { r.expires_boot_ns };
        let next = match &cur {
            Grants::Baseline => continue,
            Grants::Task(r) | Grants::Call(r) => match r.spec.clone() {
                Some(own) => {
                    let rec = rebuild(r, own, own_exp(r))?;
                    if matches!(cur, Grants::Task(_)) { Grants::Task(rec) } else { Grants::Call(rec) }
                }
                None => Grants::Baseline,
            },
            Grants::CallInTask { call, task } => match (task.spec.clone(), call.spec.clone()) {
                (Some(t), Some(c)) => {
                    let composed = crate::daemon::handlers::compose(Some(&t), &c);
                    let task = rebuild(task, t, own_exp(task))?;
                    let call = rebuild(call, composed, own_exp(call).min(own_exp(&task)))?;
                    Grants::CallInTask { call, task }
                }
                _ => Grants::Baseline,
            },
        };
        let s = st.session_mut(&c).expect("listed");
        session::transition(eng, s, next).map_err(|e| ProtoError::new(ErrorCode::KernelError, e.to_string()))?;
        propagate_at(st, eng, &c, now, depth + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::{Ended, Session};

    fn session(name: &str, id: u64, parent: Option<&str>) -> Session {
        Session {
            name: name.into(),
            id,
            root_pid: 1,
            command: vec!["/bin/x".into()],
            uid: 0,
            created_unix: 0,
            cgroup: None,
            sealed: false,
            write_ceiling: None,
            base: None,
            task: None,
            orchestrator: None,
            binary_sha256: None,
            parent: parent.map(Into::into),
            ended: Ended::default(),
        }
    }

    #[test]
    fn chains_are_bounded_and_cycles_refused() {
        let mut st = State::default();
        st.insert_session(session("a", 1, None));
        st.insert_session(session("b", 2, Some("a")));
        st.insert_session(session("c", 3, Some("b")));
        st.insert_session(session("d", 4, Some("c")));
        assert_eq!(chain(&st, "d"), ["c", "b", "a"]);
        assert!(check_parent(&st, "e", "d").is_ok(), "depth 4");
        st.insert_session(session("e", 5, Some("d")));
        let e = check_parent(&st, "f", "e").unwrap_err();
        assert!(e.message.contains("deeper than 4"), "{}", e.message);
        // `a` registering again under its own descendant would close a loop.
        let e = check_parent(&st, "a", "c").unwrap_err();
        assert!(e.message.contains("cycle") && e.message.contains("c <- b <- a"), "{}", e.message);
        assert_eq!(check_parent(&st, "x", "nope").unwrap_err().code, ErrorCode::UnknownSession);
        // A loop in a damaged table cannot make the walk run forever.
        st.insert_session(session("a", 1, Some("c")));
        assert!(chain(&st, "a").len() <= MAX_DEPTH);
        // Nothing in force: no effective grant anywhere.
        assert!(effective(&st, "d", 0).is_none());
    }
}
