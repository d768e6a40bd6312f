//! Prometheus metrics (text format), served on a loopback address.
use mcpguard_common as c;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub decisions: IntCounterVec,
    pub events_lost: IntCounter,
    pub procs_untracked: IntCounter,
    pub active_sessions: IntGauge,
    pub active_grants: IntGauge,
    pub grant_expirations: IntCounter,
    pub requests: IntCounterVec,
    pub grant_apply: Histogram,
    pub backend: IntGaugeVec,
    pub audit_errors: IntCounter,
    /// Refusals (denied or killed) per session, from the decision events.
    pub session_denials: SessionDenials,
    /// Last kernel counter values seen, to turn them into counter increments.
    last: std::sync::Mutex<Vec<u64>>,
}

impl Metrics {
    #[must_use]
    pub fn new(backend: &str, synchronous_deny: bool, channels: &[(&str, &str)]) -> Self {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new("mcpguard_decisions_total", "Kernel decisions on governed processes"),
            &["action", "hook", "reason"],
        )
        .expect("metric");
        let events_lost = IntCounter::new(
            "mcpguard_events_lost_total",
            "Decision events the kernel could not deliver (ring buffer full); decisions were still enforced",
        )
        .expect("metric");
        let procs_untracked = IntCounter::new(
            "mcpguard_procs_untracked_total",
            "Governed forks whose child could not be tracked (map full); the parent was killed",
        )
        .expect("metric");
        let active_sessions = IntGauge::new("mcpguard_active_sessions", "Registered sessions").expect("metric");
        let active_grants =
            IntGauge::new("mcpguard_active_grants", "Task grants in force (not expired)").expect("metric");
        let grant_expirations =
            IntCounter::new("mcpguard_grant_expirations_total", "Task grants that reached their TTL").expect("metric");
        let requests = IntCounterVec::new(
            Opts::new("mcpguard_socket_requests_total", "Control socket requests"),
            &["op", "result"],
        )
        .expect("metric");
        let grant_apply = Histogram::with_opts(
            HistogramOpts::new(
                "mcpguard_grant_apply_seconds",
                "Time from a grant request being parsed to the grant being in force in the kernel",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
        )
        .expect("metric");
        let backend_g = IntGaugeVec::new(
            Opts::new("mcpguard_backend_info", "Enforcement backend in force (value 1)"),
            &["backend", "synchronous_deny"],
        )
        .expect("metric");
        backend_g.with_label_values(&[backend, if synchronous_deny { "true" } else { "false" }]).set(1);
        let build =
            IntGaugeVec::new(Opts::new("mcpguard_build_info", "Build information"), &["version"]).expect("metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let channel_g = IntGaugeVec::new(
            Opts::new(
                "mcpguard_channel_info",
                "How each channel of a governed process's reach is stopped on this host: eperm, kill or none (value 1)",
            ),
            &["channel", "mechanism"],
        )
        .expect("metric");
        for (channel, mechanism) in channels {
            channel_g.with_label_values(&[channel, mechanism]).set(1);
        }
        let audit_errors =
            IntCounter::new("mcpguard_audit_write_errors_total", "Audit lines that could not be written")
                .expect("metric");
        let session_denials = SessionDenials::new(SESSION_SERIES_MAX);
        for m in [
            Box::new(session_denials.vec.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(decisions.clone()),
            Box::new(events_lost.clone()),
            Box::new(procs_untracked.clone()),
            Box::new(active_sessions.clone()),
            Box::new(active_grants.clone()),
            Box::new(grant_expirations.clone()),
            Box::new(requests.clone()),
            Box::new(grant_apply.clone()),
            Box::new(backend_g.clone()),
            Box::new(build),
            Box::new(channel_g),
            Box::new(audit_errors.clone()),
        ] {
            registry.register(m).expect("register metric");
        }
        Self {
            registry,
            decisions,
            events_lost,
            procs_untracked,
            active_sessions,
            active_grants,
            grant_expirations,
            requests,
            grant_apply,
            backend: backend_g,
            audit_errors,
            session_denials,
            last: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Folds the kernel's per-CPU counters (summed) into the Prometheus counters. The kernel
    /// counters are pinned with the maps, so they continue across daemon restarts; the first
    /// sync after a start adds everything counted so far.
    pub fn sync_kernel(&self, counters: &[u64]) {
        let mut last = self.last.lock().expect("metrics lock");
        last.resize(counters.len(), 0);
        for hook in 0..c::HOOK_COUNT {
            for action in 0..c::ACTION_COUNT {
                for reason in 0..c::REASON_COUNT {
                    let i = c::counter_index(hook, action, reason) as usize;
                    let (now, before) = (counters.get(i).copied().unwrap_or(0), last[i]);
                    if now > before {
                        self.decisions
                            .with_label_values(&[c::action_name(action), c::hook_name(hook), c::reason_name(reason)])
                            .inc_by(now - before);
                    }
                }
            }
        }
        for (i, m) in
            [(c::COUNTER_LOST as usize, &self.events_lost), (c::COUNTER_PROCS_FULL as usize, &self.procs_untracked)]
        {
            let now = counters.get(i).copied().unwrap_or(0);
            if now > last[i] {
                m.inc_by(now - last[i]);
            }
        }
        last.copy_from_slice(counters);
    }

    #[must_use]
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("encode metrics");
        String::from_utf8(buf).expect("metrics are UTF-8")
    }
}

/// Sessions with a series of their own in `mcpguard_session_denials_total` at a time.
pub const SESSION_SERIES_MAX: usize = 64;
/// The `session` label of refusals beyond [`SESSION_SERIES_MAX`] sessions, and of events whose
/// session the daemon no longer knows.
pub const OTHER_SESSION: &str = "other";

/// `mcpguard_session_denials_total{session, action}`: refusals (`denied`, `killed`) per session,
/// counted from the decision events as the daemon drains them (the kernel counters in
/// `mcpguard_decisions_total` are not per session; an event lost to a full ring buffer is in
/// those and in `mcpguard_events_lost_total`, not here).
///
/// Bounded: at most `max` sessions have a series of their own. A session seen while all slots
/// are taken gets the slot of an ended session (the least recently counted one; its series are
/// removed), else counts under `session="other"`. The event thread is the only writer.
pub struct SessionDenials {
    vec: IntCounterVec,
    max: usize,
    slots: std::sync::Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    /// Session name → the tick it was last counted at.
    named: std::collections::HashMap<String, u64>,
    tick: u64,
}

impl SessionDenials {
    #[must_use]
    pub fn new(max: usize) -> Self {
        let vec = IntCounterVec::new(
            Opts::new(
                "mcpguard_session_denials_total",
                "Refusals (denied or killed) per session, from decision events; at most 64 sessions \
                 have their own series, the rest (and sessions no longer known) count as session=\"other\"",
            ),
            &["session", "action"],
        )
        .expect("metric");
        Self { vec, max, slots: std::sync::Mutex::new(Slots::default()) }
    }

    /// Counts one decision of `session` (None: not known to the daemon); only refusals count.
    /// `live` says whether a session is still registered (an ended one's slot may be reused).
    pub fn record(&self, session: Option<&str>, action: u32, live: impl Fn(&str) -> bool) {
        if action != c::ACTION_DENIED && action != c::ACTION_KILLED {
            return;
        }
        let action = c::action_name(action);
        let mut s = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.tick += 1;
        let tick = s.tick;
        let label = match session {
            Some(name) if name != OTHER_SESSION => {
                if let Some(t) = s.named.get_mut(name) {
                    *t = tick;
                    name
                } else if s.named.len() < self.max || self.evict_ended(&mut s, &live) {
                    s.named.insert(name.to_owned(), tick);
                    name
                } else {
                    OTHER_SESSION
                }
            }
            _ => OTHER_SESSION,
        };
        self.vec.with_label_values(&[label, action]).inc();
    }

    /// Frees the slot of the ended session counted least recently; false if every slot's session
    /// is live.
    fn evict_ended(&self, s: &mut Slots, live: &impl Fn(&str) -> bool) -> bool {
        let Some(victim) =
            s.named.iter().filter(|(n, _)| !live(n)).min_by_key(|&(n, &t)| (t, n)).map(|(n, _)| n.clone())
        else {
            return false;
        };
        s.named.remove(&victim);
        for action in [c::ACTION_DENIED, c::ACTION_KILLED] {
            let _ = self.vec.remove_label_values(&[&victim, c::action_name(action)]);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn session_denials_are_bounded_and_reuse_ended_sessions_slots() {
        let d = SessionDenials::new(2);
        let live = |names: &'static [&'static str]| move |n: &str| names.contains(&n);
        d.record(Some("a"), c::ACTION_DENIED, live(&["a", "b", "c"]));
        d.record(Some("a"), c::ACTION_ALLOWED, live(&["a", "b", "c"])); // not a refusal
        d.record(Some("a"), c::ACTION_AUDITED, live(&["a", "b", "c"]));
        d.record(Some("b"), c::ACTION_KILLED, live(&["a", "b", "c"]));
        // Both slots live: c counts as other, and so does an unknown session.
        d.record(Some("c"), c::ACTION_DENIED, live(&["a", "b", "c"]));
        d.record(None, c::ACTION_DENIED, live(&["a", "b", "c"]));
        // b ended: c takes its slot, b's series go.
        d.record(Some("c"), c::ACTION_DENIED, live(&["a", "c"]));
        // A session named like the overflow label cannot take a slot of its own.
        d.record(Some(OTHER_SESSION), c::ACTION_KILLED, live(&["a", "c", "other"]));
        let r = Registry::new();
        r.register(Box::new(d.vec.clone())).unwrap();
        let mut buf = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let s = |session: &str, action: &str| {
            value(&text, &format!(r#"mcpguard_session_denials_total{{action="{action}",session="{session}"}}"#))
        };
        assert_eq!(s("a", "denied"), Some(1), "{text}");
        assert_eq!(s("b", "killed"), None, "{text}");
        assert_eq!(s("c", "denied"), Some(1), "{text}");
        assert_eq!(s("other", "denied"), Some(2), "{text}");
        assert_eq!(s("other", "killed"), Some(1), "{text}");
        assert_eq!(text.matches("mcpguard_session_denials_total{").count(), 4, "{text}");
    }

    #[test]
    fn kernel_counters_become_increments() {
        let m = Metrics::new("kill", false, crate::kernel::engine::Backend::Kill.channels());
        let mut k = vec![0u64; c::COUNTER_SLOTS as usize];
        k[c::counter_index(c::HOOK_EXEC, c::ACTION_KILLED, c::REASON_BINARY_CHANGED) as usize] = 3;
        k[c::COUNTER_LOST as usize] = 2;
        m.sync_kernel(&k);
        m.sync_kernel(&k); // no double counting
        k[c::counter_index(c::HOOK_EXEC, c::ACTION_KILLED, c::REASON_BINARY_CHANGED) as usize] = 5;
        m.sync_kernel(&k);
        let text = m.render();
        assert!(
            text.contains(r#"mcpguard_decisions_total{action="killed",hook="exec",reason="binary_changed"} 5"#),
            "{text}"
        );
        assert!(text.contains("mcpguard_events_lost_total 2"));
        assert!(text.contains(r#"mcpguard_backend_info{backend="kill",synchronous_deny="false"} 1"#));
        assert!(text.contains(r#"mcpguard_channel_info{channel="signal",mechanism="launcher"} 1"#), "{text}");
    }
}
