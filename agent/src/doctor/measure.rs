//! The measurements behind `mcpguard doctor`: each check asks this host's kernel (statfs, the
//! BTF, securityfs, Landlock, seccomp), and each backend is loaded for real, nothing pinned.
use std::{
    io::{Read as _, Write as _},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{Check, Report, Verdict, explain_backend, lsm_fix};
use crate::kernel::engine::{Backend, Engine, EngineError, EngineOptions};

const BPF_FS_MAGIC: u32 = 0xcafe_4a11;
const SECURITYFS_MAGIC: u32 = 0x7363_6673;
const TRACEFS_MAGIC: u32 = 0x7472_6163;
const DEBUGFS_MAGIC: u32 = 0x6462_6720;

/// The filesystem magic of what is mounted at `path` (`statfs`).
fn fs_magic(path: &str) -> Option<u32> {
    // Some kernels report f_type sign-extended from 32 bits: keep the low 32.
    nix::sys::statfs::statfs(path).ok().map(|s| (s.filesystem_type().0 as u64 & 0xffff_ffff) as u32)
}

fn kernel() -> Check {
    // SAFETY: uname fills the struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a utsname.
    if unsafe { libc::uname(&raw mut u) } != 0 {
        return Check {
            check: "kernel".into(),
            verdict: Verdict::No,
            detail: format!("uname: {}", std::io::Error::last_os_error()),
            fix: None,
        };
    }
    let field = |f: &[libc::c_char]| {
        let b: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&b).into_owned()
    };
    Check::ok("kernel", format!("{} ({})", field(&u.release), field(&u.machine)))
}

/// Effective capabilities of this process (`CapEff` of `/proc/self/status`).
fn cap_eff() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// (check, privileged: root with CAP_BPF and CAP_SYS_ADMIN effective).
fn root() -> (Check, bool) {
    let euid = nix::unistd::geteuid();
    let caps = cap_eff();
    let has = |c: u32| caps.is_some_and(|v| v & (1 << c) != 0);
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")]
        .iter()
        .filter(|(c, _)| !has(*c))
        .map(|p| p.1)
        .collect();
    let fix = "run as root; most checks need CAP_BPF/CAP_SYS_ADMIN";
    if !euid.is_root() {
        let detail = format!("euid {euid}: not root");
        return (Check::bad("root", Verdict::No, detail, fix), false);
    }
    if !missing.is_empty() {
        let detail = format!("euid 0 but {} not effective (CapEff {:#x})", missing.join(", "), caps.unwrap_or(0));
        return (Check::bad("root", Verdict::No, detail, fix), false);
    }
    (Check::ok("root", "euid 0, CAP_BPF and CAP_SYS_ADMIN effective"), true)
}

fn btf_and_offsets() -> Vec<Check> {
    // The file `Btf::from_sys_fs` reads.
    let path = "/sys/kernel/btf/vmlinux";
    let btf = match crate::kernel::btf::Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => {
            let absent = matches!(&e, crate::kernel::btf::BtfError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
            let (v, fix) = if absent {
                (Verdict::Missing, "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y")
            } else {
                (Verdict::No, "the kernel's BTF cannot be read: check permissions (root) or CONFIG_DEBUG_INFO_BTF")
            };
            let off = Check::bad("offsets", Verdict::No, "not tried: no BTF", "see btf");
            return vec![Check::bad("btf", v, format!("{path}: {e}"), fix), off];
        }
    };
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let btf_check = Check::ok("btf", format!("{path} parsed ({size} bytes)"));
    let off = match crate::kernel::offsets::from_btf(&btf) {
        Ok(_) => Check::ok("offsets", "every struct member the programs read resolved"),
        Err(e) => Check::bad(
            "offsets",
            Verdict::No,
            format!("{e}"),
            "this kernel's layout lacks a member the programs read: report it with the kernel release",
        ),
    };
    vec![btf_check, off]
}

fn mount_check(check: &str, path: &str, magic: u32, what: &str, fix: &str) -> Check {
    match fs_magic(path) {
        Some(m) if m == magic => Check::ok(check, format!("{what} mounted at {path}")),
        Some(m) => Check::bad(check, Verdict::Missing, format!("{path} is not {what} (filesystem magic {m:#x})"), fix),
        None => Check::bad(check, Verdict::Missing, format!("{path} does not exist"), fix),
    }
}

const LSM_FILE: &str = "/sys/kernel/security/lsm";

/// (check, the active LSM list when it could be read).
fn lsm_list(securityfs_ok: bool) -> (Check, Option<String>) {
    match std::fs::read_to_string(LSM_FILE) {
        Ok(list) => {
            let list = list.trim().to_owned();
            let c = match lsm_fix(&list, "bpf") {
                None => Check::ok("lsm", format!("active LSMs: {list} (bpf active)")),
                Some(fix) => Check::bad("lsm", Verdict::No, format!("active LSMs: {list} (no bpf)"), fix),
            };
            (c, Some(list))
        }
        Err(e) => {
            let fix = if securityfs_ok {
                "none known: securityfs is mounted but has no lsm file".to_owned()
            } else {
                "mount -t securityfs securityfs /sys/kernel/security".to_owned()
            };
            (Check::bad("lsm", Verdict::Missing, format!("cannot read {LSM_FILE}: {e}"), fix), None)
        }
    }
}

/// Kernel lockdown (`/sys/kernel/security/lockdown`, `none [integrity] confidentiality`): in
/// confidentiality mode BPF programs may not read kernel memory, which every program here does.
fn lockdown() -> Option<Check> {
    let text = std::fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    let mode = lockdown_mode(&text)?;
    Some(if mode == "confidentiality" {
        Check::bad(
            "lockdown",
            Verdict::No,
            "lockdown=confidentiality: BPF programs may not read kernel memory",
            "boot with `lockdown=integrity` (or none) on the kernel command line",
        )
    } else {
        Check::ok("lockdown", format!("lockdown={mode} (BPF reads of kernel memory allowed)"))
    })
}

/// The selected mode of a `/sys/kernel/security/lockdown` text (the bracketed one).
#[must_use]
pub fn lockdown_mode(text: &str) -> Option<&str> {
    text.split_whitespace().find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
}

fn tracefs() -> Check {
    // Where the loader looks for them.
    for events in ["/sys/kernel/tracing/events/syscalls", "/sys/kernel/debug/tracing/events/syscalls"] {
        let dir = Path::new(events);
        if dir.is_dir() {
            // One the kill backend attaches, read through its id as perf would.
            let id = dir.join("sys_exit_openat/id");
            return match std::fs::read_to_string(&id) {
                Ok(_) => Check::ok("tracefs", format!("syscall events visible at {events}")),
                Err(e) => Check::bad(
                    "tracefs",
                    Verdict::No,
                    format!("{events} exists but {} cannot be read: {e}", id.display()),
                    "run as root",
                ),
            };
        }
    }
    let mounted = fs_magic("/sys/kernel/tracing") == Some(TRACEFS_MAGIC)
        || fs_magic("/sys/kernel/debug") == Some(DEBUGFS_MAGIC) && Path::new("/sys/kernel/debug/tracing").is_dir();
    if mounted {
        Check::bad(
            "tracefs",
            Verdict::Missing,
            "tracefs is mounted but has no events/syscalls",
            "boot a kernel built with CONFIG_FTRACE_SYSCALLS=y",
        )
    } else {
        Check::bad(
            "tracefs",
            Verdict::Missing,
            "no tracefs at /sys/kernel/tracing (syscall tracepoints not visible)",
            "mount -t tracefs tracefs /sys/kernel/tracing",
        )
    }
}

fn cgroup2() -> Check {
    match crate::kernel::cgroup::root() {
        Some(r) => Check::ok("cgroup2", format!("cgroup v2 mounted at {}", r.display())),
        None => Check::bad(
            "cgroup2",
            Verdict::Missing,
            "no cgroup2 entry in /proc/self/mounts",
            "mount -t cgroup2 cgroup2 /sys/fs/cgroup",
        ),
    }
}

fn landlock(lsms: Option<&str>) -> Check {
    // LANDLOCK_CREATE_RULESET_VERSION, as `landlock::Ceiling::prepare` asks it.
    // SAFETY: the documented version query (null attribute, size 0).
    let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    if abi >= 1 {
        let trunc =
            if abi >= 3 { "truncation refused too" } else { "truncation not refused (needs ABI 3, Linux 6.2+)" };
        return Check::ok("landlock", format!("ABI {abi} available to this process: write ceiling works, {trunc}"));
    }
    let err = std::io::Error::last_os_error();
    let tail = "; or launch with --no-write-ceiling";
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) => {
            let fix = lsms.and_then(|l| lsm_fix(l, "landlock")).unwrap_or_else(|| "add `landlock` to `lsm=`".into());
            Check::bad("landlock", Verdict::No, "Landlock is built in but not enabled", format!("{fix}{tail}"))
        }
        Some(libc::ENOSYS) => Check::bad(
            "landlock",
            Verdict::Missing,
            "this kernel has no Landlock (ENOSYS)",
            format!("boot a kernel built with CONFIG_SECURITY_LANDLOCK=y{tail}"),
        ),
        _ => Check::bad(
            "landlock",
            Verdict::No,
            format!("landlock_create_ruleset: {err}"),
            tail.trim_start_matches("; "),
        ),
    }
}

/// Whether the kernel has the seccomp filter return action `action` (`SECCOMP_GET_ACTION_AVAIL`:
/// asks, installs nothing).
fn seccomp_action(action: u32) -> std::io::Result<()> {
    // SAFETY: the pointer is to a live u32, as SECCOMP_GET_ACTION_AVAIL requires.
    let r =
        unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_ACTION_AVAIL, 0u32, std::ptr::from_ref(&action)) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn seccomp() -> Vec<Check> {
    let filter = match (seccomp_action(libc::SECCOMP_RET_ERRNO), seccomp_action(libc::SECCOMP_RET_KILL_PROCESS)) {
        (Ok(()), Ok(())) => Check::ok("seccomp", "filters with errno and kill-process actions (the launcher's guard)"),
        (Err(e), _) | (_, Err(e)) => Check::bad(
            "seccomp",
            Verdict::No,
            format!("SECCOMP_GET_ACTION_AVAIL: {e}"),
            "boot a kernel with CONFIG_SECCOMP_FILTER=y (Linux 4.14+): `mcpguard exec` does not start a program without its filter",
        ),
    };
    let notify = match seccomp_action(libc::SECCOMP_RET_USER_NOTIF) {
        Ok(()) => Check::ok(
            "seccomp_notify",
            "SECCOMP_RET_USER_NOTIF available (on the kill backend the daemon decides launched sessions' signals with it)",
        ),
        Err(e) => Check::bad(
            "seccomp_notify",
            Verdict::No,
            format!("SECCOMP_RET_USER_NOTIF: {e}: on the kill backend launched sessions' signals cannot be decided"),
            "Linux 5.9+ (pidfd_getfd) with CONFIG_SECCOMP_FILTER=y, or a kernel where the lsm/fmod_ret backend loads",
        ),
    };
    vec![filter, notify]
}

/// A cgroup v2 directory for the backend probes' network programs: created under the cgroup v2
/// root, no process in it, removed on drop.
struct ProbeCgroup(PathBuf);

impl ProbeCgroup {
    fn create() -> Result<Self, String> {
        let root = crate::kernel::cgroup::root().ok_or("cgroup v2 is not mounted")?;
        let dir = root.join(format!("mcpguard-doctor-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for ProbeCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            eprintln!("mcpguard doctor: removing the probe cgroup {}: {e}", self.0.display());
        }
    }
}

/// The probe result as the engine records it (its `Probe.result`), or the load error.
fn probe_result(e: &EngineError, b: Backend) -> String {
    match e {
        EngineError::NoBackend { tried } => tried.strip_prefix(&format!("{}: ", b.name())).unwrap_or(tried).to_owned(),
        o => o.to_string(),
    }
}

const SIGKILL: i32 = 9;

/// Governs a probe process with no grant in kill mode and lets it exec `/bin/true`: the engine
/// must stop it (SIGKILL). Returns what happened.
fn enforce_probe(engine: &mut Engine) -> Result<String, String> {
    let target = ["/bin/true", "/usr/bin/true"].into_iter().find(|p| Path::new(p).exists()).ok_or("no true binary")?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        // "ready" proves the shell's own exec is complete before it is governed.
        .arg("echo ready; read _ ; exec \"$@\"")
        .arg("sh")
        .arg(target)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawning /bin/sh: {e}"))?;
    let session = (u64::from(std::process::id()) << 20) | 0xd0c;
    let result = (|| {
        let mut ready = [0u8; 6];
        child.stdout.as_mut().ok_or("no stdout")?.read_exact(&mut ready).map_err(|e| format!("probe shell: {e}"))?;
        let state = mcpguard_common::SessionState {
            base_grant: 0,
            task_grant: 0,
            task_expires_ns: 0,
            mode: mcpguard_common::MODE_KILL,
            flags: 0,
        };
        engine.set_session(session, state).map_err(|e| e.to_string())?;
        engine.add_process(child.id(), session).map_err(|e| e.to_string())?;
        let mut gate = child.stdin.take().ok_or("no stdin")?;
        gate.write_all(b"go\n").map_err(|e| format!("releasing the probe: {e}"))?;
        drop(gate);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                break st;
            }
            if Instant::now() > deadline {
                return Err(format!("the governed probe exec of {target} was not stopped within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if status.signal() != Some(SIGKILL) {
            return Err(format!("the governed probe exec of {target} ran ({status})"));
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut event = None;
        while event.is_none() && Instant::now() < deadline {
            event = engine.next_events(Duration::from_millis(100)).into_iter().find(|d| d.session_id == session);
        }
        Ok(match event {
            Some(d) => format!(
                "a governed probe exec'ing {target} (no grant) was killed; event hook {} action {} reason {}",
                d.hook, d.action, d.reason
            ),
            None => format!("a governed probe exec'ing {target} (no grant) was killed (no event seen within 2 s)"),
        })
    })();
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
    engine.end_session(session);
    result
}

struct Tried {
    results: Vec<(Backend, Result<(), String>)>,
    chosen: Option<Chosen>,
}

/// The first backend that loads: its channels and the enforcement probe's outcome.
struct Chosen {
    backend: Backend,
    channels: Vec<(String, String)>,
    probe: Result<String, String>,
}

/// Loads each backend in the daemon's order (forced), records ok or the error, keeps the
/// channels of the first that works and runs the enforcement probe on it. Each engine is
/// dropped (links detach) before the next is loaded.
fn try_backends(cgroup: &Path) -> Tried {
    let mut t = Tried { results: Vec::new(), chosen: None };
    for b in [Backend::Lsm, Backend::FmodRet, Backend::Kill] {
        let opts = EngineOptions { pin_dir: None, backend: Some(b), net_cgroup: Some(cgroup.to_path_buf()) };
        match Engine::load(&opts) {
            Ok(mut engine) => {
                t.results.push((b, Ok(())));
                if t.chosen.is_none() {
                    let channels = engine.channels().into_iter().map(|(c, m)| (c.to_owned(), m.to_owned())).collect();
                    let probe = enforce_probe(&mut engine);
                    t.chosen = Some(Chosen { backend: b, channels, probe });
                }
            }
            Err(e) => t.results.push((b, Err(probe_result(&e, b)))),
        }
    }
    t
}

fn daemon(socket: &Path) -> Check {
    let hint = format!("informational: start one with `mcpguard --socket {} daemon`", socket.display());
    if !socket.exists() {
        return Check::bad("daemon", Verdict::No, format!("no socket at {}", socket.display()), hint);
    }
    let path = socket.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = crate::launcher::client::Client::connect(&path)
            .and_then(|mut c| c.call_ok(crate::daemon::protocol::Op::Status {}))
            .map(|m| m.get("backend").and_then(Value::as_str).unwrap_or("?").to_owned());
        let _ = tx.send(r.map_err(|e| format!("{e:#}")));
    });
    match rx.recv_timeout(Duration::from_secs(3)) {
        Ok(Ok(b)) => Check::ok("daemon", format!("running at {} (backend {b})", socket.display())),
        Ok(Err(e)) => Check::bad("daemon", Verdict::No, format!("{}: {e}", socket.display()), hint),
        Err(_) => {
            Check::bad("daemon", Verdict::No, format!("{}: no answer to `status` within 3 s", socket.display()), hint)
        }
    }
}

/// Measures this host.
#[must_use]
pub fn measure(socket: &Path) -> Report {
    let mut r = Report::default();
    r.checks.push(kernel());
    let (root_check, privileged) = root();
    r.checks.push(root_check);
    r.checks.extend(btf_and_offsets());
    r.checks.push(mount_check("bpffs", "/sys/fs/bpf", BPF_FS_MAGIC, "bpffs", "mount -t bpf bpf /sys/fs/bpf"));
    let sec = mount_check(
        "securityfs",
        "/sys/kernel/security",
        SECURITYFS_MAGIC,
        "securityfs",
        "mount -t securityfs securityfs /sys/kernel/security",
    );
    let sec_ok = sec.verdict == Verdict::Ok;
    r.checks.push(sec);
    let (lsm_check, lsms) = lsm_list(sec_ok);
    r.checks.push(lsm_check);
    r.checks.extend(lockdown());
    r.checks.push(tracefs());
    r.checks.push(cgroup2());
    r.checks.push(landlock(lsms.as_deref()));
    r.checks.extend(seccomp());

    match ProbeCgroup::create() {
        Ok(cg) => {
            let tried = try_backends(&cg.0);
            drop(cg);
            for (b, res) in &tried.results {
                let (verdict, detail, fix) = explain_backend(*b, res, lsms.as_deref(), privileged);
                r.checks.push(Check { check: format!("backend.{}", b.name()), verdict, detail, fix });
            }
            match tried.chosen {
                Some(Chosen { backend: b, channels, probe }) => {
                    r.checks.push(Check::ok(
                        "backend",
                        format!("{} (the daemon's choice: the first of lsm, fmod_ret, kill that works)", b.name()),
                    ));
                    r.checks.push(match probe {
                        Ok(d) => Check::ok("enforce", d),
                        Err(e) => Check::bad("enforce", Verdict::No, e, "none known: report it with this output"),
                    });
                    r.backend = Some(b);
                    r.channels = channels;
                }
                None => r.checks.push(Check::bad(
                    "backend",
                    Verdict::No,
                    "no backend loads, attaches and passes its checks",
                    "see the fixes of the backend.* lines",
                )),
            }
        }
        Err(e) => {
            let fix = if privileged { "mount cgroup v2 (see cgroup2)" } else { "run as root" };
            r.checks.push(Check::bad(
                "backend",
                Verdict::No,
                format!("not tried: the probes' network programs need a cgroup of their own ({e})"),
                fix,
            ));
        }
    }
    r.checks.push(daemon(socket));
    r
}
