//! Every map of the object. Userspace (the agent) creates them at load, pins them under the
//! daemon's bpffs directory, and re-opens the pins after a restart, so grants outlive the daemon.
//!
//! | map            | key        | value          | written by                  | read by        |
//! |----------------|------------|----------------|-----------------------------|----------------|
//! | MCPG_PROCS     | tgid u32   | ProcEntry      | agent (register), fork/exit | every hook     |
//! | MCPG_CGROUPS   | cgroup u64 | session u64    | agent                       | every hook     |
//! | MCPG_SESSIONS  | session u64| SessionState   | agent (one update = swap)   | exec/open      |
//! | MCPG_EXEC      | ObjKey     | Fingerprint    | agent (before the swap)     | exec           |
//! | MCPG_EXECNAME  | NameKey    | u32            | agent                       | exec (reason)  |
//! | MCPG_PATHS     | ObjKey     | access bits u32| agent                       | open           |
//! | MCPG_NET       | NetKey (LPM)| NetPorts      | agent (before the swap)     | connect/bind   |
//! | MCPG_UNIX      | UnixKey    | u32            | agent (before the swap)     | Unix connect   |
//! | MCPG_TIMES     | pid_tgid   | TimesPending   | vfs_utimes entry/exit       | inode_setattr  |
//! | MCPG_EVENTS    | ring buffer of Event                                        | agent          |
//! | MCPG_COUNTERS  | per-CPU u64 counters, `counter_index` / COUNTER_LOST       | agent (metrics)|
//! | MCPG_CONF      | 0          | Conf           | agent                       | every hook     |
//! | MCPG_ARGV      | ObjKey     | ArgvRules      | agent (before the swap)     | exec (cmdline) |
//! | MCPG_ARGVLIT   | ArgKey     | rule mask u32  | agent (before the swap)     | exec (cmdline) |
//! | MCPG_ENVEXEMPT | tgid u32   | u32            | agent (register)            | exec (cmdline) |
//! | MCPG_ARGVPROG  | 0          | program        | agent (load)                | exec (cmdline) |
//!
//! Lifetime: PROCS entries live from registration/fork until the thread group dies
//! (`sched_process_exit` with `signal->live == 0`). Grant entries are keyed by grant id and are
//! removed by the agent only after the session stopped referencing that grant.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, ProgramArray, RingBuf},
};
use mcpguard_common::{
    ArgKey, ArgvRules, COUNTER_SLOTS, Conf, EVENTS_BYTES, Fingerprint, MAX_CGROUPS, MAX_EXEC_ENTRIES, MAX_NET_ENTRIES,
    MAX_PATH_ENTRIES, MAX_PROCS, MAX_SESSIONS, MAX_UNIX_ENTRIES, NameKey, NetKeyData, NetPorts, ObjKey, ProcEntry,
    SessionState, UnixKey,
};

#[map(name = "MCPG_PROCS")]
pub static PROCS: HashMap<u32, ProcEntry> = HashMap::with_max_entries(MAX_PROCS, 0);

#[map(name = "MCPG_CGROUPS")]
pub static CGROUPS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_CGROUPS, 0);

#[map(name = "MCPG_SESSIONS")]
pub static SESSIONS: HashMap<u64, SessionState> = HashMap::with_max_entries(MAX_SESSIONS, 0);

#[map(name = "MCPG_EXEC")]
pub static EXEC: HashMap<ObjKey, Fingerprint> = HashMap::with_max_entries(MAX_EXEC_ENTRIES, 0);

#[map(name = "MCPG_EXECNAME")]
pub static EXEC_NAMES: HashMap<NameKey, u32> = HashMap::with_max_entries(MAX_EXEC_ENTRIES, 0);

#[map(name = "MCPG_PATHS")]
pub static PATHS: HashMap<ObjKey, u32> = HashMap::with_max_entries(MAX_PATH_ENTRIES, 0);

#[map(name = "MCPG_NET")]
pub static NET: LpmTrie<NetKeyData, NetPorts> = LpmTrie::with_max_entries(MAX_NET_ENTRIES, 0);

#[map(name = "MCPG_UNIX")]
pub static UNIX: HashMap<UnixKey, u32> = HashMap::with_max_entries(MAX_UNIX_ENTRIES, 0);

/// pid_tgid -> `struct sock *`: a governed thread's Unix stream connect the kill backend's
/// `connect_unix` program let through by name, checked by the peer's object at `sys_exit_connect`.
#[map(name = "MCPG_UNIXPEND")]
pub static UNIX_PENDING: HashMap<u64, u64> = HashMap::with_max_entries(MAX_PROCS, 0);

/// The `vfs_utimes` decision of a governed thread while it is inside that call (see times.rs):
/// written at the call's entry, read by the setattr hook, removed at its exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TimesPending {
    pub grant: u64,
    /// The path being changed (reported on a refusal).
    pub dentry: u64,
    pub vfsmnt: u64,
    pub reason: u32,
    /// 1: allowed.
    pub allow: u32,
}

#[map(name = "MCPG_TIMES")]
pub static TIMES: HashMap<u64, TimesPending> = HashMap::with_max_entries(MAX_PROCS, 0);

#[map(name = "MCPG_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "MCPG_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map(name = "MCPG_CONF")]
pub static CONF: Array<Conf> = Array::with_max_entries(1, 0);

#[map(name = "MCPG_ARGV")]
pub static ARGV: HashMap<ObjKey, ArgvRules> = HashMap::with_max_entries(MAX_EXEC_ENTRIES, 0);

#[map(name = "MCPG_ARGVLIT")]
pub static ARGV_LIT: HashMap<ArgKey, u32> = HashMap::with_max_entries(MAX_EXEC_ENTRIES, 0);

#[map(name = "MCPG_ENVNAMES")]
pub static ENV_NAMES: HashMap<mcpguard_common::EnvKey, u32> = HashMap::with_max_entries(64, 0);

#[map(name = "MCPG_SESSENV")]
pub static SESSION_ENV: HashMap<mcpguard_common::SessionEnvKey, u32> = HashMap::with_max_entries(4096, 0);

#[map(name = "MCPG_ENVEXEMPT")]
pub static ENV_EXEMPT: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PROCS, 0);

/// Per-CPU room for one argument or environment string of the exec being decided (too large for
/// the BPF stack).
#[repr(C)]
pub struct StrScratch {
    pub bytes: [u8; mcpguard_common::ARGV_STRING_MAX],
    pub key: ArgKey,
    /// Loop results kept in map memory, whose contents the verifier does not track: the states
    /// after a loop left at different iterations are then the same state.
    pub found: u32,
    /// 1: the environment was read to its end; 2: a string failed or was too long.
    pub state: u32,
    /// The user address being read, and the argument rules still alive (map memory too).
    pub addr: u64,
    pub alive: u32,
    pub _pad: u32,
    pub env_key: mcpguard_common::SessionEnvKey,
    /// A refusal whose command line the tail-called `mcpg_cmdline_argv` reports (same CPU, same
    /// run): session, grant, reason, action.
    pub pend_session: u64,
    pub pend_grant: u64,
    pub pend_reason: u32,
    pub pend_action: u32,
}

#[map(name = "MCPG_STRSCR")]
pub static STR_SCRATCH: PerCpuArray<StrScratch> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: `mcpg_cmdline_argv`, tail-called by `mcpg_cmdline` after a refusal to report the
/// refused command line (a program of its own: the copy does not count against the decision's
/// verifier budget). Pinned with the other maps: a pinned program array keeps its entry.
#[map(name = "MCPG_ARGVPROG")]
pub static ARGV_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);
