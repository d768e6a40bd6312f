//! Control-socket operations. Each holds the state lock across the kernel update, so the table
//! and the kernel never disagree while the daemon runs. Short operations ([`quick`]) run on the
//! connection's task itself (no hop to a blocking thread and back before the kernel update); the
//! table is saved afterwards by the group-committing writer (`state::Persister`), and the
//! connection answers once that save is on disk (see `state` for why that order is crash safe).
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{
    daemon::protocol::{ErrorCode, Op, ProtoError, Request, Response},
    daemon::server::Daemon,
    daemon::session,
    daemon::state::Session,
    grant::kgrant::{self, GrantError},
    grant::policy::GrantSpec,
    kernel::engine::Engine,
};

pub use crate::daemon::grants::compose;
use crate::daemon::{
    grants::{grant, revoke},
    register::register,
};

/// Credentials of the connected peer (SO_PEERCRED).
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
}

pub(crate) fn err(code: ErrorCode, msg: impl Into<String>) -> ProtoError {
    ProtoError::new(code, msg)
}

pub fn boot_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME");
    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A process inside any governed session may do nothing here, whatever its uid: the MCP server
/// must not be able to approve itself. Other peers need root or a configured uid/gid.
pub fn authorize(d: &Daemon, peer: &Peer, _mutating: bool) -> Result<(), ProtoError> {
    let Some(pid) = peer.pid else {
        return Err(err(ErrorCode::Unauthorized, "peer pid unknown; refusing"));
    };
    // Read from /proc before taking the engine lock (the cgroup v2 mount point is cached).
    let cgroup = crate::kernel::cgroup::process_cgroup_id(pid);
    {
        let eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = eng.process_session(pid) {
            return Err(err(
                ErrorCode::Unauthorized,
                format!(
                    "peer pid {pid} is inside governed session {s}: governed processes cannot use the control socket"
                ),
            ));
        }
        if let Some(cg) = cgroup
            && let Some(s) = eng.cgroup_session(cg)
        {
            return Err(err(
                ErrorCode::Unauthorized,
                format!(
                    "peer pid {pid} is in the cgroup of governed session {s}: governed processes cannot use the control socket"
                ),
            ));
        }
    }
    if peer.uid == 0 || d.cfg.allow_uids.contains(&peer.uid) || d.cfg.allow_gids.contains(&peer.gid) {
        Ok(())
    } else {
        Err(err(
            ErrorCode::Unauthorized,
            format!("uid {} is not allowed to use this daemon (allow_uids/allow_gids)", peer.uid),
        ))
    }
}

/// True for requests short enough to run on the connection's task: no binary to hash, no
/// policy file to read, no /proc scan, no tracepoint to attach or detach. Everything else goes
/// to the blocking pool.
#[must_use]
pub fn quick(req: &Request) -> bool {
    match &req.op {
        Op::Revoke(_) | Op::Status {} | Op::List {} | Op::Jwks {} => true,
        Op::Grant(g) => g.policy.is_none() && g.inline.as_ref().is_none_or(|i| i.exec.is_empty()),
        Op::Register(_) | Op::Unregister(_) | Op::Subscribe(_) | Op::LearnStart(_) | Op::LearnFetch(_) => false,
        Op::LearnCall(_) => true,
    }
}

/// True when a successful `op` changed the session table (it must be saved before the answer).
#[must_use]
pub fn mutates(op: &Op) -> bool {
    matches!(op, Op::Register(_) | Op::Grant(_) | Op::Revoke(_) | Op::Unregister(_))
}

pub fn handle(d: &Daemon, peer: &Peer, req: Request) -> Response {
    let id = req.id;
    let mutating = mutates(&req.op);
    let r = authorize(d, peer, true).and_then(|()| {
        req.op.validate()?;
        match req.op {
            Op::Register(r) => register(d, peer, r),
            Op::Grant(g) => grant(d, g),
            Op::Revoke(r) => revoke(d, r),
            Op::Status {} | Op::List {} => Ok(crate::daemon::status::status(d)),
            Op::Jwks {} => Ok(d.tokens.jwks()),
            Op::Unregister(u) => unregister(d, &u.session),
            Op::LearnStart(l) => crate::daemon::learn::start(d, &l.session, l.vars),
            Op::LearnFetch(l) => crate::daemon::learn::fetch(d, &l.session, l.finish),
            Op::LearnCall(c) => crate::daemon::learn::call(d, c),
            Op::Subscribe(_) => Err(err(ErrorCode::BadRequest, "subscribe is handled by the connection")),
        }
    });
    match r {
        Ok(v) => {
            if mutating {
                sync_tokens(d);
            }
            Response::ok(id, v)
        }
        Err(e) => e.with_id(id).to_response(),
    }
}

/// Token files in line with the session table (before the answer: a task switch has its new
/// token by the time the grant request returns).
fn sync_tokens(d: &Daemon) {
    let st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    d.tokens.sync(&st, boot_ns(), unix_now());
}

pub(crate) fn grant_error(e: GrantError) -> ProtoError {
    let code = match &e {
        GrantError::BinaryMissing { .. } | GrantError::NotARegularFile { .. } => ErrorCode::BinaryMissing,
        GrantError::DigestMismatch { .. } | GrantError::ChangedWhileHashing { .. } => ErrorCode::DigestMismatch,
        GrantError::PathMissing { .. }
        | GrantError::NotAbsolute { .. }
        | GrantError::Net { .. }
        | GrantError::UnixSocket { .. }
        | GrantError::Cmdline { .. } => ErrorCode::PolicyError,
    };
    err(code, e.to_string())
}

pub(crate) fn compile(spec: &GrantSpec) -> Result<kgrant::KernelGrant, ProtoError> {
    let exec: Vec<(PathBuf, Option<String>)> = spec.exec.iter().map(|e| (e.path.clone(), e.sha256.clone())).collect();
    let mut g = kgrant::compile(&exec, &spec.read, &spec.write).map_err(grant_error)?;
    kgrant::add_cmdline(&mut g, &spec.exec).map_err(grant_error)?;
    kgrant::add_paths(&mut g, &spec.metadata, mcpguard_common::ACCESS_WRITE | mcpguard_common::ACCESS_METADATA)
        .map_err(grant_error)?;
    kgrant::compile_net(&mut g, &spec.connect, &spec.listen, &mut crate::grant::net::system_resolver)
        .map_err(grant_error)?;
    Ok(g)
}

/// A session is over when none of its processes is left (tree and, if any, cgroup).
pub(crate) fn session_alive(eng: &Engine, s: &Session) -> bool {
    !eng.session_processes(s.id).is_empty()
        || (s.cgroup.is_some()
            && crate::kernel::cgroup::session_dir(&s.name, s.id).is_ok_and(|d| !crate::kernel::cgroup::is_empty(&d)))
}

fn unregister(d: &Daemon, name: &str) -> Result<Value, ProtoError> {
    let mut st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(s) = st.remove_session(name) else {
        return Err(err(ErrorCode::UnknownSession, format!("no session named `{name}`")));
    };
    let mut eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    session::end(&mut eng, &s);
    // Ending a parent ends its children's grants.
    crate::daemon::delegation::propagate(&mut st, &mut eng, name, boot_ns())?;
    Ok(json!({"session": name, "session_id": s.id}))
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
    for s in st.sessions().values() {
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
        .sessions()
        .values()
        .filter(|s| s.created_unix + 2 <= unix_now() && !session_alive(&eng, s))
        .map(|s| s.name.clone())
        .collect();
    for name in &dead {
        if let Some(s) = st.remove_session(name) {
            session::end(&mut eng, &s);
            log::info!("session {name} ended: no processes left");
        }
        if let Err(e) = crate::daemon::delegation::propagate(&mut st, &mut eng, name, now) {
            log::error!("sessions delegated from {name}: {}", e.message);
        }
    }
    d.metrics.active_sessions.set(i64::try_from(st.sessions().len()).unwrap_or(i64::MAX));
    if !dead.is_empty() {
        d.persist.request();
    }
    drop(eng);
    // Expired grants lose their token, ended sessions their file, long grants a fresh token.
    d.tokens.rotate(unix_now());
    d.tokens.sync(&st, now, unix_now());
}
