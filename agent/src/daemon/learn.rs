//! Learning sessions (`mcpguard learn`): the decisions the kernel reports for a session being
//! learned, aggregated per session and per tool call (one entry per distinct event, counted).
//!
//! `learn_start` names a session before it is registered (the CLI then registers it under the
//! `learn-audit` baseline: nothing granted, audit mode, so nothing is stopped and everything is
//! reported); the event thread hands every decision to [`Learner::observe`] (one atomic load and
//! out while nothing learns); `learn_fetch` answers what was gathered, and with `finish` ends the
//! learning. Session ids and grant ids are remembered at their first event, so the events drained
//! after the session or its call ended still count. Loss is never silent: the kernel's lost-event
//! counter is read at the start and at every fetch, and a full table counts what it dropped.
//! Not persisted: a daemon restart ends every learning (the CLI then reports it).
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mcpguard_common::Event;

use serde_json::{Value, json};

use crate::{
    daemon::protocol::{ErrorCode, ProtoError},
    daemon::server::Daemon,
    daemon::state::State,
    grant::learn::observations::{CallRecord, ObsKey, Run},
    kernel::events::Decision,
};

/// Distinct observations one learning session keeps; beyond, events are counted as dropped.
pub const MAX_OBSERVATIONS: usize = 200_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LearnError {
    #[error("session `{0}` is already being learned (finish it with `mcpguard learn --finish {0}`)")]
    AlreadyLearning(String),
    #[error("session `{0}` is not being learned (never started, already finished, or the daemon restarted)")]
    NotLearning(String),
}

#[derive(Default)]
struct Learning {
    lost_at_start: u64,
    command: Vec<String>,
    obs: BTreeMap<ObsKey, u64>,
    dropped: u64,
    /// grant id -> (tool, call id), from the session table at the grant's first event.
    grants: HashMap<u64, (Option<String>, Option<String>)>,
    /// tgid -> the binary of its last exec refused for its command line (the argv record that
    /// follows names no path).
    last_exec: HashMap<u32, Option<String>>,
    /// The calls the proxy named (`learn_call`), in order.
    calls: Vec<CallRecord>,
    started_unix_ms: u64,
    vars: BTreeMap<String, String>,
}

/// Calls one learning session keeps (their arguments are at most a request line each).
pub const MAX_CALLS: usize = 10_000;

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<String, Learning>,
    /// Session id -> name of sessions being learned, from their first event.
    ids: HashMap<u64, String>,
}

/// The daemon's learning sessions.
#[derive(Default)]
pub struct Learner {
    active: AtomicUsize,
    /// Passes of the event thread over the ring buffer (a fetch waits for two: what the kernel
    /// reported before the fetch has then been handed over).
    epoch: AtomicU64,
    inner: Mutex<Inner>,
}

impl Learner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts learning `session` (by name); `lost_now` is the kernel's lost-event counter.
    pub fn start(&self, session: &str, lost_now: u64, vars: BTreeMap<String, String>) -> Result<(), LearnError> {
        let mut i = self.lock();
        if i.sessions.contains_key(session) {
            return Err(LearnError::AlreadyLearning(session.into()));
        }
        i.ids.retain(|_, n| n != session);
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        i.sessions
            .insert(session.into(), Learning { lost_at_start: lost_now, started_unix_ms, vars, ..Learning::default() });
        self.active.store(i.sessions.len(), Ordering::Release);
        Ok(())
    }

    /// A call of the learning session and its arguments (from its MCP proxy).
    pub fn call(&self, session: &str, call: CallRecord) -> Result<(), LearnError> {
        let mut i = self.lock();
        let l = i.sessions.get_mut(session).ok_or_else(|| LearnError::NotLearning(session.into()))?;
        if l.calls.len() < MAX_CALLS {
            l.calls.push(call);
        } else {
            l.dropped += 1;
        }
        Ok(())
    }

    /// The event thread finished a pass over the ring buffer.
    pub fn tick(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// One decision from the kernel (the event thread, with the session table locked).
    pub fn observe(&self, st: &State, ev: &Event) {
        if self.active.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut guard = self.lock();
        let i = &mut *guard;
        let name = match i.ids.get(&ev.session) {
            Some(n) => n.clone(),
            None => {
                let Some(s) = st.session_by_id(ev.session).filter(|s| i.sessions.contains_key(&s.name)) else {
                    return;
                };
                i.ids.insert(ev.session, s.name.clone());
                s.name.clone()
            }
        };
        let Some(l) = i.sessions.get_mut(&name) else { return };
        let session = st.session_by_id(ev.session);
        if l.command.is_empty()
            && let Some(s) = session
        {
            l.command.clone_from(&s.command);
        }
        let (tool, call_id) = l
            .grants
            .entry(ev.grant)
            .or_insert_with(|| {
                session
                    .and_then(|s| s.grant_names(ev.grant))
                    .map(|g| (g.tool.map(str::to_owned), g.call_id.map(str::to_owned)))
                    .unwrap_or_default()
            })
            .clone();
        let d = Decision::from_event(ev);
        let path = match (&d.argv, d.hook) {
            (Some(_), _) => l.last_exec.remove(&ev.tgid).flatten(),
            (None, "exec") if d.reason != "not_granted" => {
                l.last_exec.insert(ev.tgid, d.path.clone());
                d.path
            }
            _ => d.path,
        };
        let key = ObsKey {
            tool,
            call_id,
            hook: d.hook.into(),
            action: d.action.into(),
            reason: d.reason.into(),
            access: d.access,
            path,
            net: d.net,
            argv: d.argv,
            argv_truncated: d.argv_truncated.unwrap_or(false),
            dev: d.dev,
            ino: d.ino,
        };
        if let Some(n) = l.obs.get_mut(&key) {
            *n += 1;
        } else if l.obs.len() < MAX_OBSERVATIONS {
            l.obs.insert(key, 1);
        } else {
            l.dropped += 1;
        }
    }

    /// What `session` gathered so far; `finish` ends its learning. Waits (at most 2 s) until
    /// the event thread has drained what the kernel reported before this call.
    pub fn fetch(&self, session: &str, finish: bool, lost_now: u64) -> Result<Run, LearnError> {
        if !self.lock().sessions.contains_key(session) {
            return Err(LearnError::NotLearning(session.into()));
        }
        let start = self.epoch.load(Ordering::Acquire);
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.epoch.load(Ordering::Acquire) < start + 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut i = self.lock();
        let run = {
            let l = i.sessions.get(session).ok_or_else(|| LearnError::NotLearning(session.into()))?;
            Run {
                session: session.into(),
                command: l.command.clone(),
                lost_events: lost_now.saturating_sub(l.lost_at_start),
                dropped: l.dropped,
                calls: l.calls.clone(),
                started_unix_ms: l.started_unix_ms,
                vars: l.vars.clone(),
                observations: l.obs.iter().map(|(k, n)| k.clone().into_observation(*n)).collect(),
                ..Run::default()
            }
        };
        if finish {
            i.sessions.remove(session);
            i.ids.retain(|_, n| n != session);
            self.active.store(i.sessions.len(), Ordering::Release);
        }
        Ok(run)
    }
}

/// The kernel's lost-event counter now (0 when it cannot be read: then the fetch's answer
/// would understate loss, so that is logged).
fn lost_now(d: &Daemon) -> u64 {
    match d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner).counters() {
        Ok(c) => c.get(mcpguard_common::COUNTER_LOST as usize).copied().unwrap_or(0),
        Err(e) => {
            log::error!("learn: cannot read the lost-event counter: {e}");
            0
        }
    }
}

/// `learn_start`.
pub fn start(d: &Daemon, session: &str, vars: BTreeMap<String, String>) -> Result<Value, ProtoError> {
    d.learn.start(session, lost_now(d), vars).map_err(|e| ProtoError::new(ErrorCode::SessionExists, e.to_string()))?;
    log::info!("learning session {session}");
    Ok(json!({"session": session, "learning": true}))
}

/// `learn_call`.
pub fn call(d: &Daemon, c: crate::daemon::protocol::LearnCall) -> Result<Value, ProtoError> {
    let rec = CallRecord { call_id: c.call_id, tool: c.tool, arguments: c.arguments, paths: BTreeMap::new() };
    d.learn.call(&c.session, rec).map_err(|e| ProtoError::new(ErrorCode::UnknownSession, e.to_string()))?;
    Ok(json!({"session": c.session}))
}

/// `learn_fetch`.
pub fn fetch(d: &Daemon, session: &str, finish: bool) -> Result<Value, ProtoError> {
    let run = d
        .learn
        .fetch(session, finish, lost_now(d))
        .map_err(|e| ProtoError::new(ErrorCode::UnknownSession, e.to_string()))?;
    if finish {
        log::info!("learning session {session} finished: {} observation(s)", run.observations.len());
    }
    serde_json::to_value(&run)
        .map(|v| json!({"run": v}))
        .map_err(|e| ProtoError::new(ErrorCode::Internal, format!("encoding the observations: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::{Ended, GrantRecord, Session};
    use mcpguard_common::{
        ACCESS_READ, ACTION_AUDITED, HOOK_EXEC, HOOK_OPEN, REASON_ARGS_NOT_GRANTED, REASON_NOT_GRANTED,
    };

    fn grant(id: u64, tool: Option<&str>, call_id: Option<&str>) -> GrantRecord {
        GrantRecord {
            task: call_id.map(|c| format!("call:{c}")),
            tool: tool.map(Into::into),
            call_id: call_id.map(Into::into),
            ..GrantRecord::test(id, "p", crate::grant::policy::Mode::Audit)
        }
    }

    fn state(id: u64, name: &str) -> State {
        let mut st = State::default();
        st.insert_session(Session {
            name: name.into(),
            id,
            root_pid: 1,
            command: vec!["/bin/srv".into()],
            uid: 0,
            created_unix: 0,
            cgroup: None,
            sealed: true,
            write_ceiling: None,
            base: Some(grant(70, None, None)),
            task: Some(grant(71, Some("read_file"), Some("42"))),
            orchestrator: None,
            ended: Ended::default(),
            parent: None,
            binary_sha256: None,
        });
        st
    }

    fn event(session: u64, grant: u64, hook: u32, reason: u32, access: u32, path: &[&[u8]]) -> Event {
        // SAFETY: Event is plain old data; all-zero is valid.
        let mut ev: Event = unsafe { std::mem::zeroed() };
        (ev.session, ev.grant, ev.pid, ev.tgid, ev.dev, ev.ino) = (session, grant, 10, 9, 0x80_0001, 77);
        (ev.hook, ev.action, ev.reason, ev.access) = (hook, ACTION_AUDITED, reason, access);
        for (i, c) in path.iter().enumerate() {
            ev.path[i][..c.len()].copy_from_slice(c);
        }
        ev.path_depth = u32::try_from(path.len()).unwrap();
        ev
    }

    /// A fetch while something ticks like the event thread.
    fn fetch(l: &std::sync::Arc<Learner>, session: &str) -> Run {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t = {
            let (l, stop) = (l.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    l.tick();
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let r = l.fetch(session, true, 0).unwrap();
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        r
    }

    #[test]
    fn events_aggregate_per_call_argv_pairs_with_its_binary_and_ids_outlive_the_session() {
        let l = std::sync::Arc::new(Learner::default());
        let st = state(7, "s1");
        // Nothing learns yet: ignored.
        l.observe(&st, &event(7, 71, HOOK_OPEN, REASON_NOT_GRANTED, ACCESS_READ, &[b"a", b"/"]));
        l.start("s1", 0, BTreeMap::new()).unwrap();
        let open = event(7, 71, HOOK_OPEN, REASON_NOT_GRANTED, ACCESS_READ, &[b"data", b"srv", b"/"]);
        l.observe(&st, &open);
        l.observe(&st, &open);
        l.observe(&state(8, "other"), &event(8, 71, HOOK_OPEN, REASON_NOT_GRANTED, ACCESS_READ, &[b"x", b"/"]));
        l.observe(&st, &event(7, 70, HOOK_EXEC, REASON_ARGS_NOT_GRANTED, 0, &[b"git", b"bin", b"usr", b"/"]));
        let mut argv =
            event(7, 70, HOOK_EXEC, REASON_ARGS_NOT_GRANTED, mcpguard_common::EXEC_ARGV, &[b"/usr/bin/git\0status\0"]);
        argv.dev = 20;
        // Drained after the session left the table: still its own.
        l.observe(&State::default(), &argv);
        l.call(
            "s1",
            CallRecord { call_id: "42".into(), tool: "read_file".into(), arguments: json!({}), paths: BTreeMap::new() },
        )
        .unwrap();
        let run = fetch(&l, "s1");
        assert_eq!(run.command, ["/bin/srv"]);
        assert_eq!(run.calls.len(), 1);
        let o = &run.observations;
        assert_eq!(o.len(), 3, "{o:#?}");
        let read = o.iter().find(|x| x.hook == "open").unwrap();
        assert_eq!((read.path.as_deref(), read.count), (Some("/srv/data"), 2));
        assert_eq!((read.tool.as_deref(), read.call_id.as_deref()), (Some("read_file"), Some("42")));
        let line = o.iter().find(|x| x.argv.is_some()).unwrap();
        assert_eq!((line.path.as_deref(), line.argv.as_deref()), (Some("/usr/bin/git"), Some("/usr/bin/git status")));
        assert!(line.tool.is_none(), "under the baseline");
        assert!(run.complete());
    }

    #[test]
    fn start_twice_is_refused_and_unknown_fetch_names_the_session() {
        let l = Learner::default();
        l.start("s1", 5, BTreeMap::new()).unwrap();
        assert_eq!(l.start("s1", 5, BTreeMap::new()), Err(LearnError::AlreadyLearning("s1".into())));
        // No event thread here: the fetch waits its deadline at most.
        let run = l.fetch("s1", true, 7).unwrap();
        assert_eq!((run.lost_events, run.observations.len()), (2, 0));
        assert!(!run.complete(), "lost events make the run incomplete");
        let e = l.fetch("s1", false, 7).unwrap_err().to_string();
        assert!(e.contains("`s1`") && e.contains("not being learned"), "{e}");
        assert_eq!(l.active.load(Ordering::Acquire), 0);
    }
}
