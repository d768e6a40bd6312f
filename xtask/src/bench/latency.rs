//! Grant request → enforced in the kernel, through the real daemon's socket.
//!
//! Probe: a governed *probe parent* (registered session `lat`, kill mode) forks, on request, a
//! probe process that opens one file in a tight loop (open+close, ~1-2 µs per turn). A probe
//! dies at the first open its session's grant no longer allows — that open is "the first
//! operation that depends on the change", and its kill is both timestamped by the kernel (the
//! decision event's CLOCK_BOOTTIME stamp, read from the daemon's `subscribe` stream) and seen
//! by the harness (the probe's pidfd becomes readable).
//!
//! - grant: the session's task grant allows directory A; the probe loops on A/f; the request
//!   grants directory B instead. A grant replaces the task grant in one map update (the old grant
//!   stops and the new one starts at the same instant), so the probe's death marks the new state
//!   in force.
//! - revoke: task grant B, probe on B/f, `revoke`. (A grant of B again then restores the start
//!   state; that request is not timed.)
//!
//! Reported per kind: `enforced` = kernel decision stamp − CLOCK_BOOTTIME taken just before the
//! request is written; `observed` = probe exit seen through its pidfd; `response` = the
//! daemon's reply read (all from the same send instant).
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use mcpguard::{
    daemon::protocol::{Op, Revoke},
    grant::policy::Mode,
};
use serde_json::{Value, json};

use super::{
    Ctx,
    daemon::{Daemon, governed_child, grant_op},
    proc::{Gated, boot_ns, pidfd_open, poll_readable},
    stats::{Summary, percentile},
    workload,
};

/// Kill decisions from the daemon's event stream: (pid, kernel CLOCK_BOOTTIME ns). The returned
/// stream handle ends the subscription when shut down.
fn subscribe(d: &mut Daemon) -> Result<(mpsc::Receiver<(u32, u64)>, UnixStream)> {
    let s = UnixStream::connect(&d.socket)?;
    let ctl = s.try_clone()?;
    let mut r = BufReader::new(s);
    r.get_mut().write_all(d.line(Op::Subscribe(mcpguard::daemon::protocol::Subscribe::default())).as_bytes())?;
    let mut l = String::new();
    r.read_line(&mut l)?;
    if !l.contains("\"ok\":true") {
        bail!("subscribe refused: {}", l.trim());
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new().name("bench-subscribe".into()).spawn(move || {
        let mut l = String::new();
        while r.read_line(&mut l).is_ok_and(|n| n > 0) {
            if let Ok(v) = serde_json::from_str::<Value>(&l)
                && v["action"] == "killed"
                && let (Some(pid), Some(ts)) = (v["pid"].as_u64(), v["ts_boot_ns"].as_u64())
                && tx.send((u32::try_from(pid).unwrap_or(0), ts)).is_err()
            {
                return;
            }
            l.clear();
        }
    })?;
    Ok((rx, ctl))
}

/// A live probe; killed through its pidfd if still running when dropped (never a recycled pid).
struct Probe {
    pid: u32,
    pidfd: std::fs::File,
}

impl Drop for Probe {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: pidfd_send_signal on our own pidfd.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), libc::SIGKILL, 0, 0) };
    }
}

fn spawn_probe(pp: &mut Gated, file: &std::path::Path) -> Result<Probe> {
    pp.send_line(&format!("spawn {}", file.display()))?;
    let l = pp.read_line()?;
    let pid: i32 = l.strip_prefix("pid ").with_context(|| format!("probe did not start: {l:?}"))?.parse()?;
    Ok(Probe { pid: u32::try_from(pid)?, pidfd: pidfd_open(pid)? })
}

#[derive(Default)]
struct Series {
    enforced_us: Vec<f64>,
    observed_us: Vec<f64>,
    response_us: Vec<f64>,
}

impl Series {
    fn json(&self) -> Value {
        let s = |xs: &[f64]| json!({"p50": percentile(xs, 50.0), "p99": percentile(xs, 99.0), "max": Summary::of(xs).max, "n": xs.len()});
        json!({"enforced_us": s(&self.enforced_us), "observed_us": s(&self.observed_us), "response_us": s(&self.response_us)})
    }
}

/// Sends `line`, waits for the probe's death and the response, then for the kernel's kill
/// event of the probe.
fn timed(
    sock: &mut BufReader<UnixStream>,
    line: &str,
    probe: &Probe,
    kills: &mpsc::Receiver<(u32, u64)>,
    out: &mut Series,
) -> Result<()> {
    while kills.try_recv().is_ok() {}
    let sock_fd = sock.get_ref().try_clone()?;
    let sock_file = std::fs::File::from(std::os::fd::OwnedFd::from(sock_fd));
    let t0_boot = boot_ns();
    let t0 = Instant::now();
    sock.get_mut().write_all(line.as_bytes())?;
    let (mut dead, mut resp) = (None, None);
    while dead.is_none() || resp.is_none() {
        let fds: Vec<&std::fs::File> = [(dead.is_none(), &probe.pidfd), (resp.is_none(), &sock_file)]
            .into_iter()
            .filter_map(|(w, f)| w.then_some(f))
            .collect();
        let ready = poll_readable(&fds, Duration::from_secs(5))?;
        let now = t0.elapsed();
        if !ready.iter().any(|r| *r) {
            bail!("no probe death / response within 5 s (dead: {dead:?}, response: {resp:?})");
        }
        let mut i = 0;
        if dead.is_none() {
            if ready[i] {
                dead = Some(now);
            }
            i += 1;
        }
        if resp.is_none() && ready[i] {
            let mut l = String::new();
            sock.read_line(&mut l)?;
            if !l.contains("\"ok\":true") {
                bail!("daemon refused the request: {}", l.trim());
            }
            resp = Some(now);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (pid, ts) = kills.recv_timeout(left).context("no kill event for the probe within 5 s")?;
        if pid == probe.pid {
            out.enforced_us.push((ts.saturating_sub(t0_boot)) as f64 / 1e3);
            break;
        }
    }
    out.observed_us.push(dead.unwrap_or_default().as_secs_f64() * 1e6);
    out.response_us.push(resp.unwrap_or_default().as_secs_f64() * 1e6);
    Ok(())
}

/// What one measurement loop needs.
struct Rig<'a> {
    pp: Gated,
    sock: BufReader<UnixStream>,
    kills: mpsc::Receiver<(u32, u64)>,
    dirs: &'a [PathBuf; 2],
    files: [PathBuf; 2],
    /// Which directory the task grant currently allows.
    cur: usize,
}

/// `count` grant swaps and `count` revocations, each timed; between them an untimed grant
/// restores the start state.
fn measure(d: &mut Daemon, rig: &mut Rig, count: usize) -> Result<(Series, Series)> {
    let (mut grants, mut revokes) = (Series::default(), Series::default());
    for i in 0..count {
        // grant: A -> B swap kills the probe on A
        let probe = spawn_probe(&mut rig.pp, &rig.files[rig.cur])?;
        let next = 1 - rig.cur;
        let line = d.line(grant_op("lat", &format!("g{i}"), &rig.dirs[next..=next], Mode::Kill));
        timed(&mut rig.sock, &line, &probe, &rig.kills, &mut grants).with_context(|| format!("grant {i}"))?;
        rig.cur = next;
        // revoke: kills the probe on the current grant's file
        let probe = spawn_probe(&mut rig.pp, &rig.files[rig.cur])?;
        let line = d.line(Op::Revoke(Revoke { session: "lat".into(), task: None }));
        timed(&mut rig.sock, &line, &probe, &rig.kills, &mut revokes).with_context(|| format!("revoke {i}"))?;
        d.grant("lat", &format!("r{i}"), &rig.dirs[rig.cur..=rig.cur], Mode::Kill)?;
    }
    Ok((grants, revokes))
}

pub fn run(ctx: &Ctx, d: &mut Daemon) -> Result<Value> {
    let n = if ctx.quick { 50 } else { 1000 };
    let dirs = [ctx.work.join("lat-a"), ctx.work.join("lat-b")];
    let files = [dirs[0].join("f"), dirs[1].join("f")];
    for (dir, f) in dirs.iter().zip(&files) {
        std::fs::create_dir_all(dir)?;
        std::fs::write(f, b"probe\n")?;
    }
    let (kills, sub_handle) = subscribe(d)?;
    let argv = workload::argv(&ctx.exe, "probe-parent", 0, 0, None);
    let pp = governed_child(ctx, d, "lat", &argv, Some((&dirs[..1], Mode::Kill)))?;
    let sock = BufReader::new(UnixStream::connect(&d.socket)?);
    let mut rig = Rig { pp, sock, kills, dirs: &dirs, files, cur: 0 };
    let t = Instant::now();
    let (grants, revokes) = measure(d, &mut rig, n)?;
    let wall = t.elapsed();
    // --profile: a second, shorter pass under perf (the figures come from the first).
    let profile = if ctx.profile && super::profile::available() {
        let perf = super::profile::Perf::start(&["-p".into(), d.pid.to_string()], ctx.work.join("perf-latency.data"))?;
        let count = n.min(200);
        measure(d, &mut rig, count)?;
        json!({"daemon_threads": perf.stop("comm,dso,sym"), "requests": 3 * count})
    } else {
        Value::Null
    };
    drop(rig);
    let _ = sub_handle.shutdown(std::net::Shutdown::Both);
    let (g, r) = (grants.json(), revokes.json());
    eprintln!(
        "bench: grant->enforced p50 {:.0} us p99 {:.0} us; revoke->enforced p50 {:.0} us p99 {:.0} us ({n} each, {:.1} s)",
        g["enforced_us"]["p50"].as_f64().unwrap_or(f64::NAN),
        g["enforced_us"]["p99"].as_f64().unwrap_or(f64::NAN),
        r["enforced_us"]["p50"].as_f64().unwrap_or(f64::NAN),
        r["enforced_us"]["p99"].as_f64().unwrap_or(f64::NAN),
        wall.as_secs_f64()
    );
    Ok(json!({"n": n, "grant": g, "revoke": r, "profile": profile}))
}
