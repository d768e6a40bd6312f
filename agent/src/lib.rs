//! mcpguard agent library: kernel engine, grants, daemon, protocol.
pub mod btf;
pub mod engine;
pub mod events;
pub mod fmodret;
pub mod kgrant;
pub mod loader;
pub mod offsets;
pub mod procs;
pub mod duration;
pub mod policy;
pub mod protocol;
pub mod metrics;
pub mod state;
pub mod audit;
pub mod daemon;
pub mod handlers;
pub mod client;
