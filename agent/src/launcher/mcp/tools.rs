//! Tools policy: which grant template each MCP tool runs under, and which call arguments fill
//! the template's variables. Loaded once when the proxy starts (the approval moment): the
//! binaries the templates may execute are hashed then, and every per-call grant pins them, so a
//! binary replaced later makes the daemon refuse the call's grant (`binary_changed`).
//!
//! ```toml
//! ttl = "30s"                          # per-call grant TTL and call timeout (default 30s)
//! template_dirs = ["."]                # where templates are looked up (relative to this file)
//!
//! [tools.git_status]
//! template = "mcp-git-repo"            # <dir>/mcp-git-repo.toml, or a path
//! args = { repo = "repo_path" }        # ${repo} <- the call's `repo_path` argument
//! vars = { }                           # fixed values for other variables
//! ttl = "10s"                          # optional, per tool
//! ```
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::{
    daemon::protocol::InlineGrant,
    grant::duration::serde_duration,
    grant::kgrant,
    grant::policy::{ExecRule, GrantSpec, Mode, Policy, PolicyError, resolve_policy},
};

pub const DEFAULT_CALL_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum ToolsError {
    #[error("cannot read tools policy {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: tool `{tool}`: {source}", path.display())]
    Template { path: PathBuf, tool: String, source: Box<PolicyError> },
    #[error("{}: tool `{tool}`: {message}", path.display())]
    Invalid { path: PathBuf, tool: String, message: String },
    #[error("{}: tool `{tool}`: approving binary {}: {source}", path.display(), binary.display())]
    Binary { path: PathBuf, tool: String, binary: PathBuf, source: Box<kgrant::GrantError> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTools {
    #[serde(default, with = "serde_duration::option")]
    ttl: Option<Duration>,
    #[serde(default)]
    template_dirs: Vec<PathBuf>,
    #[serde(default)]
    tools: BTreeMap<String, RawTool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    template: String,
    #[serde(default)]
    args: BTreeMap<String, String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default, with = "serde_duration::option")]
    ttl: Option<Duration>,
}

/// One tool's approved mapping.
#[derive(Debug, Clone)]
pub struct ToolRule {
    pub template: Policy,
    /// template variable -> call argument name
    pub args: BTreeMap<String, String>,
    pub vars: BTreeMap<String, String>,
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct ToolsPolicy {
    pub path: PathBuf,
    pub tools: BTreeMap<String, ToolRule>,
    /// sha256 of every exec binary of every template, taken at load (approval) time.
    pub approved: HashMap<PathBuf, String>,
    /// `mcpguard learn --mcp`: every tool gets an empty audit-mode grant of this TTL (its events
    /// are recorded under the call), no template needed.
    pub learning: Option<Duration>,
    /// While learning: binaries every call approves for no command line, so that the kernel
    /// reports theirs under the call (`cli::learn::SEED_ARG`).
    pub learning_seeds: Vec<ExecRule>,
}

/// Why a call gets no grant; `reason` is a stable word for clients and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// The grant a call asks the daemon for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallGrant {
    pub inline: InlineGrant,
    pub mode: Mode,
    pub ttl: Duration,
    pub template: String,
}

impl ToolsPolicy {
    pub fn load(path: &Path) -> Result<Self, ToolsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ToolsError::Io { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ToolsError> {
        let raw: RawTools =
            toml::from_str(text).map_err(|e| ToolsError::Syntax { path: path.into(), message: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let dirs: Vec<PathBuf> = if raw.template_dirs.is_empty() {
            vec![base.to_path_buf()]
        } else {
            raw.template_dirs.iter().map(|d| base.join(d)).collect()
        };
        let mut tools = BTreeMap::new();
        let mut approved = HashMap::new();
        for (name, t) in raw.tools {
            let tool_err = |message: String| ToolsError::Invalid { path: path.into(), tool: name.clone(), message };
            let template_ref = if t.template.contains('/') {
                base.join(&t.template).display().to_string()
            } else {
                t.template.clone()
            };
            let (template, _) = resolve_policy(&template_ref, &dirs).map_err(|source| ToolsError::Template {
                path: path.into(),
                tool: name.clone(),
                source: Box::new(source),
            })?;
            for var in t.args.keys().chain(t.vars.keys()) {
                if !template.vars.contains_key(var) {
                    return Err(tool_err(format!("template `{}` has no variable `{var}`", template.name)));
                }
            }
            if let Some(v) = t.args.keys().find(|v| t.vars.contains_key(*v)) {
                return Err(tool_err(format!("variable `{v}` is set both from an argument and as a fixed value")));
            }
            // Fixed values are checked now (roots etc.), not at the first call.
            if t.args.is_empty() {
                template.instantiate(&t.vars).map_err(|source| ToolsError::Template {
                    path: path.into(),
                    tool: name.clone(),
                    source: Box::new(source),
                })?;
            }
            for e in &template.exec {
                if approved.contains_key(&e.path) {
                    continue;
                }
                let obj = kgrant::resolve_exec(&e.path, e.sha256.as_deref()).map_err(|source| ToolsError::Binary {
                    path: path.into(),
                    tool: name.clone(),
                    binary: e.path.clone(),
                    source: Box::new(source),
                })?;
                approved.insert(e.path.clone(), obj.sha256);
            }
            let ttl = t.ttl.or(raw.ttl).unwrap_or(DEFAULT_CALL_TTL);
            tools.insert(name, ToolRule { template, args: t.args, vars: t.vars, ttl });
        }
        Ok(Self { path: path.into(), tools, approved, learning: None, learning_seeds: Vec::new() })
    }

    /// The tools policy of a learning proxy: any tool, an empty grant in audit mode (nothing is
    /// stopped; everything the call does is reported under its call id) for at most `ttl`.
    #[must_use]
    pub fn learning(ttl: Duration, seeds: Vec<ExecRule>) -> Self {
        Self {
            path: "(learning)".into(),
            tools: BTreeMap::new(),
            approved: HashMap::new(),
            learning: Some(ttl),
            learning_seeds: seeds,
        }
    }

    /// The grant for one call of `tool` with `arguments` (the `tools/call` params' `arguments`).
    /// Paths beneath which some call's grant may write: for each template write path, its value
    /// where it is fixed, the roots of the variable it starts with, or its fixed part before
    /// the first variable. A write path bounded by nothing (`${x}` without roots) is an error:
    /// the ceiling would be the whole filesystem.
    pub fn write_roots(&self) -> Result<Vec<PathBuf>, String> {
        let mut out: Vec<PathBuf> = Vec::new();
        for (name, rule) in &self.tools {
            for w in &rule.template.write {
                let mut p = w.path.clone();
                for (k, v) in &rule.vars {
                    p = p.replace(&format!("${{{k}}}"), v);
                }
                let roots: Vec<PathBuf> = match p.find("${") {
                    None => vec![PathBuf::from(&p)],
                    Some(i) => {
                        let var = p[i + 2..].split('}').next().unwrap_or("");
                        let spec_roots = rule.template.vars.get(var).map(|v| v.roots.clone()).unwrap_or_default();
                        let prefix = p[..i].rsplit_once('/').map_or("", |(d, _)| d);
                        if i == 0 && !spec_roots.is_empty() {
                            spec_roots
                        } else if !prefix.is_empty() {
                            vec![PathBuf::from(prefix)]
                        } else {
                            return Err(format!(
                                "tool `{name}`: template `{}` writes `{}`, which nothing bounds: give `{var}` roots, \
                                 or launch with --write-ceiling PATH covering it",
                                rule.template.name, w.path
                            ));
                        }
                    }
                };
                for r in roots {
                    if !out.contains(&r) {
                        out.push(r);
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn grant_for(&self, tool: &str, arguments: Option<&Value>) -> Result<CallGrant, Refusal> {
        if let Some(ttl) = self.learning {
            return Ok(CallGrant {
                inline: InlineGrant { exec: self.learning_seeds.clone(), ..InlineGrant::default() },
                mode: Mode::Audit,
                ttl,
                template: "learn-audit".into(),
            });
        }
        let Some(rule) = self.tools.get(tool) else {
            return Err(Refusal::new(
                "no_template",
                format!("tool `{tool}` has no grant template in {}; the call was not forwarded", self.path.display()),
            ));
        };
        let mut vars = rule.vars.clone();
        for (var, arg) in &rule.args {
            let value = match arguments.and_then(|a| a.get(arg)) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(Refusal::new(
                        "bad_argument",
                        format!("argument `{arg}` must be a string path, got {other}"),
                    ));
                }
                None => {
                    return Err(Refusal::new("bad_argument", format!("argument `{arg}` (for ${{{var}}}) is missing")));
                }
            };
            vars.insert(var.clone(), canonical_arg(&value));
        }
        let spec = rule
            .template
            .instantiate(&vars)
            .map_err(|e| Refusal::new("outside_policy", format!("tool `{tool}`: {e}")))?;
        Ok(self.to_call_grant(spec, rule.ttl))
    }

    fn to_call_grant(&self, spec: GrantSpec, ttl: Duration) -> CallGrant {
        let exec = spec
            .exec
            .iter()
            .map(|e| ExecRule { sha256: e.sha256.clone().or_else(|| self.approved.get(&e.path).cloned()), ..e.clone() })
            .collect();
        CallGrant {
            inline: InlineGrant {
                exec,
                read: spec.read,
                write: spec.write,
                metadata: spec.metadata,
                connect: spec.connect,
                listen: spec.listen,
            },
            mode: spec.mode,
            ttl: spec.ttl.map_or(ttl, |t| t.min(ttl)),
            template: spec.policy_name,
        }
    }
}

/// An argument naming an existing path is replaced by its canonical form, so the roots check
/// applies to the object the kernel grant will bind to (a symlink inside the roots cannot
/// smuggle in a target outside them). Other values are checked as given.
fn canonical_arg(value: &str) -> String {
    if !value.starts_with('/') {
        return value.to_owned();
    }
    std::fs::canonicalize(value).map_or_else(|_| value.to_owned(), |p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::policy::PathRule;
    use serde_json::json;

    fn setup() -> (PathBuf, ToolsPolicy) {
        let dir =
            std::env::temp_dir().join(format!("mcpg-tools-{}-{:?}", std::process::id(), std::thread::current().id()));
        let repos = dir.join("repos/app");
        std::fs::create_dir_all(&repos).unwrap();
        std::fs::write(
            dir.join("repo-call.toml"),
            format!(
                "name = \"repo-call\"\nmode = \"kill\"\n[vars.repo]\nroots = [\"{}\"]\n\
                 [[exec]]\npath = \"/bin/true\"\n[[read]]\npath = \"${{repo}}\"\n",
                dir.join("repos").display()
            ),
        )
        .unwrap();
        let tools = format!(
            "ttl = \"20s\"\n[tools.status]\ntemplate = \"repo-call\"\nargs = {{ repo = \"repo_path\" }}\n\
             [tools.fixed]\ntemplate = \"repo-call\"\nvars = {{ repo = \"{}\" }}\nttl = \"5s\"\n",
            repos.display()
        );
        let path = dir.join("tools.toml");
        std::fs::write(&path, tools).unwrap();
        let p = ToolsPolicy::load(&path).unwrap();
        (dir, p)
    }

    #[test]
    fn write_roots_are_the_fixed_paths_or_the_variables_roots() {
        let (dir, mut p) = setup();
        // The template reads only: no write root.
        assert_eq!(p.write_roots().unwrap(), Vec::<PathBuf>::new());
        let rule = p.tools.get_mut("status").unwrap();
        rule.template.write = vec![
            PathRule { path: "${repo}/.git".into(), metadata: false },
            PathRule { path: "/var/cache/x".into(), metadata: false },
        ];
        assert_eq!(p.write_roots().unwrap(), vec![dir.join("repos"), PathBuf::from("/var/cache/x")]);
        // A fixed value replaces the variable.
        let fixed = p.tools.get_mut("fixed").unwrap();
        fixed.template.write = vec![PathRule { path: "${repo}/out".into(), metadata: false }];
        assert!(p.write_roots().unwrap().contains(&dir.join("repos/app/out")));
        // Bounded by nothing: an error naming the tool and the fix.
        let rule = p.tools.get_mut("status").unwrap();
        rule.template.vars.get_mut("repo").unwrap().roots.clear();
        let e = p.write_roots().unwrap_err();
        assert!(e.contains("`status`") && e.contains("--write-ceiling"), "{e}");
        // A fixed prefix bounds it.
        let rule = p.tools.get_mut("status").unwrap();
        rule.template.write = vec![PathRule { path: "/srv/data/${repo}".into(), metadata: false }];
        assert!(p.write_roots().unwrap().contains(&PathBuf::from("/srv/data")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn maps_arguments_validates_roots_and_pins_binaries() {
        let (dir, p) = setup();
        let repo = dir.join("repos/app");
        let g = p.grant_for("status", Some(&json!({"repo_path": repo}))).unwrap();
        assert_eq!(g.inline.read, [std::fs::canonicalize(&repo).unwrap()]);
        assert_eq!(g.ttl, Duration::from_secs(20));
        assert_eq!(g.mode, Mode::Kill);
        let sha = g.inline.exec[0].sha256.as_deref().unwrap();
        assert_eq!(sha.len(), 64, "exec binaries are pinned at approval");
        assert_eq!(p.grant_for("fixed", None).unwrap().ttl, Duration::from_secs(5));

        let e = p.grant_for("nope", None).unwrap_err();
        assert_eq!(e.reason, "no_template");
        for bad in [
            json!({"repo_path": "/etc"}),
            json!({"repo_path": "/"}),
            json!({"repo_path": "../x"}),
            json!({"repo_path": 3}),
            json!({}),
        ] {
            let e = p.grant_for("status", Some(&bad)).unwrap_err();
            assert!(e.reason == "outside_policy" || e.reason == "bad_argument", "{bad}: {e:?}");
        }
        // A symlink inside the roots pointing outside them is judged by its target.
        std::os::unix::fs::symlink("/etc", dir.join("repos/link")).unwrap();
        let e = p.grant_for("status", Some(&json!({"repo_path": dir.join("repos/link")}))).unwrap_err();
        assert_eq!(e.reason, "outside_policy", "{e:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_files_are_refused_with_the_file_and_tool_named() {
        let dir = std::env::temp_dir().join(format!("mcpg-tools-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.toml"), "name = \"t\"\n[vars.x]\n[[read]]\npath = \"${x}\"\n").unwrap();
        let cases = [
            ("[tools.a]\ntemplate = \"t\"\nbogus = 1\n", "bogus"),
            ("[tools.a]\ntemplate = \"missing\"\n", "missing"),
            ("[tools.a]\ntemplate = \"t\"\nargs = { y = \"p\" }\n", "no variable `y`"),
            ("[tools.a]\ntemplate = \"t\"\nvars = { x = \"/\" }\n", "`/`"),
        ];
        for (text, needle) in cases {
            let e = ToolsPolicy::parse(text, &dir.join("tools.toml")).unwrap_err().to_string();
            assert!(e.contains("tools.toml") && e.contains(needle), "{needle}: {e}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
