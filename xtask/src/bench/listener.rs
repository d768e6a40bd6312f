//! The loopback TCP listener the `connect+close` workload connects to: a thread of the harness
//! (so on the harness CPU, like the event consumer), started once per run, accepting and closing
//! every connection as it comes.
//!
//! The workload's `connect` returns once the handshake is done, which the kernel completes from
//! the listen socket's accept queue without waiting for `accept`; the queue is made as long as
//! the kernel allows (`somaxconn`, 4096 by default) and this thread only has to drain it on
//! average. Were it full, the kernel would drop the SYN and the client would retransmit after a
//! second: one such stall would dominate a block, so the overhead section counts the kernel's
//! listen-queue overflows around every connect+close block and reports them.
use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

use anyhow::{Context as _, Result, bail};

/// Asked of `listen(2)`; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: libc::c_int = 65_535;

pub struct Listener {
    pub addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Listener {
    /// Binds 127.0.0.1 on an ephemeral port and starts the accept thread.
    pub fn start() -> Result<Self> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the bench listener")?;
        // A second listen() on a listening socket only resizes its accept queue (std asks 128).
        // SAFETY: our own listening socket.
        if unsafe { libc::listen(l.as_raw_fd(), BACKLOG) } != 0 {
            bail!("listen(backlog {BACKLOG}): {}", std::io::Error::last_os_error());
        }
        let std::net::SocketAddr::V4(addr) = l.local_addr()? else { bail!("listener is not IPv4") };
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (s2, a2) = (stop.clone(), accepted.clone());
        let handle = std::thread::Builder::new().name("bench-listener".into()).spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                // Errors (a peer that reset before we got to it: ECONNABORTED) are the peer's.
                if let Ok((s, _)) = l.accept() {
                    drop(s);
                    a2.fetch_add(1, Ordering::Relaxed);
                }
            }
        })?;
        Ok(Self { addr, stop, accepted, handle: Some(handle) })
    }

    /// Connections accepted so far.
    #[must_use]
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// `TcpExtListenOverflows` of this network namespace (`/proc/net/netstat`): connections whose
/// SYN a full accept queue dropped (ours or anyone's listener). 0 when unreadable.
#[must_use]
pub fn listen_overflows() -> u64 {
    let s = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = s.lines().filter(|l| l.starts_with("TcpExt:"));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(v) = names.split(' ').zip(values.split(' ')).find(|(n, _)| *n == "ListenOverflows") {
            return v.1.parse().unwrap_or(0);
        }
    }
    0
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept; the thread sees `stop` after it.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
