//! Grant templates ("policies"): TOML files naming the binaries a task may exec and the
//! paths it may read or write, with `${var}` placeholders filled in per task.
//! See `policies/README.md` for the file format.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml::Spanned;

/// Enforcement mode, ordered by strictness: `Audit < Deny < Kill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Log violations, allow them.
    Audit,
    /// Refuse violating operations with EACCES/EPERM.
    #[default]
    Deny,
    /// Refuse and kill the offending process.
    Kill,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Audit => "audit",
            Mode::Deny => "deny",
            Mode::Kill => "kill",
        }
    }

    /// The stricter of two modes (`kill > deny > audit`).
    pub fn stricter(self, other: Mode) -> Mode {
        self.max(other)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown mode `{0}` (expected deny, kill or audit)")]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "audit" => Ok(Mode::Audit),
            "deny" => Ok(Mode::Deny),
            "kill" => Ok(Mode::Kill),
            other => Err(ParseModeError(other.to_string())),
        }
    }
}

/// A binary the task may execute, optionally pinned to a SHA-256 digest (lowercase hex).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRule {
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The command lines it may run with (`cmdline.rs`): one pattern per argument after
    /// `argv[0]` (a literal, `*`, a final `**`); `None`: any (an interpreter: scripts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// An interpreter may run inline program text (`-c`, `-e`, ...).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inline_code: bool,
    /// Code-injecting variables (`mcpguard_common::INJECTION_ENV`) it may be run with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

impl ExecRule {
    /// A binary with any command line (an interpreter: scripts only).
    #[must_use]
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), ..Self::default() }
    }

    /// Checks what can be checked without the binary: patterns and variable names.
    fn check_cmdline(&self) -> Result<(), String> {
        if let Some(a) = &self.args {
            crate::grant::cmdline::parse_args(a)?;
        }
        crate::grant::cmdline::env_bits(&self.env).map(drop)
    }
}

/// A read or write rule; `path` is a template that may contain `${var}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    pub path: String,
    /// Write rules only: mode, owner and extended attributes may change too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metadata: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VarKind {
    /// An absolute filesystem path.
    #[default]
    Path,
    /// An `http://` or `https://` URL; substituted as its `HOST:PORT` (the scheme's default port
    /// when none is given), for connect targets only: `to = "tcp://${url}"`.
    Url,
}

/// A declared template variable.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarSpec {
    #[serde(default)]
    pub kind: VarKind,
    /// When non-empty, the value must be at or under one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<PathBuf>,
    /// `url` variables: when non-empty, the URL's host and port must be covered by one of these
    /// connect targets (`tcp://127.0.0.0/8:*`, `tcp://example.com:443`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub within: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A validated grant template. Build it with [`Policy::parse`] / [`Policy::load`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub name: String,
    pub description: Option<String>,
    pub mode: Mode,
    #[serde(with = "crate::grant::duration::serde_duration::option")]
    pub ttl: Option<Duration>,
    pub vars: BTreeMap<String, VarSpec>,
    pub exec: Vec<ExecRule>,
    pub read: Vec<PathRule>,
    pub write: Vec<PathRule>,
    /// Network targets (`tcp://HOST:PORT`, `udp://...`, `unix:/path`, `unix:@name`), canonical.
    pub connect: Vec<String>,
    /// Addresses a server may listen on (`tcp://ADDR:PORT`), canonical.
    pub listen: Vec<String>,
    /// The daemon environments a grant from this policy may be issued in (none: any).
    pub environments: Vec<String>,
    /// Path labels of the daemon's `[labels]` this policy may name paths under.
    pub labels: Vec<String>,
    /// `aud` of the session tokens while a grant from this policy is in force (none: the
    /// daemon's `token_audience`).
    pub audience: Vec<String>,
}

/// Why a path was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PathProblem {
    #[error("path is empty")]
    Empty,
    #[error("path is not absolute")]
    NotAbsolute,
    #[error("path contains a `..` component")]
    ParentDir,
    #[error("path is `/` (granting the whole filesystem is not allowed)")]
    Root,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path contains a control character (e.g. newline)")]
    Control,
    #[error("path is longer than 4095 bytes")]
    TooLong,
}

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("cannot read policy file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or schema error (unknown field, wrong type, missing field, …).
    #[error("{origin}:{line}:{column}: {message}{}", in_field(.field))]
    Syntax { origin: String, line: usize, column: usize, field: Option<String>, message: String },
    /// A semantic validation failure in a policy file.
    #[error("{origin}{}: field `{field}`: {message}", at_line(.line))]
    Invalid { origin: String, line: Option<usize>, field: String, message: String },
    #[error("policy `{name}` not found; looked for {} and among the built-in policies (`mcpguard policy list`); set the daemon's `policy_dirs` (or `--policy-dir`) to where it is", join_paths(.searched))]
    NotFound { name: String, searched: Vec<PathBuf> },
    #[error("invalid policy name `{name}`: use 1-64 characters from a-z, 0-9, `_`, `-`")]
    BadName { name: String },
    #[error("policy `{policy}`: variable `{var}` is required but was not supplied")]
    MissingVar { policy: String, var: String },
    #[error("policy `{policy}`: unknown variable `{var}` supplied (declared: [{}])", .declared.join(", "))]
    UnknownVar { policy: String, var: String, declared: Vec<String> },
    #[error("policy `{policy}`: variable `{var}` = `{value}` is invalid: {reason}")]
    BadVarValue { policy: String, var: String, value: String, reason: PathProblem },
    #[error("policy `{policy}`: variable `{var}` = `{value}` is outside the allowed roots [{}]", join_paths(.roots))]
    OutsideRoots { policy: String, var: String, value: String, roots: Vec<PathBuf> },
    #[error("policy `{policy}`: variable `{var}` = `{value}`: {reason}")]
    BadUrl { policy: String, var: String, value: String, reason: String },
    #[error("{context}: path `{path}` is invalid: {reason}")]
    BadPath { context: String, path: String, reason: PathProblem },
    #[error("{context}: sha256 `{value}` is invalid: expected 64 lowercase hex digits")]
    BadDigest { context: String, value: String },
}

fn in_field(field: &Option<String>) -> String {
    field.as_ref().map(|f| format!(" (in field `{f}`)")).unwrap_or_default()
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// `true` if `path` is `root` or lies below it, compared component-wise (`/home2` is not
/// under `/home`). Paths containing `..` are never considered under anything.
pub fn is_under(path: &Path, root: &Path) -> bool {
    !path.components().any(|c| c == Component::ParentDir) && path.starts_with(root)
}

/// Lexically normalise an absolute path: collapse `.` and `//`, drop a trailing `/`.
/// Rejects relative paths, any `..`, `/` itself, NUL and other control characters.
pub fn normalize_path(p: &Path) -> Result<PathBuf, PathProblem> {
    let bytes = p.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(PathProblem::Empty);
    }
    if bytes.contains(&0) {
        return Err(PathProblem::Nul);
    }
    if bytes.iter().any(|b| *b < 0x20 || *b == 0x7f) {
        return Err(PathProblem::Control);
    }
    if bytes.len() > 4095 {
        return Err(PathProblem::TooLong);
    }
    if bytes[0] != b'/' {
        return Err(PathProblem::NotAbsolute);
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(PathProblem::ParentDir),
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => return Err(PathProblem::NotAbsolute),
        }
    }
    if out.as_os_str().len() == 1 {
        return Err(PathProblem::Root);
    }
    Ok(out)
}

pub fn is_valid_policy_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_valid_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Split a template into literal and variable pieces. A `$` not followed by `{` is literal.
fn template_pieces(t: &str) -> Result<Vec<(bool, &str)>, String> {
    let mut pieces = Vec::new();
    let mut rest = t;
    while let Some(start) = rest.find("${") {
        pieces.push((false, &rest[..start]));
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unterminated `${{` in `{t}`"))?;
        let name = &after[..end];
        if !is_valid_var_name(name) {
            return Err(format!("invalid variable name `{name}` in `{t}`"));
        }
        pieces.push((true, name));
        rest = &after[end + 1..];
    }
    pieces.push((false, rest));
    Ok(pieces)
}

fn substitute(t: &str, values: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::new();
    for (is_var, s) in template_pieces(t)? {
        match (is_var, values.get(s)) {
            (false, _) => out.push_str(s),
            (true, Some(v)) => out.push_str(v),
            (true, None) => return Err(s.to_string()),
        }
    }
    Ok(out)
}

fn check_exec(rule: &ExecRule, context: &str) -> Result<ExecRule, PolicyError> {
    let path = normalize_path(&rule.path).map_err(|reason| PolicyError::BadPath {
        context: context.to_string(),
        path: rule.path.display().to_string(),
        reason,
    })?;
    if let Some(d) = rule.sha256.as_ref().filter(|d| !is_valid_sha256(d)) {
        return Err(PolicyError::BadDigest { context: context.to_string(), value: d.clone() });
    }
    let out = ExecRule { path, ..rule.clone() };
    out.check_cmdline().map_err(|message| PolicyError::Invalid {
        origin: context.to_string(),
        line: None,
        field: "args".into(),
        message,
    })?;
    Ok(out)
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, item: T) {
    if !v.contains(&item) {
        v.push(item);
    }
}

// ---- raw (spanned) TOML form ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    mode: Mode,
    #[serde(default, with = "crate::grant::duration::serde_duration::option")]
    ttl: Option<Duration>,
    #[serde(default)]
    vars: BTreeMap<String, Spanned<RawVar>>,
    #[serde(default)]
    exec: Vec<RawExec>,
    #[serde(default)]
    read: Vec<RawPathRule>,
    #[serde(default)]
    write: Vec<RawPathRule>,
    #[serde(default)]
    connect: Vec<RawConnect>,
    #[serde(default)]
    listen: Vec<RawListen>,
    #[serde(default)]
    environments: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    labels: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    audience: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnect {
    to: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    on: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVar {
    #[serde(default)]
    kind: VarKind,
    #[serde(default)]
    roots: Vec<Spanned<String>>,
    #[serde(default)]
    within: Vec<Spanned<String>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    path: Spanned<String>,
    #[serde(default)]
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    inline_code: bool,
    #[serde(default)]
    env: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPathRule {
    path: Spanned<String>,
    #[serde(default)]
    metadata: Option<Spanned<bool>>,
}

/// 1-based (line, column) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// Best-effort dotted field name (`exec.path`) for the value at `offset`.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = text[line_start..offset].trim_start();
    let key = before
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !before.starts_with('['));
    let header = text[..line_start].lines().rev().map(str::trim).find(|l| l.starts_with('[')).and_then(|l| {
        let inner = l.trim_start_matches('[');
        inner.find(']').map(|end| inner[..end].trim().to_string())
    });
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h}.{k}")),
        (None, Some(k)) => Some(k),
        (h, None) if !before.starts_with('[') => h,
        _ => None,
    }
}

impl Policy {
    /// Parse and validate a policy. `origin` (usually the file name) prefixes every error.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let (line, column, field) = match e.span() {
                Some(s) => {
                    let (l, c) = line_col(text, s.start);
                    (l, c, field_at(text, s.start))
                }
                None => (0, 0, None),
            };
            PolicyError::Syntax {
                origin: origin.to_string(),
                line,
                column,
                field,
                message: e.message().trim_end().to_string(),
            }
        })?;
        let cx = parse::Ctx { origin, text };

        let name = raw.name.get_ref();
        if !is_valid_policy_name(name) {
            let msg = format!("invalid policy name `{name}`: use 1-64 characters from a-z, 0-9, `_`, `-`");
            return Err(cx.invalid(Some(raw.name.span()), "name".into(), msg));
        }

        let vars = cx.vars(&raw.vars)?;
        let exec = cx.exec(&raw.exec, &vars)?;
        let mut used = BTreeSet::new();
        let read = cx.paths(&raw.read, "read", &vars, &mut used)?;
        let write = cx.paths(&raw.write, "write", &vars, &mut used)?;
        let connect = cx.connect(&raw.connect, &vars, &mut used)?;
        if let Some((var, spec)) = raw.vars.iter().find(|(v, _)| !used.contains(*v)) {
            let msg = format!("variable `{var}` is declared but never used");
            return Err(cx.invalid(Some(spec.span()), format!("vars.{var}"), msg));
        }
        let listen = cx.listen(&raw.listen)?;
        let environments = cx.names(&raw.environments, "environments")?;
        let labels = cx.names(&raw.labels, "labels")?;
        let audience = cx.audience(&raw.audience)?;

        Ok(Policy {
            name: name.clone(),
            description: raw.description,
            mode: raw.mode,
            ttl: raw.ttl,
            vars,
            exec,
            read,
            write,
            connect,
            listen,
            environments,
            labels,
            audience,
        })
    }

    /// Read and parse a policy file; errors name the file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.to_path_buf(), source })?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// Substitute `vars` into the template, producing a variable-free grant.
    pub fn instantiate(&self, vars: &BTreeMap<String, String>) -> Result<GrantSpec, PolicyError> {
        let policy = || self.name.clone();
        if let Some(var) = vars.keys().find(|k| !self.vars.contains_key(*k)) {
            let declared = self.vars.keys().cloned().collect();
            return Err(PolicyError::UnknownVar { policy: policy(), var: var.clone(), declared });
        }
        let mut values = BTreeMap::new();
        for (name, value) in vars {
            let spec = &self.vars[name];
            let bad =
                |reason| PolicyError::BadVarValue { policy: policy(), var: name.clone(), value: value.clone(), reason };
            if spec.kind == VarKind::Url {
                let hostport = url_host_port(value, &spec.within).map_err(|reason| PolicyError::BadUrl {
                    policy: policy(),
                    var: name.clone(),
                    value: value.clone(),
                    reason,
                })?;
                values.insert(name.as_str(), hostport);
                continue;
            }
            let norm = normalize_path(Path::new(value)).map_err(bad)?;
            if !spec.roots.is_empty() && !spec.roots.iter().any(|r| is_under(&norm, r)) {
                return Err(PolicyError::OutsideRoots {
                    policy: policy(),
                    var: name.clone(),
                    value: value.clone(),
                    roots: spec.roots.clone(),
                });
            }
            // Normalised paths built from valid UTF-8 remain valid UTF-8.
            values.insert(name.as_str(), norm.to_string_lossy().into_owned());
        }
        let expand = |rules: &[PathRule], kind: &str| -> Result<Vec<PathBuf>, PolicyError> {
            let mut out = Vec::new();
            for (i, r) in rules.iter().enumerate() {
                let s =
                    substitute(&r.path, &values).map_err(|var| PolicyError::MissingVar { policy: policy(), var })?;
                let p = normalize_path(Path::new(&s)).map_err(|reason| PolicyError::BadPath {
                    context: format!("policy `{}` {kind}[{i}]", self.name),
                    path: s.clone(),
                    reason,
                })?;
                push_unique(&mut out, p);
            }
            Ok(out)
        };
        let read = expand(&self.read, "read")?;
        let write = expand(&self.write, "write")?;
        let meta_rules: Vec<PathRule> = self.write.iter().filter(|r| r.metadata).cloned().collect();
        let metadata = expand(&meta_rules, "write")?;
        let mut connect = Vec::new();
        for (i, c) in self.connect.iter().enumerate() {
            let s = substitute(c, &values).map_err(|var| PolicyError::MissingVar { policy: policy(), var })?;
            let one = canonical_net(std::slice::from_ref(&s), false).map_err(|(_, message)| PolicyError::Invalid {
                origin: format!("policy `{}`", self.name),
                line: None,
                field: format!("connect[{i}]"),
                message: format!("`{s}`: {message}"),
            })?;
            push_unique(&mut connect, one[0].clone());
        }
        let mut exec = Vec::new();
        for e in &self.exec {
            let mut e = e.clone();
            if let Some(a) = &mut e.args {
                for x in a.iter_mut() {
                    *x = substitute(x, &values).map_err(|var| PolicyError::MissingVar { policy: policy(), var })?;
                }
            }
            push_unique(&mut exec, e);
        }
        Ok(GrantSpec {
            policy_name: self.name.clone(),
            mode: self.mode,
            ttl: self.ttl,
            exec,
            read,
            write,
            metadata,
            connect,
            listen: self.listen.clone(),
            environments: self.environments.clone(),
            labels: self.labels.clone(),
            audience: self.audience.clone(),
        })
    }
}

/// Find a policy by name in `search_dirs` (`<dir>/<name>.toml`), then among the shipped ones
/// built into the binary (`grant::builtin`), or load it directly when `name_or_file` contains
/// `/` or ends in `.toml`. Returns the policy and the file used.
pub fn resolve_policy(name_or_file: &str, search_dirs: &[PathBuf]) -> Result<(Policy, PathBuf), PolicyError> {
    if name_or_file.contains('/') || name_or_file.ends_with(".toml") {
        let path = PathBuf::from(name_or_file);
        return Policy::load(&path).map(|p| (p, path));
    }
    if !is_valid_policy_name(name_or_file) {
        return Err(PolicyError::BadName { name: name_or_file.to_string() });
    }
    let mut searched = Vec::new();
    for dir in search_dirs {
        let path = dir.join(format!("{name_or_file}.toml"));
        if path.is_file() {
            return Policy::load(&path).map(|p| (p, path));
        }
        searched.push(path);
    }
    if let Some(text) = crate::grant::builtin::get(name_or_file) {
        let origin = crate::grant::builtin::origin(name_or_file);
        return Policy::parse(text, &origin).map(|p| (p, PathBuf::from(origin)));
    }
    Err(PolicyError::NotFound { name: name_or_file.to_string(), searched })
}

mod parse;
mod spec;
mod targets;
pub use spec::GrantSpec;
pub use targets::{canonical_net, url_host_port};

#[cfg(test)]
mod tests;
