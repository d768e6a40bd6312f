//! File times on the deny backends (`utimensat`, `futimens`, `utimes`, `utime`, `futimesat`):
//! changing an object's times — to given values or to "now" — needs write access to the object
//! under the grants, decided on its dentry ancestry like opens; EPERM before anything changes.
//!
//! Every times syscall goes through `vfs_utimes(path, times)`, which has the path (mount and
//! dentry); the hook that can refuse, `inode_setattr` (fmod_ret: `security_inode_setattr`), has
//! only the dentry. So the decision is taken at `vfs_utimes` entry (fentry, governed threads
//! only: one lookup for everyone else), kept for the thread in [`TIMES`] until the call returns
//! (fexit), and carried out by the setattr hook, which sees every setattr of the call (an
//! overlayfs or ecryptfs setattr passes the change on to the layer below within it).
//!
//! A governed setattr of times outside such a call: passes when the kernel works under borrowed
//! credentials (`cred != real_cred`: overlayfs copy-up copies the lower file's times to its
//! copy, a consequence of an open or change already decided), otherwise it fails closed
//! (`unresolved`) — e.g. a decision that could not be kept because the map was full.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit, lsm},
    programs::{FEntryContext, FExitContext, LsmContext},
};
use mcpguard_common::{ACCESS_WRITE, HOOK_UTIMES, REASON_NO_GRANT, REASON_UNRESOLVED};

use crate::{
    decide::{Verdict, decide_access, governed, grant_in_force},
    kernel::{Kptr, PathPos, current_task, current_tgid, off, rd, rd_ptr},
    lsm::deny,
    maps::{TIMES, TimesPending},
    paths::{path_hook, path_pos},
};

// `iattr.ia_valid` bits (include/linux/fs.h, the same from 6.1 to 6.18).
const ATTR_MODE: u32 = 1 << 0;
const ATTR_UID: u32 = 1 << 1;
const ATTR_GID: u32 = 1 << 2;
const ATTR_SIZE: u32 = 1 << 3;
const ATTR_ATIME: u32 = 1 << 4;
const ATTR_MTIME: u32 = 1 << 5;
const ATTR_ATIME_SET: u32 = 1 << 7;
const ATTR_MTIME_SET: u32 = 1 << 8;
const ATTR_TOUCH: u32 = 1 << 17;
/// A change of times...
const TIMES_BITS: u32 = ATTR_ATIME | ATTR_MTIME | ATTR_ATIME_SET | ATTR_MTIME_SET | ATTR_TOUCH;
/// ...that is not a truncate, chmod or chown (decided by their path hooks; they set times too).
const OTHER_BITS: u32 = ATTR_MODE | ATTR_UID | ATTR_GID | ATTR_SIZE;

/// `vfs_utimes(path, times)` entry: the decision, kept for this thread.
#[fentry(function = "vfs_utimes")]
pub fn mcpg_utimes_in(ctx: FEntryContext) -> u32 {
    let Some(g) = governed(current_tgid()) else { return 0 };
    let path: Kptr = ctx.arg(0);
    let at = path_pos(path);
    let v = match (g.state, at) {
        (None, _) => Verdict::deny(REASON_NO_GRANT, 0),
        (Some(st), Ok(pos)) => decide_access(&st, pos, ACCESS_WRITE),
        (Some(st), Err(_)) => Verdict::deny(REASON_UNRESOLVED, grant_in_force(&st)),
    };
    let null = PathPos { dentry: core::ptr::null(), vfsmnt: core::ptr::null() };
    let pos = at.unwrap_or(null);
    let p = TimesPending {
        grant: v.grant,
        dentry: pos.dentry as u64,
        vfsmnt: pos.vfsmnt as u64,
        reason: v.reason,
        allow: u32::from(v.allow),
    };
    // A full map leaves no decision: the setattr hook then fails closed.
    let _ = TIMES.insert(&bpf_get_current_pid_tgid(), &p, 0);
    0
}

/// `vfs_utimes` exit: the decision is over. A lookup first (lock-free): a delete takes the
/// bucket's lock even when there is nothing to delete, and every thread on the host comes here.
#[fexit(function = "vfs_utimes")]
pub fn mcpg_utimes_out(_ctx: FExitContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    if TIMES.get_ptr(&key).is_some() {
        let _ = TIMES.remove(&key);
    }
    0
}

/// Is the current task working under borrowed credentials (`override_creds`)?
#[inline(always)]
fn borrowed_creds() -> bool {
    let task = current_task();
    match (rd_ptr(task, off!(task_cred)), rd_ptr(task, off!(task_real_cred))) {
        (Ok(cred), Ok(real)) => cred != real,
        _ => false,
    }
}

/// A setattr (`struct iattr *attr`): a change of times carries out the thread's `vfs_utimes`
/// decision; other changes pass (truncate, chmod and chown have their path hooks).
#[inline(always)]
fn on_times(attr: Kptr) -> i32 {
    // Unreadable: taken as a change of times (only governed threads are affected).
    let valid: u32 = rd(attr, off!(iattr_valid)).unwrap_or(ATTR_MTIME);
    if valid & TIMES_BITS == 0 || valid & OTHER_BITS != 0 {
        return 0;
    }
    let Some(g) = governed(current_tgid()) else { return 0 };
    // SAFETY: value read by value.
    if let Some(p) = unsafe { TIMES.get(&bpf_get_current_pid_tgid()) }.copied() {
        if p.allow != 0 {
            return 0;
        }
        let pos = PathPos { dentry: p.dentry as Kptr, vfsmnt: p.vfsmnt as Kptr };
        let report = if pos.dentry.is_null() || pos.vfsmnt.is_null() { None } else { Some(pos) };
        return deny(&g, Verdict::deny(p.reason, p.grant), HOOK_UTIMES, ACCESS_WRITE, report);
    }
    if borrowed_creds() {
        return 0;
    }
    let grant = g.state.map_or(0, |s| grant_in_force(&s));
    deny(&g, Verdict::deny(REASON_UNRESOLVED, grant), HOOK_UTIMES, ACCESS_WRITE, None)
}

// inode_setattr(idmap, dentry, attr) / security_inode_setattr(idmap or userns, dentry, attr).
path_hook!(mcpg_lsm_times, "inode_setattr", mcpg_fmod_times, "fentry/security_inode_setattr", 3, |c| on_times(
    c.arg(2)
));

/// The LSM hook before it took the idmap (6.1: `inode_setattr(dentry, attr)`).
#[lsm(hook = "inode_setattr")]
pub fn mcpg_lsm_times1(c: LsmContext) -> i32 {
    let prev: i32 = c.arg(2);
    if prev != 0 { prev } else { on_times(c.arg(1)) }
}
