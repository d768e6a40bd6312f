//! mcpguard kernel programs.
//!
//! Layout: `maps.rs` (every map, documented), `kernel.rs` (reads of kernel structs through the
//! BTF-derived offsets), `decide.rs` (the decision logic shared by every backend), `report.rs`
//! (events and counters), `programs.rs` (kill-backend entry points), `lsm.rs` (BPF-LSM and
//! fmod_ret entry points for exec, open, mmap and signals), `paths.rs` (their path operations), `times.rs` (their file times), `net.rs` (network and Unix sockets, every backend),
//! `cmdline.rs` (the command line and environment of a governed exec, every backend), `vma.rs`
//! (the mappings an `mprotect` makes executable, kill backend).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod cmdline;
#[cfg(target_arch = "bpf")]
mod decide;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod lsm;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod paths;
#[cfg(target_arch = "bpf")]
mod programs;
#[cfg(target_arch = "bpf")]
mod report;
#[cfg(target_arch = "bpf")]
mod times;
#[cfg(target_arch = "bpf")]
mod vma;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: unreachable in verified programs; the verifier rejects any path that could get here.
    unsafe { core::hint::unreachable_unchecked() }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
