//! The operator's view: how `status` and `events` print for a human (the `--json` forms are the
//! daemon's answers unchanged) and what their flags mean in the protocol. Pure functions of the
//! daemon's answers, unit-tested without a daemon.
pub mod events;
pub mod learn;
pub mod status;
