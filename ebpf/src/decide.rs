//! Decision logic shared by every backend. A backend (tracepoint+kill here; BPF-LSM or fmod_ret
//! elsewhere) resolves the kernel objects of its hook and calls into this module; it only differs
//! in how a denial is carried out.
use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns};
use aya_ebpf::maps::lpm_trie::Key;
use mcpguard_common::{
    ACCESS_CONNECT, ACCESS_METADATA, ACCESS_READ, ACCESS_WRITE, EXEC_NAME_LEN, MAX_WALK_DEPTH, NET_KEY_FIXED_BITS,
    NameKey, NetKeyData, ObjKey, PROC_VERIFIED, REASON_BINARY_CHANGED, REASON_GRANT_EXPIRED, REASON_NO_GRANT,
    REASON_NONE, REASON_NOT_GRANTED, REASON_OTHER_PROCESS, REASON_UNRESOLVED, SessionState, UnixKey,
};

use crate::{
    kernel::{
        Kptr, Obj, PathPos, ProcOwner, Unresolved, Walk, current_task, current_tgid, dentry_inode, dentry_name,
        fingerprint_matches, inode_fingerprint, inode_obj, proc_owner, rd_ptr, task_cgroup_id, task_start_ticks,
        task_tgid,
    },
    maps::{CGROUPS, CONF, EXEC, EXEC_NAMES, NET, PATHS, PROCS, SESSIONS, UNIX},
};

/// The session a task belongs to, with the session's grants as they are right now.
pub struct Governed {
    pub session: u64,
    /// `None` when the session has no state: every decision is `no_grant`.
    pub state: Option<SessionState>,
}

/// Fast path: one hash lookup (plus one inlined array read) for ungoverned tasks; nothing is
/// read before it.
/// A PROCS entry whose start time does not match the task is a recycled PID: it is removed and
/// the task treated as ungoverned. If the start time cannot be read, the task stays governed.
/// The start time is compared until it matched once ([`PROC_VERIFIED`]): from then on the entry
/// is this live process's, and the process's exit removes it (`mcpg_exit`); a new process that
/// recycles the tgid of an entry left behind is checked at its fork (`mcpg_fork`).
#[inline(always)]
pub fn governed(tgid: u32) -> Option<Governed> {
    let session = if let Some(entry) = PROCS.get_ptr_mut(&tgid) {
        // SAFETY: pointer to a live map value, copied out.
        let e = unsafe { *entry };
        if e.start_ticks & PROC_VERIFIED == 0 {
            match task_start_ticks(current_task()) {
                Ok(ticks) if ticks != e.start_ticks => {
                    let _ = PROCS.remove(&tgid);
                    return None;
                }
                // SAFETY: one aligned word of the map value; a concurrent update of the entry
                // replaces the element, so at worst this mark is lost and the check runs again.
                Ok(_) => unsafe { (*entry).start_ticks = e.start_ticks | PROC_VERIFIED },
                Err(_) => {}
            }
        }
        e.session
    } else {
        let conf = CONF.get(0)?;
        if conf.cgroup_sessions == 0 {
            return None;
        }
        // SAFETY: helper without arguments.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: map value read by value.
        *unsafe { CGROUPS.get(&cgroup) }?
    };
    // SAFETY: as above.
    let state = unsafe { SESSIONS.get(&session) }.copied();
    Some(Governed { session, state })
}

/// Outcome of a decision for a governed task.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub allow: bool,
    pub reason: u32,
    /// Grant that allowed it, or the one in force that did not.
    pub grant: u64,
}

impl Verdict {
    #[inline(always)]
    pub const fn allow(grant: u64) -> Self {
        Self { allow: true, reason: REASON_NONE, grant }
    }
    #[inline(always)]
    pub const fn deny(reason: u32, grant: u64) -> Self {
        Self { allow: false, reason, grant }
    }
}

#[inline(always)]
pub fn grant_in_force(st: &SessionState) -> u64 {
    if st.task_grant != 0 { st.task_grant } else { st.base_grant }
}

#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

pub(crate) enum ExecMatch {
    Allowed,
    Changed,
    Missing,
}

#[inline(always)]
pub(crate) fn exec_lookup(grant: u64, obj: Obj, inode: Kptr) -> Result<ExecMatch, Unresolved> {
    let key = ObjKey { grant, dev: obj.dev, _pad: 0, ino: obj.ino };
    // SAFETY: value read by value.
    let Some(approved) = (unsafe { EXEC.get(&key) }) else {
        return Ok(ExecMatch::Missing);
    };
    let live = inode_fingerprint(inode)?;
    Ok(if fingerprint_matches(approved, &live) { ExecMatch::Allowed } else { ExecMatch::Changed })
}

/// Was a binary approved at this (directory, name) in the given grant? Used only to label a
/// denial `binary_changed` when an approved path now holds a different file.
#[inline(always)]
fn approved_name(grant: u64, dentry: Kptr) -> bool {
    if grant == 0 {
        return false;
    }
    let mut key = NameKey { grant, dev: 0, _pad: 0, parent_ino: 0, name: [0; EXEC_NAME_LEN] };
    let Ok(parent) = rd_ptr(dentry, crate::kernel::off!(dentry_parent)) else { return false };
    let Ok(pinode) = dentry_inode(parent) else { return false };
    let Ok(pobj) = inode_obj(pinode) else { return false };
    key.dev = pobj.dev;
    key.parent_ino = pobj.ino;
    if dentry_name(dentry, &mut key.name).is_err() {
        return false;
    }
    // SAFETY: value read by value.
    unsafe { EXEC_NAMES.get(&key) }.is_some()
}

/// Exec of the file object `file` (already opened by the kernel for the new image).
#[inline(always)]
pub fn decide_exec(st: &SessionState, file: Kptr) -> Verdict {
    match try_decide_exec(st, file) {
        Ok(v) => v,
        Err(Unresolved) => Verdict::deny(REASON_UNRESOLVED, grant_in_force(st)),
    }
}

#[inline(always)]
fn try_decide_exec(st: &SessionState, file: Kptr) -> Result<Verdict, Unresolved> {
    if st.task_grant == 0 && st.base_grant == 0 {
        return Ok(Verdict::deny(REASON_NO_GRANT, 0));
    }
    let inode = rd_ptr(file, crate::kernel::off!(file_inode))?;
    let obj = inode_obj(inode)?;
    let mut changed = false;
    let mut expired = false;
    if st.task_grant != 0 {
        match exec_lookup(st.task_grant, obj, inode)? {
            ExecMatch::Allowed if now() < st.task_expires_ns => {
                return Ok(Verdict::allow(st.task_grant));
            }
            ExecMatch::Allowed => expired = true,
            ExecMatch::Changed => changed = true,
            ExecMatch::Missing => {}
        }
    }
    if st.base_grant != 0 {
        match exec_lookup(st.base_grant, obj, inode)? {
            ExecMatch::Allowed => return Ok(Verdict::allow(st.base_grant)),
            ExecMatch::Changed => changed = true,
            ExecMatch::Missing => {}
        }
    }
    let grant = grant_in_force(st);
    if expired {
        return Ok(Verdict::deny(REASON_GRANT_EXPIRED, st.task_grant));
    }
    if !changed {
        let dentry = rd_ptr(file, crate::kernel::off!(file_path_dentry))?;
        changed = approved_name(st.task_grant, dentry) || approved_name(st.base_grant, dentry);
    }
    Ok(Verdict::deny(if changed { REASON_BINARY_CHANGED } else { REASON_NOT_GRANTED }, grant))
}

#[inline(always)]
fn path_bits(grant: u64, obj: Obj) -> u32 {
    if grant == 0 {
        return 0;
    }
    let key = ObjKey { grant, dev: obj.dev, _pad: 0, ino: obj.ino };
    // SAFETY: value read by value.
    unsafe { PATHS.get(&key) }.copied().unwrap_or(0)
}

/// Is `task` in `session`: of the current process, a process of the session, or a task in a
/// cgroup of the session? (`/proc` entries and signals are confined to the session.)
#[inline(always)]
pub fn task_in_session(session: u64, task: Kptr) -> Result<bool, Unresolved> {
    let tgid = task_tgid(task)?;
    if tgid == current_tgid() {
        return Ok(true);
    }
    // SAFETY: value read by value.
    if let Some(e) = unsafe { PROCS.get(&tgid) } {
        return Ok(e.session == session);
    }
    let Some(conf) = CONF.get(0) else { return Ok(false) };
    if conf.cgroup_sessions == 0 {
        return Ok(false);
    }
    let cgroup = task_cgroup_id(task)?;
    // SAFETY: value read by value.
    Ok(unsafe { CGROUPS.get(&cgroup) }.copied() == Some(session))
}

/// A per-process `/proc` entry of a process outside `session` (or of one that has exited):
/// [`PROC_OTHER`]; [`PROC_FREE`] when the grants decide; [`PROC_UNRESOLVED`] when a read failed.
///
/// A BPF subprogram, not inlined: its branches (not procfs, no process, the caller itself, a
/// process of the session, a cgroup of the session) would otherwise reach the ancestry walk as
/// that many states, and 6.1's verifier gives up on the open programs (1M instructions). Across
/// the call only its one scalar result is seen.
#[inline(never)]
fn other_process(session: u64, dentry: u64) -> u32 {
    let owner = match proc_owner(dentry as Kptr) {
        Ok(ProcOwner::None) => return PROC_FREE,
        Ok(ProcOwner::Gone) => return PROC_OTHER,
        Ok(ProcOwner::Task(task)) => task,
        Err(Unresolved) => return PROC_UNRESOLVED,
    };
    match task_in_session(session, owner) {
        Ok(true) => PROC_FREE,
        Ok(false) => PROC_OTHER,
        Err(Unresolved) => PROC_UNRESOLVED,
    }
}
const PROC_FREE: u32 = 0;
const PROC_OTHER: u32 = 1;
const PROC_UNRESOLVED: u32 = 2;

/// Open of the file object `file` by a process of `session` with the requested access
/// (`ACCESS_READ | ACCESS_WRITE`). Walks the object's dentry ancestry (crossing mounts) looking
/// for a granted file or directory.
#[inline(always)]
pub fn decide_open(session: u64, st: &SessionState, file: Kptr, need: u32) -> Verdict {
    match crate::kernel::file_pos(file) {
        Ok(pos) => decide_open_at(session, st, pos, need),
        Err(Unresolved) => Verdict::deny(REASON_UNRESOLVED, grant_in_force(st)),
    }
}

/// [`decide_open`] for a file whose `f_path` the caller has read. Another process's `/proc`
/// entries are denied whatever the grants say about `/proc` (`other_process`).
#[inline(always)]
pub fn decide_open_at(session: u64, st: &SessionState, pos: PathPos, need: u32) -> Verdict {
    let v = decide_access(st, pos, need);
    // After the walk, and only for what it allowed: the walk's state never carries the proc
    // check's outcomes (6.1's verifier gives up on the open programs when it does), and a
    // denial needs no more reads.
    if !v.allow {
        return v;
    }
    match other_process(session, pos.dentry as u64) {
        PROC_FREE => v,
        PROC_OTHER => Verdict::deny(REASON_OTHER_PROCESS, v.grant),
        _ => Verdict::deny(REASON_UNRESOLVED, v.grant),
    }
}

/// The grants' answer for `need` on the object at `pos`.
#[inline(always)]
pub fn decide_access(st: &SessionState, pos: PathPos, need: u32) -> Verdict {
    match try_decide_open(st, pos, need & (ACCESS_READ | ACCESS_WRITE | ACCESS_METADATA)) {
        Ok(v) => v,
        Err(Unresolved) => Verdict::deny(REASON_UNRESOLVED, grant_in_force(st)),
    }
}

#[inline(always)]
fn decide_file_access(st: &SessionState, file: Kptr, need: u32) -> Verdict {
    match crate::kernel::file_pos(file) {
        Ok(pos) => decide_access(st, pos, need),
        Err(Unresolved) => Verdict::deny(REASON_UNRESOLVED, grant_in_force(st)),
    }
}

#[inline(always)]
fn try_decide_open(st: &SessionState, pos: PathPos, need: u32) -> Result<Verdict, Unresolved> {
    if st.task_grant == 0 && st.base_grant == 0 {
        return Ok(Verdict::deny(REASON_NO_GRANT, 0));
    }
    // Decided once, before the walk: state that changes shape along the walk (a lazily read
    // clock, caches filled on first use) multiplies the paths the verifier explores per level,
    // and 6.1's verifier gives up on the LSM programs (1M instructions) when it does.
    let task_live = st.task_grant != 0 && now() < st.task_expires_ns;
    let mut walk = Walk::start(pos)?;
    let mut base_acc = 0u32;
    let mut task_acc = 0u32;
    let mut depth = 0u32;
    while depth < MAX_WALK_DEPTH {
        let (obj, d_parent) = walk.here()?;
        base_acc |= path_bits(st.base_grant, obj);
        if base_acc & need == need {
            return Ok(Verdict::allow(st.base_grant));
        }
        task_acc |= path_bits(st.task_grant, obj);
        if task_live && (base_acc | task_acc) & need == need {
            return Ok(Verdict::allow(st.task_grant));
        }
        if !walk.up(d_parent)? {
            let reason = if (base_acc | task_acc) & need == need { REASON_GRANT_EXPIRED } else { REASON_NOT_GRANTED };
            return Ok(Verdict::deny(reason, grant_in_force(st)));
        }
        depth += 1;
    }
    // The walk could not finish: fail closed.
    Err(Unresolved)
}

/// Executable mapping of `file`: an approved binary (object + fingerprint), or a file readable
/// and not writable under the grants (shared libraries). W^X for grants.
#[inline(always)]
pub fn decide_mmap_exec(st: &SessionState, file: Kptr) -> Verdict {
    let exec = decide_exec(st, file);
    if exec.allow {
        return exec;
    }
    let read = decide_file_access(st, file, ACCESS_READ);
    if !read.allow {
        return read;
    }
    let write = decide_file_access(st, file, ACCESS_WRITE);
    if write.allow {
        return Verdict::deny(REASON_NOT_GRANTED, write.grant);
    }
    read
}

/// Position to report for a file (for the event's path). When it cannot be read, `None` is
/// built from a defined value (null pointers), not left with an undefined payload: a payload
/// that is undefined on one path and a register on another can reach the event code as a
/// register never written on that path, which the verifier refuses ("!read_ok").
#[inline(always)]
pub fn report_pos(file: Kptr) -> Option<PathPos> {
    let null = PathPos { dentry: core::ptr::null(), vfsmnt: core::ptr::null() };
    let pos = crate::kernel::file_pos(file).unwrap_or(null);
    if pos.dentry.is_null() { None } else { Some(pos) }
}

// ---- Network --------------------------------------------------------------------------------

/// Does `grant` allow `kind` to `addr` (IPv6 / IPv4-mapped) port `port`? One longest-prefix
/// lookup; the entry holds the union of the ports of every prefix of the grant covering it.
#[inline(always)]
fn net_allows(grant: u64, kind: u32, addr: &[u8; 16], port: u16) -> bool {
    if grant == 0 {
        return false;
    }
    let key = Key::new(
        NET_KEY_FIXED_BITS + 128,
        NetKeyData { kind, grant: [grant as u32, (grant >> 32) as u32], addr: *addr },
    );
    let Some(ports) = NET.get(&key) else { return false };
    let n = ports.n;
    // Over the array itself (no index the optimiser could assume in bounds), stopping at `n`.
    for (i, r) in ports.ranges.iter().enumerate() {
        if i as u32 >= n {
            break;
        }
        if port >= r[0] && port <= r[1] {
            return true;
        }
    }
    false
}

/// Which of the session's grants allows the socket operation, as [`decide_open`] does for files:
/// the base grant for the session's lifetime, the task grant until it expires.
#[inline(always)]
fn decide_by(st: &SessionState, allows: impl Fn(u64) -> bool) -> Verdict {
    if st.task_grant == 0 && st.base_grant == 0 {
        return Verdict::deny(REASON_NO_GRANT, 0);
    }
    if allows(st.base_grant) {
        return Verdict::allow(st.base_grant);
    }
    if st.task_grant != 0 && allows(st.task_grant) {
        if now() < st.task_expires_ns {
            return Verdict::allow(st.task_grant);
        }
        return Verdict::deny(REASON_GRANT_EXPIRED, st.task_grant);
    }
    Verdict::deny(REASON_NOT_GRANTED, grant_in_force(st))
}

/// Connect / send to, or bind to, an IP address and port (`kind`: `NET_*`).
#[inline(always)]
pub fn decide_net(st: &SessionState, kind: u32, addr: &[u8; 16], port: u16) -> Verdict {
    decide_by(st, |grant| net_allows(grant, kind, addr, port))
}

/// A Unix socket reached by name: abstract names, and (kill backend) the path as given.
/// `key.name` is filled by the caller; `key.grant` is set here per grant.
#[inline(always)]
pub fn decide_unix_name(st: &SessionState, key: &mut UnixKey) -> Verdict {
    decide_by(st, |grant| {
        if grant == 0 {
            return false;
        }
        let mut k = *key;
        k.grant = grant;
        // SAFETY: value read by value.
        unsafe { UNIX.get(&k) }.is_some()
    })
}

/// A path-bound Unix socket, by its file object: exactly the granted object, not a directory.
#[inline(always)]
pub fn decide_unix_obj(st: &SessionState, obj: Obj) -> Verdict {
    decide_by(st, |grant| path_bits(grant, obj) & ACCESS_CONNECT != 0)
}
