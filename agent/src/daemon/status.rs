//! The `status` answer: backend, probes, what each channel of reach gets on this host, attached
//! syscall tracepoints, and every session with its grants (remaining TTL, binaries, paths) and
//! write ceiling.
use serde_json::{Value, json};

use crate::{daemon::server::Daemon, daemon::state::GrantRecord};

fn grant_json(g: &GrantRecord, now: u64) -> Value {
    let remaining_ms = (g.expires_boot_ns > 0).then(|| g.expires_boot_ns.saturating_sub(now) / 1_000_000);
    json!({
        "grant_id": g.id, "task": g.task, "policy": g.policy, "mode": g.mode,
        "remaining_ms": remaining_ms, "expired": g.expires_boot_ns > 0 && now >= g.expires_boot_ns,
        "tool": g.tool, "call_id": g.call_id,
        "exec": g.kernel.exec.iter().map(|e| json!({"path": e.path, "sha256": e.sha256})).collect::<Vec<_>>(),
        "paths": g.kernel.path_names.iter().map(|(p, b)| json!({"path": p, "read": b & 1 != 0, "write": b & 2 != 0})).collect::<Vec<_>>(),
        // Each connect/listen target as granted, with the addresses in force (DNS names as
        // resolved when the grant was issued).
        "network": g.kernel.net_names.iter().map(|(t, r)| json!({"target": t, "in_force": r})).collect::<Vec<_>>(),
    })
}

pub(crate) fn status(d: &Daemon) -> Value {
    let st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = crate::daemon::handlers::boot_ns();
    let sessions: Vec<Value> = st
        .sessions()
        .values()
        .map(|s| {
            json!({
                "name": s.name, "session_id": s.id, "root_pid": s.root_pid, "command": s.command,
                "processes": eng.session_processes(s.id), "sealed": s.sealed, "signals_supervised": d.signals.serves(s.id), "write_ceiling": s.write_ceiling,
                "baseline": s.base.as_ref().map(|g| grant_json(g, now)),
                "task": s.task.as_ref().map(|g| grant_json(g, now)),
                "orchestrator_task": s.orchestrator.as_ref().map(|g| grant_json(g, now)),
            })
        })
        .collect();
    json!({
        "backend": eng.backend().name(),
        "synchronous_deny": eng.backend().synchronous_deny(),
        "deny_mode_effect": if eng.backend().synchronous_deny() { "EPERM" } else { "kill" },
        "channels": eng.channels().iter().map(|(c, m)| (c.to_string(), json!(m))).collect::<serde_json::Map<String, Value>>(),
        "adopted_pinned_programs": eng.adopted(),
        "backend_probes": eng.probes(),
        // Syscall tracepoints attached now (they follow what is governed; lazy.rs).
        "syscall_tracepoints": { "open": eng.syscall_hooks().0, "guard": eng.syscall_hooks().1, "unix": eng.syscall_hooks().2 },
        "bpffs_dir": d.cfg.bpffs_dir,
        // Where each session's token file is (`TOKEN_DIR/SESSION/token`).
        "token_dir": d.cfg.token_dir(),
        "sessions": sessions,
    })
}
