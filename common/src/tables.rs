//! The tables every part derives from: which program attaches where on which backend, which
//! maps are pinned, which syscalls are guarded. The agent's loader, its fmod_ret loader,
//! adoption after a restart, the eBPF guard programs and the launcher's seccomp filter all read
//! them here.
#[allow(clippy::wildcard_imports, reason = "the names of the crate root these tables list")]
use super::*;

/// Every map the agent pins (and re-opens after a restart).
pub const ALL_MAPS: [&str; 17] = [
    MAP_PROCS,
    MAP_CGROUPS,
    MAP_SESSIONS,
    MAP_EXEC,
    MAP_EXEC_NAMES,
    MAP_PATHS,
    MAP_NET,
    MAP_UNIX,
    MAP_EVENTS,
    MAP_COUNTERS,
    MAP_CONF,
    MAP_ARGV,
    MAP_ARGV_LIT,
    MAP_ENV_EXEMPT,
    MAP_ENV_NAMES,
    MAP_SESSION_ENV,
    MAP_ARGV_PROG,
];

/// Lifecycle BTF tracepoints, common to every backend: (program, tracepoint).
pub const LIFECYCLE_PROGS: [(&str, &str); 2] = [(PROG_FORK, "sched_process_fork"), (PROG_EXIT, "sched_process_exit")];
/// Kill backend: exec BTF tracepoint...
pub const KILL_BTF_PROGS: [(&str, &str); 2] = [(PROG_EXEC, "sched_process_exec"), (PROG_CMDLINE, "sched_process_exec")];
/// Deny backends: the command line of an exec their hook approved, after its point of no return
/// (on the kill backend it is in `KILL_BTF_PROGS`).
pub const DENY_BTF_PROGS: [(&str, &str); 1] = [(PROG_CMDLINE, "sched_process_exec")];
/// ...and syscall tracepoints: (program, tracepoint name in category `syscalls`). Like the guard
/// syscalls, these are attached only while something is governed (`lazy.rs`).
pub const KILL_TP_PROGS: [(&str, &str); 9] = [
    (PROG_OPENAT, "sys_exit_openat"),
    (PROG_OPEN, "sys_exit_open"),
    (PROG_OPENAT2, "sys_exit_openat2"),
    (PROG_CREAT, "sys_exit_creat"),
    (PROG_OPEN_BY_HANDLE, "sys_exit_open_by_handle_at"),
    // Executable file mappings (W^X for grants), decided at entry.
    (PROG_MMAP, "sys_enter_mmap"),
    (PROG_MPROTECT, "sys_enter_mprotect"),
    (PROG_PKEY_MPROTECT, "sys_enter_pkey_mprotect"),
    // A socket listening on an address no grant names.
    (PROG_LISTEN, "sys_enter_listen"),
];
/// Kill backend, sockets of families no grant can name: with the guard tracepoints (the launcher's
/// seccomp filter refuses these families in sealed sessions).
pub const KILL_SOCKET: (&str, &str) = (PROG_SOCKET, "sys_enter_socket");
/// Kill backend, the object check of a Unix path connect let through by name (`connect_unix`):
/// attached only while an installed grant names a Unix socket path (`Engine::install_grant`).
pub const KILL_UNIX_EXIT: (&str, &str) = (PROG_CONNECT_EXIT, "sys_exit_connect");
/// io_uring submissions do not pass through the open-family tracepoints: governed processes may
/// not set it up (a guard syscall on the kill backend).
pub const KILL_IO_URING: (&str, &str) = (PROG_IO_URING, "sys_enter_io_uring_setup");
/// LSM backend: (program, LSM hook).
pub const LSM_PROGS: [(&str, &str); 5] = [
    (PROG_LSM_EXEC, "bprm_check_security"),
    (PROG_LSM_OPEN, "file_open"),
    (PROG_LSM_MMAP, "mmap_file"),
    (PROG_LSM_MPROTECT, "file_mprotect"),
    (PROG_LSM_KILL, "task_kill"),
];

/// (program in the object, kernel function whose return value it decides).
pub const FMOD_PROGS: [(&str, &str); 5] = [
    (PROG_FMOD_EXEC, "security_bprm_check"),
    (PROG_FMOD_OPEN, "security_file_open"),
    (PROG_FMOD_MMAP, "security_mmap_file"),
    (PROG_FMOD_MPROTECT, "security_file_mprotect"),
    (PROG_FMOD_KILL, "security_task_kill"),
];

/// A syscall that could turn the guard off, refused to every governed process: by the launcher's
/// seccomp filter (EPERM, `launcher::seccomp`, which refuses a few more) and, in processes
/// without it, by a kill at its `syscalls:sys_enter_*` tracepoint (the eBPF `guard!` programs).
/// The one table both are derived from.
#[derive(Clone, Copy, Debug)]
pub struct Guard {
    /// The eBPF program at `tracepoint`.
    pub prog: &'static str,
    pub tracepoint: &'static str,
    pub name: &'static str,
    pub x86_64: u32,
    /// Number in the generic table (aarch64); `None` where the syscall does not exist there.
    pub generic: Option<u32>,
}

const fn guard(
    prog: &'static str,
    tracepoint: &'static str,
    name: &'static str,
    x86_64: u32,
    generic: Option<u32>,
) -> Guard {
    Guard { prog, tracepoint, name, x86_64, generic }
}

pub const GUARD_SYSCALLS: [Guard; 23] = [
    // Hard links: a link planted inside a granted tree would expose an object from elsewhere.
    guard("mcpg_sc_link", "sys_enter_link", "link", 86, None),
    guard("mcpg_sc_linkat", "sys_enter_linkat", "linkat", 265, Some(37)),
    // Our own machinery: the pinned maps, the daemon's memory and descriptors.
    guard("mcpg_sc_bpf", "sys_enter_bpf", "bpf", 321, Some(280)),
    guard("mcpg_sc_ptrace", "sys_enter_ptrace", "ptrace", 101, Some(117)),
    guard("mcpg_sc_vm_readv", "sys_enter_process_vm_readv", "process_vm_readv", 310, Some(270)),
    guard("mcpg_sc_vm_writev", "sys_enter_process_vm_writev", "process_vm_writev", 311, Some(271)),
    guard("mcpg_sc_pidfd_getfd", "sys_enter_pidfd_getfd", "pidfd_getfd", 438, Some(438)),
    // Mounts alias objects into a granted tree (old and new mount API).
    guard("mcpg_sc_mount", "sys_enter_mount", "mount", 165, Some(40)),
    guard("mcpg_sc_umount", "sys_enter_umount", "umount2", 166, Some(39)),
    guard("mcpg_sc_pivot", "sys_enter_pivot_root", "pivot_root", 155, Some(41)),
    guard("mcpg_sc_open_tree", "sys_enter_open_tree", "open_tree", 428, Some(428)),
    guard("mcpg_sc_move_mount", "sys_enter_move_mount", "move_mount", 429, Some(429)),
    guard("mcpg_sc_fsopen", "sys_enter_fsopen", "fsopen", 430, Some(430)),
    guard("mcpg_sc_fsconfig", "sys_enter_fsconfig", "fsconfig", 431, Some(431)),
    guard("mcpg_sc_fsmount", "sys_enter_fsmount", "fsmount", 432, Some(432)),
    guard("mcpg_sc_fspick", "sys_enter_fspick", "fspick", 433, Some(433)),
    guard("mcpg_sc_mnt_setattr", "sys_enter_mount_setattr", "mount_setattr", 442, Some(442)),
    guard("mcpg_sc_tree_attr", "sys_enter_open_tree_attr", "open_tree_attr", 467, Some(467)),
    // The kernel itself: modules, kexec.
    guard("mcpg_sc_init_mod", "sys_enter_init_module", "init_module", 175, Some(105)),
    guard("mcpg_sc_finit_mod", "sys_enter_finit_module", "finit_module", 313, Some(273)),
    guard("mcpg_sc_delete_mod", "sys_enter_delete_module", "delete_module", 176, Some(106)),
    guard("mcpg_sc_kexec", "sys_enter_kexec_load", "kexec_load", 246, Some(104)),
    guard("mcpg_sc_kexec_file", "sys_enter_kexec_file_load", "kexec_file_load", 320, Some(294)),
];

/// Name of a guarded syscall number (for reports).
#[must_use]
pub fn guard_syscall_name(nr: u32) -> &'static str {
    let mut i = 0;
    while i < GUARD_SYSCALLS.len() {
        if GUARD_SYSCALLS[i].x86_64 == nr {
            return GUARD_SYSCALLS[i].name;
        }
        i += 1;
    }
    "unknown"
}
