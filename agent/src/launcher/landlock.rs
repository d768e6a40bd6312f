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
    ABI, Access as _, AccessFs, BitFlags, CompatLevel, Compatible as _, Ruleset, RulesetAttr as _,
    RulesetCreatedAttr as _, path_beneath_rules,
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
        let roots: Vec<&PathBuf> = self.roots.iter().filter(|r| r.exists()).collect();
        let created = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(handled)
            .context("Landlock (write ceiling) is not available: boot with `landlock` in `lsm=`, or launch with --no-write-ceiling")?
            .create()
            .context("creating the Landlock ruleset (write ceiling)")?
            .add_rules(path_beneath_rules(roots, AccessFs::from_all(ABI::V3) & handled))
            .context("adding the write ceiling's roots to the Landlock ruleset")?;
        let fd: Option<OwnedFd> = created.into();
        let fd = fd.context("Landlock ruleset without a descriptor")?;
        Ok(Prepared { fd, truncate: have_truncate })
    }
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
    fn roots_must_be_absolute_and_are_kept_once() {
        let mut c = Ceiling::default();
        c.add("/srv/a".into()).unwrap();
        c.add("/srv/a".into()).unwrap();
        assert_eq!(c.roots, vec![PathBuf::from("/srv/a")]);
        assert!(c.add("rel".into()).is_err());
        assert!(c.add("/srv/../etc".into()).unwrap_err().to_string().contains("`..`"));
    }
}
