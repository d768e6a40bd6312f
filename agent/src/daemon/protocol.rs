//! Control-socket protocol, version 1: newline-delimited JSON over a Unix socket.
//!
//! Each request is one JSON object on one line and gets exactly one response line:
//!
//! ```text
//! → {"v":1,"id":7,"op":"grant","session":"s1","task":"t1","policy":"git","vars":{"repo":"/srv/r"}}
//! ← {"v":1,"id":7,"ok":true, ...payload}
//! ← {"v":1,"id":7,"ok":false,"error":{"code":"policy_error","message":"..."}}
//! ```
//!
//! Unknown fields are rejected at every level (`unknown_field`). After a successful
//! `subscribe` the connection streams event lines instead of further responses.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::grant::duration::{DurationError, parse_duration};
use crate::grant::policy::{ExecRule, Mode, PolicyError};

pub const PROTOCOL_VERSION: u32 = 1;
/// Longest accepted request line in bytes, excluding the trailing newline.
pub const MAX_LINE: usize = 64 * 1024;

/// Stable, machine-readable error codes (serialised in snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnknownField,
    BadRequest,
    UnsupportedVersion,
    TooLarge,
    Unauthorized,
    UnknownSession,
    SessionExists,
    PolicyError,
    BinaryMissing,
    DigestMismatch,
    BadDuration,
    TtlTooLong,
    /// A grant writes where the session's launcher-applied write ceiling forbids changes.
    OutsideCeiling,
    /// The policy is for other environments than this daemon's.
    WrongEnvironment,
    /// The grant names a labelled path its policy does not declare the label of.
    LabelNotDeclared,
    KernelError,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::SessionExists => "session_exists",
            ErrorCode::PolicyError => "policy_error",
            ErrorCode::BinaryMissing => "binary_missing",
            ErrorCode::DigestMismatch => "digest_mismatch",
            ErrorCode::BadDuration => "bad_duration",
            ErrorCode::TtlTooLong => "ttl_too_long",
            ErrorCode::OutsideCeiling => "outside_ceiling",
            ErrorCode::WrongEnvironment => "wrong_environment",
            ErrorCode::LabelNotDeclared => "label_not_declared",
            ErrorCode::KernelError => "kernel_error",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that could not be accepted. `id` is the client's correlation id when it
/// could be recovered from the request, so the error response can echo it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    pub code: ErrorCode,
    pub message: String,
    pub id: Option<u64>,
}

/// Alias used by [`Op::validate`].
pub type ProtocolError = ProtoError;

impl ProtoError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtoError { code, message: message.into(), id: None }
    }

    pub fn with_id(mut self, id: Option<u64>) -> Self {
        self.id = id;
        self
    }

    /// The error response line for this error.
    pub fn to_response(&self) -> Response {
        Response::err(self.id, self.code, self.message.clone())
    }
}

impl From<PolicyError> for ProtoError {
    fn from(e: PolicyError) -> Self {
        ProtoError::new(ErrorCode::PolicyError, e.to_string())
    }
}

impl From<DurationError> for ProtoError {
    fn from(e: DurationError) -> Self {
        ProtoError::new(ErrorCode::BadDuration, e.to_string())
    }
}

/// An ad-hoc grant sent instead of a policy name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineGrant {
    #[serde(default)]
    pub exec: Vec<ExecRule>,
    #[serde(default)]
    pub read: Vec<PathBuf>,
    #[serde(default)]
    pub write: Vec<PathBuf>,
    /// Paths writable with mode and owner changes (`metadata = true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<PathBuf>,
    /// Network targets: `tcp://HOST:PORT`, `udp://HOST:PORT`, `unix:/path`, `unix:@name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect: Vec<String>,
    /// Listen addresses: `tcp://ADDR:PORT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<String>,
}

/// `register`: a wrapper announces an MCP server process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub session: String,
    pub pid: u32,
    pub command: Vec<String>,
    /// Baseline policy (name or file) always granted to the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// Track the session by cgroup rather than by process tree.
    #[serde(default)]
    pub cgroup: bool,
    /// The launcher installs mcpguard's seccomp guard filter (`seccomp.rs`) in `pid` before it
    /// executes anything: every process of the session refuses the guard syscalls itself, and
    /// the kernel's guard-syscall tracepoints are not needed for it (`SESSION_SEALED`). Refused
    /// with `cgroup` (a process moved into the cgroup later carries no filter).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
    /// The launcher confines the session's path operations (create, remove, rename, truncate)
    /// with a Landlock write ceiling (`landlock.rs`): these roots, plus the baseline's write
    /// paths, which the daemon adds; the response's `write_ceiling` is the ceiling to apply.
    /// `None`: not confined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_ceiling: Option<Vec<PathBuf>>,
    /// The launcher installed mcpguard's seccomp signal filter (`seccomp::SignalFilter`) in
    /// `pid`, whose listener is this descriptor number in `pid`: the daemon takes it and decides
    /// the session's signals (`signals.rs`; the kill backend, `channels.signal` = `launcher`).
    /// Needs `sealed`; the registration fails if the listener cannot be taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_notifier: Option<u32>,
    /// The session this one is delegated from: its grants are always within the parent's
    /// (`delegation.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// What a launcher reads from a `status` answer (the rest of it is for operators).
#[derive(Debug, Deserialize)]
pub struct StatusView {
    /// What each channel of reach gets on this host (`kernel::backend::Backend::channels`).
    pub channels: BTreeMap<String, String>,
    pub sessions: Vec<SessionView>,
    /// Where the sessions' token files are (`TOKEN_DIR/SESSION/token`).
    #[serde(default)]
    pub token_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Deserialize)]
pub struct SessionView {
    pub name: String,
    /// The session's governed processes.
    #[serde(default)]
    pub processes: Vec<u32>,
}

impl Register {
    /// The registration of a program `mcpguard exec` launches (and of the MCP proxy's server):
    /// a sealed session (the launcher's seccomp filter goes in before the program's first
    /// instruction) under `baseline`, no ceiling or signal listener yet.
    #[must_use]
    pub fn launched(
        session: String,
        pid: u32,
        command: Vec<String>,
        baseline: String,
        vars: BTreeMap<String, String>,
    ) -> Self {
        Self {
            session,
            pid,
            command,
            baseline: Some(baseline),
            vars,
            cgroup: false,
            sealed: true,
            write_ceiling: None,
            signal_notifier: None,
            parent: None,
        }
    }
}

/// `grant`: give a task of a session a grant (from a policy, or inline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub session: String,
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineGrant>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

impl Grant {
    /// The parsed `ttl`, if any.
    pub fn ttl(&self) -> Result<Option<std::time::Duration>, ProtoError> {
        Ok(self.ttl.as_deref().map(parse_duration).transpose()?)
    }
}

/// `revoke`: drop one task's grant, or all of a session's task grants when `task` is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    pub session: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// `subscribe`: audit lines after the response — first up to `backlog` recent ones (oldest
/// first), then, if `follow`, every new one; only those matching the filters. Without `follow`
/// the daemon closes the connection after the backlog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    #[serde(default)]
    pub backlog: u32,
    #[serde(default = "yes")]
    pub follow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// A decision reason (`not_granted`, `other_process`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339: only lines at or after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

const fn yes() -> bool {
    true
}

/// The most recent lines a subscriber can ask for (the daemon keeps this many).
pub const BACKLOG_MAX: u32 = 1000;

impl Default for Subscribe {
    /// The v1 subscription: no backlog, every new line.
    fn default() -> Self {
        Self { backlog: 0, follow: true, session: None, reason: None, since: None }
    }
}

impl Subscribe {
    fn check(&self) -> Result<(), ProtoError> {
        if self.backlog > BACKLOG_MAX {
            return Err(ProtoError::new(
                ErrorCode::BadRequest,
                format!("`backlog` {} is over {BACKLOG_MAX}, the most recent lines the daemon keeps", self.backlog),
            ));
        }
        if let Some(s) = &self.session {
            check_session(s)?;
        }
        if let Some(r) = &self.reason
            && !reason_names().contains(&r.as_str())
        {
            return Err(ProtoError::new(
                ErrorCode::BadRequest,
                format!("unknown `reason` {r:?}; reasons: {}", reason_names().join(", ")),
            ));
        }
        self.since_ts().map(|_| ())
    }

    /// The parsed `since`.
    pub fn since_ts(&self) -> Result<Option<jiff::Timestamp>, ProtoError> {
        self.since
            .as_deref()
            .map(|s| {
                s.parse::<jiff::Timestamp>().map_err(|e| {
                    ProtoError::new(ErrorCode::BadRequest, format!("`since` {s:?} is not an RFC 3339 timestamp: {e}"))
                })
            })
            .transpose()
    }
}

/// Every decision reason the kernel reports (audit `reason`).
#[must_use]
pub fn reason_names() -> Vec<&'static str> {
    (0..64).map(mcpguard_common::reason_name).filter(|n| *n != "unknown").collect()
}

/// `unregister`: forget a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unregister {
    pub session: String,
}

/// The operation of a request, tagged by `"op"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    Register(Register),
    Grant(Grant),
    Revoke(Revoke),
    Status {},
    List {},
    Subscribe(Subscribe),
    Unregister(Unregister),
    /// The public keys the session tokens are signed with (a JWKS).
    Jwks {},
    LearnStart(LearnStart),
    LearnFetch(LearnFetch),
    LearnCall(LearnCall),
}

/// A session name: it names a cgroup directory and appears in file names and metrics labels,
/// so the rule is the narrow one. The one check of session names (every operation that names one).
fn check_session(value: &str) -> Result<(), ProtoError> {
    let ok = (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ProtoError::new(
            ErrorCode::BadRequest,
            format!("invalid `session` {value:?}: use 1-64 characters from A-Z a-z 0-9 . _ -"),
        ))
    }
}

fn check_ident(field: &str, value: &str) -> Result<(), ProtoError> {
    let ok =
        (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ProtoError::new(
            ErrorCode::BadRequest,
            format!("invalid `{field}` {value:?}: use 1-128 characters from A-Z a-z 0-9 - _ . : @"),
        ))
    }
}

fn check_text(field: &str, value: Option<&str>) -> Result<(), ProtoError> {
    match value {
        Some(v) if v.is_empty() || v.len() > 4096 || v.chars().any(char::is_control) => Err(ProtoError::new(
            ErrorCode::BadRequest,
            format!("invalid `{field}` {v:?}: must be 1-4096 bytes without control characters"),
        )),
        _ => Ok(()),
    }
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Register(_) => "register",
            Op::Grant(_) => "grant",
            Op::Revoke(_) => "revoke",
            Op::Status {} => "status",
            Op::List {} => "list",
            Op::Subscribe(_) => "subscribe",
            Op::Jwks {} => "jwks",
            Op::Unregister(_) => "unregister",
            Op::LearnStart(_) => "learn_start",
            Op::LearnFetch(_) => "learn_fetch",
            Op::LearnCall(_) => "learn_call",
        }
    }

    /// Semantic checks beyond the JSON shape.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        match self {
            Op::Register(r) => {
                check_session(&r.session)?;
                if let Some(p) = &r.parent {
                    check_session(p)?;
                }
                if r.pid == 0 {
                    return Err(ProtoError::new(ErrorCode::BadRequest, "`pid` must be a positive process id"));
                }
                if r.command.is_empty() {
                    return Err(ProtoError::new(ErrorCode::BadRequest, "`command` must not be empty"));
                }
                check_text("baseline", r.baseline.as_deref())
            }
            Op::Grant(g) => {
                check_session(&g.session)?;
                check_ident("task", &g.task)?;
                match (&g.policy, &g.inline) {
                    (Some(_), Some(_)) => {
                        return Err(ProtoError::new(
                            ErrorCode::BadRequest,
                            "`policy` and `inline` are mutually exclusive; set exactly one",
                        ));
                    }
                    (None, None) => {
                        return Err(ProtoError::new(ErrorCode::BadRequest, "one of `policy` or `inline` is required"));
                    }
                    _ => {}
                }
                if g.inline.is_some() && !g.vars.is_empty() {
                    return Err(ProtoError::new(ErrorCode::BadRequest, "`vars` only applies to `policy` grants"));
                }
                check_text("policy", g.policy.as_deref())?;
                check_text("tool", g.tool.as_deref())?;
                check_text("call_id", g.call_id.as_deref())?;
                g.ttl().map(|_| ())
            }
            Op::Revoke(r) => {
                check_session(&r.session)?;
                r.task.as_deref().map_or(Ok(()), |t| check_ident("task", t))
            }
            Op::Unregister(u) => check_session(&u.session),
            Op::LearnStart(LearnStart { session, .. }) | Op::LearnFetch(LearnFetch { session, .. }) => {
                check_session(session)
            }
            Op::LearnCall(c) => {
                check_session(&c.session)?;
                check_text("tool", Some(&c.tool))?;
                check_text("call_id", Some(&c.call_id))
            }
            Op::Subscribe(s) => s.check(),
            Op::Status {} | Op::List {} | Op::Jwks {} => Ok(()),
        }
    }
}

/// A request envelope: version, optional correlation id, operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub v: u32,
    pub id: Option<u64>,
    pub op: Op,
}

impl Request {
    pub fn new(id: Option<u64>, op: Op) -> Self {
        Request { v: PROTOCOL_VERSION, id, op }
    }

    pub fn to_value(&self) -> Value {
        let mut map = match serde_json::to_value(&self.op) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(), // Op always serialises to an object
        };
        map.insert("v".into(), self.v.into());
        if let Some(id) = self.id {
            map.insert("id".into(), id.into());
        }
        Value::Object(map)
    }

    /// The request as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = self.to_value().to_string();
        s.push('\n');
        s
    }
}

/// Parse and validate one request line (a trailing `\n` or `\r\n` is ignored).
pub fn parse_request(line: &[u8]) -> Result<Request, ProtoError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(ProtoError::new(
            ErrorCode::TooLarge,
            format!("request line is {} bytes; the limit is {MAX_LINE}", line.len()),
        ));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        ProtoError::new(
            ErrorCode::BadJson,
            format!("request is not valid UTF-8 (bad byte at offset {})", e.valid_up_to()),
        )
    })?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| ProtoError::new(ErrorCode::BadJson, format!("malformed JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(ProtoError::new(ErrorCode::BadRequest, "request must be a JSON object"));
    };
    let id = match map.remove("id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            ProtoError::new(ErrorCode::BadRequest, format!("`id` must be a non-negative integer, got {v}"))
        })?),
    };
    let fail = |code, msg: String| ProtoError::new(code, msg).with_id(id);
    match map.remove("v") {
        Some(v) if v.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
        Some(v) => {
            return Err(fail(
                ErrorCode::UnsupportedVersion,
                format!("unsupported protocol version {v}; this daemon speaks version {PROTOCOL_VERSION}"),
            ));
        }
        None => {
            return Err(fail(
                ErrorCode::UnsupportedVersion,
                format!("missing protocol version field `v` (expected \"v\":{PROTOCOL_VERSION})"),
            ));
        }
    }
    let op_name = match map.get("op") {
        None => return Err(fail(ErrorCode::BadRequest, "missing field `op`".into())),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(fail(ErrorCode::BadRequest, format!("`op` must be a string, got {other}")));
        }
    };
    let op: Op = serde_json::from_value(Value::Object(map)).map_err(|e| {
        let msg = e.to_string();
        let code = if msg.starts_with("unknown field") { ErrorCode::UnknownField } else { ErrorCode::BadRequest };
        fail(code, format!("invalid `{op_name}` request: {msg}"))
    })?;
    op.validate().map_err(|e| e.with_id(id))?;
    Ok(Request { v: PROTOCOL_VERSION, id, op })
}

/// The `error` object of a failed response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// A response line. Success payload fields sit at the top level next to `v`, `id`, `ok`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: Option<u64>,
    pub result: Result<Map<String, Value>, ErrorBody>,
}

const RESERVED: [&str; 4] = ["v", "id", "ok", "error"];

impl Response {
    /// Success. An object payload is merged into the top level (reserved keys `v`, `id`,
    /// `ok`, `error` are dropped); `null` adds nothing; any other value goes under `data`.
    pub fn ok(id: Option<u64>, payload: Value) -> Response {
        let map = match payload {
            Value::Object(mut m) => {
                m.retain(|k, _| !RESERVED.contains(&k.as_str()));
                m
            }
            Value::Null => Map::new(),
            other => Map::from_iter([("data".to_string(), other)]),
        };
        Response { id, result: Ok(map) }
    }

    pub fn err(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Response {
        Response { id, result: Err(ErrorBody { code, message: message.into() }) }
    }

    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The response as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"v":1,"ok":false,"error":{{"code":"internal","message":{}}}}}"#, Value::from(e.to_string()))
        });
        s.push('\n');
        s
    }

    /// Parse a response line (client side).
    pub fn parse(line: &[u8]) -> Result<Response, ProtoError> {
        let bad = |m: String| ProtoError::new(ErrorCode::BadJson, m);
        let mut map: Map<String, Value> =
            serde_json::from_slice(line).map_err(|e| bad(format!("malformed response: {e}")))?;
        if map.remove("v").and_then(|v| v.as_u64()) != Some(u64::from(PROTOCOL_VERSION)) {
            return Err(ProtoError::new(ErrorCode::UnsupportedVersion, "response has a missing or unsupported `v`"));
        }
        let id = map.remove("id").and_then(|v| v.as_u64());
        let result = match map.remove("ok") {
            Some(Value::Bool(true)) => Ok(map),
            Some(Value::Bool(false)) => {
                let err = map.remove("error").ok_or_else(|| bad("error response without `error`".into()))?;
                Err(serde_json::from_value(err).map_err(|e| bad(format!("bad `error` object: {e}")))?)
            }
            _ => return Err(bad("response without boolean `ok`".into())),
        };
        Ok(Response { id, result })
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("v", &PROTOCOL_VERSION)?;
        m.serialize_entry("id", &self.id)?;
        match &self.result {
            Ok(payload) => {
                m.serialize_entry("ok", &true)?;
                for (k, v) in payload {
                    m.serialize_entry(k, v)?;
                }
            }
            Err(body) => {
                m.serialize_entry("ok", &false)?;
                m.serialize_entry("error", body)?;
            }
        }
        m.end()
    }
}

/// Where the daemon serving `socket` records its pid (clients check the socket's peer against it).
#[must_use]
pub fn pid_file(socket: &std::path::Path) -> std::path::PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".pid");
    std::path::PathBuf::from(p)
}

mod learn;
pub use learn::{LearnCall, LearnFetch, LearnStart};

#[cfg(test)]
mod tests;
