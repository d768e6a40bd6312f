//! Reads of kernel structures. Rust eBPF has no CO-RE, so every member offset comes from
//! `MCPG_OFFSETS`, a read-only global the agent fills from the running kernel's BTF at load time.
//! All reads go through `bpf_probe_read_kernel`; a failed read is an error the caller turns into
//! an `unresolved` denial for governed tasks (fail closed).
use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use mcpguard_common::{Fingerprint, Offsets, BACKEND_KILL, FP_HAS_GENERATION};

#[unsafe(no_mangle)]
pub static MCPG_OFFSETS: Offsets = Offsets {
    task_tgid: 0,
    task_start_boottime: 0,
    task_group_leader: 0,
    task_files: 0,
    task_signal: 0,
    signal_live: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_inode: 0,
    file_path_mnt: 0,
    file_path_dentry: 0,
    file_mode: 0,
    file_flags: 0,
    dentry_parent: 0,
    dentry_name: 0,
    dentry_inode: 0,
    inode_mode: 0,
    inode_ino: 0,
    inode_sb: 0,
    inode_nlink: 0,
    inode_size: 0,
    inode_generation: 0,
    inode_mtime_sec: 0,
    inode_mtime_nsec: 0,
    inode_ctime_sec: 0,
    inode_ctime_nsec: 0,
    sb_dev: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
    binprm_file: 0,
    binprm_buf: 0,
    ns_per_tick: 0,
};

#[unsafe(no_mangle)]
static MCPG_BACKEND: u32 = BACKEND_KILL;

/// Offset of one member, read so the compiler cannot constant-fold the placeholder zero.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: reading a field of a static.
        (unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::kernel::MCPG_OFFSETS.$field)) } as usize)
    };
}
pub(crate) use off;

/// Backend this object was loaded for (read-only global; the synchronous-deny backends read it).
#[inline(always)]
#[allow(dead_code, reason = "used by the LSM/fmod_ret entry points")]
pub fn backend() -> u32 {
    // SAFETY: reading a static.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(MCPG_BACKEND)) }
}

/// Marker error: a kernel read failed or a structure was not as expected.
#[derive(Clone, Copy)]
pub struct Unresolved;

pub type Kptr = *const u8;

#[inline(always)]
pub fn rd<T: Copy>(base: Kptr, off: usize) -> Result<T, Unresolved> {
    if base.is_null() {
        return Err(Unresolved);
    }
    // SAFETY: bpf_probe_read_kernel copes with any address; it fails instead of faulting.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off).cast::<T>()) }.map_err(|_| Unresolved)
}

#[inline(always)]
pub fn rd_ptr(base: Kptr, off: usize) -> Result<Kptr, Unresolved> {
    let p: u64 = rd(base, off)?;
    if p == 0 { Err(Unresolved) } else { Ok(p as Kptr) }
}

/// Identity of an inode: (kernel dev_t, inode number).
#[derive(Clone, Copy)]
pub struct Obj {
    pub dev: u32,
    pub ino: u64,
}

#[inline(always)]
pub fn inode_obj(inode: Kptr) -> Result<Obj, Unresolved> {
    let ino: u64 = rd(inode, off!(inode_ino))?;
    let sb = rd_ptr(inode, off!(inode_sb))?;
    let dev: u32 = rd(sb, off!(sb_dev))?;
    Ok(Obj { dev, ino })
}

/// Nanoseconds fit in 30 bits; since 6.13 the kernel keeps a flag (`I_CTIME_QUERIED`, multigrain
/// timestamps) in bit 31 of `i_ctime_nsec`, and older layouts store nsec in a `long`.
const NSEC_MASK: u32 = (1 << 30) - 1;

#[inline(always)]
pub fn inode_fingerprint(inode: Kptr) -> Result<Fingerprint, Unresolved> {
    Ok(Fingerprint {
        size: rd(inode, off!(inode_size))?,
        mtime_sec: rd(inode, off!(inode_mtime_sec))?,
        ctime_sec: rd(inode, off!(inode_ctime_sec))?,
        mtime_nsec: rd::<u32>(inode, off!(inode_mtime_nsec))? & NSEC_MASK,
        ctime_nsec: rd::<u32>(inode, off!(inode_ctime_nsec))? & NSEC_MASK,
        generation: rd(inode, off!(inode_generation))?,
        flags: 0,
    })
}

/// Does the live inode still match what was approved?
#[inline(always)]
pub fn fingerprint_matches(approved: &Fingerprint, live: &Fingerprint) -> bool {
    approved.size == live.size
        && approved.mtime_sec == live.mtime_sec
        && approved.mtime_nsec == live.mtime_nsec
        && approved.ctime_sec == live.ctime_sec
        && approved.ctime_nsec == live.ctime_nsec
        && (approved.flags & FP_HAS_GENERATION == 0 || approved.generation == live.generation)
}

/// A position in the mount tree: a dentry and the mount it is seen through.
#[derive(Clone, Copy)]
pub struct PathPos {
    pub dentry: Kptr,
    /// `struct vfsmount *` (embedded in `struct mount` at `mount_mnt`).
    pub vfsmnt: Kptr,
}

pub enum Step {
    Up(PathPos),
    /// Reached the root of the mount namespace or of a detached/pseudo filesystem.
    Root,
}

#[inline(always)]
pub fn file_pos(file: Kptr) -> Result<PathPos, Unresolved> {
    Ok(PathPos {
        dentry: rd_ptr(file, off!(file_path_dentry))?,
        vfsmnt: rd_ptr(file, off!(file_path_mnt))?,
    })
}

/// One step towards the root, crossing mount points the way `d_path` does.
#[inline(always)]
pub fn step_up(pos: PathPos) -> Result<Step, Unresolved> {
    let mnt_root = rd_ptr(pos.vfsmnt, off!(vfsmount_root))?;
    if pos.dentry == mnt_root {
        let mount = pos.vfsmnt.wrapping_sub(off!(mount_mnt));
        let parent = rd_ptr(mount, off!(mount_parent))?;
        if parent == mount {
            return Ok(Step::Root);
        }
        let mountpoint = rd_ptr(mount, off!(mount_mountpoint))?;
        return Ok(Step::Up(PathPos {
            dentry: mountpoint,
            vfsmnt: parent.wrapping_add(off!(mount_mnt)),
        }));
    }
    let parent = rd_ptr(pos.dentry, off!(dentry_parent))?;
    if parent == pos.dentry {
        return Ok(Step::Root);
    }
    Ok(Step::Up(PathPos { dentry: parent, vfsmnt: pos.vfsmnt }))
}

#[inline(always)]
pub fn dentry_inode(dentry: Kptr) -> Result<Kptr, Unresolved> {
    rd_ptr(dentry, off!(dentry_inode))
}

/// Copies a dentry's name (NUL-terminated, truncated to the buffer) into `buf`.
#[inline(always)]
pub fn dentry_name(dentry: Kptr, buf: &mut [u8]) -> Result<usize, Unresolved> {
    // d_name is a struct qstr; its `name` pointer is at the offset given for dentry_name.
    let name = rd_ptr(dentry, off!(dentry_name))?;
    // SAFETY: helper bounded by buf's length.
    unsafe { bpf_probe_read_kernel_str_bytes(name, buf) }
        .map(<[u8]>::len)
        .map_err(|_| Unresolved)
}

/// The `struct file *` installed at `fd` in the current task's table.
#[inline(always)]
pub fn current_fd_file(task: Kptr, fd: u64) -> Result<Kptr, Unresolved> {
    let files = rd_ptr(task, off!(task_files))?;
    let fdt = rd_ptr(files, off!(files_fdt))?;
    let max: u32 = rd(fdt, off!(fdt_max_fds))?;
    if fd >= u64::from(max) {
        return Err(Unresolved);
    }
    let arr = rd_ptr(fdt, off!(fdt_fd))?;
    rd_ptr(arr, (fd as usize).wrapping_mul(8))
}

/// Group leader's start time in USER_HZ ticks (as in `/proc/PID/stat` field 22).
#[inline(always)]
pub fn task_start_ticks(task: Kptr) -> Result<u64, Unresolved> {
    let leader = rd_ptr(task, off!(task_group_leader))?;
    let start: u64 = rd(leader, off!(task_start_boottime))?;
    let per_tick = off!(ns_per_tick) as u64;
    if per_tick == 0 {
        return Err(Unresolved);
    }
    Ok(start / per_tick)
}

pub const SIGKILL: u32 = 9;
pub const FMODE_READ: u32 = 0x1;
pub const FMODE_WRITE: u32 = 0x2;
pub const FMODE_EXEC: u32 = 0x20;
pub const FMODE_PATH: u32 = 0x4000;

/// (tgid, task_struct) of the current task.
#[inline(always)]
pub fn current() -> (u32, Kptr) {
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: helper without arguments.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as Kptr;
    (tgid, task)
}

/// Access an open asks for, from `f_mode` (`ACCESS_READ | ACCESS_WRITE`; 0 for neither).
#[inline(always)]
pub fn fmode_access(fmode: u32) -> u32 {
    let mut need = 0;
    if fmode & FMODE_READ != 0 {
        need |= mcpguard_common::ACCESS_READ;
    }
    if fmode & FMODE_WRITE != 0 {
        need |= mcpguard_common::ACCESS_WRITE;
    }
    need
}
