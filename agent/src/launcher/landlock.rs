//! Write ceiling (Landlock) for the processes mcpguard launches.
//!
//! The kernel programs decide exec and open per task; on the kill backend they act after the
//! syscall, so an `unlink`, `rename`, `mkdir`, `symlink`, `mknod`, a bind of a Unix socket or a
//! truncation (`O_TRUNC`, `truncate`) outside the grant would already have happened when the
//! kill lands, and some of these are not hooked at all. For the processes mcpguard launches
//! (`mcpguard exec`, the MCP proxy's server) a Landlock ruleset refuses those operations
//! synchronously (EACCES / EXDEV, before anything changes) everywhere except beneath the
//! session's *write ceiling*: every path any of its grants may write (the baseline's write
//! paths, the tools templates' write roots, `--write-ceiling`). Reads, writes to existing files
//! and execs are not handled by the ruleset: they stay decided per task by the kernel programs.
//! Like the seccomp filter, the ruleset is inherited by every descendant and cannot be removed.
use std::{
    os::fd::{AsRawFd as _, OwnedFd},
    path::PathBuf,
};

use anyhow::{Context as _, bail};
use landlock::{
    ABI, AccessFs, BitFlags, CompatLevel, Compatible as _, PathBeneath, PathFd, Ruleset, RulesetAttr as _,
    RulesetCreatedAttr as _,
};

/// Operations refused outside the ceiling (all kernels with Landlock ABI 2, Linux 5.19+).
fn structural() -> BitFlags<AccessFs> {
    AccessFs::RemoveDir
        | AccessFs::RemoveFile
        | AccessFs::MakeChar
        | AccessFs::MakeDir
        | AccessFs::MakeReg
        | AccessFs::MakeSock
        | AccessFs::MakeFifo
        | AccessFs::MakeBlock
        | AccessFs::MakeSym
        | AccessFs::Refer
}

/// The paths beneath which creating, removing, renaming and truncating stay possible.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ceiling {
    pub roots: Vec<PathBuf>,
}

/// A ruleset created before `fork`, to be applied in the child with one syscall.
#[derive(Debug)]
pub struct Prepared {
    fd: OwnedFd,
    /// Whether truncation is refused too (Landlock ABI 3, Linux 6.2+).
    pub truncate: bool,
}

impl Ceiling {
    /// Adds a root (normalised: absolute, no `..`); duplicates are dropped.
    pub fn add(&mut self, root: PathBuf) -> anyhow::Result<()> {
        if !root.is_absolute() || root.components().any(|c| c == std::path::Component::ParentDir) {
            bail!("write ceiling `{}`: must be an absolute path without `..`", root.display());
        }
        if !self.roots.contains(&root) {
            self.roots.push(root);
        }
        Ok(())
    }

    /// The ceiling the daemon answered a registration with (`write_ceiling`); `None` when the
    /// session is not confined.
    pub fn from_response(r: &serde_json::Map<String, serde_json::Value>) -> anyhow::Result<Option<Self>> {
        let Some(list) = r.get("write_ceiling").and_then(serde_json::Value::as_array) else { return Ok(None) };
        let mut c = Self::default();
        for p in list {
            let p = p.as_str().context("write_ceiling: a path is not a string")?;
            c.add(PathBuf::from(p))?;
        }
        Ok(Some(c))
    }

    /// Creates the ruleset: the structural rights (and truncation where the kernel has it)
    /// handled, all of them allowed beneath each existing root. Fails when the kernel has no
    /// usable Landlock (the caller does not start the program).
    pub fn prepare(&self) -> anyhow::Result<Prepared> {
        // LANDLOCK_CREATE_RULESET_VERSION: the kernel's ABI version (negative: no Landlock).
        // SAFETY: the documented version query (null attribute, size 0).
        let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
        let have_truncate = abi >= 3;
        let mut handled = structural();
        if have_truncate {
            handled |= AccessFs::Truncate;
        }
        let mut created = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(handled)
            .context("Landlock (write ceiling) is not available: boot with `landlock` in `lsm=`, or launch with --no-write-ceiling")?
            .create()
            .context("creating the Landlock ruleset (write ceiling)")?;
        for root in &self.roots {
            let Ok(md) = std::fs::metadata(root) else { continue };
            let Some(access) = rule_access(md.is_dir(), handled) else { continue };
            let fd = PathFd::new(root).with_context(|| format!("write ceiling `{}`: opening it", root.display()))?;
            created = created.add_rule(PathBeneath::new(fd, access)).with_context(|| {
                format!("adding the write ceiling's root `{}` to the Landlock ruleset", root.display())
            })?;
        }
        let fd: Option<OwnedFd> = created.into();
        let fd = fd.context("Landlock ruleset without a descriptor")?;
        Ok(Prepared { fd, truncate: have_truncate })
    }
}

/// The rights a ceiling root allows beneath it: all handled ones for a directory; for another
/// object only those that apply to a file (truncation, where handled). `None` when nothing handled
/// applies (a file root on Landlock ABI 2, Linux 6.1: creating or removing it is decided on its
/// directory, which the root does not cover), so no rule is added for it.
fn rule_access(is_dir: bool, handled: BitFlags<AccessFs>) -> Option<BitFlags<AccessFs>> {
    let access = if is_dir { handled } else { handled & AccessFs::from_file(ABI::V3) };
    (!access.is_empty()).then_some(access)
}

impl Prepared {
    /// The ruleset's descriptor (passed to a child over a socket).
    #[must_use]
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Restricts the calling thread (and what it executes and starts) to the ruleset. One
    /// syscall, no allocation: safe between `fork` and `execve`. Needs `no_new_privs` (set with
    /// the seccomp guard filter, which goes first).
    pub fn restrict_self(&self) -> std::io::Result<()> {
        // SAFETY: plain syscall on a descriptor we own.
        let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, self.fd.as_raw_fd(), 0u32) };
        if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_root_gets_only_file_rights_and_none_without_truncation() {
        // Landlock ABI 2 (Debian 6.1): a file (the baselines' /dev/null) adds no rule at all; the
        // kernel refuses a rule with no right in it ("empty access-right").
        assert_eq!(rule_access(false, structural()), None);
        assert_eq!(rule_access(true, structural()), Some(structural()));
        let v3 = structural() | AccessFs::Truncate;
        assert_eq!(rule_access(false, v3), Some(BitFlags::from(AccessFs::Truncate)));
        assert_eq!(rule_access(true, v3), Some(v3));
    }

    #[test]
    fn roots_must_be_absolute_and_are_kept_once() {
        let mut c = Ceiling::default();
        c.add("/srv/a".into()).unwrap();
        c.add("/srv/a".into()).unwrap();
        assert_eq!(c.roots, vec![PathBuf::from("/srv/a")]);
        assert!(c.add("rel".into()).is_err());
        assert!(c.add("/srv/../etc".into()).unwrap_err().to_string().contains("`..`"));
    }
}
