//! A design with no cost at all for ungoverned processes on kernels without BPF-LSM, measured
//! on the governed side: per-process seccomp instead of machine-wide syscall tracepoints.
//!
//! - `filter`: a classic-BPF seccomp filter refusing the guard syscalls (bpf, ptrace, mounts,
//!   modules, ... — the list of `mcpguard_common::GUARD_SYSCALLS`) with EPERM, allowing the rest.
//! - `notif`: the same, plus `openat` handed to a supervisor (`SECCOMP_RET_USER_NOTIF`), which
//!   reads the path from the process (`process_vm_readv`), opens the file itself, identifies it
//!   (`fstat`: where a grant check by device and inode would go) and installs its descriptor in
//!   the process as the syscall's result (`SECCOMP_IOCTL_NOTIF_ADDFD` with `SEND`): the process
//!   gets exactly the object that was checked (no time-of-check/time-of-use gap on the path).
//!
//! Only the filtered process pays; nothing is installed machine-wide. The supervisor is a thread
//! of the workload process here (on the workload's CPU); in a daemon it would be another process.
use std::ffi::CString;

use anyhow::{Result, bail};

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO_EPERM: u32 = 0x0005_0000 | 1;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const NR_OPENAT: u32 = 257;
const FLAG_NEW_LISTENER: u32 = 1 << 3;
const IOCTL_NOTIF_RECV: u64 = 0xc050_2100;
const IOCTL_NOTIF_SEND: u64 = 0xc018_2101;
const IOCTL_NOTIF_ADDFD: u64 = 0x4018_2103;
const ADDFD_FLAG_SEND: u32 = 1 << 1;

#[derive(Clone, Copy)]
#[repr(C)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter { code, jt: 0, jf: 0, k }
}

/// The filter program: arch check, guard syscalls → EPERM, (notif) openat → supervisor, rest
/// allowed.
fn program(notif: bool) -> Vec<SockFilter> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let mut nrs: Vec<(u32, u32)> =
        mcpguard_common::GUARD_SYSCALLS.iter().map(|g| (g.x86_64, RET_ERRNO_EPERM)).collect();
    if notif {
        nrs.push((NR_OPENAT, RET_USER_NOTIF));
    }
    // Layout: 0 ld arch; 1 jeq arch; 2 ld nr; 3.. one jeq per nr; allow; errno; notif; kill.
    let first_jeq = 3;
    let allow = first_jeq + nrs.len();
    let (errno, notif_at, kill) = (allow + 1, allow + 2, allow + 3);
    let rel = |from: usize, to: usize| u8::try_from(to - from - 1).expect("short filter");
    let mut p = vec![
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        SockFilter { code: JEQ_K, jt: 0, jf: rel(1, kill), k: AUDIT_ARCH_X86_64 },
        stmt(LD_W_ABS, 0), // seccomp_data.nr
    ];
    for (i, (nr, ret)) in nrs.iter().enumerate() {
        let at = first_jeq + i;
        let to = if *ret == RET_USER_NOTIF { notif_at } else { errno };
        p.push(SockFilter { code: JEQ_K, jt: rel(at, to), jf: 0, k: *nr });
    }
    p.extend([
        stmt(RET_K, RET_ALLOW),
        stmt(RET_K, RET_ERRNO_EPERM),
        stmt(RET_K, RET_USER_NOTIF),
        stmt(RET_K, RET_KILL_PROCESS),
    ]);
    p
}

/// Installs the filter on the calling thread (threads started earlier stay unfiltered). With
/// `notif`, starts the supervisor thread first and returns once it runs.
pub fn install(notif: bool) -> Result<()> {
    let prog = program(notif);
    #[repr(C)]
    struct Fprog {
        len: u16,
        filter: *const SockFilter,
    }
    let fprog = Fprog { len: u16::try_from(prog.len())?, filter: prog.as_ptr() };
    let (tx, rx) = std::sync::mpsc::channel::<i32>();
    if notif {
        std::thread::Builder::new().name("supervisor".into()).spawn(move || {
            let Ok(fd) = rx.recv() else { return };
            supervise(fd);
        })?;
    }
    // SAFETY: prctl/seccomp with a valid program that outlives the call.
    let fd = unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            bail!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error());
        }
        libc::syscall(libc::SYS_seccomp, 1, if notif { FLAG_NEW_LISTENER } else { 0 }, &raw const fprog)
    };
    if fd < 0 {
        bail!("seccomp(SET_MODE_FILTER): {}", std::io::Error::last_os_error());
    }
    if notif {
        tx.send(i32::try_from(fd)?)?;
    }
    Ok(())
}

#[repr(C)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

#[repr(C)]
struct AddFd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}

/// Serves `openat` notifications until the listener is gone (the process exits).
fn supervise(listener: i32) {
    let mut path = [0u8; 4096];
    loop {
        // SAFETY: zeroed notification buffer, as the kernel requires.
        let mut n: Notif = unsafe { std::mem::zeroed() };
        // SAFETY: valid buffer for SECCOMP_IOCTL_NOTIF_RECV.
        if unsafe { libc::ioctl(listener, IOCTL_NOTIF_RECV, &raw mut n) } != 0 {
            return;
        }
        // The path argument, read from the process (as a daemon would: it is another process).
        let local = libc::iovec { iov_base: path.as_mut_ptr().cast(), iov_len: path.len() };
        let remote = libc::iovec { iov_base: n.args[1] as *mut libc::c_void, iov_len: path.len() };
        // SAFETY: valid iovecs; a short read stops at the end of the mapping.
        let got = unsafe { libc::process_vm_readv(n.pid as i32, &raw const local, 1, &raw const remote, 1, 0) };
        let end = path[..usize::try_from(got.max(0)).unwrap_or(0)].iter().position(|&b| b == 0);
        let fd = match end.and_then(|e| CString::new(&path[..e]).ok()) {
            // SAFETY: valid C string; the flags are the process's own.
            Some(p) => unsafe { libc::open(p.as_ptr(), (n.args[2] as i32) | libc::O_CLOEXEC) },
            None => -1,
        };
        if fd >= 0 {
            // SAFETY: zeroed stat filled by fstat; the grant check by (dev, ino) goes here.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: valid descriptor and buffer.
            unsafe { libc::fstat(fd, &raw mut st) };
            std::hint::black_box((st.st_dev, st.st_ino));
        }
        if fd < 0 {
            #[repr(C)]
            struct Resp {
                id: u64,
                val: i64,
                error: i32,
                flags: u32,
            }
            let r = Resp { id: n.id, val: 0, error: -libc::EACCES, flags: 0 };
            // SAFETY: valid response for SECCOMP_IOCTL_NOTIF_SEND.
            unsafe { libc::ioctl(listener, IOCTL_NOTIF_SEND, &raw const r) };
            continue;
        }
        let add =
            AddFd { id: n.id, flags: ADDFD_FLAG_SEND, srcfd: fd as u32, newfd: 0, newfd_flags: libc::O_CLOEXEC as u32 };
        // SAFETY: valid request; our copy of the descriptor is closed after the injection.
        unsafe {
            libc::ioctl(listener, IOCTL_NOTIF_ADDFD, &raw const add);
            libc::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn jumps_land_on_returns() {
        for notif in [false, true] {
            let p = super::program(notif);
            let n = p.len();
            assert_eq!(p[n - 4].k, super::RET_ALLOW);
            for (i, ins) in p.iter().enumerate().filter(|(_, x)| x.code == 0x15) {
                for off in [ins.jt, ins.jf] {
                    let to = i + 1 + usize::from(off);
                    assert!(to < n && (off == 0 || p[to].code == 0x06), "jump from {i} lands on {to}");
                }
            }
        }
    }
}
