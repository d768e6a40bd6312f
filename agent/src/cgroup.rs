//! Per-session cgroups (cgroup v2): the launcher may ask for its session to be a cgroup, which
//! governs every process in it, including ones moved in later, by cgroup id in the kernel.
use std::{os::unix::fs::MetadataExt as _, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup v2 is not mounted on this host (no cgroup2 entry in /proc/self/mounts)")]
    NoCgroup2,
    #[error("cgroup {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// `<cgroup2 root>/mcpguard/<session>-<id>`.
pub fn session_dir(session: &str, id: u64) -> Result<PathBuf, CgroupError> {
    let root = crate::procs::cgroup2_root().ok_or(CgroupError::NoCgroup2)?;
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
