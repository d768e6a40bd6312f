//! `cargo xtask`: work that is not a plain build.
//!
//! - `cargo xtask vm-test` — boots stock Debian kernels under QEMU and runs the engine scenarios
//!   against the synchronous deny backends (`vm.rs`).
//! - `cargo xtask dist` — the static binary and the Debian package (`dist.rs`).
//! - `cargo xtask deb-test` — the .deb installed with apt, run by systemd in a Debian 12 guest
//!   under QEMU (`debtest.rs`).
//! - `cargo xtask bench` — enforcement overhead, event throughput, grant latency (`bench.rs`).
use clap::{Parser, Subcommand};

mod bench;
mod debtest;
mod dist;
mod vm;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the engine scenarios in QEMU on Debian 6.1 / 6.12 (LSM and fmod_ret backends).
    VmTest(vm::Args),
    /// Benchmarks (root): JSON report + table, ratios against a baseline measured in the same run.
    Bench(bench::Args),
    /// Static musl `mcpguard` and the Debian package in target/dist/.
    Dist(dist::Args),
    /// Install the .deb with apt in a Debian 12 guest (QEMU, systemd), enforce, restart, purge.
    DebTest(debtest::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::VmTest(a) => vm::run(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Dist(a) => dist::run(&a),
        Cmd::DebTest(a) => debtest::run(&a),
    }
}
