//! DNS names in grants: resolved when a grant is compiled (`kgrant::compile_net`), and again
//! every `dns_refresh` while the grant is in force (this module, run by the daemon's server).
use crate::{daemon::server::Daemon, grant::kgrant};

/// Resolves the DNS names of every grant in force again (`dns_refresh` interval) and swaps the
/// changed addresses into the kernel under the same grant id. Resolution runs without the
/// locks; a record that changed meanwhile (revoked, replaced) is left alone, and a name that no
/// longer resolves keeps its previous addresses (logged).
pub fn refresh_dns(d: &Daemon) {
    type Slot = (String, &'static str, u64, kgrant::KernelGrant);
    let held: Vec<Slot> = {
        let st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.sessions()
            .values()
            .flat_map(|s| {
                [("base", &s.base), ("task", &s.task), ("orchestrator", &s.orchestrator)]
                    .into_iter()
                    .filter_map(|(slot, r)| r.as_ref().map(|r| (s.name.clone(), slot, r.id, r.kernel.clone())))
            })
            .collect()
    };
    for (session, slot, id, old) in held {
        let new = match kgrant::refresh_net(&old, &mut crate::grant::net::system_resolver) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                log::warn!("grant {id} (session {session}): DNS refresh failed, previous addresses stay: {e}");
                continue;
            }
        };
        let mut st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(s) = st.session_mut(&session) else { continue };
        let rec = match slot {
            "base" => s.base.as_mut(),
            "task" => s.task.as_mut(),
            _ => s.orchestrator.as_mut(),
        };
        let Some(rec) = rec.filter(|r| r.id == id && r.kernel == old) else { continue };
        let mut eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match eng.update_net(id, &old, &new) {
            Ok(()) => {
                log::info!(
                    "grant {id} (session {session}): DNS names re-resolved: {:?}",
                    new.net_names.iter().map(|(t, r)| format!("{t} -> {}", r.join(", "))).collect::<Vec<_>>()
                );
                rec.kernel = new;
                d.persist.request();
            }
            Err(e) => log::warn!("grant {id} (session {session}): installing re-resolved addresses failed: {e}"),
        }
    }
}
