//! What loading the kernel object takes and reports, shared by the engine and the attach code
//! (`loader`, `lazy`) without either depending on the engine: the embedded object, the load
//! options, each backend's probe outcome, the errors.
use std::path::PathBuf;

pub use crate::kernel::backend::Backend;
use crate::kernel::procs;

/// The eBPF object built by `build.rs`.
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcpguard-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("reading kernel BTF: {0}")]
    Btf(#[from] crate::kernel::btf::BtfError),
    #[error("reading kernel BTF for the loader: {0}")]
    AyaBtf(#[from] aya::BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program `{prog}`: {source}")]
    Program { prog: &'static str, source: aya::programs::ProgramError },
    #[error("map `{map}`: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    #[error("map `{map}` is missing from the object")]
    MissingMap { map: &'static str },
    #[error("pinning `{what}` at {path}: {source}")]
    Pin { what: String, path: PathBuf, source: std::io::Error },
    #[error("adopting pinned state at {path}: {msg}")]
    Adopt { path: PathBuf, msg: String },
    #[error("{0}")]
    Proc(#[from] procs::ProcError),
    #[error("no enforcement backend could be attached ({tried})")]
    NoBackend { tried: String },
    #[error("grant cannot be installed: {msg}")]
    Grant { msg: String },
}

pub(crate) fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> EngineError {
    move |source| EngineError::Map { map, source }
}

#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Pin maps and links under this bpffs directory (daemon). `None`: nothing is pinned.
    pub pin_dir: Option<PathBuf>,
    /// Use exactly this backend (fail if it does not work). `None`: the strongest that works.
    pub backend: Option<Backend>,
    /// Attach the network programs to this cgroup v2 directory (they see its processes and its
    /// descendants'). `None`: the cgroup v2 root, every process on the host. Tests use a cgroup
    /// of their own.
    pub net_cgroup: Option<PathBuf>,
}

/// Outcome of trying one backend at start-up (reported in `status`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Probe {
    pub backend: Backend,
    pub result: String,
}
