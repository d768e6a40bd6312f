//! `mcpguard learn`: runs a server governed in audit mode (the `learn-audit` baseline: nothing
//! granted, nothing stopped, everything reported), lets the daemon aggregate what it did (per tool
//! call with `--mcp`), and when the session ends (or on `learn --finish NAME`) writes the proposal
//! into `--out`: `baseline.toml`, with `--mcp` `tools.toml` and one template per tool, `report.md`,
//! and `observations.json` (every run, so that learning again into the same directory merges).
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};

use crate::{
    daemon::protocol::{ErrorCode, LearnFetch, LearnStart, Op, Unregister},
    grant::learn::{
        annotate,
        observations::{Recorded, Run},
        propose, render,
    },
    grant::policy::ExecRule,
    launcher::{client::Client, mcp},
};

/// The baseline a learning session runs under.
pub const LEARN_BASELINE: &str = "learn-audit";
/// Per-call grant TTL (and call timeout) while learning.
pub const LEARN_CALL_TTL: Duration = Duration::from_secs(600);
/// Exit status when the proposal was written but is incomplete (events were lost).
pub const EXIT_INCOMPLETE: i32 = 3;

#[derive(Clone)]
pub struct LearnOptions {
    /// The learning baseline (set by [`run`]).
    pub baseline: String,
    /// Binaries earlier runs executed (set by [`run`]).
    pub seeds: Vec<PathBuf>,
    pub socket: PathBuf,
    pub session: String,
    pub out: PathBuf,
    pub mcp: bool,
    pub vars: BTreeMap<String, String>,
    /// `--tools FILE`: a tools policy whose `args` name the template variables.
    pub tools: Option<PathBuf>,
    pub command: Vec<String>,
}

/// `mcpguard learn ... -- CMD`: returns the exit status.
pub fn run(o: &LearnOptions) -> anyhow::Result<i32> {
    if o.command.is_empty() {
        bail!("learn needs the server's command after `--`");
    }
    // Before anything runs: the directory is usable and what it holds is readable.
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating --out {}", o.out.display()))?;
    let (baseline, seeds) = learning_baseline(&o.out, &Recorded::load(&o.out)?)?;
    let o = &LearnOptions { baseline, seeds, ..o.clone() };
    Client::connect(&o.socket)?
        .call_ok(Op::LearnStart(LearnStart { session: o.session.clone(), vars: o.vars.clone() }))?;
    outlive_terminate();
    let ended = if o.mcp { run_proxy(o) } else { run_plain(o).map(|e| (e, Vec::new())) };
    let ended = match ended {
        Ok(e) => e,
        Err(e) => {
            // Nothing to propose from a server that never ran; end the learning.
            let _ = fetch(&o.socket, &o.session);
            return Err(e);
        }
    };
    let Some(mut run) = fetch(&o.socket, &o.session)? else {
        eprintln!(
            "mcpguard learn: session {} is not being learned any more: `mcpguard learn --finish` ended it and wrote \
             its proposal, or the daemon restarted (its observations are lost)",
            o.session
        );
        return Ok(0);
    };
    run.mcp = o.mcp;
    (run.ended, run.listed) = (Some(ended.0), ended.1);
    write(&o.out, &o.session, &o.vars, o.tools.as_deref(), run)
}

/// `mcpguard learn --finish NAME --out DIR`: ends the learning of a session still running and
/// writes the proposal of what it did so far.
pub fn finish(socket: &Path, session: &str, out: &Path, vars: &BTreeMap<String, String>) -> anyhow::Result<i32> {
    std::fs::create_dir_all(out).with_context(|| format!("creating --out {}", out.display()))?;
    Recorded::load(out)?;
    let Some(mut run) = fetch(socket, session)? else {
        bail!("session `{session}` is not being learned (never started, already finished, or the daemon restarted)");
    };
    run.mcp = !run.calls.is_empty();
    run.ended = Some("still running (finished by `mcpguard learn --finish`)".into());
    write(out, session, vars, None, run)
}

/// The argument no command line has: a binary approved with only this pattern has every
/// command line refused — in audit mode, reported with the command line.
pub const SEED_ARG: &str = "--mcpguard-learn-records-the-command-line";
/// Where the learning baseline of a directory that already holds observations is written.
pub const SEED_FILE: &str = ".learn-baseline.toml";

/// The binaries earlier runs saw executed (and that are still there), for the next run to
/// record their command lines: the kernel reports the command line of an approved binary whose
/// arguments are refused, never of one that is not approved.
fn learning_baseline(out: &Path, rec: &Recorded) -> anyhow::Result<(String, Vec<PathBuf>)> {
    let seeds: std::collections::BTreeSet<&str> = rec
        .runs
        .iter()
        .flat_map(|r| &r.observations)
        .filter(|o| o.hook == "exec" && o.argv.is_none())
        .filter_map(|o| o.path.as_deref())
        .filter(|p| p.starts_with('/') && Path::new(p).is_file())
        .collect();
    if seeds.is_empty() {
        return Ok((LEARN_BASELINE.into(), Vec::new()));
    }
    let mut text = format!(
        "# Written by `mcpguard learn`: {LEARN_BASELINE}, with the binaries earlier runs executed\n\
         # approved for no command line, so that theirs are recorded.\nname = \"learn-audit-seeded\"\nmode = \"audit\"\n"
    );
    for p in &seeds {
        text.push_str(&format!(
            "\n[[exec]]\npath = {}\nargs = [\"{SEED_ARG}\"]\n",
            toml::Value::String((*p).to_owned())
        ));
    }
    let path = out.join(SEED_FILE);
    crate::grant::policy::Policy::parse(&text, &path.display().to_string())?;
    write_atomic(&path, &text)?;
    let abs = std::fs::canonicalize(&path).with_context(|| format!("resolving {}", path.display()))?;
    Ok((abs.display().to_string(), seeds.iter().map(PathBuf::from).collect()))
}

/// An MCP client ending its server sends SIGTERM to the whole process group (the official SDKs
/// do, two seconds after closing stdin), which would end `learn` before it wrote the proposal:
/// SIGTERM and SIGINT get a handler that does nothing (the server, our child, gets the default
/// disposition back at its exec, and ends as it would).
fn outlive_terminate() {
    extern "C" fn ignore(_: libc::c_int) {}
    let handler = ignore as extern "C" fn(libc::c_int);
    // SAFETY: installs a handler that touches nothing.
    unsafe {
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// The daemon's observations, ending the learning; `None` when someone else ended it.
fn fetch(socket: &Path, session: &str) -> anyhow::Result<Option<Run>> {
    let r = Client::connect(socket)?.call(Op::LearnFetch(LearnFetch { session: session.into(), finish: true }))?;
    match r.result {
        Ok(mut m) => {
            let v = m.remove("run").context("the daemon's learn_fetch answer has no `run`")?;
            Ok(Some(serde_json::from_value(v).context("the daemon's observations are not what this client reads")?))
        }
        Err(e) if e.code == ErrorCode::UnknownSession => Ok(None),
        Err(e) => bail!("daemon refused ({}): {}", e.code, e.message),
    }
}

/// The server without `--mcp`: forked, registered under the learning baseline, its stdio
/// relayed; returns how it ended.
fn run_plain(o: &LearnOptions) -> anyhow::Result<String> {
    let bin = mcp::spawn::which(&o.command[0])?;
    let launch = launch(o, bin);
    let server = mcp::spawn::spawn(&launch)?;
    let (pid, mut to_server, mut from_server) = (server.pid, server.stdin, server.stdout);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_server);
    });
    let relay = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let _ = std::io::copy(&mut from_server, &mut out).and_then(|_| out.flush());
    });
    let status = nix::sys::wait::waitpid(pid, None).context("waiting for the server")?;
    let _ = relay.join();
    mcp::spawn::kill_leftovers(&o.socket, &o.session);
    if let Ok(mut c) = Client::connect(&o.socket) {
        let _ = c.call(Op::Unregister(Unregister { session: o.session.clone() }));
    }
    Ok(describe(status))
}

fn describe(st: nix::sys::wait::WaitStatus) -> String {
    use nix::sys::wait::WaitStatus;
    match st {
        WaitStatus::Exited(_, c) => format!("exited with status {c}"),
        WaitStatus::Signaled(_, s, _) => format!("killed by {s:?}"),
        other => format!("{other:?}"),
    }
}

fn launch(o: &LearnOptions, bin: PathBuf) -> mcp::spawn::Launch {
    mcp::spawn::Launch {
        socket: o.socket.clone(),
        session: o.session.clone(),
        bin,
        argv: o.command.clone(),
        baseline: o.baseline.clone(),
        vars: BTreeMap::new(),
        // Learning must not change what the server can do: no ceiling (writes outside it
        // would fail for the wrong reason), the guard filter as in enforcement.
        write_ceiling: None,
        allow_metadata: false,
        parent: None,
    }
}

/// The server behind the MCP proxy in learning mode; returns how the proxy ended and the
/// tools the server listed.
fn run_proxy(o: &LearnOptions) -> anyhow::Result<(String, Vec<String>)> {
    let report = std::sync::Arc::new(std::sync::Mutex::new(mcp::proxy::ServerReport::default()));
    let opts = mcp::ProxyOptions {
        server_report: Some(report.clone()),
        socket: o.socket.clone(),
        session: o.session.clone(),
        baseline: o.baseline.clone(),
        vars: BTreeMap::new(),
        tools: PathBuf::from("(learning)"),
        command: o.command.clone(),
        // A server that ends (crashes) ends the learning: what it did is proposed.
        max_restarts: 0,
        write_ceiling: None,
        allow_metadata: false,
        parent: None,
        learn: Some(LEARN_CALL_TTL),
        learn_seeds: o
            .seeds
            .iter()
            .map(|p| ExecRule { args: Some(vec![SEED_ARG.into()]), ..ExecRule::path(p) })
            .collect(),
    };
    let code = mcp::run(opts)?;
    let r = report.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let ended = match r.ended {
        Some(h) => format!("{h} (proxy status {code})"),
        None => format!("ended with the client (proxy status {code})"),
    };
    Ok((ended, r.listed.into_iter().collect()))
}

/// Annotates `run`, merges it into `out`'s record, writes every file; returns the exit status.
fn write(
    out: &Path,
    session: &str,
    vars: &BTreeMap<String, String>,
    tools: Option<&Path>,
    mut run: Run,
) -> anyhow::Result<i32> {
    let since = SystemTime::UNIX_EPOCH + Duration::from_millis(run.started_unix_ms);
    annotate::annotate(&mut run, since);
    for c in &mut run.calls {
        annotate::call_paths(c);
    }
    let mut rec = Recorded::load(out)?;
    if let Some(t) = tools {
        let text = std::fs::read_to_string(t).with_context(|| format!("reading --tools {}", t.display()))?;
        rec.name_vars_from(&text, &t.display().to_string()).map_err(anyhow::Error::msg)?;
    }
    rec.merge(run);
    let p = propose::propose(&rec, session, vars);
    let files = render::files(&p);
    for (name, text) in &files {
        if name.ends_with(".toml") && name != "tools.toml" {
            crate::grant::policy::Policy::parse(text, name)
                .with_context(|| format!("the proposed {name} does not parse (a bug in mcpguard learn)"))?;
        }
    }
    for (name, text) in files.iter().chain([(&"observations.json".to_owned(), &rec.to_json())]) {
        write_atomic(&out.join(name), text)?;
    }
    eprintln!(
        "mcpguard learn: {} run(s), {} distinct observation(s); wrote {} file(s) to {}",
        p.runs,
        p.observations,
        files.len() + 1,
        out.display()
    );
    if !p.complete() {
        eprintln!(
            "mcpguard learn: INCOMPLETE: {} event(s) lost, {} dropped while learning; the proposal is flagged (see report.md)",
            p.lost_events, p.dropped
        );
        return Ok(EXIT_INCOMPLETE);
    }
    Ok(0)
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
