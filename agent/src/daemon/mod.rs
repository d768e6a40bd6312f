//! The host daemon: `server` owns the kernel engine and serves the control socket; `handlers`
//! dispatches its operations over the wire format in `protocol` (`register`, `grants`: grant
//! and revoke, composition, delegation in `delegation`), each
//! moving a session to its next state through `session` (the one owner of transitions);
//! `state` is the session table (persisted) and `reconcile` squares it with the pinned kernel
//! maps after a restart; `audit`, `metrics` and `status` report (`http` serves metrics and health); `signals` decides the
//! signals of launched sessions where no kernel hook can; `dns` re-resolves the names of the
//! grants in force.
pub mod audit;
pub mod delegation;
pub mod dns;
pub mod grants;
pub mod handlers;
pub mod http;
pub mod identity;
pub mod learn;
pub mod metrics;
pub mod protocol;
pub mod recent;
pub mod reconcile;
pub mod register;
pub mod scope;
pub mod server;
pub mod session;
pub mod signals;
pub mod state;
pub mod status;
pub mod tokens;
