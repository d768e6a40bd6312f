//! QEMU test matrix (owned by the VM harness work; see issue "Synchronous deny on stock kernels").
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_a: &Args) -> anyhow::Result<()> {
    anyhow::bail!("vm-test is not implemented yet")
}
