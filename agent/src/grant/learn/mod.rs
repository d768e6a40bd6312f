//! `mcpguard learn`: policies proposed from what a server did (`docs/learn.md`).
//!
//! - [`observations`]: what a learning session recorded (the daemon's aggregation, the proxy's
//!   calls), kept per run in `DIR/observations.json` so that runs merge.
//! - [`annotate`]: what the filesystem says about each observation when the session ends.
//! - [`rules`]: the generalisation rules for one path; [`generalise`]: applied to a scope;
//!   [`propose`]: the baseline and the per-tool templates; [`render`]: the files written.
//! - [`diff`]: `mcpguard policy diff`, what one policy grants that another does not.
pub mod annotate;
pub mod diff;
pub mod generalise;
pub mod observations;
pub mod propose;
pub mod render;
pub mod rules;
