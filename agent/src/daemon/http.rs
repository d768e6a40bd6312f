//! The daemon's HTTP listener (the `metrics` address): `/metrics` (Prometheus text format),
//! `/healthz` (liveness: the process serves) and `/readyz` (readiness: the kernel programs of
//! the verified backend are attached, the control socket is bound, the event reader runs; 503
//! with the reason otherwise). Anything else is 404. One request per connection, head bounded
//! in size (4 KiB) and time (5 s).
use std::{
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{daemon::server::Daemon, kernel::engine};

/// The event reader counts as dead when it has not looked at the ring buffer for this long (it
/// looks at least every [`mcpguard_common::EVENTS_POLL_MS`] when idle).
pub const EVENTS_STALE: Duration = Duration::from_secs(5);

/// What readiness looks at besides the pins: the control socket as bound, and the event
/// reader's last turn.
pub struct Health {
    started: Instant,
    /// Milliseconds after `started` of the event reader's last turn, plus one (0: never ran).
    events_beat: AtomicU64,
    /// `(dev, ino)` of the control socket as bound (0, 0 before).
    socket: (AtomicU64, AtomicU64),
}

impl Default for Health {
    fn default() -> Self {
        Self { started: Instant::now(), events_beat: AtomicU64::new(0), socket: (AtomicU64::new(0), AtomicU64::new(0)) }
    }
}

impl Health {
    /// Called by the event reader on every turn of its loop.
    pub fn events_beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.events_beat.store(ms + 1, Ordering::Relaxed);
    }

    /// Whether the event reader has turned its loop once.
    #[must_use]
    pub fn events_started(&self) -> bool {
        self.events_beat.load(Ordering::Relaxed) > 0
    }

    /// Records the control socket just bound at `path`.
    pub fn socket_bound(&self, path: &Path) -> std::io::Result<()> {
        let m = std::fs::symlink_metadata(path)?;
        self.socket.0.store(m.dev(), Ordering::Relaxed);
        self.socket.1.store(m.ino(), Ordering::Relaxed);
        Ok(())
    }

    fn events_age(&self) -> Option<Duration> {
        let beat = self.events_beat.load(Ordering::Relaxed);
        (beat > 0).then(|| self.started.elapsed().saturating_sub(Duration::from_millis(beat - 1)))
    }
}

/// `Ok(summary)` when the daemon is ready to enforce and serve, else the first reason it is not.
pub fn readiness(d: &Daemon) -> Result<String, String> {
    let backend = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner).backend();
    let missing = engine::missing_links(&d.cfg.bpffs_dir, backend);
    if !missing.is_empty() {
        return Err(format!(
            "{} program(s) of the {} backend are no longer attached (link pins missing under {}: {}); restart the daemon",
            missing.len(),
            backend.name(),
            d.cfg.bpffs_dir.join("links").display(),
            missing.join(", ")
        ));
    }
    let sock = &d.cfg.socket;
    let want = (d.health.socket.0.load(Ordering::Relaxed), d.health.socket.1.load(Ordering::Relaxed));
    match std::fs::symlink_metadata(sock) {
        Ok(m) if m.file_type().is_socket() && (m.dev(), m.ino()) == want => {}
        Ok(_) if want == (0, 0) => return Err(format!("control socket {} is not bound yet", sock.display())),
        Ok(_) => {
            return Err(format!(
                "control socket {} was replaced by another file; clients cannot reach this daemon (restart it)",
                sock.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "control socket {}: {e}; clients cannot reach this daemon (restart it)",
                sock.display()
            ));
        }
    }
    match d.health.events_age() {
        None => return Err("the event reader has not started".into()),
        Some(age) if age > EVENTS_STALE => {
            return Err(format!(
                "the event reader has not looked at the ring buffer for {} ms (stuck or dead); audit lines are not written",
                age.as_millis()
            ));
        }
        Some(_) => {}
    }
    Ok(format!("backend {} attached; control socket {}; event reader running", backend.name(), sock.display()))
}

/// Status line, content type, body for the request head `head`, and whether to send the body
/// (not for HEAD).
fn respond(d: &Daemon, head: &str) -> (&'static str, &'static str, String, bool) {
    const TEXT: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    let mut words = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, format!("method {method:?} not allowed: GET or HEAD\n"), true);
    }
    let (status, ctype, body) = match path {
        "/metrics" => {
            {
                let eng = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Ok(c) = eng.counters() {
                    d.metrics.sync_kernel(&c);
                }
            }
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", d.metrics.render())
        }
        "/healthz" => ("200 OK", TEXT, "ok\n".to_owned()),
        // The keys the session tokens are signed with, and OIDC discovery for verifiers that
        // start from the issuer (identity.rs, tokens.rs).
        "/.well-known/jwks.json" => ("200 OK", JSON, d.tokens.jwks().to_string()),
        "/.well-known/openid-configuration" => {
            ("200 OK", JSON, crate::daemon::identity::discovery(&d.tokens.cfg, header(head, "host")).to_string())
        }
        "/readyz" => match readiness(d) {
            Ok(s) => ("200 OK", TEXT, format!("ready: {s}\n")),
            Err(e) => ("503 Service Unavailable", TEXT, format!("not ready: {e}\n")),
        },
        _ => (
            "404 Not Found",
            TEXT,
            format!(
                "no such path {path:?}: /metrics, /healthz, /readyz, /.well-known/jwks.json and /.well-known/openid-configuration are served\n"
            ),
        ),
    };
    (status, ctype, body, method == "GET")
}

/// The value of header `name` (case-insensitive) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Serves `l` until the daemon exits.
pub async fn serve(d: Arc<Daemon>, l: tokio::net::TcpListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else { continue };
        let d = d.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let started = Instant::now();
            // Read the request head (bounded in size and time).
            while n < buf.len() && started.elapsed() < Duration::from_secs(5) {
                match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(k)) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, ctype, body, send_body) = respond(&d, &head);
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                if send_body { body.as_str() } else { "" }
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}
