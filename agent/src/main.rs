//! `mcpguard`: the daemon and its command-line verbs.
use std::{os::fd::AsRawFd as _, os::unix::process::CommandExt as _, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use mcpguard::{
    daemon::protocol::{Grant, InlineGrant, Op, Register, Revoke},
    daemon::server::{self as daemon, Config},
    grant::policy::{ExecRule, Mode, Policy},
    launcher::client::Client,
};

#[derive(Parser)]
#[command(name = "mcpguard", version, about = "Per-task, kernel-enforced grants for MCP servers")]
struct Cli {
    /// Control socket of the daemon.
    #[arg(long, env = "MCPGUARD_SOCKET", default_value = daemon::DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct ExecArgs {
    #[arg(long)]
    session: String,
    /// Policy (name or file) for what the program needs to run at all.
    #[arg(long, default_value = "baseline-minimal")]
    baseline: String,
    #[arg(long = "var", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// Also make the session a cgroup v2 (created by the daemon): every process in it is
    /// governed by cgroup id, including ones moved in later.
    #[arg(long, conflicts_with = "mcp")]
    cgroup: bool,
    /// Stay between the MCP client and the server (stdio) and grant per `tools/call`.
    #[arg(long, requires = "tools")]
    mcp: bool,
    /// With --mcp: tools policy mapping tool names to grant templates.
    #[arg(long, requires = "mcp")]
    tools: Option<PathBuf>,
    /// With --mcp: restarts of a server that died (e.g. was killed) before the session ends.
    #[arg(long, default_value_t = 3, requires = "mcp")]
    max_restarts: u32,
    /// Besides the baseline's write paths (and with --mcp the tools templates' write roots),
    /// where the program may create, remove, rename and truncate files (Landlock; repeatable).
    /// Cover here whatever an orchestrator will grant writes to: outside the ceiling those
    /// operations fail with EACCES whatever the task grant says.
    #[arg(long = "write-ceiling", value_name = "PATH", conflicts_with = "no_write_ceiling")]
    write_ceiling: Vec<PathBuf>,
    /// Launch without the Landlock write ceiling (kernels without Landlock; path operations
    /// then stay ungoverned on the kill backend).
    #[arg(long, conflicts_with = "cgroup")]
    no_write_ceiling: bool,
    /// Let the program change modes, owners and extended attributes (chmod, chown, setxattr
    /// families) and set file times to given values (touch -d, cp -p, tar x); refused with EPERM
    /// by default, session-wide. Times set to now stay allowed either way.
    #[arg(long)]
    allow_metadata: bool,
    /// Delegate from this session: the program's grants (with --mcp each call's) are always
    /// within the parent session's grant in force, and end with it.
    #[arg(long, value_name = "SESSION")]
    parent: Option<String>,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the host daemon (root).
    Daemon(DaemonArgs),
    /// Remove everything the daemon pinned (enforcement off).
    Unpin {
        #[arg(long, default_value = daemon::DEFAULT_BPFFS_DIR)]
        bpffs_dir: PathBuf,
    },
    /// Launch a program governed from its first instruction.
    Exec(ExecArgs),
    /// Issue the grant for a task (replaces the session's previous task grant in one step).
    Grant {
        #[arg(long)]
        session: String,
        #[arg(long)]
        task: String,
        #[arg(long, conflicts_with_all = ["allow_exec", "allow_read", "allow_write", "allow_metadata", "allow_connect", "allow_listen"])]
        policy: Option<String>,
        #[arg(long)]
        allow_exec: Vec<PathBuf>,
        #[arg(long)]
        allow_read: Vec<PathBuf>,
        #[arg(long)]
        allow_write: Vec<PathBuf>,
        /// Writable, and mode and owner may change (chmod/chown; deny backends decide it per path).
        #[arg(long, value_name = "PATH")]
        allow_metadata: Vec<PathBuf>,
        /// `tcp://HOST:PORT`, `udp://HOST:PORT` (HOST an IP, CIDR or DNS name; PORT a number, a
        /// range `LO-HI` or `*`), `unix:/path.sock`, `unix:@abstract`.
        #[arg(long, value_name = "TARGET")]
        allow_connect: Vec<String>,
        /// `tcp://ADDR:PORT`: an address the server may listen on.
        #[arg(long, value_name = "TARGET")]
        allow_listen: Vec<String>,
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        mode: Option<Mode>,
    },
    /// Revoke a session's task grant.
    Revoke {
        #[arg(long)]
        session: String,
        #[arg(long)]
        task: Option<String>,
    },
    /// Backend in force, sessions, grants with remaining TTL.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check this host: what it can enforce (each backend loaded for real), and the fix for
    /// every problem. Exit status 0 when some backend works, 1 when none does (root).
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Decision events (audit lines): the last N, then exit; with --follow, keep streaming.
    Events {
        /// How many recent events to print first (at most 1000; the audit log file has all).
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        lines: u32,
        /// Keep streaming new events after the recent ones.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print the audit lines as they are (JSON, audit format 3).
        #[arg(long)]
        json: bool,
        /// Only this session's events.
        #[arg(long)]
        session: Option<String>,
        /// Only events with this reason (not_granted, other_process, args_not_granted, ...).
        #[arg(long)]
        reason: Option<String>,
        /// Only events at or after this RFC 3339 time, or this long ago (30s, 10m, 2h).
        #[arg(long)]
        since: Option<String>,
    },
    /// Workload identity: the public keys session tokens are signed with.
    Identity {
        #[command(subcommand)]
        cmd: IdentityCmd,
    },
    /// Learn a policy: run the server governed in audit mode (nothing stopped, everything
    /// recorded), then write the proposed baseline (and with --mcp the per-tool templates and
    /// tools policy) and a report into --out. Again with the same --out: observations merge.
    Learn(LearnArgs),
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
}

#[derive(clap::Args)]
struct LearnArgs {
    /// The session to learn (with --finish: the learning session to end now).
    #[arg(long, required_unless_present = "finish", conflicts_with = "finish")]
    session: Option<String>,
    /// End the learning of this session (still running elsewhere) and write its proposal.
    #[arg(long, value_name = "SESSION")]
    finish: Option<String>,
    /// Where the proposal is written (and earlier observations are merged from).
    #[arg(long)]
    out: PathBuf,
    /// Stay between the MCP client and the server (stdio) and learn per `tools/call`.
    #[arg(long)]
    mcp: bool,
    /// With --mcp: a tools policy whose `args = { var = "argument" }` name the template
    /// variables of the proposal (otherwise named after the argument: `repo_path` -> `repo`).
    #[arg(long, requires = "mcp")]
    tools: Option<PathBuf>,
    /// A path to name by a variable in the proposed baseline (`python_prefix=/opt/venv`).
    #[arg(long = "var", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum IdentityCmd {
    /// Print the daemon's JWKS (current and previous signing key), e.g. to publish it where the
    /// services that verify the tokens fetch it.
    Jwks,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate policy files; errors name file, line and field.
    Check { files: Vec<PathBuf> },
    /// The policies built into this binary (a file of the same name in a policy directory wins).
    List,
    /// What policy A grants that B does not, and the other way round (files or built-in names).
    /// Exit status 0 when they grant the same, 1 when they differ.
    Diff { a: String, b: String },
}

#[derive(clap::Args)]
struct DaemonArgs {
    /// TOML file with the same settings as the flags (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Prometheus listen address (loopback by default), or `off`.
    #[arg(long)]
    metrics: Option<String>,
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Audit log file, or `-` for stdout.
    #[arg(long)]
    audit_log: Option<String>,
    #[arg(long)]
    bpffs_dir: Option<PathBuf>,
    /// Additional uid allowed to register sessions and issue grants (root always may).
    #[arg(long)]
    allow_uid: Vec<u32>,
    #[arg(long)]
    allow_gid: Vec<u32>,
    #[arg(long)]
    policy_dir: Vec<PathBuf>,
    #[arg(long)]
    default_ttl: Option<String>,
    #[arg(long)]
    max_ttl: Option<String>,
    /// Unpin programs and maps on SIGTERM (default: keep enforcing while the daemon is down).
    #[arg(long)]
    unload_on_exit: bool,
    /// Force the enforcement backend (kill, lsm) instead of the strongest verified one.
    #[arg(long)]
    backend: Option<mcpguard::kernel::engine::Backend>,
    /// Attach the network programs to this cgroup v2 directory instead of the cgroup v2 root
    /// (governed processes outside it are then not network-confined: for tests).
    #[arg(long, value_name = "DIR")]
    net_cgroup: Option<PathBuf>,
    /// How often DNS names in grants are resolved again (default 60s).
    #[arg(long, value_name = "DURATION")]
    dns_refresh: Option<String>,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn daemon_config(socket: PathBuf, a: DaemonArgs) -> anyhow::Result<Config> {
    let mut cfg = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => Config::default(),
    };
    cfg.socket = socket;
    if let Some(m) = a.metrics {
        cfg.metrics = if m == "off" { None } else { Some(m.parse().with_context(|| format!("--metrics {m}"))?) };
    }
    if let Some(v) = a.state_dir {
        cfg.state_dir = v;
    }
    if let Some(v) = a.audit_log {
        cfg.audit_log = v;
    }
    if let Some(v) = a.bpffs_dir {
        cfg.bpffs_dir = v;
    }
    cfg.allow_uids.extend(a.allow_uid);
    cfg.allow_gids.extend(a.allow_gid);
    if !a.policy_dir.is_empty() {
        cfg.policy_dirs = a.policy_dir;
    }
    if let Some(v) = a.default_ttl {
        cfg.default_ttl = mcpguard::grant::duration::parse_duration(&v)?;
    }
    if let Some(v) = a.max_ttl {
        cfg.max_ttl = mcpguard::grant::duration::parse_duration(&v)?;
    }
    cfg.unload_on_exit |= a.unload_on_exit;
    if a.backend.is_some() {
        cfg.backend = a.backend;
    }
    if a.net_cgroup.is_some() {
        cfg.net_cgroup = a.net_cgroup;
    }
    if let Some(v) = a.dns_refresh {
        cfg.dns_refresh = mcpguard::grant::duration::parse_duration(&v)?;
    }
    if cfg.default_ttl > cfg.max_ttl {
        bail!("default_ttl is longer than max_ttl");
    }
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.cmd {
        Cmd::Daemon(a) => {
            let cfg = daemon_config(cli.socket, a)?;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(daemon::run(cfg))
        }
        Cmd::Unpin { bpffs_dir } => {
            let removed = mcpguard::kernel::engine::unpin(&bpffs_dir)
                .with_context(|| format!("unpinning {}", bpffs_dir.display()))?;
            println!("removed {} pinned object(s) under {}; enforcement is off", removed.len(), bpffs_dir.display());
            Ok(())
        }
        Cmd::Exec(a) if a.mcp => {
            let opts = mcpguard::launcher::mcp::ProxyOptions {
                socket: cli.socket,
                session: a.session,
                baseline: a.baseline,
                vars: a.vars.into_iter().collect(),
                tools: a.tools.context("--mcp needs --tools")?,
                command: a.command,
                max_restarts: a.max_restarts,
                write_ceiling: (!a.no_write_ceiling).then_some(a.write_ceiling),
                allow_metadata: a.allow_metadata,
                parent: a.parent,
                learn: None,
                learn_seeds: Vec::new(),
                server_report: None,
            };
            std::process::exit(mcpguard::launcher::mcp::run(opts)?);
        }
        Cmd::Exec(a) => exec(&cli.socket, a),
        Cmd::Grant {
            session,
            task,
            policy,
            allow_exec,
            allow_read,
            allow_write,
            allow_metadata,
            allow_connect,
            allow_listen,
            vars,
            ttl,
            mode,
        } => {
            let inline = policy.is_none().then(|| InlineGrant {
                exec: allow_exec.into_iter().map(ExecRule::path).collect(),
                read: allow_read,
                write: allow_write,
                metadata: allow_metadata,
                connect: allow_connect,
                listen: allow_listen,
            });
            let op = Op::Grant(Grant {
                session,
                task,
                policy,
                inline,
                vars: vars.into_iter().collect(),
                ttl,
                mode,
                tool: None,
                call_id: None,
            });
            let r = Client::connect(&cli.socket)?.call_ok(op)?;
            println!(
                "grant {} for task {} (policy {}, mode {}), expires in {} ms",
                r["grant_id"], r["task"], r["policy"], r["mode"], r["ttl_ms"]
            );
            Ok(())
        }
        Cmd::Revoke { session, task } => {
            let r = Client::connect(&cli.socket)?.call_ok(Op::Revoke(Revoke { session, task }))?;
            println!("revoked grant {}", r["revoked_grant_id"]);
            Ok(())
        }
        Cmd::Status { json } => {
            let r = Client::connect(&cli.socket)?.call_ok(Op::Status {})?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", mcpguard::cli::status::render(&serde_json::Value::Object(r)));
            }
            Ok(())
        }
        Cmd::Doctor { json } => std::process::exit(mcpguard::doctor::run(&cli.socket, json)),
        Cmd::Events { lines, follow, json, session, reason, since } => {
            use mcpguard::cli::events;
            let since = since.map(|s| events::parse_since(&s, jiff::Timestamp::now())).transpose()?;
            let sub = events::subscription(lines, follow, session, reason, since)?;
            let mut c = Client::connect(&cli.socket)?;
            c.call_ok(Op::Subscribe(sub))?;
            let tz = jiff::tz::TimeZone::system();
            if !json {
                println!("{}", events::human_header());
            }
            while let Some(line) = c.next_line()? {
                if json {
                    println!("{line}");
                } else {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                    println!("{}", events::human_line(&v, &tz));
                }
            }
            Ok(())
        }
        Cmd::Policy { cmd: PolicyCmd::Check { files } } => check_policies(&files),
        Cmd::Policy { cmd: PolicyCmd::Diff { a, b } } => {
            use mcpguard::grant::learn::diff;
            let load = |n: &str| mcpguard::grant::policy::resolve_policy(n, &[]).map(|(p, _)| p);
            let (pa, pb) = (load(&a)?, load(&b)?);
            let (ga, gb) = (diff::Grants::from(&pa).resolved(), diff::Grants::from(&pb).resolved());
            let (text, same) = diff::render(&a, &ga, &b, &gb);
            print!("{text}");
            std::process::exit(i32::from(!same));
        }
        Cmd::Learn(l) => {
            let vars = l.vars.into_iter().collect();
            let code = match (l.finish, l.session) {
                (Some(f), _) => mcpguard::cli::learn::finish(&cli.socket, &f, &l.out, &vars)?,
                (None, Some(session)) => mcpguard::cli::learn::run(&mcpguard::cli::learn::LearnOptions {
                    baseline: mcpguard::cli::learn::LEARN_BASELINE.into(),
                    seeds: Vec::new(),
                    socket: cli.socket,
                    session,
                    out: l.out,
                    mcp: l.mcp,
                    vars,
                    tools: l.tools,
                    command: l.command,
                })?,
                (None, None) => bail!("learn needs --session NAME (or --finish NAME)"),
            };
            std::process::exit(code);
        }
        Cmd::Identity { cmd: IdentityCmd::Jwks } => {
            let r = Client::connect(&cli.socket)?.call_ok(Op::Jwks {})?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Cmd::Policy { cmd: PolicyCmd::List } => {
            for (name, _) in mcpguard::grant::builtin::BUILTIN {
                println!("{name}");
            }
            Ok(())
        }
    }
}

/// `mcpguard exec` without `--mcp`: register this process, install the filters and the ceiling,
/// and become the program (governed from its first instruction).
fn exec(socket: &std::path::Path, a: ExecArgs) -> anyhow::Result<()> {
    let ExecArgs {
        session,
        baseline,
        vars,
        cgroup,
        command,
        write_ceiling,
        no_write_ceiling,
        allow_metadata,
        parent,
        ..
    } = a;
    let bin = mcpguard::launcher::mcp::spawn::which(&command[0])?;
    let guard = mcpguard::launcher::seccomp::GuardFilter::with_metadata(allow_metadata)?;
    let mut argv = command.clone();
    argv[0] = bin.display().to_string();
    let mut c = Client::connect(socket)?;
    // Where no kernel hook can refuse a signal (the kill backend), the daemon decides the
    // session's signals through the seccomp signal filter's listener, installed now and
    // taken by the daemon while it registers us.
    let notifier = if !cgroup && mcpguard::launcher::mcp::spawn::daemon_decides_signals(&mut c)? {
        let f = mcpguard::launcher::seccomp::SignalFilter::new()?;
        Some(f.install().context("installing the seccomp signal filter; not starting the program")?)
    } else {
        None
    };
    let op = Op::Register(Register {
        cgroup,
        // The filter goes in below, before the program's first instruction. A cgroup
        // session also governs processes moved in later, which carry no filter.
        sealed: !cgroup,
        // Processes moved into a cgroup session later would carry no ruleset.
        write_ceiling: (!cgroup && !no_write_ceiling).then_some(write_ceiling),
        signal_notifier: notifier.as_ref().map(|f| f.as_raw_fd() as u32),
        parent,
        ..Register::launched(session, std::process::id(), argv, baseline, vars.into_iter().collect())
    });
    let registered = c.call_ok(op)?;
    drop((c, notifier));
    let ceiling = mcpguard::launcher::landlock::Ceiling::from_response(&registered)?;
    let ruleset = ceiling.as_ref().map(mcpguard::launcher::landlock::Ceiling::prepare).transpose()?;
    // Governed from here on. The guard syscalls are refused from now on too (inherited
    // by every descendant); without the filter the program is not started (fail closed).
    guard.install().context("installing the seccomp guard filter; not starting the program")?;
    if let Some(r) = &ruleset {
        r.restrict_self().context("applying the Landlock write ceiling; not starting the program")?;
    }
    // Exec the approved binary (argv[0] kept as given).
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg0(&command[0]).args(&command[1..]);
    // Where the session's task token appears while a task grant is in force (daemon::tokens).
    match registered.get("token_file").and_then(|v| v.as_str()) {
        Some(f) => cmd.env(mcpguard::launcher::mcp::spawn::TOKEN_ENV, f),
        None => cmd.env_remove(mcpguard::launcher::mcp::spawn::TOKEN_ENV),
    };
    let err = cmd.exec();
    bail!("exec {}: {err}", bin.display())
}

/// `mcpguard policy check`: each file parses and validates, or the reason.
fn check_policies(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut bad = 0;
    for f in files {
        match Policy::load(f) {
            Ok(p) => println!("{}: ok (policy {})", f.display(), p.name),
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} policy file(s) invalid", files.len());
    }
    Ok(())
}
