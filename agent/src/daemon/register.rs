//! `register`: a session's first state — who may register which process, the baseline and
//! write ceiling it runs under, its cgroup, and what a launched session gets besides (the seccomp
//! and signal supervision the launcher sets up).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{
    daemon::handlers::{Peer, compile, err, session_alive, unix_now},
    daemon::protocol::{ErrorCode, ProtoError, Register},
    daemon::server::Daemon,
    daemon::session,
    daemon::state::{GrantRecord, Session},
    grant::kgrant,
    grant::policy::{ExecRule, GrantSpec, Mode, resolve_policy},
    kernel::engine::Engine,
};

/// `pid`'s parent and real uid, from `/proc/<pid>/status`.
fn parent_and_uid(pid: u32) -> Option<(u32, u32)> {
    parse_parent_and_uid(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

pub(crate) fn parse_parent_and_uid(status: &str) -> Option<(u32, u32)> {
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("PPid:")?, field("Uid:")?))
}

/// A non-root peer may register its own direct child of its own uid (the MCP proxy governs the
/// server it forks, while itself staying outside the session). The child cannot be recycled
/// under us: its parent (the peer) has not reaped it.
pub(crate) fn own_child(peer: &Peer, pid: u32) -> bool {
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

pub(crate) fn register(d: &Daemon, peer: &Peer, r: Register) -> Result<Value, ProtoError> {
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
        audience: Vec::new(),
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
}
