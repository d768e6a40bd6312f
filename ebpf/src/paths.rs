//! Path operations on the deny backends (BPF-LSM `path_*` / `file_truncate` hooks, and fmod_ret
//! on the `security_*` functions behind them): creating, removing or renaming a directory entry
//! needs write access under the grants to the directory it changes (both directories for a
//! rename; a hard link also needs write access to the object linked), and truncating needs
//! write access to the object. Decided on the directory's (or object's) dentry ancestry, like
//! opens; refused with EPERM before anything changes. Binding a Unix socket path is a
//! `path_mknod`, so a governed process cannot replace a socket outside its grant either.
use aya_ebpf::{
    macros::lsm,
    programs::{FEntryContext, LsmContext},
};
use mcpguard_common::{
    ACCESS_METADATA, ACCESS_WRITE, HOOK_LINK, HOOK_MKDIR, HOOK_MKNOD, HOOK_RENAME, HOOK_RMDIR, HOOK_SETATTR,
    HOOK_SYMLINK, HOOK_TRUNCATE, HOOK_UNLINK, HOOK_XATTR, REASON_NO_GRANT, REASON_NOT_GRANTED, REASON_UNRESOLVED,
};

use crate::{
    decide::{Verdict, decide_access, governed},
    kernel::{Kptr, PathPos, Unresolved, current_tgid, file_pos, off, rd_ptr},
    lsm::deny,
};

/// A `struct path *`.
#[inline(always)]
pub(crate) fn path_pos(path: Kptr) -> Result<PathPos, Unresolved> {
    Ok(PathPos { dentry: rd_ptr(path, off!(path_dentry))?, vfsmnt: rd_ptr(path, off!(path_mnt))? })
}

/// Write access at `at` (a directory, or the object itself), reporting `entry` on a denial.
#[inline(always)]
fn needs_write(at: Result<PathPos, Unresolved>, entry: Kptr, hook: u32) -> i32 {
    needs(at, entry, hook, ACCESS_WRITE)
}

/// `need` (access bits) at `at`, reporting `entry` (or `at`) on a denial.
#[inline(always)]
fn needs(at: Result<PathPos, Unresolved>, entry: Kptr, hook: u32, need: u32) -> i32 {
    let Some(g) = governed(current_tgid()) else { return 0 };
    let Some(st) = g.state else {
        return deny(&g, Verdict::deny(REASON_NO_GRANT, 0), hook, need, None);
    };
    let Ok(pos) = at else {
        return deny(&g, Verdict::deny(REASON_UNRESOLVED, 0), hook, need, None);
    };
    let v = decide_access(&st, pos, need);
    if v.allow {
        return 0;
    }
    let report = if entry.is_null() { pos } else { PathPos { dentry: entry, vfsmnt: pos.vfsmnt } };
    deny(&g, v, hook, need, Some(report))
}

/// `chmod`/`chown` of the object at `path`: write access and `metadata = true` on it.
#[inline(always)]
fn on_setattr(path: Kptr) -> i32 {
    needs(path_pos(path), core::ptr::null(), HOOK_SETATTR, ACCESS_WRITE | ACCESS_METADATA)
}

/// Extended attributes: the inode hooks give a dentry without its mount, so the grant's
/// ancestry (which crosses mounts) cannot be walked; a governed process changes no extended
/// attribute (security labels, capabilities, ACLs are among them).
#[inline(always)]
fn on_xattr() -> i32 {
    let Some(g) = governed(current_tgid()) else { return 0 };
    let grant = g.state.map_or(0, |s| if s.task_grant != 0 { s.task_grant } else { s.base_grant });
    deny(&g, Verdict::deny(REASON_NOT_GRANTED, grant), HOOK_XATTR, ACCESS_WRITE | ACCESS_METADATA, None)
}

/// An entry `entry` of the directory `dir` (a `struct path *`) is created or removed.
#[inline(always)]
fn on_entry(dir: Kptr, entry: Kptr, hook: u32) -> i32 {
    needs_write(path_pos(dir), entry, hook)
}

/// `rename(old_dir/old, new_dir/new)`: both directories change (also for `RENAME_EXCHANGE`).
#[inline(always)]
fn on_rename(old_dir: Kptr, old: Kptr, new_dir: Kptr, new: Kptr) -> i32 {
    let r = on_entry(old_dir, old, HOOK_RENAME);
    if r != 0 {
        return r;
    }
    on_entry(new_dir, new, HOOK_RENAME)
}

/// `link(old, new_dir/new)`: the directory changes, and the object linked must be writable
/// under the grants (a link never makes an object from elsewhere appear inside a grant).
#[inline(always)]
fn on_link(old: Kptr, new_dir: Kptr, new: Kptr) -> i32 {
    let r = on_entry(new_dir, new, HOOK_LINK);
    if r != 0 {
        return r;
    }
    // Links stay within one mount: the object is seen through the new directory's mount.
    let at = path_pos(new_dir).map(|p| PathPos { dentry: old, vfsmnt: p.vfsmnt });
    needs_write(at, core::ptr::null(), HOOK_LINK)
}

// ---- Entry points: each hook once, as a BPF-LSM program and as an fmod_ret program on the
// `security_*` function behind it (see lsm.rs). Both get (arguments..., verdict so far), with the
// verdict at the same index, so one line declares both and they cannot disagree.

macro_rules! path_hook {
    ($lsm:ident, $hook:literal, $fmod:ident, $section:literal, $prev:literal, |$c:ident| $body:expr) => {
        #[lsm(hook = $hook)]
        pub fn $lsm($c: LsmContext) -> i32 {
            let prev: i32 = $c.arg($prev);
            if prev != 0 { prev } else { $body }
        }

        #[unsafe(no_mangle)]
        #[unsafe(link_section = $section)]
        pub fn $fmod(ctx: *mut core::ffi::c_void) -> i32 {
            let $c = FEntryContext::new(ctx);
            let prev: i32 = $c.arg($prev);
            if prev != 0 { prev } else { $body }
        }
    };
}

pub(crate) use path_hook;

path_hook!(mcpg_lsm_unlink, "path_unlink", mcpg_fmod_unlink, "fentry/security_path_unlink", 2, |c| on_entry(
    c.arg(0),
    c.arg(1),
    HOOK_UNLINK
));
path_hook!(mcpg_lsm_rmdir, "path_rmdir", mcpg_fmod_rmdir, "fentry/security_path_rmdir", 2, |c| on_entry(
    c.arg(0),
    c.arg(1),
    HOOK_RMDIR
));
path_hook!(mcpg_lsm_mkdir, "path_mkdir", mcpg_fmod_mkdir, "fentry/security_path_mkdir", 3, |c| on_entry(
    c.arg(0),
    c.arg(1),
    HOOK_MKDIR
));
path_hook!(mcpg_lsm_mknod, "path_mknod", mcpg_fmod_mknod, "fentry/security_path_mknod", 4, |c| on_entry(
    c.arg(0),
    c.arg(1),
    HOOK_MKNOD
));
path_hook!(mcpg_lsm_symlink, "path_symlink", mcpg_fmod_symlink, "fentry/security_path_symlink", 3, |c| on_entry(
    c.arg(0),
    c.arg(1),
    HOOK_SYMLINK
));
path_hook!(mcpg_lsm_link, "path_link", mcpg_fmod_link, "fentry/security_path_link", 3, |c| on_link(
    c.arg(0),
    c.arg(1),
    c.arg(2)
));
path_hook!(mcpg_lsm_rename, "path_rename", mcpg_fmod_rename, "fentry/security_path_rename", 5, |c| on_rename(
    c.arg(0),
    c.arg(1),
    c.arg(2),
    c.arg(3)
));
path_hook!(mcpg_lsm_truncate, "path_truncate", mcpg_fmod_truncate, "fentry/security_path_truncate", 1, |c| {
    needs_write(path_pos(c.arg(0)), core::ptr::null(), HOOK_TRUNCATE)
});
path_hook!(mcpg_lsm_ftrunc, "file_truncate", mcpg_fmod_ftrunc, "fentry/security_file_truncate", 1, |c| {
    needs_write(file_pos(c.arg(0)), core::ptr::null(), HOOK_TRUNCATE)
});
// path_chmod(path, mode), path_chown(path, uid, gid)
path_hook!(mcpg_lsm_chmod, "path_chmod", mcpg_fmod_chmod, "fentry/security_path_chmod", 2, |c| on_setattr(c.arg(0)));
path_hook!(mcpg_lsm_chown, "path_chown", mcpg_fmod_chown, "fentry/security_path_chown", 3, |c| on_setattr(c.arg(0)));
// inode_setxattr(idmap, dentry, name, value, size, flags), inode_removexattr(idmap, dentry, name)
path_hook!(mcpg_lsm_setxattr, "inode_setxattr", mcpg_fmod_setxattr, "fentry/security_inode_setxattr", 6, |_c| {
    on_xattr()
});
path_hook!(mcpg_lsm_rmxattr, "inode_removexattr", mcpg_fmod_rmxattr, "fentry/security_inode_removexattr", 3, |_c| {
    on_xattr()
});
