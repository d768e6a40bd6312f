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
        for m in [
            Box::new(decisions.clone()) as Box<dyn prometheus::core::Collector>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
