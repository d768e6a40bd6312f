//! Decision events from the kernel, decoded for audit and subscribers.
//!
//! Records are variable length: the fixed part of [`Event`] ([`EVENT_HEADER_BYTES`]) followed by
//! as many path components as the kernel filled in (see `ebpf/src/report.rs`).
use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use mcpguard_common::{
    ACCESS_READ, ACCESS_WRITE, EVENT_HEADER_BYTES, EVENT_NAME_LEN, EVENT_PATH_COMPONENTS, EVENT_PATH_TRUNCATED, Event,
    action_name, hook_name, reason_name,
};
use serde::Serialize;

/// One kernel decision, decoded. Field names are part of the audit log format (stable).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Decision {
    /// CLOCK_BOOTTIME nanoseconds.
    pub ts_boot_ns: u64,
    pub session_id: u64,
    pub grant_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub hook: &'static str,
    pub action: &'static str,
    pub reason: &'static str,
    /// "r", "w", "rw" for opens; empty otherwise.
    pub access: String,
    /// For hook "syscall": which guarded syscall was attempted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<&'static str>,
    /// For hook "signal": the signal and the tgid of the process it was sent to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_pid: Option<u32>,
    /// For network hooks: what was reached (`tcp 127.0.0.1:8080`, `udp [::1]:53`,
    /// `unix @name`, `unix /run/x.sock` when decided by name; a Unix socket decided by its object
    /// has `unix` here and its path in `path`), or the socket asked for (`socket family=2 type=3
    /// protocol=1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    pub dev: u32,
    pub ino: u64,
    /// Best-effort path (for display only; decisions are made on the object).
    pub path: Option<String>,
    pub path_truncated: bool,
    /// An argv record: the refused command line (space-separated) and whether it was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv_truncated: Option<bool>,
}

/// The bytes of a NUL-terminated field, without the NUL.
#[must_use]
pub fn cbytes(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

fn cstr(b: &[u8]) -> String {
    String::from_utf8_lossy(cbytes(b)).into_owned()
}

/// Number of path components in the event and whether the path was truncated.
#[must_use]
pub fn path_parts(ev: &Event) -> (usize, bool) {
    let truncated = ev.path_depth & EVENT_PATH_TRUNCATED != 0;
    let depth = (ev.path_depth & !EVENT_PATH_TRUNCATED) as usize;
    (depth.min(ev.path.len()), truncated)
}

/// Appends the display path (root first) to `out`; `false` (nothing appended) when the event
/// carries no path.
pub fn write_path(ev: &Event, out: &mut String) -> bool {
    if carries_addr(ev) {
        return false;
    }
    let (depth, truncated) = path_parts(ev);
    if depth == 0 {
        return false;
    }
    let start = out.len();
    if truncated {
        out.push_str("...");
    }
    for comp in ev.path[..depth].iter().rev() {
        let name = String::from_utf8_lossy(cbytes(comp));
        // Mount roots are reported as "/" components: the mountpoint carries the name.
        if name != "/" {
            out.push('/');
            out.push_str(&name);
        }
    }
    if out.len() == start {
        out.push('/');
    }
    true
}

fn is_net_hook(hook: u32) -> bool {
    matches!(hook, mcpguard_common::HOOK_CONNECT | mcpguard_common::HOOK_SENDMSG | mcpguard_common::HOOK_BIND)
}

/// The event's path slots hold an address or socket name, not a path.
fn carries_addr(ev: &Event) -> bool {
    (is_net_hook(ev.hook) && ev.access != mcpguard_common::NET_UNIX) || is_argv(ev)
}

/// A record carrying a refused command line (it follows the exec event it belongs to).
fn is_argv(ev: &Event) -> bool {
    ev.hook == mcpguard_common::HOOK_EXEC && ev.access == mcpguard_common::EXEC_ARGV
}

/// The refused command line of an argv record (arguments separated by spaces, as far as it
/// was kept) and whether it was cut short.
#[must_use]
pub fn argv_field(ev: &Event) -> Option<(String, bool)> {
    if !is_argv(ev) {
        return None;
    }
    let (depth, _) = path_parts(ev);
    let whole = ev.dev as usize;
    let kept = whole.min(depth * EVENT_NAME_LEN).min(mcpguard_common::EXEC_ARGV_BYTES);
    let bytes: Vec<u8> = ev.path.iter().flatten().copied().take(kept).collect();
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
    let text = bytes.split(|b| *b == 0).map(String::from_utf8_lossy).collect::<Vec<_>>().join(" ");
    Some((text, whole > kept))
}

/// For network hooks, what was reached (see [`Decision::net`]).
#[must_use]
pub fn net_field(ev: &Event) -> Option<String> {
    use mcpguard_common::{HOOK_SOCKET, NET_CONNECT_TCP, NET_LISTEN_TCP, NET_UNIX, NET_UNIX_NAME, NetAddr};
    if ev.hook == HOOK_SOCKET {
        return Some(format!("socket family={} type={} protocol={}", ev.access >> 16, ev.access & 0xffff, ev.ino));
    }
    if !is_net_hook(ev.hook) {
        return None;
    }
    let (depth, _) = path_parts(ev);
    match ev.access {
        NET_UNIX => Some("unix".into()),
        NET_UNIX_NAME => {
            let len = (ev.dev as usize).min(depth * EVENT_NAME_LEN);
            let bytes: Vec<u8> = ev.path.iter().flatten().copied().take(len).collect();
            Some(match bytes.split_first() {
                Some((0, name)) => format!("unix @{}", String::from_utf8_lossy(name)),
                _ => format!("unix {}", String::from_utf8_lossy(cbytes(&bytes))),
            })
        }
        kind => {
            let proto = if kind == NET_CONNECT_TCP || kind == NET_LISTEN_TCP { "tcp" } else { "udp" };
            if depth == 0 {
                return Some(proto.into());
            }
            // SAFETY: NetAddr is one path slot of plain bytes (asserted in common).
            let a: NetAddr = unsafe { std::mem::transmute::<[u8; EVENT_NAME_LEN], NetAddr>(ev.path[0]) };
            let ip = std::net::Ipv6Addr::from(a.addr);
            let shown = crate::grant::net::display_ip(ip);
            Some(if ip.to_ipv4_mapped().is_some() {
                format!("{proto} {shown}:{}", a.port)
            } else {
                format!("{proto} [{shown}]:{}", a.port)
            })
        }
    }
}

/// "r", "w", "rw" for opens; empty for other hooks (`access` then carries a syscall or signal
/// number).
#[must_use]
pub fn access_str(ev: &Event) -> &'static str {
    if ev.hook == mcpguard_common::HOOK_SYSCALL
        || ev.hook == mcpguard_common::HOOK_SIGNAL
        || ev.hook == mcpguard_common::HOOK_SOCKET
        || is_net_hook(ev.hook)
    {
        return "";
    }
    let meta = ev.access & mcpguard_common::ACCESS_METADATA != 0;
    match (ev.access & ACCESS_READ != 0, ev.access & ACCESS_WRITE != 0, meta) {
        (true, true, _) => "rw",
        (true, false, _) => "r",
        (false, true, true) => "wm",
        (false, true, false) => "w",
        (false, false, _) => "",
    }
}

/// For hook "syscall": which guarded syscall was attempted.
#[must_use]
pub fn syscall_name(ev: &Event) -> Option<&'static str> {
    (ev.hook == mcpguard_common::HOOK_SYSCALL).then(|| mcpguard_common::guard_syscall_name(ev.access))
}

/// For hook "signal": (signal, target tgid); the kernel puts them in `access` and `ino`.
#[must_use]
pub fn signal_fields(ev: &Event) -> Option<(u32, u32)> {
    (ev.hook == mcpguard_common::HOOK_SIGNAL).then(|| (ev.access, u32::try_from(ev.ino).unwrap_or(u32::MAX)))
}

/// The object's inode number (0 for a signal, whose `ino` carries the target, and for network
/// events decided by address or name).
#[must_use]
pub fn object_ino(ev: &Event) -> u64 {
    if ev.hook == mcpguard_common::HOOK_SIGNAL || ev.hook == mcpguard_common::HOOK_SOCKET || carries_addr(ev) {
        0
    } else {
        ev.ino
    }
}

/// The object's device (0 where [`object_ino`] is 0: `dev` then carries a name's length).
#[must_use]
pub fn object_dev(ev: &Event) -> u32 {
    if object_ino(ev) == 0 && (carries_addr(ev) || ev.hook == mcpguard_common::HOOK_SOCKET) { 0 } else { ev.dev }
}

/// Copies one ring-buffer record into an [`Event`]; `None` if it is shorter than the fixed part.
/// Components the record does not hold are cut off and the path is marked truncated.
#[must_use]
pub fn event_from_bytes(b: &[u8]) -> Option<Event> {
    if b.len() < EVENT_HEADER_BYTES {
        return None;
    }
    // SAFETY: Event is plain old data; all-zero is valid.
    let mut ev: Event = unsafe { std::mem::zeroed() };
    let n = b.len().min(size_of::<Event>());
    // SAFETY: `n` bytes fit in both; byte copy, so the record's alignment does not matter.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), (&raw mut ev).cast::<u8>(), n) };
    let present = (n - EVENT_HEADER_BYTES) / EVENT_NAME_LEN;
    let (depth, _) = path_parts(&ev);
    if depth > present.min(EVENT_PATH_COMPONENTS) {
        ev.path_depth = present as u32 | EVENT_PATH_TRUNCATED;
    }
    Some(ev)
}

impl Decision {
    #[must_use]
    pub fn from_event(ev: &Event) -> Self {
        let mut path = String::new();
        let has_path = write_path(ev, &mut path);
        Self {
            ts_boot_ns: ev.ts_ns,
            session_id: ev.session,
            grant_id: ev.grant,
            pid: ev.pid,
            tgid: ev.tgid,
            comm: cstr(&ev.comm),
            hook: hook_name(ev.hook),
            action: action_name(ev.action),
            reason: reason_name(ev.reason),
            access: access_str(ev).to_string(),
            syscall: syscall_name(ev),
            signal: signal_fields(ev).map(|(s, _)| s),
            target_pid: signal_fields(ev).map(|(_, t)| t),
            net: net_field(ev),
            dev: object_dev(ev),
            ino: object_ino(ev),
            path: has_path.then_some(path),
            path_truncated: path_parts(ev).1,
            argv: argv_field(ev).map(|(a, _)| a),
            argv_truncated: argv_field(ev).map(|(_, t)| t),
        }
    }

    /// Decodes raw ring-buffer bytes; `None` if the record is too short.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        event_from_bytes(b).map(|ev| Self::from_event(&ev))
    }
}

/// Hands up to `max` records now in the ring buffer to `f`, in order, without waiting; returns
/// how many records were consumed (a record too short to decode is skipped).
pub fn drain(rb: &mut RingBuf<MapData>, max: usize, mut f: impl FnMut(&Event)) -> usize {
    let mut n = 0;
    while n < max {
        let Some(item) = rb.next() else { break };
        n += 1;
        if let Some(ev) = event_from_bytes(&item) {
            drop(item); // hand the space back to the kernel before the (slower) consumer runs
            f(&ev);
        }
    }
    n
}

/// Waits until the ring buffer has data or `timeout` passed. The kernel programs do not wake the
/// reader for every record (see `ebpf/src/report.rs`), so a reader must not wait longer than
/// [`mcpguard_common::EVENTS_POLL_MS`] between looks.
pub fn wait(rb: &RingBuf<MapData>, timeout: Duration) {
    let mut pfd = libc::pollfd { fd: rb.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut pfd, 1, ms) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpguard_common::{ACTION_KILLED, HOOK_OPEN, REASON_NOT_GRANTED};

    fn blank() -> Event {
        // SAFETY: Event is plain old data; all-zero is valid.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn decodes_path_leaf_first() {
        let mut ev = blank();
        ev.hook = HOOK_OPEN;
        ev.action = ACTION_KILLED;
        ev.reason = REASON_NOT_GRANTED;
        ev.access = ACCESS_READ | ACCESS_WRITE;
        for (i, c) in ["passwd", "etc", "/"].iter().enumerate() {
            ev.path[i][..c.len()].copy_from_slice(c.as_bytes());
        }
        ev.path_depth = 3;
        ev.comm[..3].copy_from_slice(b"cat");
        let d = Decision::from_event(&ev);
        assert_eq!(d.path.as_deref(), Some("/etc/passwd"));
        assert_eq!((d.hook, d.action, d.reason), ("open", "killed", "not_granted"));
        assert_eq!(d.access, "rw");
        assert_eq!(d.comm, "cat");
        ev.path_depth = 2 | EVENT_PATH_TRUNCATED;
        assert_eq!(Decision::from_event(&ev).path.as_deref(), Some(".../etc/passwd"));
    }

    #[test]
    fn short_records_are_rejected() {
        assert!(Decision::from_bytes(&[0u8; 10]).is_none());
    }
}
