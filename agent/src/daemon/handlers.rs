//! Control-socket operations. Each holds the state lock across the kernel update, so the table
//! and the kernel never disagree while the daemon runs. Short operations ([`quick`]) run on the
//! connection's task itself (no hop to a blocking thread and back before the kernel update); the
//! table is saved afterwards by the group-committing writer (`state::Persister`), and the
//! connection answers once that save is on disk (see `state` for why that order is crash safe).
use std::{path::PathBuf, time::Instant};

use serde_json::{Value, json};

use crate::{
    daemon::protocol::{ErrorCode, Grant, Op, ProtoError, Register, Request, Response, Revoke},
    daemon::server::Daemon,
    daemon::session::{self, Grants, RevokeError},
    daemon::state::{GrantRecord, Session, State},
    grant::kgrant::{self, GrantError},
    grant::policy::{ExecRule, GrantSpec, Mode, resolve_policy},
    kernel::engine::Engine,
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

fn grant_error(e: GrantError) -> ProtoError {
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

/// `pid`'s parent and real uid, from `/proc/<pid>/status`.
fn parent_and_uid(pid: u32) -> Option<(u32, u32)> {
    parse_parent_and_uid(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_parent_and_uid(status: &str) -> Option<(u32, u32)> {
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("PPid:")?, field("Uid:")?))
}

/// A non-root peer may register its own direct child of its own uid (the MCP proxy governs the
/// server it forks, while itself staying outside the session). The child cannot be recycled
/// under us: its parent (the peer) has not reaped it.
fn own_child(peer: &Peer, pid: u32) -> bool {
    peer.pid.is_some_and(|me| parent_and_uid(pid) == Some((me, peer.uid)))
}

/// What a registration must satisfy before anything changes: a valid name, a caller allowed
/// to register that process, a process not governed yet, and consistent launcher options.
fn check_register(d: &Daemon, peer: &Peer, r: &Register) -> Result<(), ProtoError> {
    if peer.uid != 0 && peer.pid != Some(r.pid) && !own_child(peer, r.pid) {
        return Err(err(
            ErrorCode::Unauthorized,
            format!(
                "only root may register another process (pid {} is neither the caller nor its direct child of the same uid)",
                r.pid
            ),
        ));
    }
    if let Some(s) = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner).process_session(r.pid) {
        return Err(err(ErrorCode::BadRequest, format!("pid {} is already governed by session {s}", r.pid)));
    }
    if r.command.is_empty() {
        return Err(err(ErrorCode::BadRequest, "`command` must name the launched binary"));
    }
    if r.signal_notifier.is_some() && !r.sealed {
        return Err(err(ErrorCode::BadRequest, "`signal_notifier` needs `sealed` (a launched, filtered session)"));
    }
    if r.sealed && r.cgroup {
        return Err(err(
            ErrorCode::BadRequest,
            "`sealed` and `cgroup` exclude each other: a process moved into the cgroup later carries no seccomp filter",
        ));
    }
    Ok(())
}

/// The session's baseline (the policy named, plus the launched binary with any command line)
/// and its write ceiling (the baseline's write paths and what the launcher asked for).
fn baseline_and_ceiling(d: &Daemon, r: &Register) -> Result<(GrantSpec, Option<Vec<PathBuf>>), ProtoError> {
    // The launched binary is approved by fingerprint now; the baseline covers its runtime.
    let mut spec = match &r.baseline {
        Some(b) => resolve_policy(b, &d.cfg.policy_dirs)?.0.instantiate(&r.vars)?,
        None => GrantSpec::inline(Vec::new(), Vec::new(), Vec::new(), Mode::Deny, None)?,
    };
    // Any command line: the client's configuration is the session's to give (task grants confine
    // what the server runs later).
    spec.exec.push(ExecRule { path: PathBuf::from(&r.command[0]), inline_code: true, ..Default::default() });
    // The ceiling covers whatever the baseline may write, whatever the launcher asked for.
    // Roots are kept resolved (symlinks), as grant paths are, so that the containment check of
    // later grants compares like with like; Landlock resolves them the same way.
    let write_ceiling = r.write_ceiling.as_ref().map(|extra| {
        let mut c: Vec<PathBuf> = Vec::new();
        for p in spec.write.iter().chain(extra) {
            let p = if p.is_absolute() { std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()) } else { p.clone() };
            if !c.contains(&p) {
                c.push(p);
            }
        }
        c
    });
    if let Some(c) = &write_ceiling
        && let Some(bad) =
            c.iter().find(|p| !p.is_absolute() || p.components().any(|x| x == std::path::Component::ParentDir))
    {
        return Err(err(
            ErrorCode::BadRequest,
            format!("write ceiling `{}` must be an absolute path without `..`", bad.display()),
        ));
    }
    Ok((spec, write_ceiling))
}

/// Makes `session` a cgroup session and moves `pid` in; the cgroup is governed before the
/// process moves in (no instant without a session). On failure the session is ended.
fn join_cgroup(eng: &mut Engine, session: &mut Session, pid: u32) -> Result<(), ProtoError> {
    // The cgroup is governed before the process moves in: no instant without a session.
    let cg = crate::kernel::cgroup::create(&session.name, session.id)
        .and_then(|(dir, id)| {
            eng.add_cgroup(id, session.id).map(|()| (dir, id)).map_err(|e| crate::kernel::cgroup::CgroupError::Io {
                path: PathBuf::from("(kernel)"),
                source: std::io::Error::other(e.to_string()),
            })
        })
        .and_then(|(dir, id)| crate::kernel::cgroup::move_in(&dir, pid).map(|()| id));
    match cg {
        Ok(id) => {
            session.cgroup = Some(id);
            Ok(())
        }
        Err(e) => {
            session::end(eng, session);
            Err(err(ErrorCode::BadRequest, format!("cannot make session `{}` a cgroup: {e}", session.name)))
        }
    }
}

/// What a launcher hands over at registration: the launched program's environment (its own
/// exec exempt, its code-injecting variables remembered) and the signal filter's listener.
/// On failure the session is ended.
fn launcher_extras(
    d: &Daemon,
    eng: &mut Engine,
    session: &Session,
    peer: &Peer,
    r: &Register,
) -> Result<(), ProtoError> {
    // The launched program's own exec carries the MCP client's environment, which is the
    // session's to give: not checked for code-injecting variables (that one exec only).
    // Its code-injecting variables, exactly as given, stay the session's to give in the
    // processes that inherit them unchanged.
    if r.sealed || (r.cgroup && peer.pid == Some(r.pid)) {
        let environ = std::fs::read(format!("/proc/{}/environ", r.pid)).unwrap_or_default();
        let kept = eng.exempt_env_once(r.pid).and_then(|()| eng.remember_launch_env(session.id, &environ));
        match kept {
            Ok(names) if !names.is_empty() => log::info!("session {}: launched with {names:?}", r.session),
            Ok(_) => {}
            Err(e) => {
                session::end(eng, session);
                return Err(err(ErrorCode::KernelError, e.to_string()));
            }
        }
    }
    if let Some(fd) = r.signal_notifier {
        // Taken while the launcher waits for this answer, before the program's first instruction.
        match crate::daemon::signals::take_listener(r.pid, fd) {
            Ok(l) => d.signals.add(session.id, l),
            Err(e) => {
                session::end(eng, session);
                return Err(err(ErrorCode::KernelError, format!("cannot take the signal listener: {e}")));
            }
        }
    }
    Ok(())
}

fn register(d: &Daemon, peer: &Peer, r: Register) -> Result<Value, ProtoError> {
    check_register(d, peer, &r)?;
    let (mut spec, write_ceiling) = baseline_and_ceiling(d, &r)?;
    crate::daemon::scope::check(d.cfg.environment.as_deref(), &d.cfg.labels, &spec)?;
    // The session's own token directory, readable whatever its grants say (tokens.rs).
    let token_dir = d.tokens.prepare(&r.session).map_err(|e| {
        err(ErrorCode::Internal, format!("cannot create the token directory of session `{}`: {e}", r.session))
    })?;
    spec.read.push(token_dir);
    let kg = compile(&spec)?;
    let binary_sha256 = std::fs::File::open(&r.command[0]).and_then(|mut f| kgrant::sha256_file(&mut f)).ok();

    let mut st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = &r.parent {
        crate::daemon::delegation::check_parent(&st, &r.session, p)?;
    }
    let mut eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(old) = st.session(&r.session) {
        if session_alive(&eng, old) {
            return Err(err(
                ErrorCode::SessionExists,
                format!("session `{}` exists and has live processes", r.session),
            ));
        }
        let old = st.remove_session(&r.session).expect("present");
        session::end(&mut eng, &old);
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
        spec: None,
        labels: Vec::new(),
        own_expires_boot_ns: 0,
    };
    let session = Session {
        name: r.session.clone(),
        id: sid,
        root_pid: r.pid,
        command: r.command.clone(),
        uid: peer.uid,
        created_unix: unix_now(),
        cgroup: None,
        sealed: r.sealed,
        write_ceiling: write_ceiling.clone(),
        base: Some(base),
        task: None,
        orchestrator: None,
        binary_sha256,
        parent: r.parent.clone(),
        ended: crate::daemon::state::Ended::default(),
    };
    session::begin(&mut eng, &session).map_err(|e| err(ErrorCode::KernelError, e.to_string()))?;
    let mut session = session;
    if r.cgroup {
        join_cgroup(&mut eng, &mut session, r.pid)?;
    }
    let governed = match eng.govern_tree(r.pid, sid) {
        Ok(p) => p,
        Err(e) => {
            session::end(&mut eng, &session);
            return Err(err(ErrorCode::BadRequest, format!("cannot govern pid {}: {e}", r.pid)));
        }
    };
    launcher_extras(d, &mut eng, &session, peer, &r)?;
    drop(eng);
    st.insert_session(session);
    log::info!(
        "session {} registered: pid {} ({} process(es)), command {:?}",
        r.session,
        r.pid,
        governed.len(),
        r.command
    );
    Ok(json!({"session": r.session, "session_id": sid, "baseline_grant_id": gid, "processes": governed,
              "write_ceiling": write_ceiling, "token_file": d.tokens.token_file(&r.session)}))
}

/// A session is over when none of its processes is left (tree and, if any, cgroup).
fn session_alive(eng: &Engine, s: &Session) -> bool {
    !eng.session_processes(s.id).is_empty()
        || (s.cgroup.is_some()
            && crate::kernel::cgroup::session_dir(&s.name, s.id).is_ok_and(|d| !crate::kernel::cgroup::is_empty(&d)))
}

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

fn grant(d: &Daemon, g: Grant) -> Result<Value, ProtoError> {
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

fn revoke(d: &Daemon, r: Revoke) -> Result<Value, ProtoError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_parent_and_uid() {
        let st = "Name:\tcat\nPid:\t12\nPPid:\t7\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_parent_and_uid(st), Some((7, 1000)));
        assert_eq!(parse_parent_and_uid("Name:\tx\n"), None);
        let me = std::process::id();
        let child = std::process::Command::new("/bin/sleep").arg("5").spawn().unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let peer = Peer { uid, gid: 0, pid: Some(me) };
        assert!(own_child(&peer, child.id()));
        assert!(!own_child(&Peer { uid: uid + 1, ..peer }, child.id()), "different uid");
        assert!(!own_child(&peer, me), "not its own child");
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
    }

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
}
