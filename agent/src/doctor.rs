//! `mcpguard doctor`: what this host can enforce, measured, with the fix for every problem.
//!
//! Every check is a real test on this host, not a guess from version numbers: the BTF is parsed
//! and the programs' struct offsets resolved, the mounts are `statfs`ed, the Landlock and seccomp
//! kernels are asked, and each backend is *loaded* (`Engine::load`, nothing pinned; the links
//! detach when the engine is dropped), its network programs attached to a cgroup created for the
//! probe (never the cgroup v2 root) and removed afterwards. On the backend the daemon would
//! choose, a governed probe process then execs a binary no grant names and must be stopped.
//!
//! The pure parts (lines, the `lsm=` fix, the exit-status rule, the JSON shape, how a backend's
//! error is explained) are functions of a [`Report`], unit-tested without a kernel.
mod measure;

use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

pub use self::measure::{lockdown_mode, measure};
use crate::kernel::engine::Backend;

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Present and working.
    Ok,
    /// Not there (a file, a mount).
    Missing,
    /// There but refused, disabled or failing.
    No,
}

impl Verdict {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::No => "no",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name (`kernel`, `btf`, `backend.lsm`, ...).
    pub check: String,
    pub verdict: Verdict,
    /// What was measured.
    pub detail: String,
    /// How to fix it, for every check that is not `ok` (when a fix is known).
    pub fix: Option<String>,
}

impl Check {
    fn ok(check: &str, detail: impl Into<String>) -> Self {
        Self { check: check.into(), verdict: Verdict::Ok, detail: detail.into(), fix: None }
    }
    fn bad(check: &str, verdict: Verdict, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { check: check.into(), verdict, detail: detail.into(), fix: Some(fix.into()) }
    }
}

/// Everything `doctor` measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<Check>,
    /// The backend the daemon would choose (the first of lsm, fmod_ret, kill that loads).
    pub backend: Option<Backend>,
    /// `engine.channels()` of that backend's engine: (channel, mechanism).
    pub channels: Vec<(String, String)>,
}

impl Report {
    fn verdict(&self, check: &str) -> Option<Verdict> {
        self.checks.iter().find(|c| c.check == check).map(|c| c.verdict)
    }
}

/// The host can enforce when a backend loaded, attached and passed its checks (`backend`), and
/// the governed probe was stopped on it (`enforce`).
#[must_use]
pub fn can_enforce(r: &Report) -> bool {
    r.backend.is_some() && r.verdict("backend") == Some(Verdict::Ok) && r.verdict("enforce") == Some(Verdict::Ok)
}

/// Exit status of `mcpguard doctor`: 0 when the host can enforce, 1 when it cannot.
#[must_use]
pub fn exit_status(r: &Report) -> i32 {
    if can_enforce(r) { 0 } else { 1 }
}

/// The kernel command-line parameter that adds `name` to the active LSM list `current` (the
/// contents of `/sys/kernel/security/lsm`), or `None` when it is already there.
#[must_use]
pub fn lsm_param_with(current: &str, name: &str) -> Option<String> {
    let mut list: Vec<&str> = current.trim().split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if list.contains(&name) {
        return None;
    }
    list.push(name);
    Some(format!("lsm={}", list.join(",")))
}

/// The fix that makes `name` an active LSM.
#[must_use]
pub fn lsm_fix(current: &str, name: &str) -> Option<String> {
    lsm_param_with(current, name)
        .map(|p| format!("add `{p}` to the kernel command line (bootloader configuration), then reboot"))
}

/// True for a program load the kernel refused with EPERM before the verifier ran (an empty
/// verifier log): what a kernel that refuses every trampoline program type answers a privileged
/// loader. Understands both messages: aya's (`... returned ... (os error 1). Verifier output:
/// `) and the fmod_ret loader's (`...: ... (os error 1); verifier: `).
#[must_use]
pub fn refused_before_verifier(err: &str) -> bool {
    let log = ["Verifier output:", "verifier:"].iter().find_map(|m| err.rfind(m).map(|i| &err[i + m.len()..]));
    err.contains("(os error 1)") && log.is_some_and(|l| l.trim().trim_end_matches(')').trim().is_empty())
}

/// The probe result of one backend, explained: (verdict, detail, fix). `lsm_list` is the active
/// LSM list as read (if it could be), `privileged` whether this process has what loading needs.
#[must_use]
pub fn explain_backend(
    b: Backend,
    result: &Result<(), String>,
    lsm_list: Option<&str>,
    privileged: bool,
) -> (Verdict, String, Option<String>) {
    let err = match result {
        Ok(()) => {
            let how = if b.synchronous_deny() {
                "loaded, attached, and its hooks ran (probe open from this process)"
            } else {
                "loaded and attached"
            };
            return (Verdict::Ok, how.into(), None);
        }
        Err(e) => e,
    };
    if !privileged {
        return (Verdict::No, err.clone(), Some("run as root (loading needs CAP_BPF and CAP_SYS_ADMIN)".into()));
    }
    let lsm_fix_bpf = lsm_list.and_then(|l| lsm_fix(l, "bpf"));
    if b == Backend::Lsm && (err.contains("not in the active LSM list") || err.contains("hooks never ran")) {
        let fix = lsm_fix_bpf.unwrap_or_else(|| "add `bpf` to `lsm=` on the kernel command line".into());
        return (Verdict::No, format!("`bpf` is not an active LSM: {err}"), Some(fix));
    }
    if b.synchronous_deny() && refused_before_verifier(err) {
        return (
            Verdict::No,
            format!("this kernel refuses trampoline programs (kill backend only): {}", err.trim_end()),
            Some(
                "none on this kernel: the lsm and fmod_ret backends need a kernel that allows BPF trampoline programs"
                    .into(),
            ),
        );
    }
    if b == Backend::FmodRet && err.contains("never ran") {
        return (Verdict::No, err.clone(), Some("none known: the fmod_ret programs attach but are not called".into()));
    }
    let fix = "none known for this error: the other checks' fixes may apply; else report it with this output";
    (Verdict::No, err.trim_end().to_owned(), Some(fix.into()))
}

/// Channels grouped by mechanism, in a fixed order (eperm, kill, ceiling, launcher, none, other),
/// each group's channels in the engine's order. Empty groups are left out.
#[must_use]
pub fn group_channels(channels: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let mut order: Vec<String> = ["eperm", "kill", "ceiling", "launcher", "none"].map(String::from).to_vec();
    for (_, m) in channels {
        if !order.contains(m) {
            order.push(m.clone());
        }
    }
    order
        .into_iter()
        .map(|m| {
            let chans = channels.iter().filter(|(_, cm)| *cm == m).map(|(c, _)| c.clone()).collect();
            (m, chans)
        })
        .filter(|(_, c): &(String, Vec<String>)| !c.is_empty())
        .collect()
}

fn mechanism_label(m: &str) -> &str {
    match m {
        "eperm" => "refused synchronously (EPERM)",
        "kill" => "stopped only by a kill",
        "ceiling" => "launched sessions only (Landlock)",
        "launcher" => "launched sessions only (seccomp)",
        "none" => "not governed",
        o => o,
    }
}

/// The report as text: one aligned line per check (`check  verdict  detail`), the fix under
/// every problem, the channels of the chosen backend, and a closing verdict.
#[must_use]
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write as _;
    let w = r.checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
    let vw = "missing".len();
    let mut out = String::new();
    for c in &r.checks {
        let _ = writeln!(out, "{:<w$}  {:<vw$}  {}", c.check, c.verdict.as_str(), c.detail);
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "{:<w$}  {:<vw$}  fix: {fix}", "", "");
        }
    }
    if let Some(b) = r.backend {
        let groups = group_channels(&r.channels);
        let lw = groups.iter().map(|(m, _)| mechanism_label(m).len()).max().unwrap_or(0);
        let _ = writeln!(out, "\nchannels on the {} backend:", b.name());
        for (m, chans) in &groups {
            let _ = writeln!(out, "  {:<lw$}  {}", mechanism_label(m), chans.join(", "));
        }
    }
    let _ = writeln!(out);
    match r.backend {
        Some(b) if can_enforce(r) => {
            let _ = writeln!(out, "this host can enforce: {} backend", b.name());
        }
        Some(b) => {
            let _ =
                writeln!(out, "this host cannot enforce: the {} backend loads but the probe was not stopped", b.name());
        }
        None => {
            let _ = writeln!(out, "this host cannot enforce: no backend loads (see the fixes above)");
        }
    }
    out
}

/// The report as one JSON object:
/// `{"can_enforce", "backend", "checks": [{"check", "verdict", "detail", "fix"}],
///   "channels": {channel: mechanism}}`.
#[must_use]
pub fn to_json(r: &Report) -> Value {
    let channels: serde_json::Map<String, Value> =
        r.channels.iter().map(|(c, m)| (c.clone(), Value::String(m.clone()))).collect();
    json!({
        "can_enforce": can_enforce(r),
        "backend": r.backend.map(Backend::name),
        "checks": r.checks,
        "channels": channels,
    })
}

/// `mcpguard doctor [--json]`: prints the report, returns the exit status.
pub fn run(socket: &Path, json: bool) -> i32 {
    // The engine's load logs (info) would interleave with the report.
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let r = measure(socket);
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(&r)).unwrap_or_default());
    } else {
        print!("{}", render_text(&r));
    }
    exit_status(&r)
}

#[cfg(test)]
mod tests;
