//! Builds the eBPF object (nightly, bpfel-unknown-none) and leaves it in OUT_DIR for
//! `include_bytes_aligned!` in the agent, without its DWARF sections.
//!
//! The object carries DWARF (bpf-linker derives BTF from it), ~80 % of its 2.4 MB. The kernel
//! and aya need `.BTF` and `.BTF.ext` only (not debug sections: `--strip-debug` keeps them and
//! the symbol table), and the embedded object is part of the daemon's resident memory.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ebpf");
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf([Package { name: "mcpguard-ebpf", root_dir, ..Default::default() }], Toolchain::default())
        .context("building the eBPF object (needs nightly rust-src and bpf-linker: scripts/setup.sh)")?;
    let obj = PathBuf::from(std::env::var("OUT_DIR")?).join("mcpguard-ebpf");
    if obj.exists() {
        strip_debug(&obj)?;
    }
    Ok(())
}

/// `objcopy --strip-debug` in place: the toolchain's own `rust-objcopy` (shipped with rustc),
/// else an LLVM objcopy on PATH. Without either the object stays as built (larger, same code).
fn strip_debug(obj: &Path) -> anyhow::Result<()> {
    let mut tools = Vec::new();
    if let (Ok(rustc), Ok(host)) = (std::env::var("RUSTC"), std::env::var("HOST"))
        && let Ok(out) = Command::new(rustc).arg("--print").arg("sysroot").output()
        && out.status.success()
    {
        let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
        tools.push(PathBuf::from(sysroot).join("lib/rustlib").join(host).join("bin/rust-objcopy"));
    }
    tools.push("llvm-objcopy".into());
    for tool in &tools {
        match Command::new(tool).arg("--strip-debug").arg(obj).status() {
            Ok(s) if s.success() => return Ok(()),
            Ok(s) => anyhow::bail!("{} --strip-debug {}: {s}", tool.display(), obj.display()),
            Err(_) => {} // not installed: try the next one
        }
    }
    println!("cargo::warning=no objcopy found ({tools:?}): the embedded eBPF object keeps its DWARF");
    Ok(())
}
