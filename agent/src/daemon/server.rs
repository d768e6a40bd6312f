//! The host daemon: owns the kernel programs (pinned), serves the control socket, joins kernel
//! decisions with the session table into the audit log and event subscribers, and exposes
//! Prometheus metrics.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, broadcast},
};

use crate::{
    daemon::audit,
    daemon::handlers::Peer,
    daemon::metrics::Metrics,
    daemon::protocol::{self, ErrorCode, MAX_LINE, Op, Response},
    daemon::state::{Persister, State},
    kernel::engine::{self, Engine, EngineOptions},
};

/// Daemon settings (command-line flags or the TOML config file).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Control socket.
    pub socket: PathBuf,
    /// Prometheus endpoint (`/metrics`); loopback by default.
    pub metrics: Option<SocketAddr>,
    /// Persisted session/grant table.
    pub state_dir: PathBuf,
    /// Audit log path, or `-` for stdout.
    pub audit_log: String,
    /// bpffs directory where programs and maps are pinned.
    pub bpffs_dir: PathBuf,
    /// Besides root, uids and gids allowed to register sessions and issue grants.
    pub allow_uids: Vec<u32>,
    pub allow_gids: Vec<u32>,
    /// Where policy names are looked up.
    pub policy_dirs: Vec<PathBuf>,
    /// TTL used when neither the request nor the policy sets one.
    #[serde(with = "crate::grant::duration::serde_duration")]
    pub default_ttl: Duration,
    /// Longest TTL a grant may have.
    #[serde(with = "crate::grant::duration::serde_duration")]
    pub max_ttl: Duration,
    /// Concurrent control connections; more wait.
    pub max_connections: usize,
    /// Unpin everything on SIGTERM (enforcement stops). Default: keep enforcing while down.
    pub unload_on_exit: bool,
    /// Force an enforcement backend (`kill`, `lsm`); default: the strongest that is verified.
    pub backend: Option<engine::Backend>,
    /// cgroup v2 directory the network programs attach to; default: the cgroup v2 root (every
    /// process on the host passes them; only governed ones are decided).
    pub net_cgroup: Option<PathBuf>,
    /// How often the DNS names of the grants in force are resolved again (the addresses they
    /// resolved to when issued are replaced by the new answer).
    #[serde(with = "crate::grant::duration::serde_duration")]
    pub dns_refresh: Duration,
    /// SPIFFE trust domain of the tokens (`sub` = `spiffe://TRUST_DOMAIN/mcpguard/HOST/SESSION`).
    pub trust_domain: String,
    /// `aud` of the tokens.
    pub token_audience: Vec<String>,
    /// The longest a token lives (the grant's expiry may end it sooner).
    #[serde(with = "crate::grant::duration::serde_duration")]
    pub token_max_ttl: Duration,
    /// How long a signing key is used before it is replaced.
    #[serde(with = "crate::grant::duration::serde_duration")]
    pub key_rotation: Duration,
    /// Where the sessions' token files live; default: `tokens/` beside the control socket.
    pub token_dir: Option<PathBuf>,
    /// This daemon's environment label (in the tokens and the audit lines).
    pub environment: Option<String>,
    /// `iss` of the tokens (an `https://` URL serving the discovery document); default
    /// `spiffe://TRUST_DOMAIN`.
    pub token_issuer: Option<String>,
    /// Path labels: a grant naming a path under (or above) one needs its policy to declare it.
    pub labels: std::collections::BTreeMap<String, Vec<PathBuf>>,
}

pub const DEFAULT_SOCKET: &str = "/run/mcpguard/mcpguard.sock";
pub const DEFAULT_METRICS: &str = "127.0.0.1:9464";
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/mcpguard";

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            metrics: Some(DEFAULT_METRICS.parse().expect("default metrics address")),
            state_dir: "/var/lib/mcpguard".into(),
            audit_log: "/var/log/mcpguard/audit.jsonl".into(),
            bpffs_dir: DEFAULT_BPFFS_DIR.into(),
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
            policy_dirs: vec!["/etc/mcpguard/policies".into()],
            default_ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(24 * 3600),
            max_connections: 64,
            unload_on_exit: false,
            backend: None,
            net_cgroup: None,
            dns_refresh: Duration::from_secs(60),
            trust_domain: "mcpguard.local".into(),
            token_audience: vec!["mcpguard".into()],
            token_max_ttl: Duration::from_secs(600),
            key_rotation: Duration::from_secs(24 * 3600),
            token_dir: None,
            environment: None,
            token_issuer: None,
            labels: std::collections::BTreeMap::new(),
        }
    }
}

impl Config {
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// `token_dir`, or `tokens/` beside the control socket.
    pub fn token_dir(&self) -> PathBuf {
        self.token_dir.clone().unwrap_or_else(|| {
            self.socket.parent().unwrap_or_else(|| std::path::Path::new("/run/mcpguard")).join("tokens")
        })
    }

    /// What the tokens say about this daemon.
    pub fn identity(&self) -> crate::daemon::identity::IdentityConfig {
        crate::daemon::identity::IdentityConfig {
            trust_domain: self.trust_domain.clone(),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
            audience: self.token_audience.clone(),
            max_ttl: self.token_max_ttl,
            rotate_after: self.key_rotation,
            environment: self.environment.clone(),
            issuer: self.token_issuer.clone(),
        }
    }
}

pub struct Daemon {
    pub cfg: Config,
    pub engine: Mutex<Engine>,
    pub state: Mutex<State>,
    /// Saves `state` (group commit); requests are answered once their change is saved.
    pub persist: Persister,
    pub metrics: Metrics,
    pub events: broadcast::Sender<Arc<crate::daemon::recent::Line>>,
    /// The last audit lines (`events -n`); the event thread pushes and broadcasts under its lock,
    /// so a subscriber's backlog and stream neither overlap nor leave a gap.
    pub recent: Mutex<crate::daemon::recent::Recent>,
    /// Signing keys and the sessions' token files.
    pub tokens: crate::daemon::tokens::Tokens,
    /// Grants whose expiry has been counted.
    pub expired_seen: Mutex<std::collections::BTreeSet<u64>>,
    /// The signal listeners of launched sessions (`signals.rs`).
    pub signals: crate::daemon::signals::Supervisor,
    /// Decisions made in the daemon (signals), written to the audit log by the event thread.
    pub injected: Mutex<Vec<mcpguard_common::Event>>,
    /// What `/readyz` checks besides the pins (`http.rs`).
    pub health: crate::daemon::http::Health,
    /// Sessions being learned (`mcpguard learn`), fed by the event thread.
    pub learn: crate::daemon::learn::Learner,
}

impl Daemon {
    /// Queues a decision the daemon made itself for the audit log and the subscribers (written
    /// within [`mcpguard_common::EVENTS_POLL_MS`]).
    pub fn inject_event(&self, ev: mcpguard_common::Event) {
        self.injected.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(ev);
    }

    pub fn save_state(&self, st: &State) {
        if let Err(e) = st.save(&self.cfg.state_file()) {
            log::error!("{e}");
        }
    }
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let mut engine = Engine::load(&EngineOptions {
        pin_dir: Some(cfg.bpffs_dir.clone()),
        backend: cfg.backend,
        net_cgroup: cfg.net_cgroup.clone(),
    })
    .context("loading the kernel programs")?;
    let backend = engine.backend();
    if let Some(forced) = cfg.backend
        && forced != backend
    {
        anyhow::bail!(
            "backend {} was requested, but the pinned programs at {} use {} (run `mcpguard unpin` first)",
            forced.name(),
            cfg.bpffs_dir.display(),
            backend.name()
        );
    }
    for p in engine.probes() {
        log::info!("backend probe: {}: {}", p.backend.name(), p.result);
    }
    log::info!(
        "enforcement backend: {} ({}); programs {} at {}",
        backend.name(),
        if backend.synchronous_deny() {
            "synchronous deny"
        } else {
            "kill after the forbidden exec/open; deny mode is carried out as kill"
        },
        if engine.adopted() { "adopted from pins" } else { "loaded and pinned" },
        cfg.bpffs_dir.display()
    );
    let mut state = State::load(&cfg.state_file()).context("loading the session table")?;
    // Saved now either way: the id counter moved on (State::load), and the kernel may have won.
    crate::daemon::reconcile::reconcile(&mut engine, &mut state);
    state.save(&cfg.state_file()).context("saving the reconciled session table")?;
    log::info!("{} session(s) restored from {}", state.sessions().len(), cfg.state_file().display());
    let rb = engine.take_events().context("event ring buffer")?;
    let metrics = Metrics::new(backend.name(), backend.synchronous_deny(), &engine.channels());
    let (tx, _) = broadcast::channel(4096);
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_secs());
    let tokens = crate::daemon::tokens::Tokens::open(cfg.identity(), &cfg.token_dir(), &cfg.state_dir, unix)?;
    let d = Arc::new(Daemon {
        cfg: cfg.clone(),
        engine: Mutex::new(engine),
        state: Mutex::new(state),
        persist: Persister::new(cfg.state_file()),
        metrics,
        events: tx,
        recent: Mutex::new(crate::daemon::recent::Recent::seeded_from(&cfg.audit_log)),
        tokens,
        expired_seen: Mutex::default(),
        signals: crate::daemon::signals::Supervisor::new().context("signal supervisor")?,
        injected: Mutex::default(),
        health: crate::daemon::http::Health::default(),
        learn: crate::daemon::learn::Learner::default(),
    });

    // The handlers before the socket: a client (or systemd) that sees the socket may stop the
    // daemon at once, and that must take the orderly way out.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    // The HTTP listener before the socket too: whoever sees the socket can scrape and probe.
    let http = match cfg.metrics {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding metrics on {addr}"))?;
            log::info!("metrics on http://{addr}/metrics (health: /healthz, /readyz)");
            Some(l)
        }
        None => None,
    };
    // And the event reader running: a client that sees the socket finds the daemon ready
    // (`/readyz`), its decisions audited.
    let stop = Arc::new(AtomicBool::new(false));
    let ev_thread = spawn_event_thread(d.clone(), rb, stop.clone())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !d.health.events_started() {
        if std::time::Instant::now() >= deadline || ev_thread.is_finished() {
            anyhow::bail!("the event reader did not start");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let listener = bind_socket(&cfg.socket)?;
    d.health.socket_bound(&cfg.socket).with_context(|| format!("reading back {}", cfg.socket.display()))?;
    log::info!("control socket {}", cfg.socket.display());
    let signal_thread = {
        let (d, stop) = (d.clone(), stop.clone());
        std::thread::Builder::new().name("signals".into()).spawn(move || crate::daemon::signals::run(&d, &stop))?
    };
    let persist_thread = {
        let d = d.clone();
        std::thread::Builder::new().name("persist".into()).spawn(move || d.persist.run(&d.state))?
    };
    tokio::spawn(housekeeping(d.clone()));
    tokio::spawn(dns_refresh(d.clone()));
    if let Some(l) = http {
        tokio::spawn(crate::daemon::http::serve(d.clone(), l));
    }
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let d = d.clone();
                    let slots = slots.clone();
                    tokio::spawn(async move {
                        let Ok(_permit) = slots.acquire_owned().await else { return };
                        serve_conn(d, stream).await;
                    });
                }
                Err(e) => log::warn!("accept: {e}"),
            },
        }
    }
    log::info!("shutting down");
    stop.store(true, Ordering::Relaxed);
    let _ = std::fs::remove_file(&cfg.socket);
    let _ = std::fs::remove_file(crate::daemon::protocol::pid_file(&cfg.socket));
    d.persist.stop();
    let _ = persist_thread.join();
    d.save_state(&d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let _ = ev_thread.join();
    let _ = signal_thread.join();
    if cfg.unload_on_exit {
        let removed = engine::unpin(&cfg.bpffs_dir)?;
        log::info!("unpinned {} object(s); enforcement is off", removed.len());
    } else {
        log::info!("programs stay pinned at {}: enforcement continues", cfg.bpffs_dir.display());
    }
    Ok(())
}

fn bind_socket(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another daemon is serving {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    // Before the socket exists, so that a client never finds the socket without it.
    write_pid_file(path).with_context(|| {
        format!("writing {} (clients verify the daemon by it)", crate::daemon::protocol::pid_file(path).display())
    })?;
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    // Anyone may connect and get a precise answer; authorisation is by peer credentials.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// Reads one request line of at most MAX_LINE bytes. `Ok(None)` at end of stream.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, Response> {
    let mut buf = Vec::new();
    let mut limited = r.take(MAX_LINE as u64 + 1);
    let n = tokio::time::timeout(Duration::from_secs(60), limited.read_until(b'\n', &mut buf))
        .await
        .map_err(|_| Response::err(None, ErrorCode::BadRequest, "timed out waiting for a complete request line"))?
        .map_err(|e| Response::err(None, ErrorCode::BadRequest, format!("read error: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if buf.len() > MAX_LINE {
            return Err(Response::err(None, ErrorCode::TooLarge, format!("request line exceeds {MAX_LINE} bytes")));
        }
        // End of stream without newline: treat what we have as the last line.
    } else {
        buf.pop();
    }
    Ok(Some(buf))
}

async fn serve_conn(d: Arc<Daemon>, stream: UnixStream) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer { uid: c.uid(), gid: c.gid(), pid: c.pid().and_then(|p| u32::try_from(p).ok()) },
        Err(e) => {
            log::warn!("peer credentials unavailable: {e}");
            return;
        }
    };
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let line = match read_line(&mut r).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(resp) => {
                d.metrics.requests.with_label_values(&["unknown", "too_large"]).inc();
                let _ = w.write_all(resp.to_line().as_bytes()).await;
                return; // the rest of an oversized line is not worth reading
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let req = match protocol::parse_request(&line) {
            Ok(r) => r,
            Err(e) => {
                d.metrics.requests.with_label_values(&["unknown", e.code.as_str()]).inc();
                if w.write_all(e.to_response().to_line().as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if let Op::Subscribe(sub) = &req.op {
            let filter = crate::daemon::handlers::authorize(&d, &peer, false)
                .and_then(|()| crate::daemon::recent::Filter::new(sub));
            let resp = match &filter {
                Ok(_) => Response::ok(req.id, serde_json::json!({"subscribed": true})),
                Err(e) => e.clone().with_id(req.id).to_response(),
            };
            let result = match &resp.result {
                Ok(_) => "ok",
                Err(b) => b.code.as_str(),
            };
            d.metrics.requests.with_label_values(&["subscribe", result]).inc();
            if w.write_all(resp.to_line().as_bytes()).await.is_err() {
                return;
            }
            let Ok(filter) = filter else { return };
            stream_events(&d, &mut w, sub, &filter).await;
            return;
        }
        let (op, id, mutates) = (req.op.name(), req.id, crate::daemon::handlers::mutates(&req.op));
        // Short requests (revoke, grants of paths, status) run right here: the kernel update
        // is a few map writes, and a hop to the blocking pool and back costs more than that
        // (two thread wake-ups before the update is in force). Anything that may hash binaries,
        // read files or scan /proc goes to the blocking pool.
        let resp = if crate::daemon::handlers::quick(&req) {
            crate::daemon::handlers::handle(&d, &peer, req)
        } else {
            let d2 = d.clone();
            tokio::task::spawn_blocking(move || crate::daemon::handlers::handle(&d2, &peer, req))
                .await
                .unwrap_or_else(|e| Response::err(id, ErrorCode::Internal, format!("handler failed: {e}")))
        };
        // The change is in force in the kernel; "ok" only once the table saying so is on disk
        // (saves are coalesced across requests by the persist thread).
        let resp = if mutates && resp.is_ok() {
            match d.persist.durable(d.persist.request()).await {
                Ok(()) => resp,
                Err(e) => Response::err(
                    id,
                    ErrorCode::Internal,
                    format!(
                        "applied in the kernel, but the session table could not be saved ({e}): the change may not survive a daemon restart"
                    ),
                ),
            }
        } else {
            resp
        };
        let result = match &resp.result {
            Ok(_) => "ok",
            Err(b) => b.code.as_str(),
        };
        d.metrics.requests.with_label_values(&[op, result]).inc();
        if w.write_all(resp.to_line().as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The backlog a subscription asked for, then (with `follow`) every new line, through `filter`.
async fn stream_events(
    d: &Daemon,
    w: &mut tokio::net::unix::OwnedWriteHalf,
    sub: &crate::daemon::protocol::Subscribe,
    filter: &crate::daemon::recent::Filter,
) {
    let (backlog, mut rx) = {
        let recent = d.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (recent.last(sub.backlog as usize, filter), sub.follow.then(|| d.events.subscribe()))
    };
    let mut out = String::new();
    for l in backlog {
        out.push_str(&l);
        out.push('\n');
    }
    if w.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    let Some(rx) = &mut rx else { return };
    loop {
        let line = match rx.recv().await {
            Ok(l) if filter.matches(&l) => format!("{}\n", l.text),
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => format!("{{\"lagged\":{n}}}\n"),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if w.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Drains the kernel ring buffer on its own thread: decode, join with the session table,
/// audit, broadcast. Decisions are enforced in the kernel whether or not this keeps up.
/// Audit lines are written in batches: whenever the ring buffer has been drained (so a line
/// reaches the file within [`mcpguard_common::EVENTS_POLL_MS`] of its event, plus the time to
/// drain), when a batch reaches [`audit::FLUSH_BYTES`], and before the thread ends.
fn spawn_event_thread(
    d: Arc<Daemon>,
    mut rb: aya::maps::RingBuf<aya::maps::MapData>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    /// Records per look at the ring before the clock and the stop flag are checked again.
    const BATCH: usize = 4096;
    let mut sink =
        audit::Sink::open(&d.cfg.audit_log).with_context(|| format!("opening audit log {}", d.cfg.audit_log))?;
    Ok(std::thread::Builder::new().name("events".into()).spawn(move || {
        // Loading the engine (BTF parsing, the object) peaks at ~50 MB of heap, which glibc keeps
        // once freed; this thread starts after the load, so it hands that back to the kernel.
        #[cfg(target_env = "gnu")]
        // SAFETY: no preconditions; only releases free memory.
        unsafe {
            libc::malloc_trim(0);
        }
        let flush = |sink: &mut audit::Sink| {
            if let Err((lines, e)) = sink.flush() {
                d.metrics.audit_errors.inc_by(lines);
                log::error!("audit log: {e} ({lines} line(s) lost)");
            }
        };
        let poll = Duration::from_millis(mcpguard_common::EVENTS_POLL_MS);
        let mut path = String::new();
        // The event's session name, for the recent lines' filters (reused: no allocation).
        let mut session = String::new();
        while !stop.load(Ordering::Relaxed) {
            d.health.events_beat();
            let clock = audit::Clock::now();
            let mut write = |ev: &mcpguard_common::Event| {
                let ts = clock.at(ev.ts_ns);
                let mut known = false;
                let line = sink.push(|buf| {
                    let st = d.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    audit::format_event(buf, &mut path, &st, ev, ts, d.cfg.environment.as_deref());
                    d.learn.observe(&st, ev);
                    let s = st.session_by_id(ev.session).map(|s| s.name.as_str());
                    d.metrics.session_denials.record(s, ev.action, |n| st.session(n).is_some());
                    session.clear();
                    session.push_str(s.unwrap_or_default());
                    known = s.is_some();
                });
                if let Ok(l) = std::str::from_utf8(line) {
                    let (s, reason) = (known.then_some(session.as_str()), mcpguard_common::reason_name(ev.reason));
                    let mut recent = d.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    recent.push(l, s, reason, Some(ts));
                    if d.events.receiver_count() > 0 {
                        let _ = d.events.send(Arc::new(crate::daemon::recent::Line::new(l, s, reason, Some(ts))));
                    }
                }
                if sink.pending() >= audit::FLUSH_BYTES {
                    flush(&mut sink);
                }
            };
            let n = crate::kernel::events::drain(&mut rb, BATCH, &mut write);
            d.learn.tick();
            let injected = std::mem::take(&mut *d.injected.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            injected.iter().for_each(&mut write);
            if n < BATCH {
                flush(&mut sink);
                if n == 0 {
                    crate::kernel::events::wait(&rb, poll);
                }
            }
        }
        flush(&mut sink);
    })?)
}

async fn housekeeping(d: Arc<Daemon>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let d = d.clone();
        let _ = tokio::task::spawn_blocking(move || crate::daemon::handlers::housekeeping(&d)).await;
    }
}

async fn dns_refresh(d: Arc<Daemon>) {
    let mut tick = tokio::time::interval(d.cfg.dns_refresh.max(Duration::from_secs(1)));
    tick.tick().await; // the first tick is immediate: grants were resolved when issued
    loop {
        tick.tick().await;
        let d = d.clone();
        let _ = tokio::task::spawn_blocking(move || crate::daemon::dns::refresh_dns(&d)).await;
    }
}

/// Writes this process's pid to [`crate::daemon::protocol::pid_file`] (mode 0644, replaced atomically).
pub(crate) fn write_pid_file(socket: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = crate::daemon::protocol::pid_file(socket);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
    std::io::Write::write_all(&mut f, format!("{}\n", std::process::id()).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_unknown_keys_are_named() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/mcpguard.toml")).unwrap();
        let cfg: Config = toml::from_str(&text).unwrap();
        assert_eq!(cfg.default_ttl, Duration::from_secs(900));
        assert_eq!(cfg.max_ttl, Duration::from_secs(86_400));
        assert_eq!(cfg.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        let err = toml::from_str::<Config>("sockets = \"/x\"\n").unwrap_err().to_string();
        assert!(err.contains("sockets") && err.contains("line 1"), "{err}");
        let err = toml::from_str::<Config>("max_ttl = \"forever\"\n").unwrap_err().to_string();
        assert!(err.contains("forever"), "{err}");
        let partial: Config = toml::from_str("backend = \"kill\"\n").unwrap();
        assert_eq!(partial.backend, Some(engine::Backend::Kill));
        assert_eq!(partial.socket, PathBuf::from(DEFAULT_SOCKET));
    }
}
