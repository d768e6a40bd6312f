//! Signals of the sessions mcpguard launches, decided by the daemon where no kernel hook can
//! refuse them before delivery (the kill backend).
//!
//! The launcher installs [`crate::launcher::seccomp::SignalFilter`] with `SECCOMP_FILTER_FLAG_NEW_LISTENER`
//! before the program's first instruction and names the listener in its registration; the daemon
//! takes the descriptor out of the launched process (`pidfd_getfd`, checked to be a seccomp
//! listener) and answers every `kill`, `tkill`, `tgkill`, `rt_sigqueueinfo` and
//! `rt_tgsigqueueinfo` of every process of the session (the filter is inherited and cannot be
//! removed): a target outside the session gets `EPERM` and never receives anything (the syscall
//! does not run); one inside is carried out by the kernel as asked
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). The decision is on register values (pids, the signal),
//! never on the sender's memory. Process groups (`kill(0, ..)`, `kill(-pgrp, ..)`) pass only when
//! every member is in the session; `kill(-1, ..)` never does. `pidfd_send_signal` is refused by
//! the filter itself with `ENOSYS` (see there).
//!
//! If the daemon is gone (restart), the kernel answers the session's signal syscalls with
//! `ENOSYS` from then on: fail closed, reported per session in `status` (`signals_supervised`).
use std::{
    collections::BTreeSet,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use mcpguard_common as c;

use crate::daemon::server::Daemon;

/// Whom a signal syscall addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A process (`kill(pid > 0)`, `rt_sigqueueinfo`).
    Process(i32),
    /// A thread (`tkill`, `tgkill`, `rt_tgsigqueueinfo`).
    Thread(i32),
    /// A process group; 0: the sender's own.
    Group(i32),
    /// `kill(-1, ..)`: every process the sender may signal.
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub target: Target,
    pub sig: i32,
}

/// The request of a signal syscall `nr` (this architecture's numbers) with `args`; `None` for
/// any other syscall (answered `EPERM`: the filter hands over nothing else).
#[must_use]
pub fn decode(nr: i64, args: &[u64; 6]) -> Option<Request> {
    // Register values are ints: the low 32 bits, sign-extended, as the kernel reads them.
    let int = |i: usize| args[i] as u32 as i32;
    let (target, sig) = match nr {
        libc::SYS_kill => {
            let pid = int(0);
            let t = match pid {
                -1 => Target::All,
                0 => Target::Group(0),
                p if p < 0 => Target::Group(p.checked_neg().unwrap_or(i32::MAX)),
                p => Target::Process(p),
            };
            (t, int(1))
        }
        libc::SYS_tkill => (Target::Thread(int(0)), int(1)),
        libc::SYS_tgkill => (Target::Thread(int(1)), int(2)),
        libc::SYS_rt_sigqueueinfo => (Target::Process(int(0)), int(1)),
        libc::SYS_rt_tgsigqueueinfo => (Target::Thread(int(1)), int(2)),
        _ => return None,
    };
    Some(Request { target, sig })
}

/// What a decision needs to know about the host.
pub trait Host {
    /// Thread group of task `tid` (`None`: no such task).
    fn tgid_of(&self, tid: i32) -> Option<u32>;
    /// Process group of process `pid`.
    fn pgrp_of(&self, pid: i32) -> Option<i32>;
    /// Processes (tgids) of process group `pgrp`.
    fn group_members(&self, pgrp: i32) -> Vec<u32>;
    /// True when process `tgid` is governed by the session.
    fn in_session(&self, tgid: u32) -> bool;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Carried out by the kernel as asked.
    Continue,
    /// The syscall fails with this errno; nothing is delivered.
    Errno(i32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub answer: Answer,
    /// Refused because it reaches outside the session (reported).
    pub outside: bool,
    /// The target's tgid (a group's first outside member; 0 for `-1` or none).
    pub target: u32,
}

/// Decides a signal request of task `sender` of a session.
pub fn decide(h: &impl Host, sender: i32, req: Request) -> Decision {
    let refuse = |target| Decision { answer: Answer::Errno(libc::EPERM), outside: true, target };
    let gone = Decision { answer: Answer::Errno(libc::ESRCH), outside: false, target: 0 };
    let one = |tgid: Option<u32>| match tgid {
        None => gone,
        Some(t) if h.in_session(t) => Decision { answer: Answer::Continue, outside: false, target: t },
        Some(t) => refuse(t),
    };
    match req.target {
        Target::All => refuse(0),
        Target::Process(p) | Target::Thread(p) => one(h.tgid_of(p)),
        Target::Group(g) => {
            let g = if g == 0 { h.tgid_of(sender).and_then(|t| h.pgrp_of(t as i32)) } else { Some(g) };
            let Some(g) = g else { return gone };
            let members = h.group_members(g);
            match members.iter().find(|m| !h.in_session(**m)) {
                Some(m) => refuse(*m),
                None if members.is_empty() => gone,
                None => Decision { answer: Answer::Continue, outside: false, target: members[0] },
            }
        }
    }
}

/// The host as the daemon sees it: `/proc`, and the kernel's process map for membership.
struct Live<'a> {
    d: &'a Daemon,
    session: u64,
}

fn status_field(pid: i32, key: &str) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok())
}

/// Process group (field 5) of a `/proc/PID/stat` line.
fn parse_pgrp(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(2)?.parse().ok()
}

impl Host for Live<'_> {
    fn tgid_of(&self, tid: i32) -> Option<u32> {
        if tid <= 0 {
            return None;
        }
        status_field(tid, "Tgid:")
    }
    fn pgrp_of(&self, pid: i32) -> Option<i32> {
        parse_pgrp(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }
    fn group_members(&self, pgrp: i32) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| i32::try_from(*p).ok().and_then(|p| self.pgrp_of(p)) == Some(pgrp))
            .collect()
    }
    fn in_session(&self, tgid: u32) -> bool {
        // The same process before and after the look (a pid reused meanwhile is not a member).
        let before = crate::kernel::procs::start_ticks(tgid).ok();
        let member = |t: u32| {
            self.d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner).process_session(t)
                == Some(self.session)
        };
        // A child of a member that has left the kernel's map is one of the session's exiting or
        // exited-but-unreaped children (every child of a governed process is governed from its
        // fork; the exit hook removes it before it is a zombie). Signalling it reaches nothing
        // outside the session (GitPython terminates its finished helpers).
        let child_of_member = || crate::kernel::procs::stat(tgid).is_ok_and(|(ppid, _)| member(ppid));
        let inside = member(tgid) || child_of_member();
        inside && before.is_some() && crate::kernel::procs::start_ticks(tgid).ok() == before
    }
}

/// The daemon's listeners, one per supervised session, served by one thread.
pub struct Supervisor {
    /// Listeners handed over and not yet picked up by the thread.
    incoming: Mutex<Vec<(u64, OwnedFd)>>,
    /// Sessions whose listener the thread serves (status).
    served: Mutex<BTreeSet<u64>>,
    /// Wakes the thread for a new listener (eventfd).
    wake: OwnedFd,
}

impl Supervisor {
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { incoming: Mutex::default(), served: Mutex::default(), wake })
    }

    /// Hands a session's listener to the thread.
    pub fn add(&self, session: u64, listener: OwnedFd) {
        self.incoming.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((session, listener));
        self.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(session);
        let one = 1u64;
        // SAFETY: 8-byte write to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// True while the daemon answers the signals of `session`.
    #[must_use]
    pub fn serves(&self, session: u64) -> bool {
        self.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&session)
    }
}

/// Takes the listener `fd` out of process `pid` (`pidfd_getfd`) and checks that it is a seccomp
/// listener.
pub fn take_listener(pid: u32, fd: u32) -> Result<OwnedFd, String> {
    // SAFETY: plain syscalls; descriptors owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(format!("pidfd_open({pid}): {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: as above.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(format!("pidfd_getfd({pid}, {fd}): {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptor.
    let got = unsafe { OwnedFd::from_raw_fd(got as i32) };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", got.as_raw_fd())).map_err(|e| e.to_string())?;
    if link.as_os_str() != "anon_inode:seccomp notify" {
        return Err(format!("descriptor {fd} of pid {pid} is {}, not a seccomp listener", link.display()));
    }
    Ok(got)
}

fn boot_ns() -> u64 {
    crate::daemon::handlers::boot_ns()
}

/// Serves every listener until `stop`.
pub fn run(d: &Arc<Daemon>, stop: &AtomicBool) {
    let sup = &d.signals;
    let mut watched: Vec<(u64, OwnedFd)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        watched.extend(sup.incoming.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..));
        let mut fds: Vec<libc::pollfd> = std::iter::once(sup.wake.as_raw_fd())
            .chain(watched.iter().map(|(_, f)| f.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        let timeout = i32::try_from(Duration::from_millis(500).as_millis()).unwrap_or(500);
        // SAFETY: valid pollfd array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n <= 0 {
            continue;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let mut v = 0u64;
            // SAFETY: 8-byte read from our eventfd.
            unsafe { libc::read(sup.wake.as_raw_fd(), (&raw mut v).cast(), 8) };
        }
        let mut gone = Vec::new();
        for (i, p) in fds.iter().enumerate().skip(1) {
            let (session, fd) = &watched[i - 1];
            if p.revents & libc::POLLIN != 0 {
                serve_one(d, *session, fd);
            } else if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                gone.push(i - 1);
            }
        }
        for i in gone.into_iter().rev() {
            let (session, _) = watched.remove(i);
            if !watched.iter().any(|(s, _)| *s == session) {
                sup.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&session);
            }
            log::debug!("session {session}: no process left with the signal filter");
        }
    }
}

/// `struct seccomp_notif_resp` flag: run the syscall as asked.
const USER_NOTIF_FLAG_CONTINUE: u32 = 1;

fn serve_one(d: &Daemon, session: u64, fd: &OwnedFd) {
    // SAFETY: all-zero is a valid seccomp_notif (the kernel requires it zeroed).
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: valid buffer for SECCOMP_IOCTL_NOTIF_RECV.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &raw mut n) } != 0 {
        return; // the sender is gone (ENOENT) or another reader took it
    }
    let sender = n.pid as i32;
    let native = mcpguard_common::native_audit_arch();
    let req = (Some(n.data.arch) == native).then(|| decode(i64::from(n.data.nr), &n.data.args)).flatten();
    let st = d.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner).session_state(session);
    let host = Live { d, session };
    let decision = match (req, st) {
        (Some(r), Some(_)) => decide(&host, sender, r),
        // Not a signal syscall, or the session is over: nothing reaches anyone.
        _ => Decision { answer: Answer::Errno(libc::EPERM), outside: true, target: 0 },
    };
    let mode = st.map_or(c::MODE_DENY, |s| s.mode);
    let answer = if decision.outside && mode == c::MODE_AUDIT { Answer::Continue } else { decision.answer };
    let resp = libc::seccomp_notif_resp {
        id: n.id,
        val: 0,
        error: match answer {
            Answer::Continue => 0,
            Answer::Errno(e) => -e,
        },
        flags: if answer == Answer::Continue { USER_NOTIF_FLAG_CONTINUE } else { 0 },
    };
    // SAFETY: valid response for SECCOMP_IOCTL_NOTIF_SEND.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &raw const resp) };
    if !decision.outside {
        return;
    }
    let tgid = host.tgid_of(sender).unwrap_or(0);
    let action = match mode {
        c::MODE_AUDIT => c::ACTION_AUDITED,
        c::MODE_KILL => c::ACTION_KILLED,
        _ => c::ACTION_DENIED,
    };
    if action == c::ACTION_KILLED && tgid != 0 && host.in_session(tgid) {
        // Kill mode, as on the LSM backend: refused, and the sender is stopped.
        // SAFETY: plain syscall on a process of the session (checked just above).
        unsafe { libc::kill(tgid as i32, libc::SIGKILL) };
    }
    let sig = req.map_or(0, |r| r.sig);
    let grant = st.map_or(0, |s| if s.task_grant != 0 { s.task_grant } else { s.base_grant });
    let mut ev = c::Event {
        ts_ns: boot_ns(),
        session,
        grant,
        ino: u64::from(decision.target),
        pid: n.pid,
        tgid,
        hook: c::HOOK_SIGNAL,
        action,
        reason: if st.is_some() && req.is_some() { c::REASON_SIGNAL_OUTSIDE_SESSION } else { c::REASON_NO_GRANT },
        access: sig as u32,
        dev: 0,
        path_depth: 0,
        comm: [0; 16],
        path: [[0; c::EVENT_NAME_LEN]; c::EVENT_PATH_COMPONENTS],
    };
    if let Ok(comm) = std::fs::read(format!("/proc/{sender}/comm")) {
        let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
        let k = comm.len().min(ev.comm.len() - 1);
        ev.comm[..k].copy_from_slice(&comm[..k]);
    }
    d.metrics
        .decisions
        .with_label_values(&[c::action_name(ev.action), c::hook_name(ev.hook), c::reason_name(ev.reason)])
        .inc();
    d.inject_event(ev);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// tid -> (tgid, pgrp); members of the session.
    struct Fake {
        tasks: BTreeMap<i32, (u32, i32)>,
        session: Vec<u32>,
    }

    impl Host for Fake {
        fn tgid_of(&self, tid: i32) -> Option<u32> {
            self.tasks.get(&tid).map(|t| t.0)
        }
        fn pgrp_of(&self, pid: i32) -> Option<i32> {
            self.tasks.get(&pid).map(|t| t.1)
        }
        fn group_members(&self, pgrp: i32) -> Vec<u32> {
            self.tasks.iter().filter(|(tid, t)| t.1 == pgrp && **tid == t.0 as i32).map(|(_, t)| t.0).collect()
        }
        fn in_session(&self, tgid: u32) -> bool {
            self.session.contains(&tgid)
        }
    }

    fn host() -> Fake {
        // 100 (server, group 100) with thread 101 and child 102 (group 100); helper 103 in its own
        // group 103; outsider 200 (group 200), the daemon 300 (group 300); 400 in group 100 is
        // outside (joined the server's group from elsewhere).
        let tasks = [(100, (100, 100)), (101, (100, 100)), (102, (102, 100)), (103, (103, 103))];
        let mut tasks: BTreeMap<i32, (u32, i32)> = tasks.into_iter().collect();
        tasks.extend([(200, (200, 200)), (300, (300, 300))]);
        Fake { tasks, session: vec![100, 102, 103] }
    }

    fn req(nr: i64, args: [u64; 6]) -> Request {
        decode(nr, &args).unwrap()
    }

    #[test]
    fn register_values_decode_to_targets() {
        let neg = |v: i32| u64::from(v as u32);
        assert_eq!(req(libc::SYS_kill, [200, 15, 0, 0, 0, 0]), Request { target: Target::Process(200), sig: 15 });
        assert_eq!(req(libc::SYS_kill, [0, 9, 0, 0, 0, 0]).target, Target::Group(0));
        assert_eq!(req(libc::SYS_kill, [neg(-1), 9, 0, 0, 0, 0]).target, Target::All);
        assert_eq!(req(libc::SYS_kill, [neg(-200), 9, 0, 0, 0, 0]).target, Target::Group(200));
        // Only the low 32 bits count (an int argument), whatever the upper half holds.
        assert_eq!(req(libc::SYS_kill, [0xffff_ffff_0000_00c8, 0, 0, 0, 0, 0]).target, Target::Process(200));
        assert_eq!(req(libc::SYS_kill, [u64::from(i32::MIN as u32), 9, 0, 0, 0, 0]).target, Target::Group(i32::MAX));
        assert_eq!(req(libc::SYS_tkill, [101, 10, 0, 0, 0, 0]), Request { target: Target::Thread(101), sig: 10 });
        assert_eq!(req(libc::SYS_tgkill, [300, 300, 19, 0, 0, 0]), Request { target: Target::Thread(300), sig: 19 });
        assert_eq!(req(libc::SYS_rt_sigqueueinfo, [200, 34, 0x7ff0, 0, 0, 0]).target, Target::Process(200));
        assert_eq!(req(libc::SYS_rt_tgsigqueueinfo, [1, 200, 34, 0x7ff0, 0, 0]).target, Target::Thread(200));
        assert_eq!(decode(libc::SYS_getpid, &[0; 6]), None);
    }

    #[test]
    fn only_the_session_is_reachable() {
        let h = host();
        let d = |t, sig| decide(&h, 101, Request { target: t, sig });
        let cont = |t| Decision { answer: Answer::Continue, outside: false, target: t };
        let eperm = |t| Decision { answer: Answer::Errno(libc::EPERM), outside: true, target: t };
        assert_eq!(d(Target::Process(102), 15), cont(102), "own child");
        assert_eq!(d(Target::Thread(101), 10), cont(100), "own thread");
        assert_eq!(d(Target::Process(103), 0), cont(103), "probe of a helper");
        assert_eq!(d(Target::Process(200), 15), eperm(200), "outsider");
        assert_eq!(d(Target::Process(300), 19), eperm(300), "the daemon: SIGSTOP");
        assert_eq!(d(Target::Thread(300), 9), eperm(300));
        assert_eq!(d(Target::Process(200), 0), eperm(200), "a probe outside is refused too");
        assert_eq!(d(Target::All, 9), eperm(0));
        assert_eq!(d(Target::Process(999), 9).answer, Answer::Errno(libc::ESRCH));
        assert_eq!(d(Target::Group(0), 15), cont(100), "own group, all inside");
        assert_eq!(d(Target::Group(103), 15), cont(103));
        assert_eq!(d(Target::Group(200), 15), eperm(200), "another group");
        assert_eq!(d(Target::Group(555), 15).answer, Answer::Errno(libc::ESRCH), "empty group");
        let mut h = host();
        h.tasks.insert(400, (400, 100));
        assert_eq!(decide(&h, 101, Request { target: Target::Group(0), sig: 15 }), eperm(400), "one outsider in it");
    }

    #[test]
    fn pgrp_from_stat() {
        assert_eq!(parse_pgrp("42 (a) b) S 1 77 77 0 -1"), Some(77));
        assert_eq!(parse_pgrp("42 (sh) S 1 9"), Some(9));
        assert_eq!(parse_pgrp("garbage"), None);
    }
}
