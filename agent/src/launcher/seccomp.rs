//! Per-process guard filter (seccomp) for the processes mcpguard launches.
//!
//! The kernel programs catch the *guard syscalls* of governed processes (hard links, bpf,
//! ptrace, the mount family, module loading, io_uring) on every backend; on the `kill` backend
//! they do it from `sys_enter_*` tracepoints with SIGKILL, so the syscall itself still runs (a
//! mount or a hard link exists before the kill lands). For the processes mcpguard starts itself
//! (`mcpguard exec`, the MCP proxy's server) this filter refuses the same syscalls (and their
//! siblings, [`guarded`]) synchronously with `EPERM`: the process keeps running and sees an
//! error, on every kernel. A seccomp filter is inherited by every descendant across fork and
//! execve and can never be removed, only made stricter. The in-kernel guards stay: they also
//! cover processes mcpguard did not launch (cgroup sessions, registered pids). A syscall refused
//! here never reaches the `sys_enter` tracepoints (seccomp runs first), so it is not reported as
//! a kernel decision.
//!
//! Layout (compiled by `seccompiler` for the running architecture, then prefixed):
//! 1. x86_64 only: a syscall number with the x32 bit (`0x4000_0000`) kills the process — x32
//!    syscalls carry `AUDIT_ARCH_X86_64` with different numbers and would otherwise pass;
//! 2. a foreign architecture (i386 `int 0x80`, AArch32 compat) kills the process;
//! 3. each guarded syscall number returns `EPERM` (the metadata syscalls and times given
//!    explicitly too, unless launched with `--allow-metadata`: [`METADATA`], [`TIMES`]);
//!    everything else is allowed.
//!
//! `no_new_privs` is always set with the filter (the kernel requires it from a process without
//! `CAP_SYS_ADMIN`; we set it for root launchers too, so behaviour does not depend on who
//! launches): a governed process cannot gain privileges by executing a setuid/setgid or
//! file-capability binary (e.g. `sudo`, `su`).
use anyhow::{Context as _, bail};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch, sock_filter,
};

/// A guarded syscall: name, x86_64 number, number in the generic table (aarch64; `None` where
/// the syscall does not exist there).
#[derive(Debug, Clone, Copy)]
pub struct Guarded {
    pub name: &'static str,
    pub x86_64: u32,
    pub generic: Option<u32>,
}

const fn g(name: &'static str, x86_64: u32, generic: Option<u32>) -> Guarded {
    Guarded { name, x86_64, generic }
}

/// Refused with `EPERM` besides [`mcpguard_common::GUARD_SYSCALLS`] (the table the kernel's
/// guard tracepoints come from too):
/// - `open_by_handle_at`: opens by file handle, not by path (the classic container escape;
///   needs `CAP_DAC_READ_SEARCH`). The open hooks check its result too; this is depth;
/// - `io_uring_*`: the kernel refuses `io_uring_setup` to governed processes on the kill backend
///   (its opens pass no open-family tracepoint); `io_uring_enter`/`io_uring_register` also stop
///   a ring received from elsewhere (SCM_RIGHTS).
///
/// Deliberately allowed: `name_to_handle_at` (only reads a handle; used to identify mounts),
/// `symlink*` (a symlink is resolved to its real object by the open check), `rename*` (decided
/// by the path hooks on the deny backends, bounded by the Landlock write ceiling otherwise), `unshare`/`clone` namespaces (a new user namespace gives
/// capabilities, but the mount family stays refused in it), `chroot`, `perf_event_open`.
pub const GUARDED_EXTRA: &[Guarded] = &[
    g("open_by_handle_at", 304, Some(265)),
    g("io_uring_setup", 425, Some(425)),
    g("io_uring_enter", 426, Some(426)),
    g("io_uring_register", 427, Some(427)),
];

/// Every syscall the guard filter refuses with `EPERM` (besides [`METADATA`]): the kernel's guard
/// table and [`GUARDED_EXTRA`].
#[must_use]
pub fn guarded() -> Vec<Guarded> {
    mcpguard_common::GUARD_SYSCALLS
        .iter()
        .map(|c| g(c.name, c.x86_64, c.generic))
        .chain(GUARDED_EXTRA.iter().copied())
        .collect()
}

/// Metadata changes (mode, owner, extended attributes), refused with `EPERM` too unless the
/// launch allows them (`--allow-metadata`): an MCP server rarely needs them, and they are how
/// permissions are widened. A session-wide switch, not per path (the kill backend has no hook
/// that could decide them per path; on the deny backends the path hooks decide them per path
/// besides).
pub const METADATA: &[Guarded] = &[
    g("chmod", 90, None),
    g("fchmod", 91, Some(52)),
    g("fchmodat", 268, Some(53)),
    g("fchmodat2", 452, Some(452)),
    g("chown", 92, None),
    g("fchown", 93, Some(55)),
    g("lchown", 94, None),
    g("fchownat", 260, Some(54)),
    g("setxattr", 188, Some(5)),
    g("lsetxattr", 189, Some(6)),
    g("fsetxattr", 190, Some(7)),
    g("removexattr", 197, Some(14)),
    g("lremovexattr", 198, Some(15)),
    g("fremovexattr", 199, Some(16)),
    g("setxattrat", 463, Some(463)),
    g("removexattrat", 466, Some(466)),
];

/// File times set to values given by the caller: refused with `EPERM` unless the launch allows
/// metadata changes, when the `times` argument (index `arg`) is not NULL. A NULL `times` ("set
/// to now", what `touch FILE` does) stays allowed: the kernel lets only the owner or a writer of
/// the object do it, and the deny backends decide it per path. A non-NULL array whose entries
/// are `UTIME_NOW`/`UTIME_OMIT` looks the same to seccomp (it sees the pointer, not the memory
/// behind it) and is refused too: the conservative reading. (name, x86_64, generic, arg index)
pub const TIMES: &[(Guarded, u32)] = &[
    (g("utime", 132, None), 1),
    (g("utimes", 235, None), 1),
    (g("futimesat", 261, None), 2),
    (g("utimensat", 280, Some(88)), 2),
];

/// x32 syscalls are x86_64 numbers with this bit set (`__X32_SYSCALL_BIT`).
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
/// `offsetof(struct seccomp_data, nr)`.
const SECCOMP_DATA_NR: u32 = 0;

/// The compiled guard filter, ready to install (compile before `fork`, install in the child).
#[derive(Debug, Clone)]
pub struct GuardFilter {
    prog: BpfProgram,
}

impl GuardFilter {
    /// The filter for the architecture this binary runs on; an architecture without a syscall
    /// table here is an error (callers fail closed: the program is not started).
    pub fn new() -> anyhow::Result<Self> {
        Self::with_metadata(false)
    }

    /// The filter for this architecture; `allow_metadata` leaves [`METADATA`] and [`TIMES`] out
    /// of it.
    pub fn with_metadata(allow_metadata: bool) -> anyhow::Result<Self> {
        let arch =
            TargetArch::try_from(std::env::consts::ARCH).map_err(|e| anyhow::anyhow!("seccomp guard filter: {e}"))?;
        Self::for_arch_with(arch, allow_metadata)
    }

    pub fn for_arch(arch: TargetArch) -> anyhow::Result<Self> {
        Self::for_arch_with(arch, false)
    }

    pub fn for_arch_with(arch: TargetArch, allow_metadata: bool) -> anyhow::Result<Self> {
        let all = guarded();
        let refused = all.iter().chain(if allow_metadata { &[][..] } else { METADATA });
        let nrs: Vec<u32> = match arch {
            TargetArch::x86_64 => refused.map(|g| g.x86_64).collect(),
            TargetArch::aarch64 => refused.filter_map(|g| g.generic).collect(),
            other => bail!("seccomp guard filter: no syscall table for {other:?}"),
        };
        let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
            nrs.into_iter().map(|nr| (i64::from(nr), vec![])).collect();
        // socket() of a family no grant can name (packet, netlink, vsock, ...): EPERM. Decided
        // on the register value, not on memory.
        let socket_nr = match arch {
            TargetArch::x86_64 => libc::SYS_socket,
            _ => 198, // aarch64 (generic table)
        };
        let ne = |v: i32| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, v as u64);
        let other_family = SeccompRule::new(vec![ne(libc::AF_UNIX)?, ne(libc::AF_INET)?, ne(libc::AF_INET6)?])?;
        rules.insert(socket_nr, vec![other_family]);
        if !allow_metadata {
            for (t, arg) in TIMES {
                let nr = match arch {
                    TargetArch::x86_64 => Some(t.x86_64),
                    _ => t.generic,
                };
                let Some(nr) = nr else { continue };
                let given = SeccompCondition::new(*arg as u8, SeccompCmpArgLen::Qword, SeccompCmpOp::Ne, 0)?;
                rules.insert(i64::from(nr), vec![SeccompRule::new(vec![given])?]);
            }
        }
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
            .context("building the seccomp guard filter")?;
        let body: BpfProgram = filter.try_into().context("compiling the seccomp guard filter")?;
        let mut prog = Vec::with_capacity(body.len() + 3);
        if arch == TargetArch::x86_64 {
            // Before seccompiler's own arch check: on a foreign arch it kills anyway.
            prog.extend([
                sock_filter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: SECCOMP_DATA_NR },
                sock_filter { code: BPF_JMP_JGE_K, jt: 0, jf: 1, k: X32_SYSCALL_BIT },
                sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: libc::SECCOMP_RET_KILL_PROCESS },
            ]);
        }
        prog.extend(body);
        Ok(Self { prog })
    }

    #[must_use]
    pub fn program(&self) -> &[sock_filter] {
        &self.prog
    }

    /// Sets `no_new_privs` and installs the filter on the calling thread (its later children
    /// and exec'd images inherit it). Two syscalls, no allocation: safe between `fork` and
    /// `execve` of a multi-threaded parent. On error the caller must not exec.
    pub fn install(&self) -> Result<(), std::io::Error> {
        seccompiler::apply_filter(&self.prog).map_err(|e| match e {
            seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => e,
            _ => std::io::Error::from_raw_os_error(libc::EINVAL),
        })
    }
}

/// The signal syscalls of a launched session, handed to the daemon (`SECCOMP_RET_USER_NOTIF`):
/// on the kill backend no kernel hook can refuse a signal before it is delivered, so the daemon
/// decides each one (`signals.rs`) and the kernel either carries it out as asked or returns the
/// daemon's errno. (x86_64 number, generic number).
pub const SIGNAL_SYSCALLS: &[Guarded] = &[
    g("kill", 62, Some(129)),
    g("tkill", 200, Some(130)),
    g("tgkill", 234, Some(131)),
    g("rt_sigqueueinfo", 129, Some(138)),
    g("rt_tgsigqueueinfo", 297, Some(240)),
];
/// `pidfd_send_signal` names its target by a descriptor, which a sibling thread could swap between
/// the daemon's look and the kernel's: refused with `ENOSYS`, as on a kernel before 5.1, so
/// runtimes fall back to `kill` (Go, systemd and glibc's `pidfd_send_signal` users do).
pub const PIDFD_SEND_SIGNAL: Guarded = g("pidfd_send_signal", 424, Some(424));

use mcpguard_common::{AUDIT_ARCH_AARCH64, AUDIT_ARCH_X86_64};
const BPF_JMP_JEQ_K: u16 = 0x15;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;

/// The signal filter (see [`SIGNAL_SYSCALLS`]), installed next to the guard filter with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`: the descriptor it returns is the daemon's to read.
#[derive(Debug, Clone)]
pub struct SignalFilter {
    prog: Vec<sock_filter>,
}

impl SignalFilter {
    pub fn new() -> anyhow::Result<Self> {
        let arch =
            TargetArch::try_from(std::env::consts::ARCH).map_err(|e| anyhow::anyhow!("seccomp signal filter: {e}"))?;
        Self::for_arch(arch)
    }

    pub fn for_arch(arch: TargetArch) -> anyhow::Result<Self> {
        let (audit, nrs, pidfd): (u32, Vec<u32>, u32) = match arch {
            TargetArch::x86_64 => (AUDIT_ARCH_X86_64, SIGNAL_SYSCALLS.iter().map(|g| g.x86_64).collect(), 424),
            TargetArch::aarch64 => {
                (AUDIT_ARCH_AARCH64, SIGNAL_SYSCALLS.iter().filter_map(|g| g.generic).collect(), 424)
            }
            other => bail!("seccomp signal filter: no syscall table for {other:?}"),
        };
        // 0 ld arch; 1 jeq native (else allow: the guard filter kills foreign arches); 2 ld nr;
        // 3.. jeq per signal syscall -> notif; jeq pidfd_send_signal -> enosys; allow; enosys; notif.
        let n = nrs.len();
        let allow = 3 + n + 1;
        let (enosys, notif) = (allow + 1, allow + 2);
        let rel = |from: usize, to: usize| u8::try_from(to - from - 1).expect("short filter");
        let mut prog = vec![
            sock_filter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: 4 },
            sock_filter { code: BPF_JMP_JEQ_K, jt: 0, jf: rel(1, allow), k: audit },
            sock_filter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: SECCOMP_DATA_NR },
        ];
        for (i, nr) in nrs.iter().enumerate() {
            prog.push(sock_filter { code: BPF_JMP_JEQ_K, jt: rel(3 + i, notif), jf: 0, k: *nr });
        }
        prog.push(sock_filter { code: BPF_JMP_JEQ_K, jt: rel(3 + n, enosys), jf: 0, k: pidfd });
        prog.extend([
            sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
            sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32 },
            sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: SECCOMP_RET_USER_NOTIF },
        ]);
        Ok(Self { prog })
    }

    #[must_use]
    pub fn program(&self) -> &[sock_filter] {
        &self.prog
    }

    /// Sets `no_new_privs` and installs the filter on the calling thread; returns the listener
    /// descriptor (close-on-exec). Raw syscalls on memory prepared before: safe between `fork`
    /// and `execve`. On error the caller must not exec.
    pub fn install(&self) -> Result<std::os::fd::OwnedFd, std::io::Error> {
        use std::os::fd::FromRawFd as _;
        let fprog = libc::sock_fprog {
            len: u16::try_from(self.prog.len()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?,
            filter: self.prog.as_ptr().cast_mut().cast(),
        };
        // SAFETY: plain prctl; `fprog` points at our program for the duration of the call.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &raw const fprog,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(std::os::fd::OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    /// Runs a classic-BPF seccomp program on `seccomp_data {nr, arch}` (the instructions a
    /// filter without argument checks uses), as the kernel would; returns the action.
    fn run(prog: &[sock_filter], arch: u32, nr: u32) -> u32 {
        run_args(prog, arch, nr, [0; 6])
    }

    /// [`run`] with the syscall's arguments (`seccomp_data.args`, little-endian words).
    fn run_args(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        for _ in 0..=prog.len() {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                0x20 => {
                    acc = match i.k {
                        0 => nr,
                        4 => arch,
                        k @ 16..=63 if k % 4 == 0 => {
                            let a = args[(k as usize - 16) / 8];
                            if k % 8 == 0 { a as u32 } else { (a >> 32) as u32 }
                        }
                        k => panic!("load of seccomp_data+{k}"),
                    }
                }
                0x06 => return i.k,
                0x05 => pc += i.k as usize, // ja
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let hit = match i.code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        0x45 => acc & i.k != 0,
                        _ => acc >= i.k,
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                }
                c => panic!("instruction {c:#x} not expected in the guard filter"),
            }
        }
        panic!("program does not terminate");
    }

    #[test]
    fn x86_64_guards_are_eperm_the_rest_is_allowed() {
        let f = GuardFilter::for_arch(TargetArch::x86_64).unwrap();
        let p = f.program();
        // Keep it short (the guard and metadata lists are ~4 instructions per syscall, the
        // times syscalls' argument checks ~9). Since Linux 5.11 the kernel caches the verdict of
        // every syscall the filter allows whatever its arguments, so those do not run it at all.
        assert!(p.len() < 300, "{} instructions", p.len());
        for g in guarded() {
            assert_eq!(run(p, AUDIT_ARCH_X86_64, g.x86_64), EPERM, "{}", g.name);
        }
        // read, openat, execve, clone3, getpid, name_to_handle_at, symlinkat, renameat2: allowed.
        for nr in [0, 257, 59, 435, 39, 303, 266, 316] {
            assert_eq!(run(p, AUDIT_ARCH_X86_64, nr), ALLOW, "nr {nr}");
        }
    }

    #[test]
    fn metadata_changes_are_refused_unless_allowed() {
        let refuse = GuardFilter::for_arch_with(TargetArch::x86_64, false).unwrap();
        let allow = GuardFilter::for_arch_with(TargetArch::x86_64, true).unwrap();
        for m in METADATA {
            assert_eq!(run(refuse.program(), AUDIT_ARCH_X86_64, m.x86_64), EPERM, "{}", m.name);
            assert_eq!(run(allow.program(), AUDIT_ARCH_X86_64, m.x86_64), ALLOW, "{}", m.name);
        }
        for g in guarded() {
            assert_eq!(run(allow.program(), AUDIT_ARCH_X86_64, g.x86_64), EPERM, "{}", g.name);
        }
        // Times: given values are refused unless allowed; "now" (a NULL `times`) is allowed.
        for (t, arg) in TIMES {
            let mut given = [0u64; 6];
            given[*arg as usize] = 0x7fff_1234_5678;
            assert_eq!(run_args(refuse.program(), AUDIT_ARCH_X86_64, t.x86_64, given), EPERM, "{}", t.name);
            // A pointer below 4 GiB (only the low word set) is a pointer too.
            given[*arg as usize] = 0x1000;
            assert_eq!(run_args(refuse.program(), AUDIT_ARCH_X86_64, t.x86_64, given), EPERM, "{}", t.name);
            let mut now = [7u64; 6];
            now[*arg as usize] = 0;
            assert_eq!(run_args(refuse.program(), AUDIT_ARCH_X86_64, t.x86_64, now), ALLOW, "{} now", t.name);
            given[*arg as usize] = 0x7fff_0000_0000;
            assert_eq!(run_args(allow.program(), AUDIT_ARCH_X86_64, t.x86_64, given), ALLOW, "{}", t.name);
        }
        let a = GuardFilter::for_arch_with(TargetArch::aarch64, false).unwrap();
        assert_eq!(run_args(a.program(), AUDIT_ARCH_AARCH64, 88, [0, 0, 0x1000, 0, 0, 0]), EPERM);
        assert_eq!(run_args(a.program(), AUDIT_ARCH_AARCH64, 88, [0, 1, 0, 0, 0, 0]), ALLOW);
    }

    #[test]
    fn signal_syscalls_go_to_the_daemon_and_pidfd_signals_are_enosys() {
        const NOTIF: u32 = 0x7fc0_0000;
        const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let f = SignalFilter::for_arch(TargetArch::x86_64).unwrap();
        for s in SIGNAL_SYSCALLS {
            assert_eq!(run(f.program(), AUDIT_ARCH_X86_64, s.x86_64), NOTIF, "{}", s.name);
        }
        assert_eq!(run(f.program(), AUDIT_ARCH_X86_64, PIDFD_SEND_SIGNAL.x86_64), ENOSYS);
        // read, openat, getpid, rt_sigaction (13), rt_sigprocmask (14), rt_sigreturn (15): allowed.
        for nr in [0, 257, 39, 13, 14, 15] {
            assert_eq!(run(f.program(), AUDIT_ARCH_X86_64, nr), ALLOW, "nr {nr}");
        }
        // Another arch is the guard filter's (it kills); this one lets it through.
        assert_eq!(run(f.program(), AUDIT_ARCH_I386, 37), ALLOW);
        let a = SignalFilter::for_arch(TargetArch::aarch64).unwrap();
        for s in SIGNAL_SYSCALLS {
            assert_eq!(run(a.program(), AUDIT_ARCH_AARCH64, s.generic.unwrap()), NOTIF, "{}", s.name);
        }
        assert_eq!(run(a.program(), AUDIT_ARCH_AARCH64, 172), ALLOW);
        assert!(SignalFilter::for_arch(TargetArch::riscv64).is_err());
    }

    #[test]
    fn x32_and_foreign_arch_syscalls_kill() {
        let p = GuardFilter::for_arch(TargetArch::x86_64).unwrap();
        let p = p.program();
        for nr in [0, 165, 321, 39] {
            assert_eq!(run(p, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | nr), KILL, "x32 {nr}");
            assert_eq!(run(p, AUDIT_ARCH_I386, nr), KILL, "i386 {nr}");
        }
        let a = GuardFilter::for_arch(TargetArch::aarch64).unwrap();
        assert_eq!(run(a.program(), AUDIT_ARCH_ARM, 0), KILL);
        assert_eq!(run(a.program(), AUDIT_ARCH_X86_64, 39), KILL);
    }

    #[test]
    fn aarch64_table() {
        let f = GuardFilter::for_arch(TargetArch::aarch64).unwrap();
        for g in guarded().iter().filter(|g| g.generic.is_some()) {
            assert_eq!(run(f.program(), AUDIT_ARCH_AARCH64, g.generic.unwrap()), EPERM, "{}", g.name);
        }
        // read (63), openat (56), execve (221), getpid (172), renameat2 (276): allowed.
        for nr in [63, 56, 221, 172, 276] {
            assert_eq!(run(f.program(), AUDIT_ARCH_AARCH64, nr), ALLOW, "nr {nr}");
        }
        assert!(GuardFilter::for_arch(TargetArch::riscv64).is_err(), "no table: fail closed");
    }

    #[test]
    fn the_kernel_table_and_io_uring_are_refused_once_each() {
        let all = guarded();
        for c in mcpguard_common::GUARD_SYSCALLS {
            assert_eq!(all.iter().filter(|g| g.x86_64 == c.x86_64).count(), 1, "{}", c.name);
            assert!(c.tracepoint.ends_with(c.name) || c.name == "umount2", "{} at {}", c.name, c.tracepoint);
        }
        assert!(all.iter().any(|g| g.name == "io_uring_setup"));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn numbers_match_libc() {
        let libc_nr = |name: &str| -> Option<i64> {
            Some(match name {
                "link" => libc::SYS_link,
                "linkat" => libc::SYS_linkat,
                "bpf" => libc::SYS_bpf,
                "ptrace" => libc::SYS_ptrace,
                "process_vm_readv" => libc::SYS_process_vm_readv,
                "process_vm_writev" => libc::SYS_process_vm_writev,
                "pidfd_getfd" => libc::SYS_pidfd_getfd,
                "mount" => libc::SYS_mount,
                "umount2" => libc::SYS_umount2,
                "pivot_root" => libc::SYS_pivot_root,
                "open_tree" => libc::SYS_open_tree,
                "move_mount" => libc::SYS_move_mount,
                "fsopen" => libc::SYS_fsopen,
                "fsconfig" => libc::SYS_fsconfig,
                "fsmount" => libc::SYS_fsmount,
                "fspick" => libc::SYS_fspick,
                "mount_setattr" => libc::SYS_mount_setattr,
                "init_module" => libc::SYS_init_module,
                "finit_module" => libc::SYS_finit_module,
                "delete_module" => libc::SYS_delete_module,
                "kexec_load" => libc::SYS_kexec_load,
                "kexec_file_load" => libc::SYS_kexec_file_load,
                "open_by_handle_at" => libc::SYS_open_by_handle_at,
                "io_uring_setup" => libc::SYS_io_uring_setup,
                "io_uring_enter" => libc::SYS_io_uring_enter,
                "io_uring_register" => libc::SYS_io_uring_register,
                "kill" => libc::SYS_kill,
                "tkill" => libc::SYS_tkill,
                "tgkill" => libc::SYS_tgkill,
                "rt_sigqueueinfo" => libc::SYS_rt_sigqueueinfo,
                "rt_tgsigqueueinfo" => libc::SYS_rt_tgsigqueueinfo,
                "pidfd_send_signal" => libc::SYS_pidfd_send_signal,
                "utime" => libc::SYS_utime,
                "utimes" => libc::SYS_utimes,
                "futimesat" => libc::SYS_futimesat,
                "utimensat" => libc::SYS_utimensat,
                _ => return None, // open_tree_attr (Linux 6.15) is not in libc yet
            })
        };
        let times = TIMES.iter().map(|(t, _)| t);
        for g in guarded().iter().chain(SIGNAL_SYSCALLS).chain([&PIDFD_SEND_SIGNAL]).chain(times) {
            if let Some(nr) = libc_nr(g.name) {
                assert_eq!(i64::from(g.x86_64), nr, "{}", g.name);
            }
        }
    }
}
