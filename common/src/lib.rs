//! Types shared between the mcpguard kernel programs and userspace.
//!
//! Everything here is `#[repr(C)]`, `Copy`, and free of `bool`/`Option`/data-carrying enums, so
//! that the eBPF object and the agent agree byte for byte. Each struct has a size assertion.
//! Map names are constants here (at most 15 bytes: the kernel cuts longer names).
#![no_std]

use core::mem::size_of;

mod cmdline;
mod tables;
pub use cmdline::*;
pub use tables::*;

// ------------------------------------------------------------------------------------------------
// Map names (see ebpf/src/maps.rs for key, value, writer, reader and lifetime of each map).
// ------------------------------------------------------------------------------------------------
/// tgid -> [`ProcEntry`]: processes governed by a session.
pub const MAP_PROCS: &str = "MCPG_PROCS";
/// cgroup v2 id (u64) -> session id (u64): cgroups governed by a session.
pub const MAP_CGROUPS: &str = "MCPG_CGROUPS";
/// session id (u64) -> [`SessionState`]: which grants are in force for the session.
pub const MAP_SESSIONS: &str = "MCPG_SESSIONS";
/// [`ObjKey`] -> [`Fingerprint`]: binaries a grant allows to execute.
pub const MAP_EXEC: &str = "MCPG_EXEC";
/// [`NameKey`] -> u32: (directory, name) where a grant approved a binary; labels `binary_changed`.
pub const MAP_EXEC_NAMES: &str = "MCPG_EXECNAME";
/// [`ObjKey`] -> u32 access bits ([`ACCESS_READ`] | [`ACCESS_WRITE`]): files and directory trees.
pub const MAP_PATHS: &str = "MCPG_PATHS";
/// pid_tgid (u64) -> `struct sock *` (u64): Unix connects awaiting the kill backend's object check.
pub const MAP_UNIX_PENDING: &str = "MCPG_UNIXPEND";
/// pid_tgid (u64) -> the `vfs_utimes` decision of a governed thread inside that call (deny
/// backends; kernel-internal, not pinned).
pub const MAP_TIMES: &str = "MCPG_TIMES";
/// Ring buffer of [`Event`] records (variable length: see [`EVENT_HEADER_BYTES`]).
pub const MAP_EVENTS: &str = "MCPG_EVENTS";
/// Per-CPU single [`Event`] where the kill backend's programs build a record before copying
/// only its used part into [`MAP_EVENTS`]. Kernel-internal (not pinned, not read by the agent).
pub const MAP_EVENT_SCRATCH: &str = "MCPG_EVSCRATCH";
/// Per-CPU array of u64 decision counters, indexed by [`counter_index`] and [`COUNTER_LOST`].
pub const MAP_COUNTERS: &str = "MCPG_COUNTERS";
/// Single-entry array of [`Conf`]: run-time switches written by the daemon.
pub const MAP_CONF: &str = "MCPG_CONF";
/// LPM trie [`NetKey`] -> [`NetPorts`]: addresses (CIDR prefixes) a grant may connect to or
/// listen on, per [`NET_CONNECT_TCP`].. kind, with the ports allowed there.
pub const MAP_NET: &str = "MCPG_NET";
/// [`UnixKey`] -> u32 (1): abstract Unix socket names a grant may reach, and (for the kill
/// backend's address programs, which see only the address) the paths of granted Unix sockets.
pub const MAP_UNIX: &str = "MCPG_UNIX";
/// Command-line rules of an approved binary in a grant: [`ObjKey`] -> [`ArgvRules`].
pub const MAP_ARGV: &str = "MCPG_ARGV";
/// Literal arguments of those rules: [`ArgKey`] -> mask of the rules the argument satisfies.
pub const MAP_ARGV_LIT: &str = "MCPG_ARGVLIT";
/// [`INJECTION_ENV`] names as the kernel compares them: [`EnvKey`] (`NAME=` masked to its
/// length) -> the name's bit. Filled by the agent at load.
pub const MAP_ENV_NAMES: &str = "MCPG_ENVNAMES";
/// Code-injecting environment entries a session was launched with, exactly (`NAME=value`):
/// [`SessionEnvKey`] -> 1. Inherited unchanged, they are the session's to give.
pub const MAP_SESSION_ENV: &str = "MCPG_SESSENV";
/// Processes whose next exec is not checked for injected environment (the launched program's
/// own exec: the MCP client's environment is the session's to give): tgid -> 1.
pub const MAP_ENV_EXEMPT: &str = "MCPG_ENVEXEMPT";
/// Program array: slot 0 holds [`PROG_CMDLINE_ARGV`] (set by the agent at load).
pub const MAP_ARGV_PROG: &str = "MCPG_ARGVPROG";

/// `seccomp_data.arch` of the architectures the launcher's filters have syscall tables for,
/// and of the one this binary runs on (the daemon checks each signal notification against it).
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
#[must_use]
pub const fn native_audit_arch() -> Option<u32> {
    if cfg!(target_arch = "x86_64") {
        Some(AUDIT_ARCH_X86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(AUDIT_ARCH_AARCH64)
    } else {
        None
    }
}

/// Read-only global holding [`Offsets`] (set at load time from the running kernel's BTF).
pub const GLOBAL_OFFSETS: &str = "MCPG_OFFSETS";

/// Every program name in the object, for pinning and status reporting.
pub const PROG_FORK: &str = "mcpg_fork";
pub const PROG_EXIT: &str = "mcpg_exit";
pub const PROG_EXEC: &str = "mcpg_exec";
/// Deny backends: the command line and environment of an approved exec (`sched_process_exec`).
pub const PROG_CMDLINE: &str = "mcpg_cmdline";
/// Tail-called by [`PROG_CMDLINE`] after a refusal (loaded, never attached): the refused
/// command line as a record of its own.
pub const PROG_CMDLINE_ARGV: &str = "mcpg_cmdline_argv";
pub const PROG_OPENAT: &str = "mcpg_openat";
pub const PROG_OPEN: &str = "mcpg_open";
pub const PROG_OPENAT2: &str = "mcpg_openat2";
pub const PROG_CREAT: &str = "mcpg_creat";
pub const PROG_OPEN_BY_HANDLE: &str = "mcpg_open_handle";
pub const PROG_IO_URING: &str = "mcpg_io_uring";
/// Kill backend, executable file mappings (W^X for grants): `sys_enter_mmap` with `PROT_EXEC`.
pub const PROG_MMAP: &str = "mcpg_mmap";
/// Kill backend, a mapping made executable: `sys_enter_mprotect` / `sys_enter_pkey_mprotect`
/// with `PROT_EXEC`, each mapping in the range by its file (`bpf_find_vma`).
pub const PROG_MPROTECT: &str = "mcpg_mprotect";
pub const PROG_PKEY_MPROTECT: &str = "mcpg_pkey_mprotect";
/// Network, every backend: cgroup socket-address programs (synchronous EPERM), attached at the
/// cgroup v2 root (or the daemon's `--net-cgroup`): (program, attach point).
pub const NET_PROGS: [(&str, &str); 7] = [
    ("mcpg_connect4", "connect4"),
    ("mcpg_connect6", "connect6"),
    ("mcpg_sendmsg4", "sendmsg4"),
    ("mcpg_sendmsg6", "sendmsg6"),
    ("mcpg_bind4", "bind4"),
    ("mcpg_bind6", "bind6"),
    ("mcpg_sock_create", "sock_create"),
];
/// Unix-socket address programs (Linux 6.7+), loaded by the agent itself (aya 0.14 has no such
/// attach types): (program, `bpf_attach_type` number). Used on the kill backend, where no hook
/// sees the peer socket before the connect is done.
pub const UNIX_ADDR_PROGS: [(&str, u32); 2] = [("mcpg_connect_unix", 49), ("mcpg_sendmsg_unix", 50)];
/// Kill backend: `listen` (a socket's bound address must be granted) and the object check of a
/// Unix stream connect (the peer's socket file must be the granted object).
pub const PROG_LISTEN: &str = "mcpg_listen";
pub const PROG_CONNECT_EXIT: &str = "mcpg_connect_exit";
/// Kill backend: `socket()` of a family no grant can name (packet, netlink, vsock, ...).
pub const PROG_SOCKET: &str = "mcpg_socket";
/// LSM / fmod_ret network hooks: (LSM program, LSM hook, fmod_ret program, `security_*` function).
pub const NET_HOOKS: [(&str, &str, &str, &str); 4] = [
    ("mcpg_lsm_socket", "socket_create", "mcpg_fmod_socket", "security_socket_create"),
    ("mcpg_lsm_listen", "socket_listen", "mcpg_fmod_listen", "security_socket_listen"),
    ("mcpg_lsm_unix_conn", "unix_stream_connect", "mcpg_fmod_unix_conn", "security_unix_stream_connect"),
    ("mcpg_lsm_unix_send", "unix_may_send", "mcpg_fmod_unix_send", "security_unix_may_send"),
];
pub const PROG_LSM_EXEC: &str = "mcpg_lsm_exec";
pub const PROG_LSM_OPEN: &str = "mcpg_lsm_open";
pub const PROG_LSM_MMAP: &str = "mcpg_lsm_mmap";
pub const PROG_LSM_MPROTECT: &str = "mcpg_lsm_mprotect";
pub const PROG_FMOD_EXEC: &str = "mcpg_fmod_exec";
pub const PROG_FMOD_OPEN: &str = "mcpg_fmod_open";
pub const PROG_FMOD_MMAP: &str = "mcpg_fmod_mmap";
pub const PROG_FMOD_MPROTECT: &str = "mcpg_fmod_mprotect";
pub const PROG_LSM_KILL: &str = "mcpg_lsm_kill";
pub const PROG_FMOD_KILL: &str = "mcpg_fmod_kill";
/// File times, deny backends: `vfs_utimes` (every times syscall passes it, with the path) is
/// decided at its entry (fentry) and the verdict kept for the thread until its exit (fexit);
/// the setattr hook that follows carries it out.
pub const UTIMES_FN: &str = "vfs_utimes";
pub const PROG_UTIMES_IN: &str = "mcpg_utimes_in";
pub const PROG_UTIMES_OUT: &str = "mcpg_utimes_out";
/// LSM `inode_setattr(idmap, dentry, attr)`; [`PROG_LSM_TIMES_OLD`] for kernels whose hook is
/// `inode_setattr(dentry, attr)` (6.1). The loader attaches the one the kernel's BTF matches and
/// pins its link as [`PROG_LSM_TIMES`].
pub const PROG_LSM_TIMES: &str = "mcpg_lsm_times";
pub const PROG_LSM_TIMES_OLD: &str = "mcpg_lsm_times1";
pub const LSM_TIMES_HOOK: &str = "inode_setattr";
/// fmod_ret on `security_inode_setattr(idmap or userns, dentry, attr)` (same on 6.1 and 6.12).
pub const PROG_FMOD_TIMES: &str = "mcpg_fmod_times";
pub const FMOD_TIMES_FN: &str = "security_inode_setattr";
/// Path operations: (LSM program, LSM hook, fmod_ret program, `security_*` function, required).
/// `file_truncate` exists from Linux 6.2 (before, `ftruncate` and `O_TRUNC` pass `path_truncate`).
pub const PATH_HOOKS: [(&str, &str, &str, &str, bool); 13] = [
    ("mcpg_lsm_unlink", "path_unlink", "mcpg_fmod_unlink", "security_path_unlink", true),
    ("mcpg_lsm_rmdir", "path_rmdir", "mcpg_fmod_rmdir", "security_path_rmdir", true),
    ("mcpg_lsm_mkdir", "path_mkdir", "mcpg_fmod_mkdir", "security_path_mkdir", true),
    ("mcpg_lsm_mknod", "path_mknod", "mcpg_fmod_mknod", "security_path_mknod", true),
    ("mcpg_lsm_symlink", "path_symlink", "mcpg_fmod_symlink", "security_path_symlink", true),
    ("mcpg_lsm_link", "path_link", "mcpg_fmod_link", "security_path_link", true),
    ("mcpg_lsm_rename", "path_rename", "mcpg_fmod_rename", "security_path_rename", true),
    ("mcpg_lsm_truncate", "path_truncate", "mcpg_fmod_truncate", "security_path_truncate", true),
    ("mcpg_lsm_ftrunc", "file_truncate", "mcpg_fmod_ftrunc", "security_file_truncate", false),
    ("mcpg_lsm_chmod", "path_chmod", "mcpg_fmod_chmod", "security_path_chmod", true),
    ("mcpg_lsm_chown", "path_chown", "mcpg_fmod_chown", "security_path_chown", true),
    ("mcpg_lsm_setxattr", "inode_setxattr", "mcpg_fmod_setxattr", "security_inode_setxattr", true),
    ("mcpg_lsm_rmxattr", "inode_removexattr", "mcpg_fmod_rmxattr", "security_inode_removexattr", true),
];

// ------------------------------------------------------------------------------------------------
// Capacities
// ------------------------------------------------------------------------------------------------
pub const MAX_PROCS: u32 = 65_536;
pub const MAX_CGROUPS: u32 = 4_096;
pub const MAX_SESSIONS: u32 = 4_096;
pub const MAX_EXEC_ENTRIES: u32 = 65_536;
pub const MAX_PATH_ENTRIES: u32 = 65_536;
pub const MAX_NET_ENTRIES: u32 = 16_384;
pub const MAX_UNIX_ENTRIES: u32 = 4_096;
pub const EVENTS_BYTES: u32 = 4 * 1024 * 1024;
/// Audited events do not wake the reader one by one (each wake-up is an inter-processor
/// interrupt on the producing CPU): only when the unread data crosses this many bytes. Kill and
/// deny events always wake it.
pub const EVENTS_WAKEUP_BYTES: u64 = 64 * 1024;
/// The longest a ring-buffer reader may wait between looks, since records below
/// [`EVENTS_WAKEUP_BYTES`] do not wake it.
pub const EVENTS_POLL_MS: u64 = 10;
/// Deepest dentry ancestry walked before a decision is "unresolved" (fail closed).
pub const MAX_WALK_DEPTH: u32 = 40;
/// Path components reported in an event (leaf first); deeper paths are marked truncated.
pub const EVENT_PATH_COMPONENTS: usize = 16;
/// Bytes per reported path component (including the NUL).
pub const EVENT_NAME_LEN: usize = 32;
/// Bytes of a file name kept in [`NameKey`] (including the NUL).
pub const EXEC_NAME_LEN: usize = 48;

// ------------------------------------------------------------------------------------------------
// Enumerations as u32 constants
// ------------------------------------------------------------------------------------------------
pub const ACCESS_READ: u32 = 1;
pub const ACCESS_WRITE: u32 = 2;
/// In [`MAP_PATHS`]: mode, owner and extended attributes of the objects below may change
/// (`metadata = true` on a write entry; always given with [`ACCESS_WRITE`]).
pub const ACCESS_METADATA: u32 = 8;
/// In [`MAP_PATHS`] on a Unix socket's file object: the grant may connect (or send) to it.
/// Exact object only: a directory's bit does not extend to sockets below it.
pub const ACCESS_CONNECT: u32 = 4;

pub const MODE_DENY: u32 = 0;
pub const MODE_KILL: u32 = 1;
pub const MODE_AUDIT: u32 = 2;

pub const HOOK_EXEC: u32 = 0;
pub const HOOK_OPEN: u32 = 1;
pub const HOOK_IO_URING: u32 = 2;
pub const HOOK_MMAP: u32 = 3;
/// A syscall that could disable the guard (bpf, ptrace, mount family, module loading).
pub const HOOK_SYSCALL: u32 = 4;
/// A signal sent by a governed process (LSM `task_kill`): the event's `ino` is the target's
/// tgid and `access` the signal number.
pub const HOOK_SIGNAL: u32 = 5;
/// Path operations (LSM `path_*` hooks): the directory entry changed, or the object truncated.
pub const HOOK_UNLINK: u32 = 6;
pub const HOOK_RMDIR: u32 = 7;
pub const HOOK_MKDIR: u32 = 8;
pub const HOOK_MKNOD: u32 = 9;
pub const HOOK_SYMLINK: u32 = 10;
pub const HOOK_LINK: u32 = 11;
pub const HOOK_RENAME: u32 = 12;
pub const HOOK_TRUNCATE: u32 = 13;
/// Network: the event's address is a [`NetAddr`] (IP) or the Unix socket's name (see
/// [`Event::path`]); `access` is the [`NET_CONNECT_TCP`].. kind.
pub const HOOK_CONNECT: u32 = 14;
pub const HOOK_SENDMSG: u32 = 15;
pub const HOOK_BIND: u32 = 16;
/// Socket creation outside what grants can name (raw, packet, other protocols): `access` is
/// `family << 16 | type`, `ino` the protocol.
pub const HOOK_SOCKET: u32 = 17;
/// Mode or owner of an object (`chmod`, `chown` families: LSM `path_chmod`, `path_chown`).
pub const HOOK_SETATTR: u32 = 18;
/// Extended attributes (`setxattr`, `removexattr` families: LSM `inode_setxattr`,
/// `inode_removexattr`).
pub const HOOK_XATTR: u32 = 19;
/// `mprotect`/`pkey_mprotect` making a file mapping executable (W^X for grants, as `mmap`).
pub const HOOK_MPROTECT: u32 = 20;
/// File times (`utimensat`, `futimens`, `utimes`, `utime`, `futimesat`: decided at `vfs_utimes`,
/// refused at LSM `inode_setattr`).
pub const HOOK_UTIMES: u32 = 21;
pub const HOOK_COUNT: u32 = 22;

pub const ACTION_DENIED: u32 = 0;
pub const ACTION_KILLED: u32 = 1;
pub const ACTION_AUDITED: u32 = 2;
pub const ACTION_ALLOWED: u32 = 3;
pub const ACTION_COUNT: u32 = 4;

pub const REASON_NOT_GRANTED: u32 = 0;
pub const REASON_BINARY_CHANGED: u32 = 1;
pub const REASON_GRANT_EXPIRED: u32 = 2;
pub const REASON_UNRESOLVED: u32 = 3;
pub const REASON_NO_GRANT: u32 = 4;
/// Retired (was: several hard links); kept so counter indices stay stable.
pub const REASON_MULTI_LINK: u32 = 5;
pub const REASON_NONE: u32 = 6;
/// An open of `/proc/<pid>/...` (or `/proc/<pid>/task/<tid>/...`) whose process is not in the
/// opener's session, whatever the grant says about `/proc`.
pub const REASON_OTHER_PROCESS: u32 = 7;
/// A signal to a process outside the sender's session.
pub const REASON_SIGNAL_OUTSIDE_SESSION: u32 = 8;
/// An exec whose command line no rule of the approving grant names.
pub const REASON_ARGS_NOT_GRANTED: u32 = 9;
/// An interpreter given inline program text (or options before its script) without
/// `inline_code = true`.
pub const REASON_INLINE_CODE: u32 = 10;
/// An exec carrying a variable that makes the program load code chosen by its caller
/// ([`INJECTION_ENV`]) that the rule does not allow.
pub const REASON_ENV_INJECTION: u32 = 11;
pub const REASON_COUNT: u32 = 16;

/// Network grant kinds ([`NetKeyData::kind`], and `access` of network events).
pub const NET_CONNECT_TCP: u32 = 1;
pub const NET_CONNECT_UDP: u32 = 2;
pub const NET_LISTEN_TCP: u32 = 3;
pub const NET_LISTEN_UDP: u32 = 4;
/// A Unix socket reached by its object (`access` of Unix network events; the event's path is the
/// socket's).
pub const NET_UNIX: u32 = 5;
/// A Unix socket reached by name: the event's path slots hold `dev` bytes of `sun_path`
/// (abstract names start with NUL).
pub const NET_UNIX_NAME: u32 = 6;

/// Index of the counter for one (hook, action, reason) triple.
#[must_use]
pub const fn counter_index(hook: u32, action: u32, reason: u32) -> u32 {
    (hook * ACTION_COUNT + action) * REASON_COUNT + reason
}
/// Events that could not be written to the ring buffer (it was full).
pub const COUNTER_LOST: u32 = HOOK_COUNT * ACTION_COUNT * REASON_COUNT;
/// Governed-process entries that could not be inserted (procs map full) — the child was killed.
pub const COUNTER_PROCS_FULL: u32 = COUNTER_LOST + 1;
/// LSM self-test: file opens by `Conf::probe_tgid` seen by the LSM hook.
pub const COUNTER_LSM_PROBE: u32 = COUNTER_LOST + 2;
pub const COUNTER_SLOTS: u32 = COUNTER_LOST + 8;

#[must_use]
pub const fn hook_name(hook: u32) -> &'static str {
    match hook {
        HOOK_EXEC => "exec",
        HOOK_OPEN => "open",
        HOOK_IO_URING => "io_uring",
        HOOK_MMAP => "mmap",
        HOOK_SYSCALL => "syscall",
        HOOK_SIGNAL => "signal",
        HOOK_UNLINK => "unlink",
        HOOK_RMDIR => "rmdir",
        HOOK_MKDIR => "mkdir",
        HOOK_MKNOD => "mknod",
        HOOK_SYMLINK => "symlink",
        HOOK_LINK => "link",
        HOOK_RENAME => "rename",
        HOOK_TRUNCATE => "truncate",
        HOOK_CONNECT => "connect",
        HOOK_SENDMSG => "sendmsg",
        HOOK_BIND => "bind",
        HOOK_SOCKET => "socket",
        HOOK_SETATTR => "setattr",
        HOOK_XATTR => "xattr",
        HOOK_MPROTECT => "mprotect",
        HOOK_UTIMES => "utimes",
        _ => "unknown",
    }
}
#[must_use]
pub const fn action_name(action: u32) -> &'static str {
    match action {
        ACTION_DENIED => "denied",
        ACTION_KILLED => "killed",
        ACTION_AUDITED => "audited",
        ACTION_ALLOWED => "allowed",
        _ => "unknown",
    }
}
#[must_use]
pub const fn reason_name(reason: u32) -> &'static str {
    match reason {
        REASON_NOT_GRANTED => "not_granted",
        REASON_BINARY_CHANGED => "binary_changed",
        REASON_GRANT_EXPIRED => "grant_expired",
        REASON_UNRESOLVED => "unresolved",
        REASON_NO_GRANT => "no_grant",
        REASON_MULTI_LINK => "multi_link",
        REASON_NONE => "none",
        REASON_OTHER_PROCESS => "other_process",
        REASON_SIGNAL_OUTSIDE_SESSION => "signal_outside_session",
        REASON_ARGS_NOT_GRANTED => "args_not_granted",
        REASON_INLINE_CODE => "inline_code",
        REASON_ENV_INJECTION => "env_injection",
        _ => "unknown",
    }
}

// ------------------------------------------------------------------------------------------------
// Map keys and values
// ------------------------------------------------------------------------------------------------
/// A governed process (keyed by tgid). `start_ticks` is the group leader's boot-time start in
/// clock ticks (`/proc/PID/stat` field 22), so a recycled PID never inherits a session.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEntry {
    pub session: u64,
    pub start_ticks: u64,
}
const _: () = assert!(size_of::<ProcEntry>() == 16);
/// Set in [`ProcEntry::start_ticks`] by the kernel programs once a task of the process matched
/// the start time (the entry is then known to be this live process, until its exit removes it).
/// Userspace writes entries without it.
pub const PROC_VERIFIED: u64 = 1 << 63;

/// A session's grants. Replaced as a whole (one hash-map update), so a task switch is atomic.
/// `task_grant` applies until `task_expires_ns` (CLOCK_BOOTTIME); `base_grant` for the session's
/// lifetime. Grant id 0 means "none".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    pub base_grant: u64,
    pub task_grant: u64,
    pub task_expires_ns: u64,
    pub mode: u32,
    /// `SESSION_*` bits.
    pub flags: u32,
}
const _: () = assert!(size_of::<SessionState>() == 32);

/// Every process of the session carries the launcher's seccomp filter, which refuses the guard
/// syscalls itself (EPERM): the guard-syscall tracepoints are not needed for it. Set only by the
/// daemon for sessions `mcpguard exec` launched; never for cgroup or adopted sessions.
pub const SESSION_SEALED: u32 = 1;

/// A file object within a grant: (grant id, kernel dev_t, inode number).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjKey {
    pub grant: u64,
    /// Kernel encoding `(major << 20) | minor`, not userspace `st_dev`.
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}
const _: () = assert!(size_of::<ObjKey>() == 24);

/// Change fingerprint of an approved binary, recorded at grant time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_sec: i64,
    pub ctime_sec: i64,
    pub mtime_nsec: u32,
    pub ctime_nsec: u32,
    pub generation: u32,
    /// [`FP_HAS_GENERATION`] when `generation` was read and must match.
    pub flags: u32,
}
const _: () = assert!(size_of::<Fingerprint>() == 40);
pub const FP_HAS_GENERATION: u32 = 1;

/// (grant, directory object, file name) of an approved binary: lets the kernel tell
/// "the approved path now holds another file" (`binary_changed`) from "never approved".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameKey {
    pub grant: u64,
    pub dev: u32,
    pub _pad: u32,
    pub parent_ino: u64,
    pub name: [u8; EXEC_NAME_LEN],
}
const _: () = assert!(size_of::<NameKey>() == 72);

/// Run-time switches. `cgroup_sessions` > 0 enables the cgroup lookup for tasks not in PROCS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conf {
    pub cgroup_sessions: u32,
    /// tgid whose opens the LSM hook counts in [`COUNTER_LSM_PROBE`] (start-up self-test).
    pub probe_tgid: u32,
}
const _: () = assert!(size_of::<Conf>() == 8);

/// One decision, as delivered through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// CLOCK_BOOTTIME nanoseconds.
    pub ts_ns: u64,
    pub session: u64,
    pub grant: u64,
    pub ino: u64,
    pub pid: u32,
    pub tgid: u32,
    pub dev: u32,
    pub hook: u32,
    pub action: u32,
    pub reason: u32,
    /// Requested access for opens ([`ACCESS_READ`] | [`ACCESS_WRITE`]); the syscall number for
    /// [`HOOK_SYSCALL`].
    pub access: u32,
    /// Number of valid entries in `path` (leaf first). [`EVENT_PATH_TRUNCATED`] is or-ed in when
    /// the path was deeper than reported.
    pub path_depth: u32,
    pub comm: [u8; 16],
    pub path: [[u8; EVENT_NAME_LEN]; EVENT_PATH_COMPONENTS],
}
const _: () = assert!(size_of::<Event>() == 64 + 16 + EVENT_NAME_LEN * EVENT_PATH_COMPONENTS);
pub const EVENT_PATH_TRUNCATED: u32 = 0x8000_0000;
/// Bytes of an [`Event`] before `path`. A ring-buffer record is this fixed part followed by its
/// `path_depth` components (without the truncation flag), so it is
/// `EVENT_HEADER_BYTES + depth * EVENT_NAME_LEN` bytes long; readers zero the rest.
pub const EVENT_HEADER_BYTES: usize = core::mem::offset_of!(Event, path);
const _: () = assert!(EVENT_HEADER_BYTES == 80);

/// Bits of a [`NetKey`] that must match exactly before the address prefix: kind and grant.
pub const NET_KEY_FIXED_BITS: u32 = 96;
/// Port ranges kept per prefix (the union of every entry of the grant covering the prefix).
pub const NET_PORT_RANGES: usize = 8;
/// Bytes of a Unix socket name kept in [`UnixKey`] (`sun_path` is 108 bytes).
pub const UNIX_NAME_LEN: usize = 108;

/// LPM trie key data of [`MAP_NET`] (the trie key is `{prefixlen: u32, data}`; `prefixlen` is
/// [`NET_KEY_FIXED_BITS`] + the CIDR length). Addresses are IPv6; an IPv4 address is stored
/// and looked up as its IPv4-mapped form `::ffff:a.b.c.d`, so both spellings decide alike.
/// Alignment 4: the trie compares the bytes right after `prefixlen`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetKeyData {
    pub kind: u32,
    /// Grant id, as two native-endian halves (low first).
    pub grant: [u32; 2],
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<NetKeyData>() == 28);
/// Full LPM trie key of [`MAP_NET`] as the kernel sees it (what `aya` calls `Key<NetKeyData>`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetKey {
    pub prefixlen: u32,
    pub data: NetKeyData,
}
const _: () = assert!(size_of::<NetKey>() == 32);

/// Ports allowed at a prefix: `ranges[..n]`, inclusive, host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPorts {
    pub n: u32,
    pub ranges: [[u16; 2]; NET_PORT_RANGES],
}
const _: () = assert!(size_of::<NetPorts>() == 36);

/// (grant, Unix socket name): `name` is `sun_path` as given (abstract names start with NUL),
/// zero-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnixKey {
    pub grant: u64,
    pub name: [u8; UNIX_NAME_LEN],
    pub _pad: u32,
}
const _: () = assert!(size_of::<UnixKey>() == 120);

/// The address of an IP network event, in the event's first path slot (`path_depth` 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetAddr {
    /// IPv6, or IPv4-mapped IPv6.
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub _pad: [u8; 14],
}
const _: () = assert!(size_of::<NetAddr>() == EVENT_NAME_LEN);

/// Struct member byte offsets of the running kernel, read from its BTF at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub task_tgid: u32,
    pub task_start_boottime: u32,
    pub task_group_leader: u32,
    pub task_files: u32,
    pub task_signal: u32,
    pub signal_live: u32,
    pub files_fdt: u32,
    /// `files_struct.fdtab`: the embedded table `fdt` points to until it is expanded.
    pub files_fdtab: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_path_mnt: u32,
    pub file_path_dentry: u32,
    pub file_mode: u32,
    /// `file.f_flags` (keeps `__FMODE_EXEC` for the open done by execve).
    pub file_flags: u32,
    pub dentry_parent: u32,
    pub dentry_name: u32,
    pub dentry_inode: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub inode_size: u32,
    pub inode_generation: u32,
    pub inode_mtime_sec: u32,
    pub inode_mtime_nsec: u32,
    pub inode_ctime_sec: u32,
    pub inode_ctime_nsec: u32,
    pub sb_dev: u32,
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
    pub binprm_file: u32,
    /// `linux_binprm.buf` (first bytes of the file: `#!` marks a script).
    pub binprm_buf: u32,
    /// Nanoseconds per USER_HZ clock tick, to compute `start_ticks` (10_000_000 for USER_HZ 100).
    pub ns_per_tick: u32,
    /// `super_block.s_magic` (procfs is `PROC_SUPER_MAGIC`).
    pub sb_magic: u32,
    /// `proc_inode.pid` and `proc_inode.vfs_inode`: the process a procfs inode belongs to.
    pub proc_inode_pid: u32,
    pub proc_inode_vfs_inode: u32,
    /// `pid.tasks` (`tasks[PIDTYPE_PID].first` points at the task's `pid_links[PIDTYPE_PID]`).
    pub pid_tasks: u32,
    pub task_pid_links: u32,
    /// `task_struct.cgroups` -> `css_set.dfl_cgrp` -> `cgroup.kn` -> `kernfs_node.id`: the cgroup
    /// v2 id of another task (`bpf_get_current_cgroup_id` gives only the current one's).
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// `path.mnt` and `path.dentry` (the `struct path *` arguments of the path hooks).
    pub path_mnt: u32,
    pub path_dentry: u32,
    /// `file.private_data` (a socket file's `struct socket *`), `socket.sk`.
    pub file_private_data: u32,
    pub socket_sk: u32,
    /// `sock.__sk_common.skc_family`, `.skc_num` (bound port, host order), `.skc_rcv_saddr`,
    /// `.skc_v6_rcv_saddr`.
    pub sk_family: u32,
    pub sk_num: u32,
    pub sk_rcv_saddr: u32,
    pub sk_v6_rcv_saddr: u32,
    /// `sock.sk_protocol` (u16 on 6.x), `sock.sk_type` (u16).
    pub sk_protocol: u32,
    pub sk_type: u32,
    /// `unix_sock.path` (a `struct path`), `unix_sock.addr`, `unix_sock.peer`, `unix_address.len`,
    /// `unix_address.name` (a `struct sockaddr_un`).
    pub unix_path: u32,
    pub unix_addr: u32,
    pub unix_peer: u32,
    pub unix_address_len: u32,
    pub unix_address_name: u32,
    /// `task_struct.mm`, `mm_struct.arg_start/arg_end/env_start/env_end` (the new image's
    /// command line and environment at `sched_process_exec`), `linux_binprm.argc/envc`.
    pub task_mm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    pub binprm_argc: u32,
    pub binprm_envc: u32,
    /// `vm_area_struct.vm_file` and `.vm_end` (a mapping made executable by `mprotect`).
    pub vma_file: u32,
    pub vma_end: u32,
    /// `task_struct.real_cred` and `.cred` (they differ while the kernel works under borrowed
    /// credentials: overlayfs copy-up), `iattr.ia_valid` (what a setattr changes).
    pub task_real_cred: u32,
    pub task_cred: u32,
    pub iattr_valid: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Offsets>() == 72 * 4);

#[cfg(feature = "user")]
mod user {
    use super::{
        Conf, Event, Fingerprint, NameKey, NetKeyData, NetPorts, ObjKey, Offsets, ProcEntry, SessionState, UnixKey,
    };
    // SAFETY: all of these are #[repr(C)], Copy, contain only integers and arrays of integers,
    // and have explicit padding fields, so any bit pattern is valid.
    unsafe impl aya::Pod for ProcEntry {}
    unsafe impl aya::Pod for super::ArgvRules {}
    unsafe impl aya::Pod for super::ArgKey {}
    unsafe impl aya::Pod for super::EnvKey {}
    unsafe impl aya::Pod for super::SessionEnvKey {}
    unsafe impl aya::Pod for SessionState {}
    unsafe impl aya::Pod for ObjKey {}
    unsafe impl aya::Pod for Fingerprint {}
    unsafe impl aya::Pod for NameKey {}
    unsafe impl aya::Pod for Conf {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for Offsets {}
    unsafe impl aya::Pod for NetKeyData {}
    unsafe impl aya::Pod for NetPorts {}
    unsafe impl aya::Pod for UnixKey {}
}
