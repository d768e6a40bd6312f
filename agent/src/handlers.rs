//! Control-socket operations. Each runs on a blocking thread with the state lock held across
//! the kernel update, so the table and the kernel never disagree.
use std::{path::PathBuf, time::{Duration, Instant}};

use mcpguard_common::{SessionState, MODE_AUDIT, MODE_DENY, MODE_KILL};
use serde_json::{json, Value};

use crate::{
    daemon::Daemon,
    engine::Engine,
    kgrant::{self, GrantError},
    policy::{resolve_policy, ExecRule, GrantSpec, Mode},
    protocol::{ErrorCode, Grant, Op, ProtoError, Register, Request, Response, Revoke},
    state::{GrantRecord, Session, State},
};

/// Credentials of the connected peer (SO_PEERCRED).
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ProtoError {
    ProtoError::new(code, msg)
}

pub fn boot_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME");
    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A process inside any governed session may do nothing here, whatever its uid: the MCP server
/// must not be able to approve itself. Other peers need root or a configured uid/gid.
pub fn authorize(d: &Daemon, peer: &Peer, _mutating: bool) -> Result<(), ProtoError> {
    let Some(pid) = peer.pid else {
        return Err(err(ErrorCode::Unauthorized, "peer pid unknown; refusing"));
    };
    {
        let eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = eng.process_session(pid) {
            return Err(err(
                ErrorCode::Unauthorized,
                format!("peer pid {pid} is inside governed session {s}: governed processes cannot use the control socket"),
            ));
        }
        if let Some(cg) = crate::procs::cgroup_id(pid)
            && let Some(s) = eng.cgroup_session(cg)
        {
            return Err(err(
                ErrorCode::Unauthorized,
                format!("peer pid {pid} is in the cgroup of governed session {s}: governed processes cannot use the control socket"),
            ));
        }
    }
    if peer.uid == 0 || d.cfg.allow_uids.contains(&peer.uid) || d.cfg.allow_gids.contains(&peer.gid) {
        Ok(())
    } else {
        Err(err(ErrorCode::Unauthorized, format!("uid {} is not allowed to use this daemon (allow_uids/allow_gids)", peer.uid)))
    }
}

pub fn handle(d: &Daemon, peer: &Peer, req: Request) -> Response {
    let id = req.id;
    let r = authorize(d, peer, true).and_then(|()| {
        req.op.validate()?;
        match req.op {
            Op::Register(r) => register(d, peer, r),
            Op::Grant(g) => grant(d, g),
            Op::Revoke(r) => revoke(d, r),
            Op::Status {} | Op::List {} => Ok(status(d)),
            Op::Unregister(u) => unregister(d, &u.session),
            Op::Subscribe {} => Err(err(ErrorCode::BadRequest, "subscribe is handled by the connection")),
        }
    });
    match r {
        Ok(v) => Response::ok(id, v),
        Err(e) => e.with_id(id).to_response(),
    }
}

fn kernel_mode(m: Mode) -> u32 {
    match m {
        Mode::Deny => MODE_DENY,
        Mode::Kill => MODE_KILL,
        Mode::Audit => MODE_AUDIT,
    }
}

fn grant_error(e: GrantError) -> ProtoError {
    let code = match &e {
        GrantError::BinaryMissing { .. } | GrantError::NotARegularFile { .. } => ErrorCode::BinaryMissing,
        GrantError::DigestMismatch { .. } | GrantError::ChangedWhileHashing { .. } => ErrorCode::DigestMismatch,
        GrantError::PathMissing { .. } | GrantError::NotAbsolute { .. } => ErrorCode::PolicyError,
    };
    err(code, e.to_string())
}

fn compile(spec: &GrantSpec) -> Result<kgrant::KernelGrant, ProtoError> {
    let exec: Vec<(PathBuf, Option<String>)> = spec.exec.iter().map(|e| (e.path.clone(), e.sha256.clone())).collect();
    kgrant::compile(&exec, &spec.read, &spec.write).map_err(grant_error)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn session_state(s: &Session) -> SessionState {
    let mode = s.task.as_ref().or(s.base.as_ref()).map_or(MODE_DENY, |g| kernel_mode(g.mode));
    SessionState {
        base_grant: s.base.as_ref().map_or(0, |g| g.id),
        task_grant: s.task.as_ref().map_or(0, |g| g.id),
        task_expires_ns: s.task.as_ref().map_or(0, |g| g.expires_boot_ns),
        mode,
        flags: 0,
    }
}

fn register(d: &Daemon, peer: &Peer, r: Register) -> Result<Value, ProtoError> {
    if !valid_name(&r.session) {
        return Err(err(ErrorCode::BadRequest, format!("session name `{}` must be 1-64 of [A-Za-z0-9._-]", r.session)));
    }
    if peer.uid != 0 && peer.pid != Some(r.pid) {
        return Err(err(ErrorCode::Unauthorized, format!("only root may register another process (pid {} is not the caller)", r.pid)));
    }
    if r.cgroup {
        return Err(err(ErrorCode::BadRequest, "cgroup sessions are supported by the kernel engine but not yet by the daemon's register; omit `cgroup`"));
    }
    let Some(cmd) = r.command.first() else {
        return Err(err(ErrorCode::BadRequest, "`command` must name the launched binary"));
    };
    // The launched binary is approved by fingerprint now; the baseline covers its runtime.
    let mut spec = match &r.baseline {
        Some(b) => resolve_policy(b, &d.cfg.policy_dirs)?.0.instantiate(&r.vars)?,
        None => GrantSpec::inline(Vec::new(), Vec::new(), Vec::new(), Mode::Deny, None)?,
    };
    spec.exec.push(ExecRule { path: PathBuf::from(cmd), sha256: None });
    let kg = compile(&spec)?;

    let mut st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(old) = st.sessions.get(&r.session) {
        if !eng.session_processes(old.id).is_empty() {
            return Err(err(ErrorCode::SessionExists, format!("session `{}` exists and has live processes", r.session)));
        }
        let old = st.sessions.remove(&r.session).expect("present");
        drop_session(&mut eng, &old);
    }
    let sid = st.alloc_id();
    let gid = st.alloc_id();
    let base = GrantRecord {
        id: gid,
        task: None,
        policy: spec.policy_name.clone(),
        mode: spec.mode,
        expires_boot_ns: 0,
        tool: None,
        call_id: None,
        kernel: kg,
    };
    let session = Session {
        name: r.session.clone(),
        id: sid,
        root_pid: r.pid,
        command: r.command.clone(),
        uid: peer.uid,
        created_unix: unix_now(),
        cgroup: None,
        base: Some(base),
        task: None,
    };
    let kerr = |e: crate::engine::EngineError| err(ErrorCode::KernelError, e.to_string());
    eng.install_grant(gid, &session.base.as_ref().expect("base").kernel).map_err(kerr)?;
    if let Err(e) = eng.set_session(sid, session_state(&session)) {
        drop_session(&mut eng, &session);
        return Err(kerr(e));
    }
    let governed = match eng.govern_tree(r.pid, sid) {
        Ok(p) => p,
        Err(e) => {
            drop_session(&mut eng, &session);
            return Err(err(ErrorCode::BadRequest, format!("cannot govern pid {}: {e}", r.pid)));
        }
    };
    drop(eng);
    st.sessions.insert(r.session.clone(), session);
    d.save_state(&st);
    log::info!("session {} registered: pid {} ({} process(es)), command {:?}", r.session, r.pid, governed.len(), r.command);
    Ok(json!({"session": r.session, "session_id": sid, "baseline_grant_id": gid, "processes": governed}))
}

/// Removes a session's kernel state (session entry, grants, process entries).
fn drop_session(eng: &mut Engine, s: &Session) {
    eng.remove_session(s.id);
    for p in eng.session_processes(s.id) {
        eng.remove_process(p);
    }
    for g in [&s.base, &s.task].into_iter().flatten() {
        eng.remove_grant(g.id, &g.kernel);
    }
}

fn grant(d: &Daemon, g: Grant) -> Result<Value, ProtoError> {
    let started = Instant::now();
    if !d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).sessions.contains_key(&g.session) {
        return Err(err(ErrorCode::UnknownSession, format!("no session named `{}`", g.session)));
    }
    let spec = if let Some(p) = &g.policy {
        resolve_policy(p, &d.cfg.policy_dirs)?.0.instantiate(&g.vars)?
    } else {
        let i = g.inline.clone().unwrap_or_default();
        GrantSpec::inline(i.exec, i.read, i.write, g.mode.unwrap_or_default(), None)?
    };
    let ttl = g.ttl()?.or(spec.ttl).unwrap_or(d.cfg.default_ttl);
    if ttl > d.cfg.max_ttl {
        return Err(err(
            ErrorCode::TtlTooLong,
            format!("ttl {} exceeds the maximum {}", crate::duration::format_duration(ttl), crate::duration::format_duration(d.cfg.max_ttl)),
        ));
    }
    let mode = g.mode.unwrap_or(spec.mode);
    let kg = compile(&spec)?; // hashes binaries: done before taking the locks

    let mut st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let id = st.alloc_id();
    let Some(session) = st.sessions.get_mut(&g.session) else {
        return Err(err(ErrorCode::UnknownSession, format!("no session named `{}`", g.session)));
    };
    let expires = boot_ns() + u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
    let rec = GrantRecord {
        id,
        task: Some(g.task.clone()),
        policy: spec.policy_name.clone(),
        mode,
        expires_boot_ns: expires,
        tool: g.tool.clone(),
        call_id: g.call_id.clone(),
        kernel: kg,
    };
    let kerr = |e: crate::engine::EngineError| err(ErrorCode::KernelError, e.to_string());
    eng.install_grant(id, &rec.kernel).map_err(kerr)?;
    let old = session.task.replace(rec);
    // One map update: the old task grant stops and the new one starts at the same instant.
    if let Err(e) = eng.set_session(session.id, session_state(session)) {
        let new = std::mem::replace(&mut session.task, old).expect("just set");
        eng.remove_grant(id, &new.kernel);
        return Err(kerr(e));
    }
    d.metrics.grant_apply.observe(started.elapsed().as_secs_f64());
    if let Some(old) = old {
        eng.remove_grant(old.id, &old.kernel);
    }
    drop(eng);
    let out = json!({
        "session": g.session, "task": g.task, "grant_id": id, "policy": spec.policy_name,
        "mode": mode, "ttl_ms": u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        "expires_unix": unix_now() + ttl.as_secs(),
    });
    d.save_state(&st);
    log::info!("grant {id}: session {} task {} policy {} ttl {:?}", g.session, g.task, spec.policy_name, ttl);
    Ok(out)
}

fn revoke(d: &Daemon, r: Revoke) -> Result<Value, ProtoError> {
    let mut st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(session) = st.sessions.get_mut(&r.session) else {
        return Err(err(ErrorCode::UnknownSession, format!("no session named `{}`", r.session)));
    };
    if let (Some(t), Some(cur)) = (&r.task, &session.task)
        && cur.task.as_deref() != Some(t.as_str())
    {
        return Err(err(ErrorCode::BadRequest, format!("session `{}` has no grant for task `{t}`", r.session)));
    }
    let Some(old) = session.task.take() else {
        return Err(err(ErrorCode::BadRequest, format!("session `{}` has no task grant", r.session)));
    };
    let mut eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(e) = eng.set_session(session.id, session_state(session)) {
        session.task = Some(old);
        return Err(err(ErrorCode::KernelError, e.to_string()));
    }
    eng.remove_grant(old.id, &old.kernel);
    drop(eng);
    d.save_state(&st);
    Ok(json!({"session": r.session, "revoked_grant_id": old.id, "task": old.task}))
}

fn unregister(d: &Daemon, name: &str) -> Result<Value, ProtoError> {
    let mut st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(s) = st.sessions.remove(name) else {
        return Err(err(ErrorCode::UnknownSession, format!("no session named `{name}`")));
    };
    drop_session(&mut d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner), &s);
    d.save_state(&st);
    Ok(json!({"session": name, "session_id": s.id}))
}

fn grant_json(g: &GrantRecord, now: u64) -> Value {
    let remaining_ms = (g.expires_boot_ns > 0).then(|| g.expires_boot_ns.saturating_sub(now) / 1_000_000);
    json!({
        "grant_id": g.id, "task": g.task, "policy": g.policy, "mode": g.mode,
        "remaining_ms": remaining_ms, "expired": g.expires_boot_ns > 0 && now >= g.expires_boot_ns,
        "tool": g.tool, "call_id": g.call_id,
        "exec": g.kernel.exec.iter().map(|e| json!({"path": e.path, "sha256": e.sha256})).collect::<Vec<_>>(),
        "paths": g.kernel.path_names.iter().map(|(p, b)| json!({"path": p, "read": b & 1 != 0, "write": b & 2 != 0})).collect::<Vec<_>>(),
    })
}

fn status(d: &Daemon) -> Value {
    let st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = boot_ns();
    let sessions: Vec<Value> = st
        .sessions
        .values()
        .map(|s| {
            json!({
                "name": s.name, "session_id": s.id, "root_pid": s.root_pid, "command": s.command,
                "processes": eng.session_processes(s.id),
                "baseline": s.base.as_ref().map(|g| grant_json(g, now)),
                "task": s.task.as_ref().map(|g| grant_json(g, now)),
            })
        })
        .collect();
    json!({
        "backend": eng.backend().name(),
        "synchronous_deny": eng.backend().synchronous_deny(),
        "deny_mode_effect": if eng.backend().synchronous_deny() { "EPERM" } else { "kill" },
        "adopted_pinned_programs": eng.adopted(),
        "backend_probes": eng.probes(),
        "bpffs_dir": d.cfg.bpffs_dir,
        "sessions": sessions,
    })
}

/// After a (re)start: make sure every session in the table has its state and grants in the
/// kernel (they are already there when the pinned maps were adopted; re-inserting is harmless).
pub fn reconcile(eng: &mut Engine, st: &State) {
    for s in st.sessions.values() {
        for g in [&s.base, &s.task].into_iter().flatten() {
            if let Err(e) = eng.install_grant(g.id, &g.kernel) {
                log::error!("session {}: re-installing grant {}: {e}", s.name, g.id);
            }
        }
        if let Err(e) = eng.set_session(s.id, session_state(s)) {
            log::error!("session {}: restoring state: {e}", s.name);
        }
    }
}

/// Periodic: kernel counters into metrics, grant expirations, sessions whose processes are gone.
pub fn housekeeping(d: &Daemon) {
    let now = boot_ns();
    let mut st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Ok(c) = eng.counters() {
        d.metrics.sync_kernel(&c);
    }
    let mut active = 0;
    let mut seen = d.expired_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for s in st.sessions.values() {
        if let Some(t) = &s.task {
            if now >= t.expires_boot_ns {
                if seen.insert(t.id) {
                    d.metrics.grant_expirations.inc();
                    log::info!("grant {} (session {}, task {:?}) expired", t.id, s.name, t.task);
                }
            } else {
                active += 1;
            }
        }
    }
    d.metrics.active_grants.set(active);
    let dead: Vec<String> = st
        .sessions
        .values()
        .filter(|s| s.created_unix + 2 <= unix_now() && eng.session_processes(s.id).is_empty())
        .map(|s| s.name.clone())
        .collect();
    for name in &dead {
        if let Some(s) = st.sessions.remove(name) {
            drop_session(&mut eng, &s);
            log::info!("session {name} ended: no processes left");
        }
    }
    d.metrics.active_sessions.set(i64::try_from(st.sessions.len()).unwrap_or(i64::MAX));
    if !dead.is_empty() {
        drop(eng);
        d.save_state(&st);
    }
    let _ = Duration::ZERO;
}
