//! Entry points of the kill backend: BTF tracepoints for process lifecycle and exec, and
//! per-syscall tracepoints (which fire only for their own syscall, unlike `sys_exit`) for opens.
//! A forbidden exec or open is answered with `bpf_send_signal(SIGKILL)`: the signal is delivered
//! on the way back to user mode, before the process runs another instruction.
use aya_ebpf::{
    EbpfContext,
    helpers::bpf_send_signal,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use mcpguard_common::{
    ACCESS_READ, ACTION_AUDITED, ACTION_KILLED, COUNTER_PROCS_FULL, HOOK_EXEC, HOOK_IO_URING, HOOK_MMAP, HOOK_MPROTECT,
    HOOK_OPEN, HOOK_SYSCALL, MODE_AUDIT, PROC_VERIFIED, ProcEntry, REASON_NO_GRANT, REASON_NOT_GRANTED,
    REASON_UNRESOLVED,
};

use crate::{
    decide::{Governed, Verdict, decide_exec, decide_mmap_exec, decide_open_at, governed, report_pos},
    kernel::{
        FMODE_PATH, Kptr, SIGKILL, current_fd_file, current_task, current_tgid, file_mode_pos, fmode_access, off, rd,
        rd_ptr, task_start_ticks,
    },
    maps::PROCS,
    report::{Addr, Emitter, Report, count, emit},
};

/// Carries out a denial on this backend: kill unless the session is in audit mode.
#[inline(always)]
fn enforce(g: &Governed, v: Verdict, hook: u32, access: u32, report: Report) {
    let audit = g.state.is_some_and(|s| s.mode == MODE_AUDIT);
    let action = if audit {
        ACTION_AUDITED
    } else {
        // SAFETY: signals the current task only.
        unsafe { bpf_send_signal(SIGKILL) };
        ACTION_KILLED
    };
    emit(
        &Report { session: g.session, grant: v.grant, hook, action, reason: v.reason, access, ..report },
        Emitter::Tracepoint,
    );
}

/// [`enforce`] of a network channel, reporting `addr` or the socket at `pos`.
#[inline(always)]
pub(crate) fn enforce_addr(g: &Governed, v: Verdict, hook: u32, access: u32, addr: Addr) {
    enforce(g, v, hook, access, Report { addr, ..blank() });
}

/// [`enforce`] reporting `target` as the event's `ino`.
#[inline(always)]
pub(crate) fn enforce_target(g: &Governed, v: Verdict, hook: u32, access: u32, target: u64) {
    enforce(g, v, hook, access, Report { target, ..blank() });
}

#[inline(always)]
pub(crate) fn enforce_pos(g: &Governed, v: Verdict, hook: u32, access: u32, pos: Option<crate::kernel::PathPos>) {
    enforce(g, v, hook, access, Report { pos, ..blank() });
}

/// New processes of a governed process join its session (threads share the tgid already).
/// A new process of an ungoverned one that finds an entry under its tgid whose start time is
/// not its own recycled the PID of a process that left its entry behind: the entry goes.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn mcpg_fork(ctx: BtfTracePointContext) -> i32 {
    let tgid = current_tgid();
    // SAFETY: value read by value.
    let Some(parent) = (unsafe { PROCS.get(&tgid) }).copied() else {
        drop_recycled(ctx.arg(1), tgid);
        return 0;
    };
    let child: Kptr = ctx.arg(1);
    let Ok(child_tgid) = rd::<u32>(child, off!(task_tgid)) else {
        count(COUNTER_PROCS_FULL);
        // SAFETY: signals the current (governed) task only.
        unsafe { bpf_send_signal(SIGKILL) };
        return 0;
    };
    if child_tgid == tgid {
        return 0;
    }
    // The entry is this child's by construction: verified from the start (an unreadable start
    // time keeps it governed; only a later fork recycling the tgid compares it).
    let start_ticks = task_start_ticks(child).unwrap_or(0) | PROC_VERIFIED;
    let entry = ProcEntry { session: parent.session, start_ticks };
    if PROCS.insert(&child_tgid, &entry, 0).is_err() {
        // Could not track the child: fail closed on the governed parent.
        count(COUNTER_PROCS_FULL);
        // SAFETY: signals the current (governed) task only.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    0
}

/// See [`mcpg_fork`]. The child cannot have been registered by the agent before this
/// tracepoint unless its tgid was already visible, so a matching start time keeps the entry.
#[inline(always)]
fn drop_recycled(child: Kptr, tgid: u32) {
    let Ok(child_tgid) = rd::<u32>(child, off!(task_tgid)) else { return };
    if child_tgid == tgid {
        return;
    }
    // SAFETY: value read by value.
    let Some(e) = (unsafe { PROCS.get(&child_tgid) }).copied() else { return };
    if let Ok(ticks) = task_start_ticks(child)
        && ticks != e.start_ticks & !PROC_VERIFIED
    {
        let _ = PROCS.remove(&child_tgid);
    }
}

/// The session entry goes away when the whole thread group is dead.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn mcpg_exit(ctx: BtfTracePointContext) -> i32 {
    let tgid = current_tgid();
    // SAFETY: value read by value.
    if unsafe { PROCS.get(&tgid) }.is_none() {
        return 0;
    }
    let task: Kptr = ctx.arg(0);
    let live = rd_ptr(task, off!(task_signal)).and_then(|sig| rd::<i32>(sig, off!(signal_live)));
    if matches!(live, Ok(0)) {
        let _ = PROCS.remove(&tgid);
    }
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn mcpg_exec(ctx: BtfTracePointContext) -> i32 {
    let Some(g) = governed(current_tgid()) else { return 0 };
    let bprm: Kptr = ctx.arg(2);
    let Some(st) = g.state else {
        enforce(&g, Verdict::deny(REASON_NO_GRANT, 0), HOOK_EXEC, 0, blank());
        return 0;
    };
    let file = rd_ptr(bprm, off!(binprm_file));
    let v = match file {
        Ok(f) => decide_exec(&st, f),
        Err(_) => Verdict::deny(mcpguard_common::REASON_UNRESOLVED, 0),
    };
    if !v.allow {
        let pos = report_pos(file.unwrap_or(core::ptr::null()));
        enforce(&g, v, HOOK_EXEC, 0, Report { pos, ..blank() });
    }
    0
}

/// Every backend: the new image's command line and environment, after the exec's point of no
/// return (the exec itself was decided by `mcpg_exec` on the kill backend, by
/// `bprm_check_security` with EPERM on the deny backends); a refusal kills the image before its
/// first instruction (`cmdline.rs`). A program of its own: the verifier's budget is per program.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn mcpg_cmdline(ctx: BtfTracePointContext) -> i32 {
    let Some(g) = governed(current_tgid()) else { return 0 };
    let Some(st) = g.state else { return 0 }; // no grant: the exec itself was refused
    let bprm: Kptr = ctx.arg(2);
    // Through map memory: every way the decision went reaches the report as one state (the
    // report's path walk is verified once, not once per reason and grant).
    let Some(v) = crate::cmdline::settle(crate::cmdline::decide_cmdline(&st, bprm, current_tgid(), g.session)) else {
        return 0;
    };
    if !v.allow {
        let pos = report_pos(rd_ptr(bprm, off!(binprm_file)).unwrap_or(core::ptr::null()));
        enforce(&g, v, HOOK_EXEC, 0, Report { pos, ..blank() });
        let audit = g.state.is_some_and(|s| s.mode == MODE_AUDIT);
        let action = if audit { ACTION_AUDITED } else { ACTION_KILLED };
        if crate::cmdline::argv_pending(g.session, v.grant, v.reason, action) {
            // SAFETY: slot 0 holds `mcpg_cmdline_argv`, a program of this same type and hook;
            // when the call fails (slot empty) this program just ends.
            unsafe { crate::maps::ARGV_PROG.tail_call(&ctx, 0) };
        }
    }
    0
}

/// Tail-called by [`mcpg_cmdline`] after a refusal, never attached: the refused command line
/// (the new image's `arg_start..arg_end`, at most [`mcpguard_common::EXEC_ARGV_BYTES`]) as a
/// record right after the exec event (not counted again).
#[btf_tracepoint(function = "sched_process_exec")]
pub fn mcpg_cmdline_argv(_ctx: BtfTracePointContext) -> i32 {
    let Some((session, grant, reason, action)) = crate::cmdline::argv_pended() else { return 0 };
    let Some((bytes, len)) = crate::cmdline::argv_copy() else { return 0 };
    let r = Report {
        session,
        grant,
        hook: HOOK_EXEC,
        action,
        reason,
        access: mcpguard_common::EXEC_ARGV,
        addr: Addr::argv(bytes, len),
        ..blank()
    };
    crate::report::emit_record(&r, Emitter::Tracepoint);
    0
}

#[inline(always)]
const fn blank() -> Report {
    Report { session: 0, grant: 0, hook: 0, action: 0, reason: 0, access: 0, pos: None, target: 0, addr: Addr::NONE }
}

/// Shared body of the open-family exit tracepoints. Decides on the `struct file` now installed
/// at the returned fd, never on the user-memory path argument.
#[inline(always)]
fn on_open_exit(ctx: &TracePointContext) -> u32 {
    // SAFETY: offset 16 is `long ret` in every syscalls:sys_exit_* tracepoint format; the
    // tracepoint context is readable directly (no helper call).
    let ret = unsafe { ctx.as_ptr().cast::<i64>().add(2).read() };
    if ret < 0 {
        return 0;
    }
    let Some(g) = governed(current_tgid()) else { return 0 };
    let Some(st) = g.state else {
        enforce(&g, Verdict::deny(REASON_NO_GRANT, 0), HOOK_OPEN, 0, blank());
        return 0;
    };
    let Ok((fmode, pos)) = current_fd_file(current_task(), ret as u64).and_then(file_mode_pos) else {
        let v = Verdict::deny(mcpguard_common::REASON_UNRESOLVED, 0);
        enforce(&g, v, HOOK_OPEN, 0, blank());
        return 0;
    };
    if fmode & FMODE_PATH != 0 {
        // O_PATH gives no access to content; anything done through it is checked again.
        return 0;
    }
    let need = fmode_access(fmode);
    if need == 0 {
        return 0;
    }
    let v = decide_open_at(g.session, &st, pos, need);
    if !v.allow {
        enforce(&g, v, HOOK_OPEN, need, Report { pos: Some(pos), ..blank() });
    }
    0
}

const PROT_EXEC: u64 = 0x4;
const MAP_ANONYMOUS: u64 = 0x20;

/// Argument `i` of a `syscalls:sys_enter_*` tracepoint: after the common fields and
/// `int __syscall_nr`, each argument is 8 bytes from offset 16. These are the syscall's register
/// values, copied by the kernel: no other thread can change them.
#[inline(always)]
pub(crate) fn sys_arg(ctx: &TracePointContext, i: usize) -> u64 {
    // SAFETY: within every sys_enter_* tracepoint record for the syscalls used here (6 args).
    unsafe { ctx.as_ptr().cast::<u64>().add(2 + i).read() }
}

/// W^X for grants on the kill backend: `mmap` of a file with `PROT_EXEC` by a governed process
/// (what `ld.so` does for `LD_PRELOAD`, `dlopen` and `ld.so ./prog`) is decided as the LSM
/// backends decide `mmap_file`: an approved binary, or a file readable and not writable under the
/// grants. A refused mapping is answered with SIGKILL at syscall entry, so the process (every
/// thread of it) is dead before the mapping exists. Ungoverned processes: two argument loads for
/// an mmap with PROT_EXEC and a file, then one lookup.
#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn mcpg_mmap(ctx: TracePointContext) -> u32 {
    let (prot, flags, fd) = (sys_arg(&ctx, 2), sys_arg(&ctx, 3), sys_arg(&ctx, 4) as i32);
    if prot & PROT_EXEC == 0 || flags & MAP_ANONYMOUS != 0 || fd < 0 {
        return 0;
    }
    let Some(g) = governed(current_tgid()) else { return 0 };
    let Some(st) = g.state else {
        enforce(&g, Verdict::deny(REASON_NO_GRANT, 0), HOOK_MMAP, ACCESS_READ, blank());
        return 0;
    };
    let Ok(file) = current_fd_file(current_task(), fd as u64) else {
        // No file at fd (the mmap would fail with EBADF) or a failed read: fail closed.
        enforce(&g, Verdict::deny(REASON_UNRESOLVED, 0), HOOK_MMAP, ACCESS_READ, blank());
        return 0;
    };
    let v = decide_mmap_exec(&st, file);
    if !v.allow {
        enforce(&g, v, HOOK_MMAP, ACCESS_READ, Report { pos: report_pos(file), ..blank() });
    }
    0
}

/// W^X for grants on the kill backend, the other way to an executable file mapping: `mprotect`
/// (and `pkey_mprotect`) with `PROT_EXEC` of a range whose mapping is a file is decided as
/// [`mcpg_mmap`] decides the file, at syscall entry (the SIGKILL is queued for the whole process
/// before the mapping becomes executable). Anonymous memory (a JIT's code) passes; the range's
/// mappings are found with `bpf_find_vma` (`vma.rs`, its bounds fail closed). Ungoverned
/// processes: one argument load, then one lookup for `PROT_EXEC`.
#[tracepoint(category = "syscalls", name = "sys_enter_mprotect")]
pub fn mcpg_mprotect(ctx: TracePointContext) -> u32 {
    on_mprotect_enter(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_pkey_mprotect")]
pub fn mcpg_pkey_mprotect(ctx: TracePointContext) -> u32 {
    on_mprotect_enter(&ctx)
}

#[inline(always)]
fn on_mprotect_enter(ctx: &TracePointContext) -> u32 {
    let (start, len, prot) = (sys_arg(ctx, 0), sys_arg(ctx, 1), sys_arg(ctx, 2));
    if prot & PROT_EXEC == 0 || len == 0 {
        return 0;
    }
    let Some(g) = governed(current_tgid()) else { return 0 };
    let Some(st) = g.state else {
        enforce(&g, Verdict::deny(REASON_NO_GRANT, 0), HOOK_MPROTECT, ACCESS_READ, blank());
        return 0;
    };
    match crate::vma::exec_file(start, len) {
        Err(_) => enforce(&g, Verdict::deny(REASON_UNRESOLVED, 0), HOOK_MPROTECT, ACCESS_READ, blank()),
        Ok(file) if file.is_null() => {}
        Ok(file) => {
            let v = decide_mmap_exec(&st, file);
            if !v.allow {
                enforce(&g, v, HOOK_MPROTECT, ACCESS_READ, Report { pos: report_pos(file), ..blank() });
            }
        }
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn mcpg_openat(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn mcpg_open(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn mcpg_openat2(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_creat")]
pub fn mcpg_creat(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_open_by_handle_at")]
pub fn mcpg_open_handle(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx)
}

/// io_uring submissions bypass the open-family tracepoints: governed tasks may not set it up.
#[tracepoint(category = "syscalls", name = "sys_enter_io_uring_setup")]
pub fn mcpg_io_uring(_ctx: TracePointContext) -> u32 {
    let Some(g) = governed(current_tgid()) else { return 0 };
    let grant = g.state.map_or(0, |s| if s.task_grant != 0 { s.task_grant } else { s.base_grant });
    enforce(&g, Verdict::deny(REASON_NOT_GRANTED, grant), HOOK_IO_URING, 0, blank());
    0
}

/// Syscalls that could turn the guard off (rewrite our BPF maps, inspect or inject into the
/// daemon, alias paths with mounts, load kernel code) stop a governed process, on every backend.
#[inline(always)]
fn guard_syscall(nr: u32) -> u32 {
    let Some(g) = governed(current_tgid()) else { return 0 };
    let grant = g.state.map_or(0, |s| if s.task_grant != 0 { s.task_grant } else { s.base_grant });
    enforce(&g, Verdict::deny(REASON_NOT_GRANTED, grant), HOOK_SYSCALL, nr, blank());
    0
}

/// One program per `mcpguard_common::GUARD_SYSCALLS` entry (same program, tracepoint and
/// number; the agent attaches them by that table, so a missing one fails the attach).
macro_rules! guard {
    ($fn:ident, $tp:literal, $nr:literal) => {
        #[tracepoint(category = "syscalls", name = $tp)]
        pub fn $fn(_ctx: TracePointContext) -> u32 {
            guard_syscall($nr)
        }
    };
}

guard!(mcpg_sc_link, "sys_enter_link", 86);
guard!(mcpg_sc_linkat, "sys_enter_linkat", 265);
guard!(mcpg_sc_bpf, "sys_enter_bpf", 321);
guard!(mcpg_sc_ptrace, "sys_enter_ptrace", 101);
guard!(mcpg_sc_vm_readv, "sys_enter_process_vm_readv", 310);
guard!(mcpg_sc_vm_writev, "sys_enter_process_vm_writev", 311);
guard!(mcpg_sc_mount, "sys_enter_mount", 165);
guard!(mcpg_sc_umount, "sys_enter_umount", 166);
guard!(mcpg_sc_pivot, "sys_enter_pivot_root", 155);
guard!(mcpg_sc_open_tree, "sys_enter_open_tree", 428);
guard!(mcpg_sc_move_mount, "sys_enter_move_mount", 429);
guard!(mcpg_sc_fsopen, "sys_enter_fsopen", 430);
guard!(mcpg_sc_fsmount, "sys_enter_fsmount", 432);
guard!(mcpg_sc_mnt_setattr, "sys_enter_mount_setattr", 442);
guard!(mcpg_sc_init_mod, "sys_enter_init_module", 175);
guard!(mcpg_sc_finit_mod, "sys_enter_finit_module", 313);
guard!(mcpg_sc_pidfd_getfd, "sys_enter_pidfd_getfd", 438);
guard!(mcpg_sc_fsconfig, "sys_enter_fsconfig", 431);
guard!(mcpg_sc_fspick, "sys_enter_fspick", 433);
guard!(mcpg_sc_tree_attr, "sys_enter_open_tree_attr", 467);
guard!(mcpg_sc_delete_mod, "sys_enter_delete_module", 176);
guard!(mcpg_sc_kexec, "sys_enter_kexec_load", 246);
guard!(mcpg_sc_kexec_file, "sys_enter_kexec_file_load", 320);
