//! Audit log: one JSON object per kernel decision, joined with the session table.
//! Field names are stable (documented in README "Audit log").
//!
//! Lines are formatted straight from the kernel's record into one reusable buffer (no allocation
//! per event once warm) and written in batches: the event thread flushes whenever it has drained
//! the ring buffer, when the batch grows past [`FLUSH_BYTES`], and before it exits.
use std::io::Write as _;

use mcpguard_common::{Event, action_name, hook_name, reason_name};
use serde::Serialize;

use crate::{daemon::state::State, kernel::events};

/// Unflushed audit bytes that trigger a write even while events keep coming.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// Converts the kernel's CLOCK_BOOTTIME stamps to wall-clock time. Taken once per batch: the
/// two clocks move together between batches.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    unix_minus_boot_ns: i128,
}

impl Clock {
    #[must_use]
    pub fn now() -> Self {
        let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
            .unwrap_or(0);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0));
        Self { unix_minus_boot_ns: unix - boot }
    }

    /// The wall-clock time of a kernel stamp.
    #[must_use]
    pub fn at(self, ts_boot_ns: u64) -> jiff::Timestamp {
        jiff::Timestamp::from_nanosecond(self.unix_minus_boot_ns + i128::from(ts_boot_ns))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

/// `,"key":value` (no comma for the first field). Values go through serde_json, so escaping and
/// number formatting are exactly serde_json's.
fn field<T: Serialize + ?Sized>(out: &mut Vec<u8>, key: &str, v: &T) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    // Writing to a Vec cannot fail, and these values always serialise.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Version of the audit line format, the first key of every line (`"v"`). 3: `ts` is an RFC 3339
/// UTC timestamp with microseconds (2 had fractional Unix seconds). 2: each key once (1 repeated
/// `session_id` and `grant_id`), `signal`/`target_pid`, path-operation hooks.
pub const AUDIT_FORMAT: u32 = 3;

/// `,"ts":"2026-12-02T10:41:03.123456Z"`, formatted straight into the line.
fn timestamp_field(out: &mut Vec<u8>, ts: jiff::Timestamp) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail; RFC 3339 needs no JSON escaping.
    let _ = write!(out, ",\"ts\":\"{ts:.6}\"");
}

/// Appends the audit JSON object for one kernel record (no newline) to `out`. `scratch` is a
/// reusable buffer for the path. Fields, in order: `v`, `ts`, the session/grant join
/// (`session`, `session_id`, `task`, `grant_id`, `policy`, `tool`, `call_id`, `command`), the
/// daemon's `environment` and the grant's declared `labels`, then
/// the decision's fields as [`events::Decision`] names them, each key once.
pub fn format_event(
    out: &mut Vec<u8>,
    scratch: &mut String,
    state: &State,
    ev: &Event,
    ts: jiff::Timestamp,
    environment: Option<&str>,
) {
    let session = state.session_by_id(ev.session);
    // The grant the kernel decided under.
    let grant = session.and_then(|s| s.grant_names(ev.grant));
    out.push(b'{');
    field(out, "v", &AUDIT_FORMAT);
    timestamp_field(out, ts);
    field(out, "session", &session.map(|s| s.name.as_str()));
    field(out, "session_id", &ev.session);
    field(out, "task", &grant.as_ref().and_then(|g| g.task));
    field(out, "grant_id", &ev.grant);
    field(out, "policy", &grant.as_ref().map(|g| g.policy));
    field(out, "tool", &grant.as_ref().and_then(|g| g.tool));
    field(out, "call_id", &grant.as_ref().and_then(|g| g.call_id));
    field(out, "command", &session.map(|s| s.command.as_slice()));
    field(out, "environment", &environment);
    field(out, "labels", &grant.as_ref().map_or(&[][..], |g| g.labels));
    // The sessions that delegated to this one, nearest first (written as walked: no allocation).
    field(out, "delegated_by", &Ancestors(state, session.map_or("", |s| s.name.as_str())));
    field(out, "ts_boot_ns", &ev.ts_ns);
    field(out, "pid", &ev.pid);
    field(out, "tgid", &ev.tgid);
    field(out, "comm", &*String::from_utf8_lossy(events::cbytes(&ev.comm)));
    field(out, "hook", hook_name(ev.hook));
    field(out, "action", action_name(ev.action));
    field(out, "reason", reason_name(ev.reason));
    field(out, "access", events::access_str(ev));
    if let Some(sc) = events::syscall_name(ev) {
        field(out, "syscall", sc);
    }
    if let Some((signal, target)) = events::signal_fields(ev) {
        field(out, "signal", &signal);
        field(out, "target_pid", &target);
    }
    if let Some(net) = events::net_field(ev) {
        field(out, "net", &net);
    }
    if let Some((argv, truncated)) = events::argv_field(ev) {
        field(out, "argv", &argv);
        field(out, "argv_truncated", &truncated);
    }
    field(out, "dev", &events::object_dev(ev));
    field(out, "ino", &events::object_ino(ev));
    scratch.clear();
    if events::write_path(ev, scratch) {
        field(out, "path", scratch.as_str());
    } else {
        field(out, "path", &None::<&str>);
    }
    field(out, "path_truncated", &events::path_parts(ev).1);
    out.push(b'}');
}

/// `delegated_by`: a session's ancestors as a JSON array, serialised from the walk itself.
struct Ancestors<'a>(&'a State, &'a str);

impl Serialize for Ancestors<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(crate::daemon::delegation::ancestors(self.0, self.1))
    }
}

/// Parses one JSON object line, refusing a key that appears twice (serde_json keeps the last
/// one silently): what audit consumers and the tests hold the format to.
pub fn parse_strict(line: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    struct Strict(serde_json::Map<String, serde_json::Value>);
    impl<'de> serde::Deserialize<'de> for Strict {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Strict;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Strict, A::Error> {
                    let mut out = serde_json::Map::new();
                    while let Some((k, v)) = m.next_entry::<String, serde_json::Value>()? {
                        if out.contains_key(&k) {
                            return Err(serde::de::Error::custom(format!("duplicate key `{k}`")));
                        }
                        out.insert(k, v);
                    }
                    Ok(Strict(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Strict>(line).map(|s| s.0).map_err(|e| e.to_string())
}

enum Out {
    Stdout,
    File(std::fs::File),
}

/// Where audit lines go (a file, appended, or stdout), with the lines not yet written.
pub struct Sink {
    out: Out,
    buf: Vec<u8>,
    lines: u64,
}

impl Sink {
    pub fn open(spec: &str) -> std::io::Result<Self> {
        let out = if spec == "-" {
            Out::Stdout
        } else {
            let p = std::path::Path::new(spec);
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            Out::File(std::fs::OpenOptions::new().create(true).append(true).open(p)?)
        };
        Ok(Self { out, buf: Vec::with_capacity(FLUSH_BYTES + 4096), lines: 0 })
    }

    /// Queues one line: `fill` appends it (without newline) to the batch. Returns the line.
    pub fn push(&mut self, fill: impl FnOnce(&mut Vec<u8>)) -> &[u8] {
        let start = self.buf.len();
        fill(&mut self.buf);
        self.buf.push(b'\n');
        self.lines += 1;
        &self.buf[start..self.buf.len() - 1]
    }

    /// Bytes queued and not yet written.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Writes the queued lines. On failure the batch is dropped and the number of lines it held
    /// is returned with the error (they are counted as audit write errors by the caller).
    pub fn flush(&mut self) -> Result<(), (u64, std::io::Error)> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = match &mut self.out {
            Out::Stdout => {
                let mut so = std::io::stdout().lock();
                so.write_all(&self.buf).and_then(|()| so.flush())
            }
            Out::File(f) => f.write_all(&self.buf),
        };
        let lines = std::mem::take(&mut self.lines);
        self.buf.clear();
        if self.buf.capacity() > 4 * FLUSH_BYTES {
            self.buf.shrink_to(FLUSH_BYTES + 4096);
        }
        r.map_err(|e| (lines, e))
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
