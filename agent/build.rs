//! Builds the eBPF object (nightly, bpfel-unknown-none) and leaves it in OUT_DIR for
//! `include_bytes_aligned!` in the agent.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ebpf");
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [Package { name: "mcpguard-ebpf", root_dir, ..Default::default() }],
        Toolchain::default(),
    )
    .context("building the eBPF object (needs nightly rust-src and bpf-linker: scripts/setup.sh)")
}
