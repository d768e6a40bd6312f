//! The real daemon (`target/release/mcpguard daemon`) on a private socket, state directory,
//! audit log and bpffs directory (`/sys/fs/bpf/mcpguard-bench-PID`, unpinned at the end with
//! `mcpguard unpin`), pinned to the harness CPU. Also the memory measurement.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use mcpguard::{
    daemon::protocol::{Grant, InlineGrant, Op, Register},
    grant::policy::Mode,
    launcher::client::Client,
};
use serde_json::{Value, json};

use super::{
    Ctx,
    proc::{Gated, pin, status_kib, wait_until},
    workload,
};

pub const BASELINE: &str = "bench-base";

pub struct Daemon {
    child: Option<Child>,
    pub pid: i32,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    pub audit: PathBuf,
    mcpguard: PathBuf,
    pub backend: String,
    pub client: Client,
    next: u64,
}

impl Daemon {
    /// Starts a daemon; its audit log goes in `audit_dir` (default: its own scratch directory).
    pub fn start(ctx: &Ctx, tag: &str, audit_dir: Option<&std::path::Path>) -> Result<Self> {
        let dir = ctx.work.join(format!("daemon-{tag}"));
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies)?;
        // What the workload binary needs to start (see overhead.rs); its own exec is approved
        // by `register`.
        std::fs::write(
            policies.join(format!("{BASELINE}.toml")),
            format!(
                "name = \"{BASELINE}\"\ndescription = \"benchmark workload runtime\"\nmode = \"kill\"\n{}",
                ["/etc/ld.so.cache", "/lib", "/lib64", "/usr/lib", "/usr/lib64", "/proc"]
                    .iter()
                    .filter(|p| std::path::Path::new(p).exists())
                    .map(|p| format!("\n[[read]]\npath = \"{p}\"\n"))
                    .collect::<String>()
            ),
        )?;
        let socket = dir.join("mcpguard.sock");
        let audit = audit_dir.unwrap_or(&dir).join("audit.jsonl");
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/mcpguard-bench-{}", std::process::id()));
        let log = std::fs::File::create(dir.join("daemon.log"))?;
        let child = Command::new(&ctx.mcpguard)
            .arg("--socket")
            .arg(&socket)
            .arg("daemon")
            .args(["--metrics", "off", "--default-ttl", "1h", "--max-ttl", "24h", "--unload-on-exit"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--audit-log")
            .arg(&audit)
            .arg("--bpffs-dir")
            .arg(&bpffs)
            .arg("--policy-dir")
            .arg(&policies)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting mcpguard daemon")?;
        let pid = i32::try_from(child.id())?;
        let mut me = Self {
            child: Some(child),
            pid,
            socket: socket.clone(),
            bpffs,
            audit,
            mcpguard: ctx.mcpguard.clone(),
            backend: String::new(),
            client: loop_connect(&socket, &dir)?,
            next: 0,
        };
        if let Some(c) = ctx.harness_cpu {
            for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
                let tid: i32 = t.file_name().to_string_lossy().parse()?;
                pin(tid, c)?; // threads started later inherit the daemon's mask (set at fork)
            }
        }
        let st = me.client.call_ok(Op::Status {})?;
        me.backend = st.get("backend").and_then(Value::as_str).unwrap_or("?").to_owned();
        eprintln!("bench: daemon pid {pid} up, backend {}", me.backend);
        Ok(me)
    }

    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Registers `pid` (a gated child, not yet exec'd) as session `name` running our binary.
    pub fn register(&mut self, name: &str, pid: i32, exe: &str) -> Result<()> {
        self.client.call_ok(Op::Register(Register {
            session: name.into(),
            pid: u32::try_from(pid)?,
            command: vec![exe.into()],
            baseline: Some(BASELINE.into()),
            vars: BTreeMap::new(),
            cgroup: false,
            sealed: false,
            write_ceiling: None,
            signal_notifier: None,
            parent: None,
        }))?;
        Ok(())
    }

    /// One request as sent on the wire (a JSON line with a fresh id).
    pub fn line(&mut self, op: Op) -> String {
        let id = self.id();
        mcpguard::daemon::protocol::Request::new(Some(id), op).to_line()
    }

    pub fn grant(&mut self, session: &str, task: &str, read: &[PathBuf], mode: Mode) -> Result<()> {
        self.client.call_ok(grant_op(session, task, read, mode))?;
        Ok(())
    }

    pub fn rss_kib(&self) -> Result<u64> {
        status_kib(self.pid, "VmRSS")
    }

    /// SIGTERM (the daemon unpins on exit), then `mcpguard unpin` for good measure.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the daemon we started.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
            let done =
                wait_until(Duration::from_secs(10), Duration::from_millis(20), || matches!(c.try_wait(), Ok(Some(_))));
            if !done {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let st = Command::new(&self.mcpguard).arg("unpin").arg("--bpffs-dir").arg(&self.bpffs).output()?;
        if !st.status.success() {
            bail!("mcpguard unpin {}: {}", self.bpffs.display(), String::from_utf8_lossy(&st.stderr));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("bench: cleaning up the daemon: {e}");
        }
    }
}

/// An inline `grant` of read access to `read` (TTL 1 h) in `mode`.
#[must_use]
pub fn grant_op(session: &str, task: &str, read: &[PathBuf], mode: Mode) -> Op {
    Op::Grant(Grant {
        session: session.into(),
        task: task.into(),
        policy: None,
        inline: Some(InlineGrant { read: read.to_vec(), ..InlineGrant::default() }),
        vars: BTreeMap::new(),
        ttl: Some("1h".into()),
        mode: Some(mode),
        tool: None,
        call_id: None,
    })
}

fn loop_connect(socket: &std::path::Path, dir: &std::path::Path) -> Result<Client> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = Client::connect(socket) {
            return Ok(c);
        }
        if Instant::now() > end {
            let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
            bail!("the daemon did not open {} within 30 s; its log:\n{log}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a workload process gated, registers it as `session` and (optionally) grants it
/// `read` in `mode` before releasing it: it is governed from its first instruction.
pub fn governed_child(
    ctx: &Ctx,
    d: &mut Daemon,
    session: &str,
    argv: &[String],
    grant: Option<(&[PathBuf], Mode)>,
) -> Result<Gated> {
    let mut child = gated_child(ctx, d, session, argv, grant, ctx.workload_cpu)?;
    child.release()?;
    Ok(child)
}

/// [`governed_child`] pinned to `cpu` and left gated (the caller releases it).
pub fn gated_child(
    ctx: &Ctx,
    d: &mut Daemon,
    session: &str,
    argv: &[String],
    grant: Option<(&[PathBuf], Mode)>,
    cpu: Option<usize>,
) -> Result<Gated> {
    let child = Gated::spawn(argv)?;
    if let Some(cpu) = cpu {
        pin(child.pid, cpu)?;
    }
    d.register(session, child.pid, &ctx.exe)?;
    if let Some((read, mode)) = grant {
        d.grant(session, "t0", read, mode)?;
    }
    Ok(child)
}

/// Daemon resident memory at rest, then with `sessions` sessions (one blocked process each) and
/// `grants` grant requests spread over them (each replaces its session's task grant).
pub fn rss(ctx: &Ctx, d: &mut Daemon) -> Result<Value> {
    let (sessions, grants) = if ctx.quick { (20, 200) } else { (100, 1000) };
    std::thread::sleep(Duration::from_millis(600)); // one housekeeping tick
    let at_rest = d.rss_kib()?;
    let breakdown = |pid| -> Value {
        ["VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"]
            .iter()
            .map(|k| ((*k).to_owned(), json!(status_kib(pid, k).ok())))
            .collect()
    };
    let rest_detail = breakdown(d.pid);
    let rest_maps = smaps_top(d.pid);
    let argv = workload::argv(&ctx.exe, "sleepers", sessions, 0, None);
    let mut parent = super::proc::Gated::spawn(&argv)?;
    parent.release()?;
    let line = parent.read_line()?;
    let pids: Vec<i32> =
        line.strip_prefix("pids ").context("sleepers output")?.split(' ').map(str::parse).collect::<Result<_, _>>()?;
    let t = Instant::now();
    for (i, pid) in pids.iter().enumerate() {
        d.register(&format!("rss-{i}"), *pid, &ctx.exe)?;
    }
    let register_s = t.elapsed().as_secs_f64();
    let dirs = [ctx.file.parent().context("dir")?.to_path_buf(), ctx.bin.parent().context("dir")?.to_path_buf()];
    let t = Instant::now();
    for g in 0..grants {
        let s = format!("rss-{}", g % sessions);
        d.grant(&s, &format!("task-{g}"), &dirs, Mode::Kill)?;
    }
    let grant_s = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(600));
    let loaded = d.rss_kib()?;
    let loaded_detail = breakdown(d.pid);
    let hwm = status_kib(d.pid, "VmHWM")?;
    parent.input.take(); // EOF: the sleepers exit
    parent.wait_ok()?;
    eprintln!("bench: daemon RSS {at_rest} KiB at rest, {loaded} KiB with {sessions} sessions / {grants} grants");
    Ok(json!({
        "at_rest_kib": at_rest, "loaded_kib": loaded, "peak_kib": hwm,
        "at_rest_status_kib": rest_detail, "at_rest_largest_mappings_kib": rest_maps, "loaded_status_kib": loaded_detail,
        "sessions": sessions, "grant_requests": grants,
        "live_grants_at_end": sessions * 2,
        "register_ms_mean": register_s * 1e3 / sessions as f64,
        "grant_ms_mean": grant_s * 1e3 / grants as f64,
    }))
}

/// Resident memory by mapping (`/proc/PID/smaps`, summed per file or kind), largest first.
fn smaps_top(pid: i32) -> Value {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else { return Value::Null };
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    let mut cur = String::new();
    for l in s.lines() {
        let mut f = l.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // "addr perms offset dev inode [path]"
            cur = f.nth(4).map_or_else(|| "[anonymous]".to_owned(), str::to_owned);
        } else if first == "Rss:" {
            *by.entry(cur.clone()).or_default() += f.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().filter(|x| x.1 > 0).collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    v.into_iter().take(8).map(|(k, n)| json!({"mapping": k, "rss_kib": n})).collect()
}
