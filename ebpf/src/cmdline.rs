//! The command line and environment of a governed exec, decided on the new process image.
//!
//! At `sched_process_exec` the exec is past its point of no return: `current->mm` is the new
//! image, private to the one thread that runs it, and its argument and environment strings
//! (`mm->arg_start..`, `mm->env_start..env_end`) were copied there by the kernel. Nothing else
//! can write them before the first user instruction (ptrace and process_vm writes are guard
//! syscalls), so what is read here is what the program will see: never the caller's memory.
//! A refusal kills the new image before it runs (every backend; the deny backends cannot EPERM
//! an exec this late).
//!
//! Per grant that approves the binary (task grant first, then the baseline), with its
//! [`ArgvRules`] (none: any command line): arguments 1..=[`ARGV_POSITIONS`] are read one by
//! one into a zeroed key and matched as literals (`MCPG_ARGVLIT`, exact bytes), or by the
//! rule's `*` / non-option / `**` masks; the rules still alive whose length fits the argument
//! count pass. The environment is scanned once for [`INJECTION_ENV`] names (compared as the
//! 16 bytes `NAME=`), unless the process is exempt (the launched program's own exec). Bounded:
//! [`ARGV_STRING_MAX`] bytes per string and [`ENV_STRINGS_MAX`] strings; beyond, `unresolved`.
//! All masks are combined without branches on their values, and every loop carries the same
//! shape of state on every path (the 6.1 verifier).
use aya_ebpf::helpers::generated::bpf_probe_read_user_str;
use mcpguard_common::{
    ARGV_LITERAL_LEN, ARGV_POSITIONS, ARGV_STRING_MAX, ArgvRules, ENV_STRINGS_MAX, EnvKey, ObjKey,
    REASON_ARGS_NOT_GRANTED, REASON_ENV_INJECTION, REASON_INLINE_CODE, REASON_UNRESOLVED, SESSION_ENV_LEN,
    SessionState,
};

use crate::{
    decide::{ExecMatch, Verdict, exec_lookup, grant_in_force, now},
    kernel::{Kptr, Obj, Unresolved, current_task, inode_obj, off, rd, rd_ptr},
    maps::{ARGV, ARGV_LIT, ENV_EXEMPT, ENV_NAMES, SESSION_ENV, STR_SCRATCH, StrScratch},
};

/// All ones when `x == 0`, else 0, without a branch: the top bit of `x | -x` is set exactly when
/// `x != 0`. The volatile round trip hides the `or` from LLVM, which would otherwise turn the
/// whole expression back into a compare and a jump (a long loop of such jumps exceeds the
/// verifier's jump-history limit).
#[inline(always)]
fn zero_mask(x: u64) -> u32 {
    let y = opaque(x | x.wrapping_neg());
    // Opaque again: knowing the mask is 0 or all ones, LLVM would make `bit & mask` a select.
    opaque(!(((y as i64) >> 63) as u64)) as u32
}

/// `v`, through a volatile stack slot: LLVM can no longer reason about its value.
#[inline(always)]
fn opaque(v: u64) -> u64 {
    // SAFETY: reads the local just written.
    unsafe { core::ptr::read_volatile(&raw const v) }
}

#[inline(always)]
fn scratch() -> Result<&'static mut StrScratch, Unresolved> {
    // SAFETY: per-CPU slot of this program run; programs do not nest on a CPU for this hook.
    let Some(p) = STR_SCRATCH.get_ptr_mut(0) else { return Err(Unresolved) };
    // SAFETY: as above; the pointer is a valid map value.
    unsafe { p.as_mut() }.ok_or(Unresolved)
}

/// Length (with its NUL) of the user string at `addr` (at most [`ARGV_STRING_MAX`] - 1 bytes),
/// copied into the scratch; an empty string counts 1.
#[inline(always)]
fn user_str_len(s: &mut StrScratch, addr: u64) -> Result<u64, Unresolved> {
    // SAFETY: bounded copy into our map value.
    let n = unsafe {
        bpf_probe_read_user_str(s.bytes.as_mut_ptr().cast(), ARGV_STRING_MAX as u32, addr as *const core::ffi::c_void)
    };
    if n < 0 || n >= ARGV_STRING_MAX as i64 {
        return Err(Unresolved);
    }
    Ok(if n == 0 { 1 } else { n as u64 })
}

/// [`INJECTION_ENV`] entries present in the new image's environment (bit i = entry i).
///
/// The loop never leaves early and keeps its state in map memory, which the verifier does not
/// track: every way through an iteration ends in the same state, so the verifier walks each
/// iteration once instead of once per way the earlier ones went.
#[inline(always)]
fn injected_env(mm: Kptr, session: u64) -> Result<u32, Unresolved> {
    let start: u64 = rd(mm, off!(mm_env_start))?;
    let end: u64 = rd(mm, off!(mm_env_end))?;
    let s = scratch()?;
    // Volatile: LLVM must not keep these in registers across iterations (the verifier would
    // then track them and tell the iterations' paths apart).
    let (found, state, addr) = (&raw mut s.found, &raw mut s.state, &raw mut s.addr);
    // SAFETY: fields of our map value.
    unsafe {
        found.write_volatile(0);
        state.write_volatile(0);
        addr.write_volatile(start);
    }
    for _ in 0..ENV_STRINGS_MAX {
        // SAFETY: as above.
        let a = unsafe { addr.read_volatile() };
        if unsafe { state.read_volatile() } != 0 {
            continue;
        }
        if a >= end {
            // SAFETY: as above.
            unsafe { state.write_volatile(1) };
            continue;
        }
        // SAFETY: bounded copy into our map value.
        let n = unsafe {
            bpf_probe_read_user_str(s.bytes.as_mut_ptr().cast(), ARGV_STRING_MAX as u32, a as *const core::ffi::c_void)
        };
        if n < 0 || n >= ARGV_STRING_MAX as i64 {
            // SAFETY: as above.
            unsafe { state.write_volatile(2) };
            continue;
        }
        // The first 16 bytes (stale bytes after a short string's NUL never match: every pattern
        // byte up to `=` is non-zero).
        // SAFETY: the scratch is 8-aligned and holds at least 16 bytes.
        let (w0, w1) = unsafe {
            let p = s.bytes.as_ptr().cast::<u64>();
            (p.read_volatile(), p.add(1).read_volatile())
        };
        let bit = injected_names(w0, w1);
        if bit != 0 && !launched_with(s, session, a) {
            // SAFETY: as above.
            unsafe { found.write_volatile(found.read_volatile() | bit) };
        }
        // SAFETY: as above.
        unsafe { addr.write_volatile(a + n.max(1) as u64) };
    }
    // SAFETY: as above.
    if unsafe { state.read_volatile() } == 1 { Ok(unsafe { found.read_volatile() }) } else { Err(Unresolved) }
}

/// Bytes of `w` up to and including its first `=` (a mask), and whether it has one. Branch-free
/// (the classic zero-byte test on `w ^ "========"`: exact for the lowest match).
#[inline(always)]
const fn through_eq(w: u64) -> (u64, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let x = w ^ 0x3d3d_3d3d_3d3d_3d3d;
    let t = x.wrapping_sub(ONES) & !x & HIGHS;
    let lowest = t & t.wrapping_neg();
    ((lowest << 1).wrapping_sub(1), t)
}

/// [`INJECTION_ENV`] entries whose `NAME=` the 16 bytes `w0`, `w1` start with: the bytes through
/// the first `=` as one exact key (`MCPG_ENVNAMES`).
#[inline(always)]
fn injected_names(w0: u64, w1: u64) -> u32 {
    let (m0, t0) = through_eq(w0);
    let key = if t0 != 0 {
        EnvKey { w: [w0 & m0, 0] }
    } else {
        let (m1, _) = through_eq(w1);
        EnvKey { w: [w0, w1 & m1] }
    };
    // SAFETY: value read by value.
    unsafe { ENV_NAMES.get(&key) }.copied().unwrap_or(0)
}

/// True when the entry at user address `a` is, byte for byte, one the session was launched with
/// (`MCPG_SESSENV`): inherited unchanged, it is the session's to give.
#[inline(always)]
fn launched_with(s: &mut StrScratch, session: u64, a: u64) -> bool {
    s.env_key.session = session;
    let words = s.env_key.bytes.as_mut_ptr().cast::<u64>();
    for i in 0..SESSION_ENV_LEN / 8 {
        // SAFETY: within the key's bytes, 8-aligned.
        unsafe { words.add(i).write_volatile(0) };
    }
    // SAFETY: bounded copy into our map value.
    let n = unsafe {
        bpf_probe_read_user_str(
            s.env_key.bytes.as_mut_ptr().cast(),
            SESSION_ENV_LEN as u32,
            a as *const core::ffi::c_void,
        )
    };
    // SAFETY: value read by value.
    n > 0 && n < SESSION_ENV_LEN as i64 && unsafe { SESSION_ENV.get(&s.env_key) }.is_some()
}

/// Rules of `cfg` that accept the new image's arguments (after argv[0]). Like the environment
/// loop, no early exit and the loop state in map memory.
#[inline(always)]
fn accepted(cfg: &ArgvRules, grant: u64, obj: Obj, mm: Kptr, argc: u32) -> Result<u32, Unresolved> {
    let s = scratch()?;
    let start: u64 = rd(mm, off!(mm_arg_start))?;
    s.addr = start + user_str_len(s, start)?; // argv[0]
    s.key.grant = grant;
    s.key.dev = obj.dev;
    s.key.ino = obj.ino;
    s.alive = cfg.rules;
    s.state = 0;
    let mut pos = 0u32;
    for (wild, nonopt) in cfg.wild.iter().zip(cfg.nonopt.iter()) {
        let this = pos;
        pos += 1;
        if s.state != 0 || this + 1 >= argc {
            continue;
        }
        // Word by word (no memset in BPF); volatile so it is not merged into one.
        let words = s.key.bytes.as_mut_ptr().cast::<u64>();
        for i in 0..ARGV_LITERAL_LEN / 8 {
            // SAFETY: within the key's bytes, 8-aligned.
            unsafe { words.add(i).write_volatile(0) };
        }
        s.key.pos = this;
        // SAFETY: bounded copy into our map value.
        let n = unsafe {
            bpf_probe_read_user_str(
                s.key.bytes.as_mut_ptr().cast(),
                ARGV_LITERAL_LEN as u32,
                s.addr as *const core::ffi::c_void,
            )
        };
        if n < 0 {
            s.state = 2;
            continue;
        }
        // A string that filled the key is at least ARGV_LITERAL_LEN - 1 bytes: longer than any
        // literal; its real length comes from a second read.
        let lit = if n >= ARGV_LITERAL_LEN as i64 {
            // SAFETY: bounded copy into our map value.
            let m = unsafe {
                bpf_probe_read_user_str(
                    s.bytes.as_mut_ptr().cast(),
                    ARGV_STRING_MAX as u32,
                    s.addr as *const core::ffi::c_void,
                )
            };
            if m < 0 || m >= ARGV_STRING_MAX as i64 {
                s.state = 2;
                continue;
            }
            s.addr += m as u64;
            0
        } else {
            s.addr += if n == 0 { 1 } else { n as u64 };
            // SAFETY: value read by value.
            unsafe { ARGV_LIT.get(&s.key) }.copied().unwrap_or(0)
        };
        let opt = zero_mask(u64::from(s.key.bytes[0] ^ b'-'));
        s.alive &= lit | *wild | (*nonopt & !opt);
    }
    if s.state != 0 {
        return Err(Unresolved);
    }
    let n = argc.saturating_sub(1) as usize;
    let fits = if n <= ARGV_POSITIONS {
        cfg.len_eq.get(n & 15).copied().unwrap_or(0) | cfg.rest_le.get(n & 15).copied().unwrap_or(0)
    } else {
        cfg.rest_le[ARGV_POSITIONS]
    };
    Ok(s.alive & fits)
}

/// The outcome for one grant: `None` when it does not approve the binary at all.
#[inline(always)]
fn by_grant(grant: u64, obj: Obj, inode: Kptr, mm: Kptr, argc: u32, env: u32) -> Result<Option<Verdict>, Unresolved> {
    if grant == 0 {
        return Ok(None);
    }
    let ExecMatch::Allowed = exec_lookup(grant, obj, inode)? else { return Ok(None) };
    let key = ObjKey { grant, dev: obj.dev, _pad: 0, ino: obj.ino };
    // SAFETY: value read by value.
    let Some(cfg) = (unsafe { ARGV.get(&key) }) else {
        return Ok(Some(if env == 0 { Verdict::allow(grant) } else { Verdict::deny(REASON_ENV_INJECTION, grant) }));
    };
    let ok = accepted(cfg, grant, obj, mm, argc)?;
    if ok == 0 {
        let script = cfg.script_only != 0 && cfg.script_only == cfg.rules;
        return Ok(Some(Verdict::deny(if script { REASON_INLINE_CODE } else { REASON_ARGS_NOT_GRANTED }, grant)));
    }
    let mut pass = 0u32;
    let mut bit = 1u32;
    for allow in cfg.env_allow.iter() {
        pass |= ok & bit & zero_mask(u64::from(env & !*allow));
        bit <<= 1;
    }
    Ok(Some(if pass != 0 { Verdict::allow(grant) } else { Verdict::deny(REASON_ENV_INJECTION, grant) }))
}

/// The new image's command line (argv[0] and the arguments, NUL-separated) copied into the
/// scratch, zeroed after its end: (kernel address, whole length). At most
/// [`mcpguard_common::EXEC_ARGV_BYTES`] are copied; nothing of the environment after it.
#[inline(always)]
pub fn argv_copy() -> Option<(Kptr, u32)> {
    const MAX: usize = mcpguard_common::EXEC_ARGV_BYTES;
    let s = scratch().ok()?;
    let mm = rd_ptr(current_task(), off!(task_mm)).ok()?;
    let start: u64 = rd(mm, off!(mm_arg_start)).ok()?;
    let end: u64 = rd(mm, off!(mm_arg_end)).ok()?;
    let total = end.saturating_sub(start);
    let words = s.bytes.as_mut_ptr().cast::<u64>();
    for i in 0..MAX / 8 {
        // SAFETY: within the scratch, 8-aligned.
        unsafe { words.add(i).write_volatile(0) };
    }
    let n = total.min(MAX as u64) as u32;
    // SAFETY: at most MAX bytes into our map value.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            s.bytes.as_mut_ptr().cast(),
            n,
            start as *const core::ffi::c_void,
        )
    };
    Some((s.bytes.as_ptr(), u32::try_from(total).unwrap_or(u32::MAX)))
}

/// Leaves what the argv record of a refusal needs for the tail-called program.
#[inline(always)]
pub fn argv_pending(session: u64, grant: u64, reason: u32, action: u32) -> bool {
    let Ok(s) = scratch() else { return false };
    s.pend_session = session;
    s.pend_grant = grant;
    s.pend_reason = reason;
    s.pend_action = action;
    true
}

/// What [`argv_pending`] left: (session, grant, reason, action).
#[inline(always)]
pub fn argv_pended() -> Option<(u64, u64, u32, u32)> {
    let s = scratch().ok()?;
    Some((s.pend_session, s.pend_grant, s.pend_reason, s.pend_action))
}

/// `v`, written to and read back from map memory, whose contents the verifier does not track.
#[inline(always)]
pub fn settle(v: Verdict) -> Option<Verdict> {
    let s = scratch().ok()?;
    s.alive = u32::from(v.allow);
    s.state = v.reason;
    s.addr = v.grant;
    Some(Verdict { allow: s.alive != 0, reason: s.state, grant: s.addr })
}

/// The command line and environment of the exec `bprm` by governed process `tgid`, under its
/// session state. The binary itself was approved already (decided before, by the backend).
#[inline(always)]
pub fn decide_cmdline(st: &SessionState, bprm: Kptr, tgid: u32, session: u64) -> Verdict {
    match try_decide(st, bprm, tgid, session) {
        Ok(v) => v,
        Err(Unresolved) => Verdict::deny(REASON_UNRESOLVED, grant_in_force(st)),
    }
}

#[inline(always)]
fn try_decide(st: &SessionState, bprm: Kptr, tgid: u32, session: u64) -> Result<Verdict, Unresolved> {
    let file = rd_ptr(bprm, off!(binprm_file))?;
    let inode = rd_ptr(file, off!(file_inode))?;
    let obj = inode_obj(inode)?;
    let mm = rd_ptr(current_task(), off!(task_mm))?;
    let argc: u32 = rd(bprm, off!(binprm_argc))?;
    // SAFETY: value read by value.
    let exempt = unsafe { ENV_EXEMPT.get(&tgid) }.is_some();
    let env = if exempt {
        let _ = ENV_EXEMPT.remove(&tgid);
        0
    } else {
        injected_env(mm, session)?
    };
    // One state from here on, whichever way `env` was found (map memory is not tracked).
    let s = scratch()?;
    s.found = env;
    let env = s.found;
    let task = if st.task_grant != 0 && now() < st.task_expires_ns { st.task_grant } else { 0 };
    let first = by_grant(task, obj, inode, mm, argc, env)?;
    if let Some(v) = first
        && v.allow
    {
        return Ok(v);
    }
    let second = by_grant(st.base_grant, obj, inode, mm, argc, env)?;
    Ok(match (first, second) {
        (_, Some(v)) if v.allow => v,
        (Some(v), _) | (None, Some(v)) => v,
        // Neither approves the binary: its exec decision already refused it.
        (None, None) => Verdict::allow(0),
    })
}
