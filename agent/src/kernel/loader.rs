//! Attaching the programs: lifecycle hooks first, then the strongest enforcement backend that
//! loads, attaches *and is proven to run*; every attempt is recorded for `status`.
use std::path::Path;

use aya::{
    Ebpf,
    maps::{Array, PerCpuArray, ProgramArray},
    programs::{BtfTracePoint, FEntry, FExit, Lsm, TracePoint, links::FdLink},
};
use mcpguard_common as c;
use mcpguard_common::Conf;
use mcpguard_common::{
    DENY_BTF_PROGS, KILL_BTF_PROGS, KILL_IO_URING, KILL_SOCKET, KILL_TP_PROGS, KILL_UNIX_EXIT, LIFECYCLE_PROGS,
    LSM_PROGS,
};

use crate::kernel::btf::Btf as KernelBtf;
use crate::kernel::setup::{Backend, EngineError, EngineOptions, Probe};

/// Loads the refused-command-line reporter and puts it in slot 0 of the program array that
/// `mcpg_cmdline` tail-calls (every backend). Without it a refusal still kills; only the
/// record with the command line is missing, so a failure here fails the load.
pub fn load_argv_tail(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<(), EngineError> {
    let prog = c::PROG_CMDLINE_ARGV;
    let p: &mut BtfTracePoint = ebpf.program_mut(prog).ok_or_else(|| missing(prog))?.try_into().map_err(perr(prog))?;
    p.load("sched_process_exec", btf).map_err(perr(prog))?;
    let fd = p.fd().map_err(perr(prog))?.try_clone().map_err(|source| EngineError::Pin {
        what: format!("a copy of program {prog}'s fd"),
        path: Path::new("(object)").into(),
        source,
    })?;
    let map = ebpf.map_mut(c::MAP_ARGV_PROG).ok_or(EngineError::MissingMap { map: c::MAP_ARGV_PROG })?;
    let mut slots: ProgramArray<_> =
        ProgramArray::try_from(map).map_err(crate::kernel::setup::map_err(c::MAP_ARGV_PROG))?;
    slots.set(0, &fd, 0).map_err(crate::kernel::setup::map_err(c::MAP_ARGV_PROG))
}

/// A link to keep (dropping it detaches) or pin.
pub enum AnyLink {
    Aya(FdLink),
    /// Created by our own fmod_ret loader.
    Raw(std::os::fd::OwnedFd),
}

impl AnyLink {
    pub fn pin(self, path: &Path) -> std::io::Result<()> {
        match self {
            Self::Aya(l) => l.pin(path).map(drop).map_err(|e| std::io::Error::other(e.to_string())),
            Self::Raw(fd) => crate::kernel::fmodret::pin(&fd, path),
        }
    }
}

/// Programs whose links are always attached for a backend (lifecycle first); the syscall
/// tracepoints (`open_programs`, `guard_programs`) come and go with the governed processes.
#[must_use]
pub fn backend_programs(b: Backend) -> Vec<&'static str> {
    let mut v: Vec<&str> = LIFECYCLE_PROGS.iter().map(|(p, _)| *p).collect();
    match b {
        Backend::Kill => v.extend(KILL_BTF_PROGS.iter().map(|(p, _)| *p)),
        Backend::Lsm => {
            v.extend(DENY_BTF_PROGS.iter().map(|(p, _)| *p));
            v.extend(LSM_PROGS.iter().map(|(p, _)| *p));
            v.extend(c::PATH_HOOKS.iter().filter(|h| h.4).map(|h| h.0));
            v.extend([c::PROG_UTIMES_IN, c::PROG_UTIMES_OUT, c::PROG_LSM_TIMES]);
            v.extend(c::NET_HOOKS.iter().map(|h| h.0));
        }
        Backend::FmodRet => {
            v.extend(DENY_BTF_PROGS.iter().map(|(p, _)| *p));
            v.extend(c::FMOD_PROGS.iter().map(|(p, _)| *p));
            v.extend(c::PATH_HOOKS.iter().filter(|h| h.4).map(|h| h.2));
            v.extend([c::PROG_UTIMES_IN, c::PROG_UTIMES_OUT, c::PROG_FMOD_TIMES]);
            v.extend(c::NET_HOOKS.iter().map(|h| h.2));
        }
    }
    v.extend(c::NET_PROGS.iter().map(|(p, _)| *p));
    v
}

/// `bpf_attach_type` of each network program's attach point (`NET_PROGS`).
fn net_attach_type(point: &str) -> u32 {
    use aya_obj::generated::bpf_attach_type as t;
    (match point {
        "connect4" => t::BPF_CGROUP_INET4_CONNECT,
        "connect6" => t::BPF_CGROUP_INET6_CONNECT,
        "sendmsg4" => t::BPF_CGROUP_UDP4_SENDMSG,
        "sendmsg6" => t::BPF_CGROUP_UDP6_SENDMSG,
        "bind4" => t::BPF_CGROUP_INET4_BIND,
        "bind6" => t::BPF_CGROUP_INET6_BIND,
        _ => t::BPF_CGROUP_INET_SOCK_CREATE,
    }) as u32
}

/// The cgroup whose processes (and descendants') the network programs see: the daemon's
/// `--net-cgroup`, or the cgroup v2 root (every process on the host).
pub fn net_cgroup(opts: &EngineOptions) -> Result<std::path::PathBuf, EngineError> {
    match &opts.net_cgroup {
        Some(p) => Ok(p.clone()),
        None => crate::kernel::cgroup::root().map(Path::to_path_buf).ok_or_else(|| EngineError::Adopt {
            path: "/proc/self/mounts".into(),
            msg: "cgroup v2 is not mounted: the network programs attach to a cgroup v2 directory".into(),
        }),
    }
}

/// The network programs' links, and whether the Unix address programs are among them.
pub type NetLinks = (Vec<(&'static str, AnyLink)>, bool);

/// Loads the network programs and attaches them to `cgroup` (see `ebpf/src/net.rs`): the IP
/// address and socket-creation programs on every backend, and on the kill backend the Unix
/// address programs where the kernel has them (6.7+). Returns the links, and whether the Unix
/// address programs are attached.
pub fn attach_net(ebpf: &mut Ebpf, backend: Backend, cgroup: &Path) -> Result<NetLinks, EngineError> {
    use std::os::fd::AsFd as _;
    let dir = std::fs::File::open(cgroup)
        .map_err(|e| EngineError::Adopt { path: cgroup.into(), msg: format!("cannot open the network cgroup: {e}") })?;
    let mut links = Vec::new();
    for (prog, point) in c::NET_PROGS {
        let p = ebpf.program_mut(prog).ok_or_else(|| missing(prog))?;
        let fd = match p {
            aya::programs::Program::CgroupSockAddr(p) => {
                p.load().map_err(perr(prog))?;
                p.fd().map_err(perr(prog))?.as_fd().try_clone_to_owned()
            }
            aya::programs::Program::CgroupSock(p) => {
                p.load().map_err(perr(prog))?;
                p.fd().map_err(perr(prog))?.as_fd().try_clone_to_owned()
            }
            _ => return Err(missing(prog)),
        }
        .map_err(|e| EngineError::Adopt { path: cgroup.into(), msg: format!("{prog}: {e}") })?;
        let link = crate::kernel::fmodret::cgroup_link(fd.as_fd(), dir.as_fd(), net_attach_type(point))
            .map_err(|e| EngineError::Adopt { path: cgroup.into(), msg: format!("attaching {prog} ({point}): {e}") })?;
        links.push((prog, AnyLink::Raw(link)));
    }
    let mut unix = false;
    if backend == Backend::Kill {
        match crate::kernel::fmodret::attach_unix_addr(crate::kernel::setup::OBJECT, ebpf, dir.as_fd()) {
            Ok(l) => {
                links.extend(l.into_iter().map(|(p, fd)| (p, AnyLink::Raw(fd))));
                unix = true;
            }
            Err(e) => log::warn!("Unix-socket address programs unavailable (Linux 6.7+): {e}"),
        }
    }
    Ok((links, unix))
}

fn perr(prog: &'static str) -> impl Fn(aya::programs::ProgramError) -> EngineError {
    move |source| EngineError::Program { prog, source }
}

fn missing(prog: &'static str) -> EngineError {
    EngineError::Adopt { path: Path::new("(object)").into(), msg: format!("program {prog} is missing from the object") }
}

fn btf_tp(ebpf: &mut Ebpf, btf: &aya::Btf, prog: &'static str, tp: &str) -> Result<FdLink, EngineError> {
    let p: &mut BtfTracePoint = ebpf.program_mut(prog).ok_or_else(|| missing(prog))?.try_into().map_err(perr(prog))?;
    p.load(tp, btf).map_err(perr(prog))?;
    let id = p.attach().map_err(perr(prog))?;
    Ok(p.take_link(id).map_err(perr(prog))?.into())
}

/// Attaches a loaded `syscalls:` tracepoint program and returns its link.
pub fn attach_syscall_tp(p: &mut TracePoint, prog: &'static str, tp: &str) -> Result<FdLink, EngineError> {
    let id = p.attach("syscalls", tp).map_err(perr(prog))?;
    p.take_link(id).map_err(perr(prog))?.try_into().map_err(|e: aya::programs::links::LinkError| EngineError::Adopt {
        path: Path::new("(link)").into(),
        msg: format!("{prog}: tracepoint link is not an fd link (kernel too old for bpf_link on perf events?): {e}"),
    })
}

/// The object's `syscalls:` tracepoint program `prog`.
pub fn syscall_prog<'a>(ebpf: &'a mut Ebpf, prog: &'static str) -> Result<&'a mut TracePoint, EngineError> {
    ebpf.program_mut(prog).ok_or_else(|| missing(prog))?.try_into().map_err(perr(prog))
}

fn syscall_events_dir() -> Result<&'static Path, EngineError> {
    ["/sys/kernel/tracing/events/syscalls", "/sys/kernel/debug/tracing/events/syscalls"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .ok_or_else(|| EngineError::Adopt {
            path: "/sys/kernel/tracing".into(),
            msg: "syscall tracepoints are not visible: mount tracefs (mount -t tracefs tracefs /sys/kernel/tracing)"
                .into(),
        })
}

/// The kill backend's `syscalls:` tracepoints on the open family, (program, tracepoint): needed
/// whenever anything is governed on that backend. None on the deny backends (LSM hooks).
#[must_use]
pub fn open_programs(b: Backend) -> Vec<(&'static str, &'static str)> {
    if b == Backend::Kill { KILL_TP_PROGS.to_vec() } else { Vec::new() }
}

/// The kill backend's Unix peer-object check (`sys_exit_connect`), where the Unix address programs
/// that hand it its connects are attached (6.7+); nothing otherwise.
#[must_use]
pub fn unix_programs(b: Backend, unix_addr: bool) -> Vec<(&'static str, &'static str)> {
    if b == Backend::Kill && unix_addr { vec![KILL_UNIX_EXIT] } else { Vec::new() }
}

/// The guard syscalls' `sys_enter_*` tracepoints on every backend (bpf, ptrace, mounts, modules,
/// hard links; io_uring_setup and socket families on the kill backend): needed while a governed process does not carry
/// the launcher's seccomp filter, which refuses the same syscalls itself. A syscall this kernel
/// does not have (no tracepoint) has nothing to guard.
pub fn guard_programs(b: Backend) -> Result<Vec<(&'static str, &'static str)>, EngineError> {
    let events = syscall_events_dir()?;
    let mut v = Vec::new();
    if b == Backend::Kill {
        v.extend([KILL_IO_URING, KILL_SOCKET]);
    }
    for g in c::GUARD_SYSCALLS {
        if events.join(g.tracepoint).exists() {
            v.push((g.prog, g.tracepoint));
        } else {
            log::debug!("no tracepoint {}: syscall not in this kernel", g.tracepoint);
        }
    }
    Ok(v)
}

fn lsm(ebpf: &mut Ebpf, btf: &aya::Btf, prog: &'static str, hook: &str) -> Result<FdLink, EngineError> {
    let p: &mut Lsm = ebpf.program_mut(prog).ok_or_else(|| missing(prog))?.try_into().map_err(perr(prog))?;
    p.load(hook, btf).map_err(perr(prog))?;
    let id = p.attach().map_err(perr(prog))?;
    Ok(p.take_link(id).map_err(perr(prog))?.into())
}

/// File times (deny backends, `ebpf/src/times.rs`): the fentry and fexit on `vfs_utimes` that
/// decide and forget, attached before the setattr hook that carries the decision out.
fn attach_utimes(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<Vec<(&'static str, AnyLink)>, EngineError> {
    let (pin, pout) = (c::PROG_UTIMES_IN, c::PROG_UTIMES_OUT);
    let p: &mut FEntry = ebpf.program_mut(pin).ok_or_else(|| missing(pin))?.try_into().map_err(perr(pin))?;
    p.load(c::UTIMES_FN, btf).map_err(perr(pin))?;
    let id = p.attach().map_err(perr(pin))?;
    let entry: FdLink = p.take_link(id).map_err(perr(pin))?.into();
    let p: &mut FExit = ebpf.program_mut(pout).ok_or_else(|| missing(pout))?.try_into().map_err(perr(pout))?;
    p.load(c::UTIMES_FN, btf).map_err(perr(pout))?;
    let id = p.attach().map_err(perr(pout))?;
    let exit: FdLink = p.take_link(id).map_err(perr(pout))?.into();
    Ok(vec![(pin, AnyLink::Aya(entry)), (pout, AnyLink::Aya(exit))])
}

/// The LSM times program for this kernel's `inode_setattr`: `(idmap, dentry, attr)` or, on 6.1,
/// `(dentry, attr)`, told apart by the BTF of `bpf_lsm_inode_setattr`; its link is kept as
/// [`c::PROG_LSM_TIMES`] either way.
fn lsm_times(ebpf: &mut Ebpf, btf: &aya::Btf, kernel: &KernelBtf) -> Result<(&'static str, AnyLink), String> {
    let hook = c::LSM_TIMES_HOOK;
    let args = kernel.func_params(&format!("bpf_lsm_{hook}")).map_err(|e| format!("LSM hook {hook}: {e}"))?;
    let prog = match args {
        3 => c::PROG_LSM_TIMES,
        2 => c::PROG_LSM_TIMES_OLD,
        n => return Err(format!("LSM hook {hook} has {n} arguments here (2 or 3 expected)")),
    };
    Ok((c::PROG_LSM_TIMES, AnyLink::Aya(lsm(ebpf, btf, prog, hook).map_err(|e| e.to_string())?)))
}

fn active_lsms() -> Result<String, String> {
    std::fs::read_to_string("/sys/kernel/security/lsm")
        .map_err(|e| format!("cannot read /sys/kernel/security/lsm ({e}); is securityfs mounted?"))
}

/// Proves the attached LSM programs run: opens a file from this process with the probe tgid
/// set, and requires the hook's probe counter to move.
fn lsm_self_test(ebpf: &mut Ebpf) -> Result<(), String> {
    let count = |ebpf: &Ebpf| -> Result<u64, String> {
        let m = ebpf.map(c::MAP_COUNTERS).ok_or("counters map missing")?;
        let a = PerCpuArray::<_, u64>::try_from(m).map_err(|e| e.to_string())?;
        Ok(a.get(&c::COUNTER_LSM_PROBE, 0).map_err(|e| e.to_string())?.iter().sum())
    };
    let set_probe = |ebpf: &mut Ebpf, tgid: u32| -> Result<(), String> {
        let m = ebpf.map_mut(c::MAP_CONF).ok_or("conf map missing")?;
        let mut a = Array::<_, Conf>::try_from(m).map_err(|e| e.to_string())?;
        let mut conf = a.get(&0, 0).map_err(|e| e.to_string())?;
        conf.probe_tgid = tgid;
        a.set(0, conf, 0).map_err(|e| e.to_string())
    };
    let before = count(ebpf)?;
    set_probe(ebpf, std::process::id())?;
    let opened = std::fs::File::open("/proc/self/stat").is_ok();
    set_probe(ebpf, 0)?;
    let after = count(ebpf)?;
    if !opened || after <= before {
        return Err("LSM programs attached but their hooks never ran: `bpf` is not active in the LSM list".into());
    }
    Ok(())
}

fn try_backend(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    kernel: &KernelBtf,
    b: Backend,
) -> Result<Vec<(&'static str, AnyLink)>, String> {
    let mut links = Vec::new();
    match b {
        Backend::Lsm => {
            let lsms = active_lsms()?;
            if !lsms.split(',').any(|l| l.trim() == "bpf") {
                return Err(format!("`bpf` is not in the active LSM list ({})", lsms.trim()));
            }
            for (prog, hook) in LSM_PROGS {
                links.push((prog, AnyLink::Aya(lsm(ebpf, btf, prog, hook).map_err(|e| e.to_string())?)));
            }
            // Path operations; a hook this kernel does not have (file_truncate before 6.2) is
            // skipped when optional: the operation then passes a hook that is attached.
            for (prog, hook, _, _, required) in c::PATH_HOOKS {
                if !required
                    && btf.id_by_type_name_kind(&format!("bpf_lsm_{hook}"), aya_obj::btf::BtfKind::Func).is_err()
                {
                    log::info!("LSM hook {hook} not in this kernel: {prog} not attached");
                    continue;
                }
                links.push((prog, AnyLink::Aya(lsm(ebpf, btf, prog, hook).map_err(|e| e.to_string())?)));
            }
            for (prog, hook, _, _) in c::NET_HOOKS {
                links.push((prog, AnyLink::Aya(lsm(ebpf, btf, prog, hook).map_err(|e| e.to_string())?)));
            }
            links.extend(attach_utimes(ebpf, btf).map_err(|e| e.to_string())?);
            links.push(lsm_times(ebpf, btf, kernel)?);
            for (prog, tp) in DENY_BTF_PROGS {
                links.push((prog, AnyLink::Aya(btf_tp(ebpf, btf, prog, tp).map_err(|e| e.to_string())?)));
            }
            lsm_self_test(ebpf)?; // on failure the links are dropped: detached
        }
        Backend::Kill => {
            for (prog, tp) in KILL_BTF_PROGS {
                links.push((prog, AnyLink::Aya(btf_tp(ebpf, btf, prog, tp).map_err(|e| e.to_string())?)));
            }
        }
        Backend::FmodRet => {
            // Before the fmod_ret setattr program (in `fmodret::attach`) that carries it out.
            links.extend(attach_utimes(ebpf, btf).map_err(|e| e.to_string())?);
            for (prog, fd) in crate::kernel::fmodret::attach(crate::kernel::setup::OBJECT, ebpf, btf)? {
                links.push((prog, AnyLink::Raw(fd)));
            }
            for (prog, tp) in DENY_BTF_PROGS {
                links.push((prog, AnyLink::Aya(btf_tp(ebpf, btf, prog, tp).map_err(|e| e.to_string())?)));
            }
            lsm_self_test(ebpf).map_err(|_| "fmod_ret programs attached but never ran".to_string())?;
        }
    }
    Ok(links)
}

/// What [`attach`] gives the engine: the backend in force, its links by program, every probe.
pub type Attached = (Backend, Vec<(&'static str, AnyLink)>, Vec<Probe>);

/// Attaches lifecycle hooks, then the forced backend or the strongest that works, and loads
/// (without attaching) the backend's syscall tracepoint programs.
/// `kernel` is the running kernel's BTF as the offsets were read from it.
pub fn attach(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    kernel: &KernelBtf,
    opts: &EngineOptions,
) -> Result<Attached, EngineError> {
    // Lifecycle hooks first, so that no child escapes between attaching exec/open and fork.
    let mut links = Vec::new();
    for (prog, tp) in LIFECYCLE_PROGS {
        links.push((prog, AnyLink::Aya(btf_tp(ebpf, btf, prog, tp)?)));
    }
    syscall_events_dir()?;
    let candidates = match opts.backend {
        Some(b) => vec![b],
        None => vec![Backend::Lsm, Backend::FmodRet, Backend::Kill],
    };
    let mut probes = Vec::new();
    for b in candidates {
        let t = std::time::Instant::now();
        let tried = try_backend(ebpf, btf, kernel, b);
        log::info!("backend {}: tried in {} ms", b.name(), t.elapsed().as_millis());
        match tried {
            Ok(l) => {
                probes.push(Probe { backend: b, result: "attached and verified".into() });
                links.extend(l);
                // The Unix peer check is loaded even where the kernel lacks the Unix address
                // programs (it is then never attached: `unix_programs`).
                for (prog, _) in open_programs(b).into_iter().chain(guard_programs(b)?).chain(unix_programs(b, true)) {
                    syscall_prog(ebpf, prog)?.load().map_err(perr(prog))?;
                }
                return Ok((b, links, probes));
            }
            Err(e) => {
                log::info!("backend {} unavailable: {e}", b.name());
                probes.push(Probe { backend: b, result: e });
            }
        }
    }
    Err(EngineError::NoBackend {
        tried: probes.iter().map(|p| format!("{}: {}", p.backend.name(), p.result)).collect::<Vec<_>>().join("; "),
    })
}
