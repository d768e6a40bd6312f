//! Kernel struct member offsets for the running kernel, read from its BTF.
//!
//! The eBPF object is built once; these offsets go into its read-only `MCPG_OFFSETS` global at
//! load time, so the same binary runs on kernels whose layouts differ (6.1, 6.12, 6.18, ...).
use mcpguard_common::Offsets;

use crate::kernel::btf::{Btf, BtfError};

/// `inode` timestamps moved between kernel versions; try each layout, newest first.
fn timestamp(btf: &Btf, which: &str) -> Result<(u32, u32), BtfError> {
    // 6.11+: i_mtime_sec / i_mtime_nsec
    if let Some(sec) = btf.try_member_offset("inode", &format!("i_{which}_sec"))? {
        let nsec = btf.member_offset("inode", &format!("i_{which}_nsec"))?;
        return Ok((sec, nsec));
    }
    // 6.6-6.10: __i_mtime (struct timespec64); <= 6.5: i_mtime
    for name in [format!("__i_{which}"), format!("i_{which}")] {
        if let Some(ts) = btf.try_member_offset("inode", &name)? {
            let sec = btf.member_offset("timespec64", "tv_sec")?;
            let nsec = btf.member_offset("timespec64", "tv_nsec")?;
            return Ok((ts + sec, ts + nsec));
        }
    }
    Err(BtfError::MemberNotFound { ty: "inode".into(), member: format!("i_{which}[_sec]") })
}

/// Reads every offset the kernel programs use.
pub fn from_btf(btf: &Btf) -> Result<Offsets, BtfError> {
    let m = |ty: &str, member: &str| btf.member_offset(ty, member);
    let (mtime_sec, mtime_nsec) = timestamp(btf, "mtime")?;
    let (ctime_sec, ctime_nsec) = timestamp(btf, "ctime")?;
    let file_path = m("file", "f_path")?;
    // USER_HZ is 100 on every architecture Linux exposes through /proc/PID/stat.
    let user_hz = u32::try_from(nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100))
        .unwrap_or(100)
        .max(1);
    Ok(Offsets {
        task_tgid: m("task_struct", "tgid")?,
        task_start_boottime: m("task_struct", "start_boottime")?,
        task_group_leader: m("task_struct", "group_leader")?,
        task_files: m("task_struct", "files")?,
        task_signal: m("task_struct", "signal")?,
        signal_live: m("signal_struct", "live")?,
        files_fdt: m("files_struct", "fdt")?,
        files_fdtab: m("files_struct", "fdtab")?,
        fdt_max_fds: m("fdtable", "max_fds")?,
        fdt_fd: m("fdtable", "fd")?,
        file_inode: m("file", "f_inode")?,
        file_path_mnt: file_path + m("path", "mnt")?,
        file_path_dentry: file_path + m("path", "dentry")?,
        file_mode: m("file", "f_mode")?,
        file_flags: m("file", "f_flags")?,
        dentry_parent: m("dentry", "d_parent")?,
        dentry_name: m("dentry", "d_name")? + m("qstr", "name")?,
        dentry_inode: m("dentry", "d_inode")?,
        inode_mode: m("inode", "i_mode")?,
        inode_ino: m("inode", "i_ino")?,
        inode_sb: m("inode", "i_sb")?,
        inode_size: m("inode", "i_size")?,
        inode_generation: m("inode", "i_generation")?,
        inode_mtime_sec: mtime_sec,
        inode_mtime_nsec: mtime_nsec,
        inode_ctime_sec: ctime_sec,
        inode_ctime_nsec: ctime_nsec,
        sb_dev: m("super_block", "s_dev")?,
        mount_mnt: m("mount", "mnt")?,
        mount_parent: m("mount", "mnt_parent")?,
        mount_mountpoint: m("mount", "mnt_mountpoint")?,
        vfsmount_root: m("vfsmount", "mnt_root")?,
        binprm_file: m("linux_binprm", "file")?,
        binprm_buf: m("linux_binprm", "buf")?,
        task_mm: m("task_struct", "mm")?,
        mm_arg_start: m("mm_struct", "arg_start")?,
        mm_arg_end: m("mm_struct", "arg_end")?,
        mm_env_start: m("mm_struct", "env_start")?,
        mm_env_end: m("mm_struct", "env_end")?,
        binprm_argc: m("linux_binprm", "argc")?,
        binprm_envc: m("linux_binprm", "envc")?,
        vma_file: m("vm_area_struct", "vm_file")?,
        vma_end: m("vm_area_struct", "vm_end")?,
        task_real_cred: m("task_struct", "real_cred")?,
        task_cred: m("task_struct", "cred")?,
        iattr_valid: sized(btf, "iattr", "ia_valid", 4)?,
        ns_per_tick: 1_000_000_000 / user_hz,
        sb_magic: m("super_block", "s_magic")?,
        proc_inode_pid: m("proc_inode", "pid")?,
        proc_inode_vfs_inode: m("proc_inode", "vfs_inode")?,
        pid_tasks: m("pid", "tasks")?,
        task_pid_links: m("task_struct", "pid_links")?,
        task_cgroups: m("task_struct", "cgroups")?,
        css_set_dfl_cgrp: m("css_set", "dfl_cgrp")?,
        cgroup_kn: m("cgroup", "kn")?,
        kernfs_node_id: m("kernfs_node", "id")?,
        path_mnt: m("path", "mnt")?,
        path_dentry: m("path", "dentry")?,
        file_private_data: m("file", "private_data")?,
        socket_sk: m("socket", "sk")?,
        sk_family: sized(btf, "sock", "__sk_common.skc_family", 2)?,
        sk_num: sized(btf, "sock", "__sk_common.skc_num", 2)?,
        sk_rcv_saddr: sized(btf, "sock", "__sk_common.skc_rcv_saddr", 4)?,
        sk_v6_rcv_saddr: sized(btf, "sock", "__sk_common.skc_v6_rcv_saddr", 16)?,
        sk_protocol: sized(btf, "sock", "sk_protocol", 2)?,
        sk_type: sized(btf, "sock", "sk_type", 2)?,
        unix_path: m("unix_sock", "path")?,
        unix_addr: m("unix_sock", "addr")?,
        unix_peer: m("unix_sock", "peer")?,
        unix_address_len: sized(btf, "unix_address", "len", 4)?,
        unix_address_name: m("unix_address", "name")?,
        _pad: 0,
    })
}

/// A member the programs read as an integer of `size` bytes: another width (a kernel whose
/// layout changed) is refused at load rather than read wrongly.
fn sized(btf: &Btf, ty: &str, member: &str, size: u32) -> Result<u32, BtfError> {
    let got = btf.member_size(ty, member)?;
    if got != size {
        return Err(BtfError::MemberNotFound {
            ty: ty.into(),
            member: format!("{member} ({size} bytes; found {got})"),
        });
    }
    btf.member_offset(ty, member)
}
