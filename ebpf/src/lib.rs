//! Exists so the agent can name this crate as a build-dependency (which makes cargo rebuild the
//! agent when the kernel programs change); the programs are in the `mcpguard-ebpf` binary.
#![no_std]
