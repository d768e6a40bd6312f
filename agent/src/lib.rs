//! mcpguard agent library, in four rooms by concern (each folder's `mod.rs` says what is in it):
//!
//! - [`kernel`]: the eBPF programs from userspace — loading and attaching them, their maps, the
//!   syscall tracepoints attached while needed, the fmod_ret loader, BTF offsets, process and
//!   cgroup facts, decoding the ring buffer.
//! - [`grant`]: what a task may do — policies (TOML), their vocabulary (exec rules and command
//!   lines, paths, network targets, DNS names, durations), compiled to kernel entries.
//! - [`daemon`]: the host daemon — control socket server, its operations and protocol, the
//!   session table and its reconciliation with the pinned maps, audit log, metrics, status,
//!   the signal supervisor.
//! - [`launcher`]: what runs beside the governed program — the daemon client, `exec`'s seccomp
//!   filters and Landlock ceiling, the MCP proxy.
//!
//! `doctor` (what this host can enforce) and `cli` (the human forms of `status` and `events`)
//! sit beside them. Dependencies point one way:
//! `launcher` → `daemon::protocol`, `grant`; `daemon` → `kernel`, `grant`; `kernel` → `grant`
//! (the compiled entries it installs).
pub mod cli;
pub mod daemon;
pub mod doctor;
pub mod grant;
pub mod kernel;
pub mod launcher;
