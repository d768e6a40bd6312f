//! Decision events from the kernel, decoded for audit and subscribers.
use mcpguard_common::{
    action_name, hook_name, reason_name, Event, ACCESS_READ, ACCESS_WRITE, EVENT_PATH_TRUNCATED,
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
    pub dev: u32,
    pub ino: u64,
    /// Best-effort path (for display only; decisions are made on the object).
    pub path: Option<String>,
    pub path_truncated: bool,
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Decision {
    #[must_use]
    pub fn from_event(ev: &Event) -> Self {
        let truncated = ev.path_depth & EVENT_PATH_TRUNCATED != 0;
        let depth = (ev.path_depth & !EVENT_PATH_TRUNCATED) as usize;
        let path = (depth > 0).then(|| {
            let mut s = String::new();
            if truncated {
                s.push_str("...");
            }
            for comp in ev.path[..depth.min(ev.path.len())].iter().rev() {
                let name = cstr(comp);
                // Mount roots are reported as "/" components: the mountpoint carries the name.
                if name != "/" {
                    s.push('/');
                    s.push_str(&name);
                }
            }
            if s.is_empty() {
                s.push('/');
            }
            s
        });
        let mut access = String::new();
        let syscall = (ev.hook == mcpguard_common::HOOK_SYSCALL).then(|| mcpguard_common::guard_syscall_name(ev.access));
        if syscall.is_some() {
            // `access` carries the syscall number for this hook.
        } else if ev.access & ACCESS_READ != 0 {
            access.push('r');
        }
        if syscall.is_none() && ev.access & ACCESS_WRITE != 0 {
            access.push('w');
        }
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
            access,
            syscall,
            dev: ev.dev,
            ino: ev.ino,
            path,
            path_truncated: truncated,
        }
    }

    /// Decodes raw ring-buffer bytes; `None` if the record is too short.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < size_of::<Event>() {
            return None;
        }
        // SAFETY: Event is plain old data; the length was checked; read_unaligned copes with
        // any alignment of the ring-buffer record.
        let ev: Event = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
        Some(Self::from_event(&ev))
    }
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
