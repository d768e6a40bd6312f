//! The kernel side: the eBPF object from userspace.
//!
//! `engine` loads the programs (or adopts them from their pins), owns every map and is the only
//! writer of them (`setup`: the object, options and errors the attach code shares with it); `loader` attaches lifecycle hooks and the strongest backend that works
//! (`backend` names the backends and what each channel gets on them), `fmodret` is our own
//! fmod_ret loader, `lazy` attaches the syscall tracepoints only while something is governed.
//! `btf` and `offsets` read the running kernel's struct layouts, `procs` and `cgroup` the
//! process and cgroup facts a session is keyed by, `events` decodes the ring buffer.
pub mod backend;
pub mod btf;
pub mod cgroup;
pub mod engine;
pub mod events;
pub mod fmodret;
pub mod lazy;
pub mod loader;
pub mod offsets;
pub mod procs;
pub mod setup;
