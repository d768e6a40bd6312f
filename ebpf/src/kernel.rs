//! Reads of kernel structures. Rust eBPF has no CO-RE, so every member offset comes from
//! `MCPG_OFFSETS`, a read-only global the agent fills from the running kernel's BTF at load time.
//! All reads go through `bpf_probe_read_kernel`; a failed read is an error the caller turns into
//! an `unresolved` denial for governed tasks (fail closed).
use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use mcpguard_common::{FP_HAS_GENERATION, Fingerprint, Offsets};

#[unsafe(no_mangle)]
pub static MCPG_OFFSETS: Offsets = Offsets {
    task_tgid: 0,
    task_start_boottime: 0,
    task_group_leader: 0,
    task_files: 0,
    task_signal: 0,
    signal_live: 0,
    files_fdt: 0,
    files_fdtab: 0,
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
    sb_magic: 0,
    proc_inode_pid: 0,
    proc_inode_vfs_inode: 0,
    pid_tasks: 0,
    task_pid_links: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    path_mnt: 0,
    path_dentry: 0,
    file_private_data: 0,
    socket_sk: 0,
    sk_family: 0,
    sk_num: 0,
    sk_rcv_saddr: 0,
    sk_v6_rcv_saddr: 0,
    sk_protocol: 0,
    sk_type: 0,
    unix_path: 0,
    unix_addr: 0,
    unix_peer: 0,
    unix_address_len: 0,
    unix_address_name: 0,
    task_mm: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    mm_env_start: 0,
    mm_env_end: 0,
    binprm_argc: 0,
    binprm_envc: 0,
    vma_file: 0,
    vma_end: 0,
    task_real_cred: 0,
    task_cred: 0,
    iattr_valid: 0,
    _pad: 0,
};

/// Offset of one member, read so the compiler cannot constant-fold the placeholder zero.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: reading a field of a static.
        (unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::kernel::MCPG_OFFSETS.$field)) } as usize)
    };
}
pub(crate) use off;

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

/// `N` consecutive words of a kernel object, read with one helper call (a helper call costs
/// more than the bytes it copies). The window starts at the lowest offset wanted, rounded down
/// to 8; a field outside it (another kernel's layout) is read on its own. The offsets are
/// constants to the verifier (frozen read-only global), so each access below is at a fixed
/// stack offset and the branch not taken is pruned.
#[derive(Clone, Copy)]
pub struct Win<const N: usize> {
    base: Kptr,
    lo: usize,
    w: [u64; N],
}

impl<const N: usize> Win<N> {
    #[inline(always)]
    pub fn read(base: Kptr, lo: usize) -> Result<Self, Unresolved> {
        let lo = lo & !7;
        Ok(Self { base, lo, w: rd(base, lo)? })
    }

    #[inline(always)]
    pub fn u64_at(&self, off: usize) -> Result<u64, Unresolved> {
        let i = off.wrapping_sub(self.lo);
        match self.w.get(i / 8) {
            Some(v) if i.is_multiple_of(8) => Ok(*v),
            _ => rd(self.base, off),
        }
    }

    /// A non-null pointer member.
    #[inline(always)]
    pub fn ptr_at(&self, off: usize) -> Result<Kptr, Unresolved> {
        let p = self.u64_at(off)?;
        if p == 0 { Err(Unresolved) } else { Ok(p as Kptr) }
    }

    #[inline(always)]
    pub fn u32_at(&self, off: usize) -> Result<u32, Unresolved> {
        let i = off.wrapping_sub(self.lo);
        match self.w.get(i / 8) {
            Some(v) if i.is_multiple_of(4) => Ok((*v >> ((i % 8) * 8)) as u32),
            _ => rd(self.base, off),
        }
    }
}

/// Identity of an inode: (kernel dev_t, inode number).
#[derive(Clone, Copy)]
pub struct Obj {
    pub dev: u32,
    pub ino: u64,
}

/// The last superblock seen and its dev_t: along one walk the superblock only changes at mount
/// crossings, so `s_dev` is read once per filesystem instead of once per level.
#[derive(Clone, Copy)]
pub struct DevCache {
    sb: Kptr,
    dev: u32,
}

impl DevCache {
    pub const EMPTY: Self = Self { sb: core::ptr::null(), dev: 0 };
}

/// `i_sb` and `i_ino` (one read), then `s_dev` unless `cache` holds that superblock.
#[inline(always)]
pub fn inode_obj_cached(inode: Kptr, cache: &mut DevCache) -> Result<Obj, Unresolved> {
    let w = Win::<4>::read(inode, off!(inode_sb).min(off!(inode_ino)))?;
    let ino = w.u64_at(off!(inode_ino))?;
    let sb = w.ptr_at(off!(inode_sb))?;
    // Both outcomes leave the cache in the same shape (`sb` and a scalar dev), so the verifier
    // can merge them at the next level.
    let dev = if sb != cache.sb { rd(sb, off!(sb_dev))? } else { cache.dev };
    cache.sb = sb;
    cache.dev = dev;
    Ok(Obj { dev: cache.dev, ino })
}

#[inline(always)]
pub fn inode_obj(inode: Kptr) -> Result<Obj, Unresolved> {
    let mut cache = DevCache::EMPTY;
    inode_obj_cached(inode, &mut cache)
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

/// `f_mode` and `f_path` of a file, in one read.
#[inline(always)]
pub fn file_mode_pos(file: Kptr) -> Result<(u32, PathPos), Unresolved> {
    let (mode, mnt, dentry) = (off!(file_mode), off!(file_path_mnt), off!(file_path_dentry));
    let w = Win::<12>::read(file, mode.min(mnt).min(dentry))?;
    Ok((w.u32_at(mode)?, PathPos { dentry: w.ptr_at(dentry)?, vfsmnt: w.ptr_at(mnt)? }))
}

#[inline(always)]
pub fn file_pos(file: Kptr) -> Result<PathPos, Unresolved> {
    Ok(PathPos { dentry: rd_ptr(file, off!(file_path_dentry))?, vfsmnt: rd_ptr(file, off!(file_path_mnt))? })
}

/// The ancestry walk of decisions, crossing mount points the way `d_path` does, with what it reads kept between levels (one
/// read of the dentry per level for `d_inode` and `d_parent`; the mount's root, parent and
/// mountpoint once per mount, not once per level).
pub struct Walk {
    pub pos: PathPos,
    mnt_root: Kptr,
    mnt_parent: u64,
    mnt_mountpoint: u64,
    dev: DevCache,
}

impl Walk {
    /// The mount is read up front: a cache filled on first use would give the verifier one more
    /// shape of state to explore at every level of the walk.
    #[inline(always)]
    pub fn start(pos: PathPos) -> Result<Self, Unresolved> {
        let mut w = Self { pos, mnt_root: core::ptr::null(), mnt_parent: 0, mnt_mountpoint: 0, dev: DevCache::EMPTY };
        w.enter_mount()?;
        Ok(w)
    }

    #[inline(always)]
    fn enter_mount(&mut self) -> Result<(), Unresolved> {
        let mount = self.pos.vfsmnt.wrapping_sub(off!(mount_mnt));
        let root = off!(mount_mnt) + off!(vfsmount_root);
        let lo = off!(mount_parent).min(off!(mount_mountpoint)).min(root);
        let w = Win::<4>::read(mount, lo)?;
        self.mnt_root = w.ptr_at(root)?;
        self.mnt_parent = w.u64_at(off!(mount_parent))?;
        self.mnt_mountpoint = w.u64_at(off!(mount_mountpoint))?;
        Ok(())
    }

    /// Identity of the object at the current position, and its dentry's `d_parent` (raw).
    #[inline(always)]
    pub fn here(&mut self) -> Result<(Obj, u64), Unresolved> {
        let w = Win::<4>::read(self.pos.dentry, off!(dentry_parent).min(off!(dentry_inode)))?;
        let inode = w.ptr_at(off!(dentry_inode))?;
        let parent = w.u64_at(off!(dentry_parent))?;
        Ok((inode_obj_cached(inode, &mut self.dev)?, parent))
    }

    /// One step towards the root; `false` at the root. `d_parent` is the value
    /// [`Walk::here`] returned for the current position.
    #[inline(always)]
    pub fn up(&mut self, d_parent: u64) -> Result<bool, Unresolved> {
        if self.pos.dentry == self.mnt_root {
            let mount = self.pos.vfsmnt.wrapping_sub(off!(mount_mnt));
            let parent = self.mnt_parent as Kptr;
            if parent.is_null() {
                return Err(Unresolved);
            }
            if parent == mount {
                return Ok(false);
            }
            let mountpoint = self.mnt_mountpoint as Kptr;
            if mountpoint.is_null() {
                return Err(Unresolved);
            }
            self.pos = PathPos { dentry: mountpoint, vfsmnt: parent.wrapping_add(off!(mount_mnt)) };
            self.enter_mount()?;
            return Ok(true);
        }
        let parent = d_parent as Kptr;
        if parent.is_null() {
            return Err(Unresolved);
        }
        if parent == self.pos.dentry {
            return Ok(false);
        }
        self.pos.dentry = parent;
        Ok(true)
    }
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
    unsafe { bpf_probe_read_kernel_str_bytes(name, buf) }.map(<[u8]>::len).map_err(|_| Unresolved)
}

/// The `struct file *` installed at `fd` in the current task's table. While the table has not
/// been expanded (`fdt` points at the embedded `fdtab`), one read gives `fdt`, `max_fds` and
/// `fd`.
#[inline(always)]
pub fn current_fd_file(task: Kptr, fd: u64) -> Result<Kptr, Unresolved> {
    let files = rd_ptr(task, off!(task_files))?;
    let (fdt_off, tab) = (off!(files_fdt), off!(files_fdtab));
    let (max_off, arr_off) = (off!(fdt_max_fds), off!(fdt_fd));
    let w = Win::<4>::read(files, fdt_off.min(tab + max_off).min(tab + arr_off))?;
    let fdt = w.ptr_at(fdt_off)?;
    let (max, arr) = if fdt == files.wrapping_add(tab) {
        (w.u32_at(tab + max_off)?, w.ptr_at(tab + arr_off)?)
    } else {
        let t = Win::<2>::read(fdt, max_off.min(arr_off))?;
        (t.u32_at(max_off)?, t.ptr_at(arr_off)?)
    };
    if fd >= u64::from(max) {
        return Err(Unresolved);
    }
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

/// `super_block.s_magic` of procfs.
pub const PROC_SUPER_MAGIC: u64 = 0x9fa0;

/// Whose a procfs object is.
pub enum ProcOwner {
    /// Not on procfs, or a procfs entry of no process (`/proc/meminfo`, `/proc/sys/...`).
    None,
    /// `/proc/<pid>/...` (or `.../task/<tid>/...`) of this task.
    Task(Kptr),
    /// Of a process that has exited (its `struct pid` has no task any more).
    Gone,
}

/// The process a dentry's inode belongs to, if it is a per-process procfs entry: procfs keeps
/// the `struct pid` in the `proc_inode` around the VFS inode (`PROC_I(inode)->pid`), and the
/// pid's `tasks[PIDTYPE_PID]` names the task. Decided on the inode, never on the path string.
#[inline(always)]
pub fn proc_owner(dentry: Kptr) -> Result<ProcOwner, Unresolved> {
    let inode = rd_ptr(dentry, off!(dentry_inode))?;
    let sb = rd_ptr(inode, off!(inode_sb))?;
    let magic: u64 = rd(sb, off!(sb_magic))?;
    if magic & 0xffff_ffff != PROC_SUPER_MAGIC {
        return Ok(ProcOwner::None);
    }
    let ei = inode.wrapping_sub(off!(proc_inode_vfs_inode));
    let pid: u64 = rd(ei, off!(proc_inode_pid))?;
    if pid == 0 {
        return Ok(ProcOwner::None);
    }
    let first: u64 = rd(pid as Kptr, off!(pid_tasks))?;
    if first == 0 {
        return Ok(ProcOwner::Gone);
    }
    Ok(ProcOwner::Task((first as Kptr).wrapping_sub(off!(task_pid_links))))
}

/// tgid of a task.
#[inline(always)]
pub fn task_tgid(task: Kptr) -> Result<u32, Unresolved> {
    rd(task, off!(task_tgid))
}

/// cgroup v2 id of a task (what `bpf_get_current_cgroup_id` returns for the current one).
#[inline(always)]
pub fn task_cgroup_id(task: Kptr) -> Result<u64, Unresolved> {
    let cset = rd_ptr(task, off!(task_cgroups))?;
    let cgrp = rd_ptr(cset, off!(css_set_dfl_cgrp))?;
    let kn = rd_ptr(cgrp, off!(cgroup_kn))?;
    rd(kn, off!(kernfs_node_id))
}

pub const SIGKILL: u32 = 9;
pub const FMODE_READ: u32 = 0x1;
pub const FMODE_WRITE: u32 = 0x2;
pub const FMODE_EXEC: u32 = 0x20;
pub const FMODE_PATH: u32 = 0x4000;

/// tgid of the current task.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32
}

/// `struct task_struct *` of the current task.
#[inline(always)]
pub fn current_task() -> Kptr {
    // SAFETY: helper without arguments.
    (unsafe { aya_ebpf::helpers::bpf_get_current_task() }) as Kptr
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
