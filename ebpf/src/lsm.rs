//! BPF-LSM backend: synchronous deny. Same decision logic (`decide.rs`), maps and events as the
//! kill backend; a forbidden exec/open/executable mapping returns -EPERM (and, in kill mode, the
//! process is also killed). The previous LSM verdict is folded in: a denial is never turned into
//! an allow.
use aya_ebpf::{
    macros::lsm,
    programs::{FEntryContext, LsmContext},
};
use mcpguard_common::{
    ACCESS_READ, ACTION_AUDITED, ACTION_DENIED, ACTION_KILLED, COUNTER_LSM_PROBE, HOOK_EXEC, HOOK_MMAP, HOOK_MPROTECT,
    HOOK_OPEN, HOOK_SIGNAL, MODE_AUDIT, MODE_KILL, REASON_NO_GRANT, REASON_SIGNAL_OUTSIDE_SESSION, REASON_UNRESOLVED,
};

use crate::{
    decide::{Governed, Verdict, decide_exec, decide_mmap_exec, decide_open, governed, report_pos, task_in_session},
    kernel::{
        FMODE_EXEC, FMODE_READ, FMODE_WRITE, Kptr, SIGKILL, current_tgid, fmode_access, off, rd, rd_ptr, task_tgid,
    },
    maps::CONF,
    report::{Addr, Emitter, Report, count, emit},
};

const EPERM: i32 = 1;
const PROT_EXEC: u64 = 0x4;

/// Start-up self-test: the agent opens a file from its own tgid and checks this counter moved,
/// proving the LSM hooks really run (an LSM program attaches fine when `bpf` is not in the
/// active LSM list, and then never runs).
#[inline(always)]
fn probe(tgid: u32) {
    if let Some(conf) = CONF.get(0)
        && conf.probe_tgid == tgid
    {
        count(COUNTER_LSM_PROBE);
    }
}

/// Carries out a denial: -EPERM, plus SIGKILL in kill mode; audit mode lets it through.
#[inline(always)]
pub(crate) fn deny(g: &Governed, v: Verdict, hook: u32, access: u32, pos: Option<crate::kernel::PathPos>) -> i32 {
    deny_reported(g, v, hook, access, pos, 0)
}

#[inline(always)]
fn deny_reported(
    g: &Governed,
    v: Verdict,
    hook: u32,
    access: u32,
    pos: Option<crate::kernel::PathPos>,
    target: u64,
) -> i32 {
    deny_as(
        g,
        v,
        Report { session: 0, grant: 0, hook, action: 0, reason: 0, access, pos, target, addr: Addr::NONE },
        true,
    )
}

/// A refusal of a network channel on the deny backends, reporting `addr`: EPERM in deny and kill
/// modes alike (the cgroup socket programs, which decide the other network channels, cannot
/// kill), the call passes in audit mode.
#[inline(always)]
pub(crate) fn deny_addr(
    g: &Governed,
    v: Verdict,
    hook: u32,
    access: u32,
    pos: Option<crate::kernel::PathPos>,
    target: u64,
    addr: Addr,
) -> i32 {
    deny_as(g, v, Report { session: 0, grant: 0, hook, action: 0, reason: 0, access, pos, target, addr }, false)
}

/// Audit mode passes; otherwise -EPERM, plus SIGKILL in kill mode when `may_kill`. `r` carries
/// what to report; its session, grant, action and reason are filled in here.
#[inline(always)]
fn deny_as(g: &Governed, v: Verdict, r: Report, may_kill: bool) -> i32 {
    let mode = g.state.map_or(0, |s| s.mode);
    let (ret, action) = if mode == MODE_AUDIT {
        (0, ACTION_AUDITED)
    } else if mode == MODE_KILL && may_kill {
        // SAFETY: signals the current task only.
        unsafe { aya_ebpf::helpers::bpf_send_signal(SIGKILL) };
        (-EPERM, ACTION_KILLED)
    } else {
        (-EPERM, ACTION_DENIED)
    };
    emit(&Report { session: g.session, grant: v.grant, action, reason: v.reason, ..r }, Emitter::Trampoline);
    ret
}

/// `#!` scripts reach bprm_check first as the script file, then as the interpreter. On every
/// backend a script is data its interpreter reads: it is decided as a read of the file.
#[inline(always)]
fn is_script(bprm: Kptr) -> bool {
    let buf: [u8; 2] = rd(bprm, off!(binprm_buf)).unwrap_or([0; 2]);
    buf == *b"#!"
}

/// `security_bprm_check` / LSM `bprm_check_security`.
#[inline(always)]
fn on_exec(bprm: Kptr) -> i32 {
    let tgid = current_tgid();
    let Some(g) = governed(tgid) else { return 0 };
    let Some(st) = g.state else {
        return deny(&g, Verdict::deny(REASON_NO_GRANT, 0), HOOK_EXEC, 0, None);
    };
    let Ok(file) = rd_ptr(bprm, off!(binprm_file)) else {
        return deny(&g, Verdict::deny(REASON_UNRESOLVED, 0), HOOK_EXEC, 0, None);
    };
    let (v, hook, access) = if is_script(bprm) {
        (decide_open(g.session, &st, file, ACCESS_READ), HOOK_OPEN, ACCESS_READ)
    } else {
        (decide_exec(&st, file), HOOK_EXEC, 0)
    };
    if v.allow { 0 } else { deny(&g, v, hook, access, report_pos(file)) }
}

/// `security_file_open` / LSM `file_open`.
#[inline(always)]
fn on_open(file: Kptr) -> i32 {
    let tgid = current_tgid();
    probe(tgid);
    let Some(g) = governed(tgid) else { return 0 };
    let fmode: u32 = rd(file, off!(file_mode)).unwrap_or(FMODE_READ | FMODE_WRITE);
    let fflags: u32 = rd(file, off!(file_flags)).unwrap_or(0);
    // The open done by execve for the new image is decided by bprm_check_security.
    // `__FMODE_EXEC` is an internal open flag (userspace cannot pass it: build_open_flags masks
    // it out); f_mode carries FMODE_EXEC only on some kernels.
    if fmode & FMODE_EXEC != 0 || fflags & FMODE_EXEC != 0 {
        return 0;
    }
    let Some(st) = g.state else {
        return deny(&g, Verdict::deny(REASON_NO_GRANT, 0), HOOK_OPEN, 0, report_pos(file));
    };
    let need = fmode_access(fmode);
    if need == 0 {
        return 0;
    }
    let v = decide_open(g.session, &st, file, need);
    if v.allow { 0 } else { deny(&g, v, HOOK_OPEN, need, report_pos(file)) }
}

/// `security_mmap_file` / LSM `mmap_file`. Executable file mappings are checked like execs, so
/// loading code through `ld.so ./prog` or a userland loader is covered: the file must be an
/// approved binary, or readable and not writable under the grants (shared libraries) — nothing
/// the session can write is mapped executable.
#[inline(always)]
fn on_mmap(file: Kptr, prot: u64) -> i32 {
    if prot & PROT_EXEC == 0 || file.is_null() {
        return 0; // anonymous executable memory is not a file object
    }
    let Some(g) = governed(current_tgid()) else { return 0 };
    let Some(st) = g.state else {
        return deny(&g, Verdict::deny(REASON_NO_GRANT, 0), HOOK_MMAP, 0, report_pos(file));
    };
    let v = decide_mmap_exec(&st, file);
    if v.allow { 0 } else { deny(&g, v, HOOK_MMAP, ACCESS_READ, report_pos(file)) }
}

/// `security_file_mprotect` / LSM `file_mprotect`, once per mapping an `mprotect` changes: a
/// file mapping made executable is decided as [`on_mmap`] decides it (W^X for grants).
#[inline(always)]
fn on_mprotect(vma: Kptr, prot: u64) -> i32 {
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let Some(g) = governed(current_tgid()) else { return 0 };
    let Ok(file) = rd::<u64>(vma, off!(vma_file)) else {
        return deny(&g, Verdict::deny(REASON_UNRESOLVED, 0), HOOK_MPROTECT, ACCESS_READ, None);
    };
    if file == 0 {
        return 0; // anonymous memory (a JIT's code) is not a file object
    }
    let file = file as Kptr;
    let Some(st) = g.state else {
        return deny(&g, Verdict::deny(REASON_NO_GRANT, 0), HOOK_MPROTECT, ACCESS_READ, report_pos(file));
    };
    let v = decide_mmap_exec(&st, file);
    if v.allow { 0 } else { deny(&g, v, HOOK_MPROTECT, ACCESS_READ, report_pos(file)) }
}

/// `security_task_kill` / LSM `task_kill`: a governed process signals only processes of its own
/// session (every target of a process-group or `-1` kill passes here one by one). Signals the
/// kernel sends itself (SIGCHLD to a parent, SIGPIPE) do not come through this hook.
#[inline(always)]
fn on_kill(target: Kptr, sig: i32) -> i32 {
    let Some(g) = governed(current_tgid()) else { return 0 };
    let inside = task_in_session(g.session, target);
    if let Ok(true) = inside {
        return 0;
    }
    let reason = if inside.is_ok() { REASON_SIGNAL_OUTSIDE_SESSION } else { REASON_UNRESOLVED };
    let grant = g.state.map_or(0, |s| if s.task_grant != 0 { s.task_grant } else { s.base_grant });
    let tgid = task_tgid(target).unwrap_or(0);
    deny_reported(&g, Verdict::deny(reason, grant), HOOK_SIGNAL, sig as u32, None, u64::from(tgid))
}

// ---- BPF-LSM entry points: (hook arguments..., previous verdict) -------------------------------

#[lsm(hook = "bprm_check_security")]
pub fn mcpg_lsm_exec(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 { prev } else { on_exec(ctx.arg(0)) }
}

#[lsm(hook = "file_open")]
pub fn mcpg_lsm_open(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 { prev } else { on_open(ctx.arg(0)) }
}

#[lsm(hook = "task_kill")]
pub fn mcpg_lsm_kill(ctx: LsmContext) -> i32 {
    // task_kill(p, info, sig, cred, previous verdict)
    let prev: i32 = ctx.arg(4);
    if prev != 0 { prev } else { on_kill(ctx.arg(0), ctx.arg(2)) }
}

#[lsm(hook = "mmap_file")]
pub fn mcpg_lsm_mmap(ctx: LsmContext) -> i32 {
    // mmap_file(file, reqprot, prot, flags, previous verdict)
    let prev: i32 = ctx.arg(4);
    if prev != 0 { prev } else { on_mmap(ctx.arg(0), ctx.arg(2)) }
}

#[lsm(hook = "file_mprotect")]
pub fn mcpg_lsm_mprotect(ctx: LsmContext) -> i32 {
    // file_mprotect(vma, reqprot, prot, previous verdict)
    let prev: i32 = ctx.arg(3);
    if prev != 0 { prev } else { on_mprotect(ctx.arg(0), ctx.arg(2)) }
}

// ---- fmod_ret entry points on the security_* functions, for kernels where trampolines work but
// `bpf` is not in the active LSM list. Compiled as `fentry/` sections (aya 0.14 cannot parse
// `fmod_ret/`); the agent loads them itself with expected_attach_type BPF_MODIFY_RETURN
// (agent/src/fmodret.rs). The last argument is the return value so far.

// (Written without the `#[fentry]` macro: it discards the function's return value, and for
// fmod_ret the return value is the verdict.)

#[unsafe(no_mangle)]
#[unsafe(link_section = "fentry/security_bprm_check")]
pub fn mcpg_fmod_exec(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = FEntryContext::new(ctx);
    let prev: i32 = ctx.arg(1);
    if prev != 0 { prev } else { on_exec(ctx.arg(0)) }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "fentry/security_file_open")]
pub fn mcpg_fmod_open(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = FEntryContext::new(ctx);
    let prev: i32 = ctx.arg(1);
    if prev != 0 { prev } else { on_open(ctx.arg(0)) }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "fentry/security_mmap_file")]
pub fn mcpg_fmod_mmap(ctx: *mut core::ffi::c_void) -> i32 {
    // security_mmap_file(file, prot, flags, return value so far)
    let ctx = FEntryContext::new(ctx);
    let prev: i32 = ctx.arg(3);
    if prev != 0 { prev } else { on_mmap(ctx.arg(0), ctx.arg(1)) }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "fentry/security_file_mprotect")]
pub fn mcpg_fmod_mprotect(ctx: *mut core::ffi::c_void) -> i32 {
    // security_file_mprotect(vma, reqprot, prot, return value so far)
    let ctx = FEntryContext::new(ctx);
    let prev: i32 = ctx.arg(3);
    if prev != 0 { prev } else { on_mprotect(ctx.arg(0), ctx.arg(2)) }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "fentry/security_task_kill")]
pub fn mcpg_fmod_kill(ctx: *mut core::ffi::c_void) -> i32 {
    // security_task_kill(p, info, sig, cred, return value so far)
    let ctx = FEntryContext::new(ctx);
    let prev: i32 = ctx.arg(4);
    if prev != 0 { prev } else { on_kill(ctx.arg(0), ctx.arg(2)) }
}
