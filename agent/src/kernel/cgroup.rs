//! Per-session cgroups (cgroup v2): the launcher may ask for its session to be a cgroup, which
//! governs every process in it, including ones moved in later, by cgroup id in the kernel.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup v2 is not mounted on this host (no cgroup2 entry in /proc/self/mounts)")]
    NoCgroup2,
    #[error("cgroup {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Mount point of the cgroup v2 hierarchy, looked up once (`/proc/self/mounts`, whose
/// generation walks every mount of the namespace) and then reused: the per-request
/// authorisation needs it, and the daemon does not expect the cgroup2 mount to move while it
/// runs. "Not mounted" is not cached, so a hierarchy mounted later is still found.
pub fn root() -> Option<&'static Path> {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    if let Some(r) = ROOT.get() {
        return Some(r);
    }
    let found = crate::kernel::procs::cgroup2_root()?;
    Some(ROOT.get_or_init(|| found))
}

/// cgroup v2 id of a process (the inode number of its cgroup directory), if it is in a v2
/// hierarchy: `/proc/PID/cgroup` and one `stat`, against the cached mount point.
#[must_use]
pub fn process_cgroup_id(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    id_under(root()?, &s)
}

/// The id of the `0::` (v2) entry of a `/proc/PID/cgroup` text, resolved under `root`.
fn id_under(root: &Path, proc_cgroup: &str) -> Option<u64> {
    let rel = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    std::fs::metadata(root.join(rel.trim_start_matches('/'))).ok().map(|m| m.ino())
}

/// `<cgroup2 root>/mcpguard/<session>-<id>`.
pub fn session_dir(session: &str, id: u64) -> Result<PathBuf, CgroupError> {
    let root = root().ok_or(CgroupError::NoCgroup2)?;
    Ok(root.join("mcpguard").join(format!("{session}-{id}")))
}

/// Creates the session's cgroup; returns its id (the directory's inode number, which is what
/// `bpf_get_current_cgroup_id` reports).
pub fn create(session: &str, id: u64) -> Result<(PathBuf, u64), CgroupError> {
    let dir = session_dir(session, id)?;
    let io = |source| CgroupError::Io { path: dir.clone(), source };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let ino = std::fs::metadata(&dir).map_err(io)?.ino();
    Ok((dir, ino))
}

/// Moves a process (all its threads) into the cgroup.
pub fn move_in(dir: &std::path::Path, pid: u32) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, pid.to_string()).map_err(|source| CgroupError::Io { path: procs, source })
}

/// True when no process is left in the cgroup (or it is gone).
#[must_use]
pub fn is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |s| s.trim().is_empty())
}

/// Removes the cgroup directory (only possible once it is empty).
pub fn remove(dir: &std::path::Path) {
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_root_and_own_cgroup_id_match_a_fresh_lookup() {
        let me = std::process::id();
        assert_eq!(root().map(Path::to_path_buf), crate::kernel::procs::cgroup2_root());
        assert_eq!(process_cgroup_id(me), crate::kernel::procs::cgroup_id(me));
        assert_eq!(id_under(Path::new("/"), "1:name=systemd:/\n"), None, "no v2 entry");
        assert_eq!(process_cgroup_id(u32::MAX - 1), None, "no such process");
    }
}
