//! The grant model: what a task may do, and its compilation to kernel entries.
//!
//! `policy` parses grant templates (TOML) and inline grants into a `GrantSpec`, with the
//! vocabulary of each dimension in its own module — `cmdline` (exec arguments, interpreters,
//! code-injecting environment), `net` (connect and listen targets and the
//! names they resolve), `duration` (TTLs). `kgrant` resolves what a spec names into the kernel's keys
//! (objects, fingerprints, prefixes). `builtin` holds the shipped policies, built in. A new grant dimension: its entry in `policy`, its
//! vocabulary module here, its compilation in `kgrant`, its map in `kernel::engine`.
pub mod builtin;
pub mod cmdline;
pub mod duration;
pub mod kgrant;
pub mod learn;
pub mod net;
pub mod policy;
