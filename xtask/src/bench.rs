//! Benchmarks (owned by the benchmark work; see issue "Benchmarks").
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_a: &Args) -> anyhow::Result<()> {
    anyhow::bail!("bench is not implemented yet")
}
