//! Loads the kernel programs, owns their maps, and exposes the operations the daemon and the
//! tests need: govern processes/cgroups, install grants, swap a session's grants, read counters
//! and events.
//!
//! Two lifetimes: `EngineOptions { pin_dir: None }` (tests, tools) keeps links only as long as the
//! `Engine` lives; with a `pin_dir` the maps and links are pinned under it so enforcement outlives
//! the daemon, and a later `Engine::load` with the same directory adopts them.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf, lpm_trie::Key, lpm_trie::LpmTrie},
    programs::links::PinnedLink,
};
use mcpguard_common as c;
use mcpguard_common::{Conf, Fingerprint, NameKey, NetKeyData, NetPorts, ObjKey, ProcEntry, SessionState, UnixKey};

use crate::{
    grant::kgrant::KernelGrant, kernel::btf::Btf, kernel::events::Decision, kernel::lazy::SyscallHooks, kernel::procs,
};

pub use crate::kernel::setup::{Backend, EngineError, EngineOptions, Probe};
pub(crate) use crate::kernel::setup::{OBJECT, map_err};

mod load;
use load::{links_dir, maps_dir, progs_dir};

/// Where a fresh load spent its time (zero when adopted): BTF parsing (ours and aya's), creating
/// the maps and loading the object's programs (the verifier runs here for aya's programs), and
/// attaching the backends tried (the fmod_ret programs are verified there).
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadTime {
    pub btf: Duration,
    pub object: Duration,
    pub attach: Duration,
    pub total: Duration,
}

impl std::fmt::Display for LoadTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_millis();
        write!(
            f,
            "{} ms (BTF {} ms, object {} ms, attach {} ms)",
            ms(self.total),
            ms(self.btf),
            ms(self.object),
            ms(self.attach)
        )
    }
}

pub struct Engine {
    /// Keeps unpinned programs alive; `None` once adopted from pins.
    ebpf: Option<Ebpf>,
    /// Open-family syscall tracepoints (kill backend), attached only while something is governed.
    open_hooks: SyscallHooks,
    /// Guard-syscall tracepoints, attached only while a governed process lacks the launcher's
    /// seccomp filter (`SESSION_SEALED`), or a cgroup is governed.
    guard_hooks: SyscallHooks,
    /// The Unix peer-object check (kill backend, 6.7+), attached only while an installed grant
    /// names a Unix socket path.
    unix_hooks: SyscallHooks,
    /// Unpinned links: dropping them detaches the programs.
    _links: Vec<crate::kernel::loader::AnyLink>,
    backend: Backend,
    probes: Vec<Probe>,
    adopted: bool,
    load_time: LoadTime,
    maps: Maps,
    /// The kill backend's Unix address programs are attached (Linux 6.7+).
    unix_addr: bool,
}

/// The maps the engine reads and writes, opened the same way after a fresh load (taken from
/// the object) and after adoption (opened from their pins): [`Maps::open`].
struct Maps {
    procs: HashMap<MapData, u32, ProcEntry>,
    cgroups: HashMap<MapData, u64, u64>,
    sessions: HashMap<MapData, u64, SessionState>,
    exec: HashMap<MapData, ObjKey, Fingerprint>,
    exec_names: HashMap<MapData, NameKey, u32>,
    paths: HashMap<MapData, ObjKey, u32>,
    net: LpmTrie<MapData, NetKeyData, NetPorts>,
    unix: HashMap<MapData, UnixKey, u32>,
    argv: HashMap<MapData, ObjKey, c::ArgvRules>,
    argv_lit: HashMap<MapData, c::ArgKey, u32>,
    env_exempt: HashMap<MapData, u32, u32>,
    session_env: HashMap<MapData, c::SessionEnvKey, u32>,
    counters: PerCpuArray<MapData, u64>,
    conf: Array<MapData, Conf>,
    events: Option<RingBuf<MapData>>,
}

impl Maps {
    /// Each map by name from `get` (the loaded object's, or a pin's), typed.
    fn open(mut get: impl FnMut(&'static str) -> Result<Map, EngineError>) -> Result<Self, EngineError> {
        fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
            get: &mut impl FnMut(&'static str) -> Result<Map, EngineError>,
            name: &'static str,
        ) -> Result<T, EngineError> {
            T::try_from(get(name)?).map_err(map_err(name))
        }
        let g = &mut get;
        Ok(Self {
            procs: typed(g, c::MAP_PROCS)?,
            cgroups: typed(g, c::MAP_CGROUPS)?,
            sessions: typed(g, c::MAP_SESSIONS)?,
            exec: typed(g, c::MAP_EXEC)?,
            exec_names: typed(g, c::MAP_EXEC_NAMES)?,
            paths: typed(g, c::MAP_PATHS)?,
            net: typed(g, c::MAP_NET)?,
            unix: typed(g, c::MAP_UNIX)?,
            argv: typed(g, c::MAP_ARGV)?,
            argv_lit: typed(g, c::MAP_ARGV_LIT)?,
            env_exempt: typed(g, c::MAP_ENV_EXEMPT)?,
            session_env: typed(g, c::MAP_SESSION_ENV)?,
            counters: typed(g, c::MAP_COUNTERS)?,
            conf: typed(g, c::MAP_CONF)?,
            events: Some(typed(g, c::MAP_EVENTS)?),
        })
    }
}

impl Engine {
    /// Where the load spent its time (zero when adopted from pins).
    #[must_use]
    pub fn load_time(&self) -> LoadTime {
        self.load_time
    }

    /// True when any syscall tracepoint is attached (something is governed).
    #[must_use]
    pub fn syscall_hooks_attached(&self) -> bool {
        let (open, guard, unix) = self.syscall_hooks();
        open + guard + unix > 0
    }

    /// (open-family, guard, Unix peer check) syscall tracepoints attached now (status, metrics,
    /// tests).
    #[must_use]
    pub fn syscall_hooks(&self) -> (usize, usize, usize) {
        (self.open_hooks.attached_count(), self.guard_hooks.attached_count(), self.unix_hooks.attached_count())
    }

    /// True when an installed grant names a Unix socket path (an abstract name starts with NUL):
    /// connects to it are let through by name and checked by the peer object at exit.
    fn unix_path_granted(&self) -> bool {
        self.maps.unix.keys().filter_map(Result::ok).any(|k| k.name[0] != 0)
    }

    fn session_sealed(&self, session: u64) -> bool {
        self.maps.sessions.get(&session, 0).is_ok_and(|s| s.flags & c::SESSION_SEALED != 0)
    }

    /// (anything governed, a governed process or cgroup that needs the guard tracepoints).
    fn hook_needs(&self) -> (bool, bool) {
        let cgroup = self.maps.cgroups.keys().any(|k| k.is_ok());
        let (mut any, mut guard) = (cgroup, cgroup);
        // One SESSIONS lookup per session, not per process.
        let mut sealed = std::collections::BTreeMap::new();
        for (_, e) in self.maps.procs.iter().filter_map(Result::ok) {
            any = true;
            if !*sealed.entry(e.session).or_insert_with(|| self.session_sealed(e.session)) {
                guard = true;
                break;
            }
        }
        (any, guard)
    }

    /// Attaches what governing a process of `session` (`None`: a cgroup) needs, before it is
    /// governed (fail closed: on error nothing may be governed).
    fn need_syscall_hooks(&mut self, session: Option<u64>) -> Result<(), EngineError> {
        self.open_hooks.attach(self.ebpf.as_mut())?;
        if !session.is_some_and(|s| self.session_sealed(s)) {
            self.guard_hooks.attach(self.ebpf.as_mut())?;
        }
        Ok(())
    }

    /// Attaches or detaches the syscall tracepoints to match what is governed. The kernel removes
    /// exited processes from the map by itself; this runs whenever the engine is told to forget a
    /// process, cgroup or session, and at load.
    pub fn sync_syscall_hooks(&mut self) -> Result<(), EngineError> {
        let (any, guard) = self.hook_needs();
        let ebpf = self.ebpf.as_mut();
        let r1 = if any { self.open_hooks.attach(ebpf) } else { self.open_hooks.detach() };
        let r2 = if guard { self.guard_hooks.attach(self.ebpf.as_mut()) } else { self.guard_hooks.detach() };
        let r3 = self.sync_unix_hooks();
        r1.and(r2).and(r3)
    }

    fn sync_unix_hooks(&mut self) -> Result<(), EngineError> {
        if self.unix_path_granted() { self.unix_hooks.attach(self.ebpf.as_mut()) } else { self.unix_hooks.detach() }
    }

    fn after_removal(&mut self) {
        if let Err(e) = self.sync_syscall_hooks() {
            log::warn!("syscall tracepoints: {e}");
        }
    }

    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }
    /// Every backend tried at start-up and what happened.
    #[must_use]
    pub fn probes(&self) -> &[Probe] {
        &self.probes
    }
    /// True when this engine took over programs pinned by an earlier daemon.
    #[must_use]
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    // ---- processes and cgroups ---------------------------------------------------------------

    /// Governs one process (by tgid), keyed by its start time.
    pub fn add_process(&mut self, tgid: u32, session: u64) -> Result<(), EngineError> {
        self.need_syscall_hooks(Some(session))?;
        let start_ticks = procs::start_ticks(tgid)?;
        self.maps.procs.insert(tgid, ProcEntry { session, start_ticks }, 0).map_err(map_err(c::MAP_PROCS))
    }

    /// Governs `root` and every descendant it already has. New children are picked up by the
    /// fork hook from the moment the parent is in the map; the scan repeats until it finds no
    /// new process, so a child forked during the scan by a not-yet-added descendant is caught.
    pub fn govern_tree(&mut self, root: u32, session: u64) -> Result<Vec<u32>, EngineError> {
        self.add_process(root, session)?;
        let mut governed = vec![root];
        loop {
            let parents = procs::all_parents();
            let mut added = false;
            for pid in procs::descendants_in(&parents, root) {
                if !governed.contains(&pid) {
                    match self.add_process(pid, session) {
                        Ok(()) => {}
                        Err(EngineError::Proc(_)) => continue, // exited meanwhile
                        Err(e) => return Err(e),
                    }
                    governed.push(pid);
                    added = true;
                }
            }
            if !added {
                return Ok(governed);
            }
        }
    }

    /// Processes currently governed by `session`.
    #[must_use]
    pub fn session_processes(&self, session: u64) -> Vec<u32> {
        self.maps.procs.iter().filter_map(Result::ok).filter(|(_, e)| e.session == session).map(|(k, _)| k).collect()
    }

    /// Session of a process (`None` when ungoverned).
    #[must_use]
    pub fn process_session(&self, tgid: u32) -> Option<u64> {
        self.maps.procs.get(&tgid, 0).ok().map(|e| e.session)
    }

    pub fn add_cgroup(&mut self, cgroup_id: u64, session: u64) -> Result<(), EngineError> {
        self.need_syscall_hooks(None)?;
        self.maps.cgroups.insert(cgroup_id, session, 0).map_err(map_err(c::MAP_CGROUPS))?;
        self.refresh_conf()
    }

    pub fn remove_cgroup(&mut self, cgroup_id: u64) -> Result<(), EngineError> {
        let _ = self.maps.cgroups.remove(&cgroup_id);
        self.after_removal();
        self.refresh_conf()
    }

    /// Session governing a cgroup, if any.
    #[must_use]
    pub fn cgroup_session(&self, cgroup_id: u64) -> Option<u64> {
        self.maps.cgroups.get(&cgroup_id, 0).ok()
    }

    fn refresh_conf(&mut self) -> Result<(), EngineError> {
        let n = self.maps.cgroups.keys().filter(Result::is_ok).count();
        let mut conf = self.maps.conf.get(&0, 0).unwrap_or_default();
        conf.cgroup_sessions = u32::try_from(n).unwrap_or(u32::MAX);
        self.maps.conf.set(0, conf, 0).map_err(map_err(c::MAP_CONF))
    }

    // ---- sessions and grants -----------------------------------------------------------------

    /// Replaces a session's grant state in one map update: the kernel sees either the old or the
    /// new state, never a mix, and never none.
    pub fn set_session(&mut self, session: u64, state: SessionState) -> Result<(), EngineError> {
        // A session losing `SESSION_SEALED` while it has processes needs the guard tracepoints
        // first (not on the grant path otherwise: only when the guards are detached).
        if state.flags & c::SESSION_SEALED == 0
            && !self.guard_hooks.attached()
            && self.maps.procs.iter().filter_map(Result::ok).any(|(_, e)| e.session == session)
        {
            self.guard_hooks.attach(self.ebpf.as_mut())?;
        }
        self.maps.sessions.insert(session, state, 0).map_err(map_err(c::MAP_SESSIONS))
    }

    #[must_use]
    pub fn session_state(&self, session: u64) -> Option<SessionState> {
        self.maps.sessions.get(&session, 0).ok()
    }

    /// Removes a session's state; its processes then get `no_grant` on everything.
    pub fn remove_session(&mut self, session: u64) {
        let _ = self.maps.sessions.remove(&session);
        self.after_removal();
    }

    /// Ends a session in the kernel: its state (so its processes get `no_grant` from here on),
    /// then every process of it; the syscall tracepoints are brought in line once, at the end
    /// (not once per removal: each sync walks the process map).
    pub fn end_session(&mut self, session: u64) {
        let _ = self.maps.sessions.remove(&session);
        let keys: Vec<c::SessionEnvKey> =
            self.maps.session_env.keys().filter_map(Result::ok).filter(|k| k.session == session).collect();
        for k in keys {
            let _ = self.maps.session_env.remove(&k);
        }
        for p in self.session_processes(session) {
            let _ = self.maps.procs.remove(&p);
        }
        self.after_removal();
    }

    /// Writes a grant's entries under `grant` id. Nothing refers to them until a session state
    /// names the id, so this is invisible to running processes. On error, what was written is
    /// removed again.
    pub fn install_grant(&mut self, grant: u64, g: &KernelGrant) -> Result<(), EngineError> {
        let r = self.try_install(grant, g);
        if r.is_err() {
            self.remove_grant(grant, g);
        }
        r
    }

    fn try_install(&mut self, grant: u64, g: &KernelGrant) -> Result<(), EngineError> {
        // The peer-object check before any grant that lets a Unix path connect through by name.
        if g.unix_names.iter().any(|n| n.first().is_some_and(|b| *b != 0)) {
            self.unix_hooks.attach(self.ebpf.as_mut())?;
        }
        for e in &g.exec {
            self.maps
                .exec
                .insert(e.id.key(grant), Fingerprint::from(e.fingerprint), 0)
                .map_err(map_err(c::MAP_EXEC))?;
            self.maps.exec_names.insert(e.name_key(grant), 1, 0).map_err(map_err(c::MAP_EXEC_NAMES))?;
        }
        for (id, bits) in &g.paths {
            self.maps.paths.insert(id.key(grant), *bits, 0).map_err(map_err(c::MAP_PATHS))?;
        }
        for (key, ports) in net_entries(grant, g)? {
            self.maps.net.insert(&Key::new(key.prefixlen, key.data), ports, 0).map_err(map_err(c::MAP_NET))?;
        }
        for name in &g.unix_names {
            let key =
                crate::grant::net::unix_key(grant, name).map_err(|e| EngineError::Grant { msg: e.to_string() })?;
            self.maps.unix.insert(key, 1, 0).map_err(map_err(c::MAP_UNIX))?;
        }
        for obj in &g.argv {
            let (key, rules, lits) = crate::grant::cmdline::kernel_form(grant, obj);
            for (k, mask) in lits {
                self.maps.argv_lit.insert(k, mask, 0).map_err(map_err(c::MAP_ARGV_LIT))?;
            }
            self.maps.argv.insert(key, rules, 0).map_err(map_err(c::MAP_ARGV))?;
        }
        Ok(())
    }

    /// The code-injecting entries (`NAME=value`) of `environ` (a process's environment, NUL
    /// separated) are `session`'s to give: inherited unchanged they pass (`cmdline.rs`). Returns
    /// the names remembered; an entry too long to remember is skipped (its children are checked).
    pub fn remember_launch_env(&mut self, session: u64, environ: &[u8]) -> Result<Vec<String>, EngineError> {
        let mut out = Vec::new();
        for e in environ.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let Some(eq) = e.iter().position(|b| *b == b'=') else { continue };
            let Ok(name) = std::str::from_utf8(&e[..eq]) else { continue };
            if !c::INJECTION_ENV.contains(&name) || e.len() >= c::SESSION_ENV_LEN {
                continue;
            }
            let mut key = c::SessionEnvKey { session, bytes: [0; c::SESSION_ENV_LEN] };
            key.bytes[..e.len()].copy_from_slice(e);
            self.maps.session_env.insert(key, 1, 0).map_err(map_err(c::MAP_SESSION_ENV))?;
            out.push(name.to_owned());
        }
        Ok(out)
    }

    /// Forgets an exemption [`Engine::exempt_env_once`] left unused (the process never exec'd).
    pub fn clear_env_exempt(&mut self, tgid: u32) {
        let _ = self.maps.env_exempt.remove(&tgid);
    }

    /// The next exec of `tgid` is not checked for code-injecting environment (the launched
    /// program's own exec: its environment is the MCP client's configuration).
    pub fn exempt_env_once(&mut self, tgid: u32) -> Result<(), EngineError> {
        self.maps.env_exempt.insert(tgid, 1, 0).map_err(map_err(c::MAP_ENV_EXEMPT))
    }

    /// Removes a grant's entries (after no session refers to it any more).
    pub fn remove_grant(&mut self, grant: u64, g: &KernelGrant) {
        for e in &g.exec {
            let _ = self.maps.exec.remove(&e.id.key(grant));
            let _ = self.maps.exec_names.remove(&e.name_key(grant));
        }
        for id in g.paths.keys() {
            let _ = self.maps.paths.remove(&id.key(grant));
        }
        for (key, _) in net_entries(grant, g).unwrap_or_default() {
            let _ = self.maps.net.remove(&Key::new(key.prefixlen, key.data));
        }
        for name in &g.unix_names {
            if let Ok(key) = crate::grant::net::unix_key(grant, name) {
                let _ = self.maps.unix.remove(&key);
            }
        }
        for obj in &g.argv {
            let (key, _, lits) = crate::grant::cmdline::kernel_form(grant, obj);
            let _ = self.maps.argv.remove(&key);
            for (k, _) in lits {
                let _ = self.maps.argv_lit.remove(&k);
            }
        }
        if !g.unix_names.is_empty()
            && let Err(e) = self.sync_unix_hooks()
        {
            log::warn!("syscall tracepoints: {e}");
        }
    }

    /// Replaces the network entries of an installed grant `grant` (`old` -> `new`, e.g. DNS names
    /// resolved again): the new entries go in first, then the ones no longer named go, so an
    /// address both name is never missing.
    pub fn update_net(&mut self, grant: u64, old: &KernelGrant, new: &KernelGrant) -> Result<(), EngineError> {
        let new_entries = net_entries(grant, new)?;
        for (key, ports) in &new_entries {
            self.maps.net.insert(&Key::new(key.prefixlen, key.data), ports, 0).map_err(map_err(c::MAP_NET))?;
        }
        for (key, _) in net_entries(grant, old).unwrap_or_default() {
            if !new_entries.iter().any(|(k, _)| *k == key) {
                let _ = self.maps.net.remove(&Key::new(key.prefixlen, key.data));
            }
        }
        Ok(())
    }

    /// How each channel is stopped here: the backend's table, with the Unix-socket channel as
    /// attached (the kill backend's Unix address programs need Linux 6.7).
    #[must_use]
    pub fn channels(&self) -> Vec<(&'static str, &'static str)> {
        let mut v = self.backend.channels().to_vec();
        if self.backend == Backend::Kill && !self.unix_addr {
            for (ch, m) in &mut v {
                if *ch == "unix_connect" {
                    *m = "none";
                }
            }
        }
        v
    }

    // ---- counters and events -----------------------------------------------------------------

    /// All counters, summed over CPUs, indexed as in `mcpguard_common::counter_index`.
    pub fn counters(&self) -> Result<Vec<u64>, EngineError> {
        let mut out = Vec::with_capacity(c::COUNTER_SLOTS as usize);
        for i in 0..c::COUNTER_SLOTS {
            let v = self.maps.counters.get(&i, 0).map_err(map_err(c::MAP_COUNTERS))?;
            out.push(v.iter().sum());
        }
        Ok(out)
    }

    /// Hands the ring buffer to a consumer (the daemon's event task). Once taken, `next_events`
    /// returns nothing.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.maps.events.take()
    }

    /// Waits up to `timeout` for events and returns what arrived (for tools and tests).
    pub fn next_events(&mut self, timeout: Duration) -> Vec<Decision> {
        let Some(rb) = self.maps.events.as_mut() else { return Vec::new() };
        read_ring(rb, timeout)
    }
}

/// Polls a ring buffer fd for up to `timeout` and decodes what is there.
pub fn read_ring(rb: &mut RingBuf<MapData>, timeout: Duration) -> Vec<Decision> {
    let mut out = Vec::new();
    crate::kernel::events::drain(rb, usize::MAX, |ev| out.push(Decision::from_event(ev)));
    if out.is_empty() {
        crate::kernel::events::wait(rb, timeout);
        crate::kernel::events::drain(rb, usize::MAX, |ev| out.push(Decision::from_event(ev)));
    }
    out
}

/// Removes everything pinned under `pin_dir` (links first, so enforcement stops cleanly, then
/// maps). Returns the paths removed.
/// The trie entries of a grant's network part.
fn net_entries(grant: u64, g: &KernelGrant) -> Result<Vec<(c::NetKey, NetPorts)>, EngineError> {
    crate::grant::net::lpm_entries(grant, &g.net).map_err(|e| EngineError::Grant { msg: e.to_string() })
}

/// The always-attached programs of `backend` whose link is not pinned under `pin_dir`. The pins
/// hold the attachments (a pinning daemon keeps no link of its own), so a missing pin is a
/// program that no longer runs (e.g. `mcpguard unpin` while the daemon ran).
#[must_use]
pub fn missing_links(pin_dir: &Path, backend: Backend) -> Vec<&'static str> {
    let dir = links_dir(pin_dir);
    crate::kernel::loader::backend_programs(backend).into_iter().filter(|p| !dir.join(p).exists()).collect()
}

pub fn unpin(pin_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for sub in [links_dir(pin_dir), progs_dir(pin_dir), maps_dir(pin_dir)] {
        if let Ok(rd) = std::fs::read_dir(&sub) {
            for e in rd.flatten() {
                std::fs::remove_file(e.path())?;
                removed.push(e.path());
            }
            std::fs::remove_dir(&sub)?;
        }
    }
    if pin_dir.exists() {
        // Only our own (now empty) directory; anything else left there is reported as an error.
        std::fs::remove_dir(pin_dir)?;
    }
    Ok(removed)
}
