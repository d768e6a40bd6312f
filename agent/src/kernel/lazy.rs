//! Syscall tracepoints, attached only while something is governed.
//!
//! A `syscalls:*` tracepoint with a BPF user sets `SYSCALL_WORK_SYSCALL_TRACEPOINT` on every task:
//! every syscall of every process on the machine then takes the kernel's slow entry/exit path
//! (+50 ns per syscall on the 6.18 host, 1.33x a null syscall even with an empty program;
//! docs/benchmarks.md). The engine therefore attaches them when the first process or cgroup is
//! governed — *before* it goes into the map, so a governed process never runs without them — and
//! detaches them when nothing is governed any more. A host with no governed MCP server pays
//! nothing for them. The hooks that fire only on their own event (fork, exit, exec BTF
//! tracepoints, LSM/fmod_ret hooks) stay attached for the engine's lifetime.
//!
//! With a pin directory the programs are pinned under `progs/` (so a restarted daemon can attach
//! them again) and each attached link under `links/`, like the permanent ones: enforcement
//! survives a daemon restart in whichever state it was.
use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    programs::{
        TracePoint,
        links::{FdLink, PinnedLink},
    },
};

use crate::{kernel::loader, kernel::setup::EngineError};

/// An attached link: dropping `Fd` detaches; `Pinned` stays attached until unpinned.
enum Held {
    Fd(#[allow(dead_code)] FdLink),
    Pinned(PinnedLink),
}

pub struct SyscallHooks {
    /// What the group is for (logs).
    name: &'static str,
    /// (program, tracepoint in `syscalls`).
    set: Vec<(&'static str, &'static str)>,
    /// Programs re-opened from pins (adopted engine); otherwise they live in the `Ebpf` object.
    pinned_progs: Vec<(&'static str, TracePoint)>,
    links: Vec<(&'static str, Held)>,
    links_dir: Option<PathBuf>,
}

fn pin_err(what: String, path: &Path, e: impl std::fmt::Display) -> EngineError {
    EngineError::Adopt { path: path.into(), msg: format!("{what}: {e}") }
}

impl SyscallHooks {
    /// Fresh load: the programs are loaded in `ebpf`, nothing attached. With `pin`, the programs
    /// are pinned under `progs_dir`.
    pub fn new(
        name: &'static str,
        set: Vec<(&'static str, &'static str)>,
        ebpf: &mut Ebpf,
        dirs: Option<(&Path, &Path)>,
    ) -> Result<Self, EngineError> {
        if let Some((progs_dir, _)) = dirs {
            std::fs::create_dir_all(progs_dir).map_err(|source| EngineError::Pin {
                what: "program directory".into(),
                path: progs_dir.into(),
                source,
            })?;
            for (prog, _) in &set {
                let path = progs_dir.join(prog);
                let _ = std::fs::remove_file(&path); // stale pin of an earlier, incomplete load
                loader::syscall_prog(ebpf, prog)?
                    .pin(&path)
                    .map_err(|e| pin_err(format!("pinning program {prog}"), &path, e))?;
            }
        }
        Ok(Self { name, set, pinned_progs: Vec::new(), links: Vec::new(), links_dir: dirs.map(|(_, l)| l.into()) })
    }

    /// Adopted engine: programs from `progs_dir`, and whichever links are pinned in `links_dir`.
    pub fn adopt(
        name: &'static str,
        set: Vec<(&'static str, &'static str)>,
        progs_dir: &Path,
        links_dir: &Path,
    ) -> Result<Self, EngineError> {
        let mut pinned_progs = Vec::new();
        let mut links = Vec::new();
        for (prog, _) in &set {
            let p = progs_dir.join(prog);
            let tp = TracePoint::from_pin(&p).map_err(|e| {
                pin_err(
                    format!(
                        "pinned program {prog} is not usable (state pinned by an older mcpguard? run `mcpguard unpin`)"
                    ),
                    &p,
                    e,
                )
            })?;
            pinned_progs.push((*prog, tp));
            let l = links_dir.join(prog);
            if l.exists() {
                let link = PinnedLink::from_pin(&l)
                    .map_err(|e| pin_err(format!("pinned link {prog} is not usable"), &l, e))?;
                links.push((*prog, Held::Pinned(link)));
            }
        }
        Ok(Self { name, set, pinned_progs, links, links_dir: Some(links_dir.into()) })
    }

    /// True when every tracepoint of the group is attached (always, for an empty group).
    #[must_use]
    pub fn attached(&self) -> bool {
        self.links.len() == self.set.len()
    }

    /// Number of tracepoints of the group attached now.
    #[must_use]
    pub fn attached_count(&self) -> usize {
        self.links.len()
    }

    /// Attaches whatever is not attached yet. On error, what this call attached is detached again
    /// and the error returned: the caller must not govern anything then.
    pub fn attach(&mut self, ebpf: Option<&mut Ebpf>) -> Result<(), EngineError> {
        if self.attached() {
            return Ok(());
        }
        let before = self.links.len();
        let r = self.attach_missing(ebpf);
        if r.is_err() {
            let _ = self.detach_from(before);
        } else {
            log::info!("{} syscall tracepoints attached ({})", self.name, self.set.len());
        }
        r
    }

    fn attach_missing(&mut self, mut ebpf: Option<&mut Ebpf>) -> Result<(), EngineError> {
        for (prog, tp) in self.set.clone() {
            if self.links.iter().any(|(p, _)| *p == prog) {
                continue;
            }
            let p = match ebpf.as_deref_mut() {
                Some(e) => loader::syscall_prog(e, prog)?,
                None => self.pinned_progs.iter_mut().find(|(p, _)| *p == prog).map(|(_, t)| t).ok_or_else(|| {
                    EngineError::Adopt { path: "(pinned programs)".into(), msg: format!("program {prog} not loaded") }
                })?,
            };
            let link = loader::attach_syscall_tp(p, prog, tp)?;
            let held = match &self.links_dir {
                Some(dir) => {
                    let path = dir.join(prog);
                    // A pin left by a failed unpin: replaced (the new link is attached already).
                    let _ = std::fs::remove_file(&path);
                    Held::Pinned(link.pin(&path).map_err(|e| pin_err(format!("pinning link {prog}"), &path, e))?)
                }
                None => Held::Fd(link),
            };
            self.links.push((prog, held));
        }
        Ok(())
    }

    /// Detaches every syscall tracepoint (and removes their link pins).
    pub fn detach(&mut self) -> Result<(), EngineError> {
        if self.links.is_empty() {
            return Ok(());
        }
        let r = self.detach_from(0);
        log::info!("{} syscall tracepoints detached: no governed process needs them", self.name);
        r
    }

    fn detach_from(&mut self, from: usize) -> Result<(), EngineError> {
        let mut first_err = None;
        for (prog, held) in self.links.drain(from..) {
            if let Held::Pinned(l) = held {
                // Unpinning removes the bpffs file; dropping the returned link detaches.
                if let Err(e) = l.unpin() {
                    first_err.get_or_insert(EngineError::Adopt {
                        path: "(link pin)".into(),
                        msg: format!("unpinning link {prog}: {e}"),
                    });
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
