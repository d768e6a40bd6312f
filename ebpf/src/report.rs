//! Decision events (ring buffer) and per-CPU counters.
//!
//! Records are variable length on the kill backend: the event is built in a per-CPU scratch
//! slot and only its fixed part and the path components it holds are copied into the ring
//! (`EVENT_HEADER_BYTES + depth * EVENT_NAME_LEN`), so the ring holds 2-3 times more typical
//! events than fixed-size records. The trampoline backends (LSM, fmod_ret) run with migration
//! but not preemption disabled, so two of their programs could share a CPU's scratch slot: they
//! reserve full-size records in the ring instead ([`Emitter`], fixed per program at build time:
//! no run-time global can say the wrong thing).
//!
//! Wake-ups: waking the reader costs the producing CPU an inter-processor interrupt (irq_work),
//! more than the rest of a denied open. Kill and deny events always wake it; audited events only
//! when the unread data crosses `EVENTS_WAKEUP_BYTES`, and the reader looks at least every
//! `EVENTS_POLL_MS` anyway.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::map,
    maps::PerCpuArray,
};
use mcpguard_common::{
    ACTION_ALLOWED, ACTION_AUDITED, COUNTER_LOST, EVENT_HEADER_BYTES, EVENT_NAME_LEN, EVENT_PATH_COMPONENTS,
    EVENT_PATH_TRUNCATED, EVENTS_WAKEUP_BYTES, Event, NetAddr, UNIX_NAME_LEN, counter_index,
};

use crate::{
    kernel::{Kptr, PathPos, Unresolved, Walk, Win, inode_obj, off},
    maps::{COUNTERS, EVENTS},
};

/// See the module comment; `MAP_EVENT_SCRATCH` in common.
#[map(name = "MCPG_EVSCRATCH")]
static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

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
    /// Reported as the event's `ino` when there is no `pos` (a signal's target tgid).
    pub target: u64,
    /// A network address or socket name instead of a path (`pos` is then `None`).
    pub addr: Addr,
}

/// What a network event reports in place of a path. A plain struct, not an enum with data: the
/// BTF of a niche-optimised enum (a union whose variants sit at non-zero offsets) is refused by
/// the kernel when it is nested in a `Result` or tuple.
#[derive(Clone, Copy)]
pub struct Addr {
    /// [`Addr::NONE`], [`ADDR_IP`] (`ip`: the event's first path slot) or [`ADDR_NAME`] (`len`
    /// bytes of a Unix socket name at the kernel address `name`, in the path slots; `dev` = `len`).
    pub kind: u32,
    pub len: u32,
    pub ip: NetAddr,
    pub name: Kptr,
}
pub const ADDR_IP: u32 = 1;
pub const ADDR_NAME: u32 = 2;
/// `len` bytes (the whole command line's length; at most [`mcpguard_common::EXEC_ARGV_BYTES`]
/// are copied) of a command line copied to the kernel address `name`.
pub const ADDR_ARGV: u32 = 3;

impl Addr {
    pub const NONE: Self =
        Self { kind: 0, len: 0, ip: NetAddr { addr: [0; 16], port: 0, _pad: [0; 14] }, name: core::ptr::null() };
    #[inline(always)]
    pub const fn ip(addr: [u8; 16], port: u16) -> Self {
        Self { kind: ADDR_IP, ip: NetAddr { addr, port, _pad: [0; 14] }, ..Self::NONE }
    }
    #[inline(always)]
    pub const fn name(name: Kptr, len: u32) -> Self {
        Self { kind: ADDR_NAME, len, name, ..Self::NONE }
    }
    #[inline(always)]
    pub const fn argv(bytes: Kptr, len: u32) -> Self {
        Self { kind: ADDR_ARGV, len, name: bytes, ..Self::NONE }
    }
}

/// Which kind of program emits: the scratch slot may be used only where a program cannot be
/// preempted by another on the same CPU.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Emitter {
    /// Tracepoint programs (kill backend, lifecycle, guard syscalls): preemption is disabled.
    Tracepoint,
    /// LSM and fmod_ret programs: migration but not preemption is disabled, so two of them can
    /// interleave on one CPU; they reserve full-size records in the ring instead.
    Trampoline,
}

/// Ring-buffer flags for a record of `len` bytes (see the module comment).
#[inline(always)]
fn wake_flags(action: u32, len: u64) -> u64 {
    if action != ACTION_AUDITED && action != ACTION_ALLOWED {
        return BPF_RB_FORCE_WAKEUP as u64;
    }
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    // + 8: the kernel's record header.
    if unread < EVENTS_WAKEUP_BYTES && unread + len + 8 >= EVENTS_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Counts the decision and emits its event; a full ring buffer is counted as lost.
#[inline(always)]
pub fn emit(r: &Report, by: Emitter) {
    count(counter_index(r.hook, r.action, r.reason));
    emit_record(r, by);
}

/// A record that belongs to the decision just counted (e.g. the refused command line after its
/// exec event): not counted again.
#[inline(always)]
pub fn emit_record(r: &Report, by: Emitter) {
    if by == Emitter::Tracepoint {
        if let Some(ev) = SCRATCH.get_ptr_mut(0) {
            // SAFETY: this CPU's slot; tracepoint programs run with preemption disabled, so no
            // other program uses it until this one returns.
            let ev = unsafe { &mut *ev };
            fill(ev, r);
            let depth = (ev.path_depth & !EVENT_PATH_TRUNCATED) as usize;
            let len = EVENT_HEADER_BYTES + depth.min(EVENT_PATH_COMPONENTS) * EVENT_NAME_LEN;
            // SAFETY: `len` <= size_of::<Event>(): the bytes are within the slot.
            let bytes = unsafe { core::slice::from_raw_parts(core::ptr::from_ref(ev).cast::<u8>(), len) };
            if EVENTS.output::<[u8]>(bytes, wake_flags(r.action, len as u64)).is_err() {
                count(COUNTER_LOST);
            }
            return;
        }
    }
    let flags = wake_flags(r.action, size_of::<Event>() as u64);
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(COUNTER_LOST);
        return;
    };
    // SAFETY: reserved ring-buffer memory of the right size; `fill` writes every field it
    // reports (path components up to `path_depth`).
    fill(unsafe { &mut *entry.as_mut_ptr() }, r);
    entry.submit(flags);
}

/// Writes the event's fields; path components only up to the depth it reports.
#[inline(always)]
fn fill(ev: &mut Event, r: &Report) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: helper without arguments.
    ev.ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    ev.session = r.session;
    ev.grant = r.grant;
    ev.pid = pid_tgid as u32;
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.hook = r.hook;
    ev.action = r.action;
    ev.reason = r.reason;
    ev.access = r.access;
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    ev.dev = 0;
    ev.ino = r.target;
    ev.path_depth = 0;
    if let Some(pos) = r.pos {
        ev.path_depth = fill_path(ev, pos);
    }
    if r.addr.kind == ADDR_IP {
        // SAFETY: NetAddr is exactly one path slot (asserted in common).
        ev.path[0] = unsafe { core::mem::transmute::<NetAddr, [u8; EVENT_NAME_LEN]>(r.addr.ip) };
        ev.path_depth = 1;
    } else if r.addr.kind == ADDR_NAME {
        ev.path_depth = fill_name(ev, r.addr.name, r.addr.len);
    } else if r.addr.kind == ADDR_ARGV {
        ev.path_depth = fill_argv(ev, r.addr.name, r.addr.len);
    }
}

/// Up to `MAX` bytes of a kernel buffer into the path slots (whole slots: the reader keeps
/// `dev` bytes); `dev` is `whole`. Socket names and command lines.
#[inline(always)]
fn fill_bytes<const MAX: usize>(ev: &mut Event, p: Kptr, len: u32, whole: u32) -> u32 {
    ev.dev = whole;
    let slots = len.min(MAX as u32).div_ceil(EVENT_NAME_LEN as u32);
    for n in 0..MAX.div_ceil(EVENT_NAME_LEN) {
        if n as u32 >= slots {
            break;
        }
        // SAFETY: the helper fails instead of faulting; the slot is written whole.
        ev.path[n] =
            unsafe { bpf_probe_read_kernel(p.wrapping_add(n * EVENT_NAME_LEN).cast::<[u8; EVENT_NAME_LEN]>()) }
                .unwrap_or([0; EVENT_NAME_LEN]);
    }
    slots
}

/// Command-line bytes (a kernel copy); `dev` keeps the whole length, so a reader can tell it
/// was cut.
#[inline(always)]
fn fill_argv(ev: &mut Event, p: Kptr, len: u32) -> u32 {
    fill_bytes::<{ mcpguard_common::EXEC_ARGV_BYTES }>(ev, p, len, len)
}

/// Socket name bytes (at most [`UNIX_NAME_LEN`]).
#[inline(always)]
fn fill_name(ev: &mut Event, p: Kptr, len: u32) -> u32 {
    let len = len.min(UNIX_NAME_LEN as u32);
    fill_bytes::<UNIX_NAME_LEN>(ev, p, len, len)
}

/// Raw `d_parent`, `d_name.name` and `d_inode` of a dentry: one read of the 32 bytes that hold
/// them on the running kernel's layout (`d_parent`, `d_name`, `d_inode` are adjacent), a read
/// per field that falls outside.
#[inline(always)]
fn dentry_fields(d: Kptr) -> Result<[u64; 3], Unresolved> {
    let (parent, name, inode) = (off!(dentry_parent), off!(dentry_name), off!(dentry_inode));
    let w = Win::<4>::read(d, parent.min(name).min(inode))?;
    Ok([w.u64_at(parent)?, w.u64_at(name)?, w.u64_at(inode)?])
}

/// Writes the leaf's identity and the path components, leaf first; returns how many components,
/// with the truncation flag. Mount roots appear as "/" components, which the reader skips (kept
/// out of the loop so that the verifier sees one counter and prunes states). Walks as decisions
/// do ([`Walk`]: the way `d_path` does), reading each dentry once and each mount once.
#[inline(always)]
fn fill_path(ev: &mut Event, pos: PathPos) -> u32 {
    let Ok(mut walk) = Walk::start(pos) else {
        return EVENT_PATH_TRUNCATED;
    };
    for n in 0..EVENT_PATH_COMPONENTS {
        let Ok([d_parent, name, inode]) = dentry_fields(walk.pos.dentry) else {
            return n as u32 | EVENT_PATH_TRUNCATED;
        };
        if n == 0
            && let Ok(obj) = inode_obj(inode as Kptr)
        {
            ev.dev = obj.dev;
            ev.ino = obj.ino;
        }
        let count = n as u32 + 1;
        if let Some(slot) = ev.path.get_mut(n)
            // SAFETY: the helper is bounded by the slot's length and fails instead of faulting.
            && unsafe { bpf_probe_read_kernel_str_bytes(name as Kptr, slot) }.is_err()
        {
            slot[0] = b'?';
            slot[1] = 0;
        }
        match walk.up(d_parent) {
            Ok(true) => {}
            Ok(false) => return count,
            Err(Unresolved) => return count | EVENT_PATH_TRUNCATED,
        }
    }
    EVENT_PATH_COMPONENTS as u32 | EVENT_PATH_TRUNCATED
}
