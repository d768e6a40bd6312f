//! Decision events (ring buffer) and per-CPU counters.
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns};
use mcpguard_common::{
    counter_index, Event, COUNTER_LOST, EVENT_PATH_COMPONENTS, EVENT_PATH_TRUNCATED,
};

use crate::{
    kernel::{dentry_inode, dentry_name, inode_obj, step_up, PathPos, Step},
    maps::{COUNTERS, EVENTS},
};

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}

/// What to report about one decision.
pub struct Report {
    pub session: u64,
    pub grant: u64,
    pub hook: u32,
    pub action: u32,
    pub reason: u32,
    pub access: u32,
    pub pos: Option<PathPos>,
}

/// Counts the decision and emits its event; a full ring buffer is counted as lost.
#[inline(always)]
pub fn emit(r: &Report) {
    count(counter_index(r.hook, r.action, r.reason));
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(COUNTER_LOST);
        return;
    };
    let ev = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `ev` points at reserved ring-buffer memory of the right size; every field written
    // below is plain data.
    unsafe {
        (*ev).ts_ns = bpf_ktime_get_boot_ns();
        (*ev).session = r.session;
        (*ev).grant = r.grant;
        (*ev).pid = pid_tgid as u32;
        (*ev).tgid = (pid_tgid >> 32) as u32;
        (*ev).hook = r.hook;
        (*ev).action = r.action;
        (*ev).reason = r.reason;
        (*ev).access = r.access;
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*ev).dev = 0;
        (*ev).ino = 0;
        (*ev).path_depth = 0;
        if let Some(pos) = r.pos {
            if let Ok(inode) = dentry_inode(pos.dentry) {
                if let Ok(obj) = inode_obj(inode) {
                    (*ev).dev = obj.dev;
                    (*ev).ino = obj.ino;
                }
            }
            (*ev).path_depth = fill_path(&mut *ev, pos);
        }
    }
    entry.submit(0);
}

/// Writes path components leaf first; returns how many, with the truncation flag. Mount roots
/// appear as "/" components, which the reader skips (kept out of the loop so that the verifier
/// sees one counter and prunes states).
#[inline(always)]
fn fill_path(ev: &mut Event, mut pos: PathPos) -> u32 {
    for n in 0..EVENT_PATH_COMPONENTS {
        if dentry_name(pos.dentry, &mut ev.path[n]).is_err() {
            ev.path[n][0] = b'?';
            ev.path[n][1] = 0;
        }
        match step_up(pos) {
            Ok(Step::Up(next)) => pos = next,
            Ok(Step::Root) => return n as u32 + 1,
            Err(_) => return (n as u32 + 1) | EVENT_PATH_TRUNCATED,
        }
    }
    EVENT_PATH_COMPONENTS as u32 | EVENT_PATH_TRUNCATED
}
