//! Process facts from /proc: start time (to key sessions by tgid + start) and descendants.
use std::{collections::BTreeMap, fs};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {pid} does not exist")]
    NoSuchProcess { pid: u32 },
    #[error("cannot parse /proc/{pid}/stat")]
    BadStat { pid: u32 },
}

/// (ppid, start time in clock ticks) from `/proc/PID/stat` contents.
#[must_use]
pub fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    // The command name is in parentheses and may itself contain spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // fields[0] is field 3 (state); ppid is field 4, starttime field 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

pub fn stat(pid: u32) -> Result<(u32, u64), ProcError> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| ProcError::NoSuchProcess { pid })?;
    parse_stat(&s).ok_or(ProcError::BadStat { pid })
}

/// Start time of `pid` in clock ticks since boot.
pub fn start_ticks(pid: u32) -> Result<u64, ProcError> {
    stat(pid).map(|(_, s)| s)
}

/// All processes (tgids) currently alive, with their parent.
#[must_use]
pub fn all_parents() -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Ok((ppid, _)) = stat(pid) {
            out.insert(pid, ppid);
        }
    }
    out
}

/// Descendants of `root` (not including it), from a parent map.
#[must_use]
pub fn descendants_in(parents: &BTreeMap<u32, u32>, root: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (&pid, &ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if c != root && !out.contains(&c) {
                out.push(c);
                stack.push(c);
            }
        }
    }
    out
}

/// cgroup v2 id (the inode number of its directory) of a process, if it is in a v2 hierarchy.
#[must_use]
pub fn cgroup_id(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let s = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = s.lines().find_map(|l| l.strip_prefix("0::"))?;
    let root = cgroup2_root()?;
    fs::metadata(root.join(rel.trim_start_matches('/'))).ok().map(|m| m.ino())
}

/// Mount point of the cgroup v2 hierarchy (unified or hybrid).
#[must_use]
pub fn cgroup2_root() -> Option<std::path::PathBuf> {
    let m = fs::read_to_string("/proc/self/mounts").ok()?;
    m.lines()
        .find(|l| l.split(' ').nth(2) == Some("cgroup2"))
        .and_then(|l| l.split(' ').nth(1))
        .map(std::path::PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_comm() {
        let s = "1234 (a) b) c) S 77 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        assert_eq!(parse_stat(s), Some((77, 98765)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_found() {
        let me = std::process::id();
        let (ppid, start) = stat(me).unwrap();
        assert!(ppid > 0 && start > 0);
        assert!(all_parents().contains_key(&me));
        assert!(matches!(stat(u32::MAX - 1), Err(ProcError::NoSuchProcess { .. })));
    }

    #[test]
    fn descendants_walk_the_tree() {
        let parents = BTreeMap::from([(2, 1), (3, 2), (4, 3), (5, 1), (6, 4)]);
        let mut d = descendants_in(&parents, 2);
        d.sort_unstable();
        assert_eq!(d, vec![3, 4, 6]);
    }
}
