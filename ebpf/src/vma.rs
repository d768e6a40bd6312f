//! The mappings an `mprotect` with `PROT_EXEC` changes, by their files (kill backend; the deny
//! backends get each mapping from `file_mprotect`).
//!
//! `bpf_find_vma` looks a mapping up under the address space's lock, which it only try-locks
//! (another thread of the process changing its mappings at that moment makes it fail with
//! `EBUSY`): that, like a range of more than [`MAX_VMAS`] mappings or of mappings of two
//! different files, is `unresolved` and fails closed. A range with a hole ends at the hole
//! (`mprotect` changes nothing after it and fails with `ENOMEM`).
use core::ffi::c_void;

use aya_ebpf::helpers::generated::{bpf_find_vma, bpf_get_current_task_btf};

use crate::kernel::{Kptr, Unresolved, off, rd};

/// Mappings of one `mprotect` range examined; more fail closed.
pub const MAX_VMAS: usize = 8;
const ENOENT: i64 = 2;
const PAGE: u64 = 4096;

/// What the callback saw of one mapping: its file (0: anonymous; `u64::MAX`: unreadable) and end.
#[repr(C)]
struct Seen {
    file: u64,
    end: u64,
}

/// `bpf_find_vma` callback (a static subprogram of its own, verified once).
#[inline(never)]
extern "C" fn seen_vma(_task: *mut c_void, vma: *mut c_void, ctx: *mut c_void) -> i64 {
    let vma = vma as Kptr;
    let file = rd::<u64>(vma, off!(vma_file)).unwrap_or(u64::MAX);
    let end = rd::<u64>(vma, off!(vma_end)).unwrap_or(0);
    let seen = ctx.cast::<Seen>();
    // SAFETY: `ctx` is the caller's `Seen` on its stack.
    unsafe {
        (*seen).file = file;
        (*seen).end = end;
    }
    0
}

/// The file mapped in `[start, start + len)` (null: only anonymous memory), which `mprotect`
/// is about to make executable. Every iteration carries the same state (address, file, flags)
/// whichever way it went.
#[inline(always)]
pub fn exec_file(start: u64, len: u64) -> Result<Kptr, Unresolved> {
    let end = start.saturating_add(len.saturating_add(PAGE - 1) & !(PAGE - 1));
    // SAFETY: helper without arguments; a trusted pointer, as bpf_find_vma requires.
    let task = unsafe { bpf_get_current_task_btf() };
    let mut addr = start;
    let mut file: u64 = 0;
    let mut done = false;
    let mut bad = false;
    for _ in 0..MAX_VMAS {
        if done || bad || addr >= end {
            continue;
        }
        let mut seen = Seen { file: 0, end: 0 };
        // SAFETY: the callback writes only the `Seen` passed; the helper takes the lock itself.
        let r = unsafe { bpf_find_vma(task, addr, seen_vma as *mut c_void, (&raw mut seen).cast(), 0) };
        if r == -ENOENT {
            done = true;
        } else if r != 0
            || seen.file == u64::MAX
            || seen.end <= addr
            || (seen.file != 0 && file != 0 && seen.file != file)
        {
            bad = true;
        } else {
            if seen.file != 0 {
                file = seen.file;
            }
            addr = seen.end;
        }
    }
    if bad || (!done && addr < end) { Err(Unresolved) } else { Ok(file as Kptr) }
}
