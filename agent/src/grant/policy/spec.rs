//! [`GrantSpec`]: a grant with every variable filled in, as the daemon compiles it — built from
//! a policy and its values or inline, narrowed (`intersect`) when a call runs within a task or a
//! delegated session within its parent.
#[allow(clippy::wildcard_imports, reason = "the policy types of the parent")]
use super::*;

/// A fully instantiated, variable-free grant: normalised absolute paths only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    pub policy_name: String,
    pub mode: Mode,
    #[serde(default, with = "crate::grant::duration::serde_duration::option")]
    pub ttl: Option<Duration>,
    pub exec: Vec<ExecRule>,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    /// Write paths under which mode and owner may change too (`metadata = true`; each is also
    /// in `write`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<PathBuf>,
    /// Canonical connect targets (see `net.rs`); none: no network and no Unix-socket connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect: Vec<String>,
    /// Canonical listen targets; none: no inet socket may listen or bind a port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<String>,
    /// Daemon environments the grant may be issued in (none: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
    /// Path labels the grant may name paths under.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Token audience while the grant is in force (none: the daemon's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
}

impl GrantSpec {
    /// An ad-hoc grant (equivalent to a policy named `inline`), validated like a policy.
    pub fn inline(
        exec: Vec<ExecRule>,
        read: Vec<PathBuf>,
        write: Vec<PathBuf>,
        mode: Mode,
        ttl: Option<Duration>,
    ) -> Result<GrantSpec, PolicyError> {
        let mut out_exec = Vec::new();
        for (i, e) in exec.iter().enumerate() {
            push_unique(&mut out_exec, check_exec(e, &format!("inline grant exec[{i}]"))?);
        }
        let paths = |list: &[PathBuf], kind: &str| -> Result<Vec<PathBuf>, PolicyError> {
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let n = normalize_path(p).map_err(|reason| PolicyError::BadPath {
                    context: format!("inline grant {kind}[{i}]"),
                    path: p.display().to_string(),
                    reason,
                })?;
                push_unique(&mut out, n);
            }
            Ok(out)
        };
        let read = paths(&read, "read")?;
        let write = paths(&write, "write")?;
        Ok(GrantSpec {
            policy_name: "inline".into(),
            mode,
            ttl,
            exec: out_exec,
            read,
            write,
            metadata: Vec::new(),
            connect: Vec::new(),
            listen: Vec::new(),
            environments: Vec::new(),
            labels: Vec::new(),
            audience: Vec::new(),
        })
    }

    /// The same grant where mode and owner may change under `paths` (each also becomes writable).
    pub fn with_metadata(mut self, paths: &[PathBuf]) -> Result<GrantSpec, PolicyError> {
        for (i, p) in paths.iter().enumerate() {
            let n = normalize_path(p).map_err(|reason| PolicyError::BadPath {
                context: format!("inline grant metadata[{i}]"),
                path: p.display().to_string(),
                reason,
            })?;
            push_unique(&mut self.write, n.clone());
            push_unique(&mut self.metadata, n);
        }
        Ok(self)
    }

    /// The same grant with network targets, validated and made canonical.
    pub fn with_net(mut self, connect: &[String], listen: &[String]) -> Result<GrantSpec, PolicyError> {
        let bad = |kind: &str, list: &[String], (i, message): (usize, String)| PolicyError::Invalid {
            origin: "inline grant".into(),
            line: None,
            field: format!("{kind}[{i}]"),
            message: format!("`{}`: {message}", list[i]),
        };
        self.connect = canonical_net(connect, false).map_err(|e| bad("connect", connect, e))?;
        self.listen = canonical_net(listen, true).map_err(|e| bad("listen", listen, e))?;
        Ok(self)
    }

    /// The grant allowed by both `self` and `other` (e.g. a per-call grant inside a task
    /// grant): common exec paths, the narrower of each overlapping read/write pair, the
    /// stricter mode and the shorter TTL.
    pub fn intersect(&self, other: &GrantSpec) -> GrantSpec {
        let mut exec = Vec::new();
        for a in &self.exec {
            let Some(b) = other.exec.iter().find(|b| b.path == a.path) else {
                continue;
            };
            let sha256 = match (&a.sha256, &b.sha256) {
                (Some(x), Some(y)) if x != y => continue, // conflicting pins: nothing satisfies both
                (x, y) => x.clone().or_else(|| y.clone()),
            };
            // Command lines: the constrained side; two different constraints are not intersected
            // (nothing runs: fail closed).
            let args = match (&a.args, &b.args) {
                (Some(x), Some(y)) if x != y => continue,
                (x, y) => x.clone().or_else(|| y.clone()),
            };
            let env = a.env.iter().filter(|e| b.env.contains(e)).cloned().collect();
            let inline_code = a.inline_code && b.inline_code;
            push_unique(&mut exec, ExecRule { path: a.path.clone(), sha256, args, inline_code, env });
        }
        let paths = |xs: &[PathBuf], ys: &[PathBuf]| {
            let mut out = Vec::new();
            for x in xs {
                for y in ys {
                    if is_under(x, y) {
                        push_unique(&mut out, x.clone());
                    } else if is_under(y, x) {
                        push_unique(&mut out, y.clone());
                    }
                }
            }
            out
        };
        let policy_name = if self.policy_name == other.policy_name {
            self.policy_name.clone()
        } else {
            format!("{}&{}", self.policy_name, other.policy_name)
        };
        let ttl = match (self.ttl, other.ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        GrantSpec {
            policy_name,
            mode: self.mode.stricter(other.mode),
            ttl,
            exec,
            read: paths(&self.read, &other.read),
            write: paths(&self.write, &other.write),
            metadata: paths(&self.metadata, &other.metadata),
            // Network targets both name (canonical strings): never wider than either.
            connect: self.connect.iter().filter(|c| other.connect.contains(c)).cloned().collect(),
            listen: self.listen.iter().filter(|c| other.listen.contains(c)).cloned().collect(),
            // Where both are restricted, the environments both name; else the one restriction.
            environments: match (self.environments.is_empty(), other.environments.is_empty()) {
                (false, false) => {
                    self.environments.iter().filter(|e| other.environments.contains(e)).cloned().collect()
                }
                (true, _) => other.environments.clone(),
                (false, true) => self.environments.clone(),
            },
            // A label is a permission: only what both declare.
            labels: self.labels.iter().filter(|l| other.labels.contains(l)).cloned().collect(),
            // Who the token is for: the inner grant's (the call's, the child's) if it names one.
            audience: if other.audience.is_empty() { self.audience.clone() } else { other.audience.clone() },
        }
    }
}
