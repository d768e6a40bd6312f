//! MCP-aware mode of `mcpguard exec --mcp`: a stdio proxy between an MCP client and the server
//! it launches (governed), issuing one kernel grant per `tools/call`.
//!
//! - [`tools`]: the tools policy (tool -> grant template, call arguments -> template variables).
//! - [`pins`]: tool definitions pinned at the first `tools/list`.
//! - [`spawn`]: the server is forked, registered by pid, then released to exec.
//! - [`proxy`]: the event loop (forwarding, per-call grants, serialisation, kill handling).
pub mod jsonrpc;
pub mod pins;
pub mod proxy;
pub mod spawn;
pub mod tools;

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context as _;

use crate::{
    daemon::protocol::{ErrorCode, Grant, Op, Revoke, Unregister},
    grant::duration::format_duration,
    launcher::client::Client,
};

/// Options of `mcpguard exec --mcp`.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub socket: PathBuf,
    pub session: String,
    pub baseline: String,
    pub vars: BTreeMap<String, String>,
    pub tools: PathBuf,
    pub command: Vec<String>,
    /// How often the server is restarted after it died (e.g. killed) before the session ends.
    pub max_restarts: u32,
    /// Extra write-ceiling roots (`--write-ceiling`); `None`: launch without a ceiling.
    pub write_ceiling: Option<Vec<PathBuf>>,
    /// The server may change modes, owners and xattrs, and set given times (`--allow-metadata`).
    pub allow_metadata: bool,
    /// The session this one is delegated from (`--parent`): every call's grant stays within it.
    pub parent: Option<String>,
    /// `mcpguard learn --mcp`: every call runs under an empty audit-mode grant of this TTL, and
    /// its arguments are handed to the daemon (`tools` is not read).
    pub learn: Option<std::time::Duration>,
    /// While learning: binaries each call approves for no command line (theirs are reported).
    pub learn_seeds: Vec<crate::grant::policy::ExecRule>,
    /// Told the tools the server listed and how it ended.
    pub server_report: Option<std::sync::Arc<std::sync::Mutex<proxy::ServerReport>>>,
}

/// The proxy's client of the daemon: typed calls for what the proxy asks (a call's grant, its
/// revocation, the session's end); reconnects once when the connection broke.
pub struct DaemonClient {
    socket: PathBuf,
    conn: Option<Client>,
}

impl DaemonClient {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket, conn: None }
    }

    fn call(&mut self, op: &Op) -> anyhow::Result<crate::daemon::protocol::Response> {
        for attempt in 0..2 {
            if self.conn.is_none() {
                self.conn = Some(Client::connect(&self.socket)?);
            }
            match self.conn.as_mut().expect("connected").call(op.clone()) {
                Ok(r) => return Ok(r),
                Err(e) if attempt == 0 => {
                    log::debug!("daemon connection lost ({e}); reconnecting");
                    self.conn = None;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }

    /// Requests a call's grant. A changed binary (the daemon's `digest_mismatch` against the
    /// digest approved when the proxy started) is reported as `binary_changed`.
    pub fn grant_call(
        &mut self,
        session: &str,
        task: &str,
        tool: &str,
        call_id: &str,
        g: &tools::CallGrant,
    ) -> Result<(), (&'static str, String)> {
        let op = Op::Grant(Grant {
            session: session.into(),
            task: task.into(),
            policy: None,
            inline: Some(g.inline.clone()),
            vars: BTreeMap::new(),
            ttl: Some(format_duration(g.ttl)),
            mode: Some(g.mode),
            tool: Some(tool.into()),
            call_id: Some(call_id.chars().filter(|c| !c.is_control()).take(4096).collect()),
        });
        match self.call(&op) {
            Ok(r) => match r.result {
                Ok(_) => Ok(()),
                Err(e) if e.code == ErrorCode::DigestMismatch => Err(("binary_changed", e.message)),
                Err(e) => Err(("grant_refused", format!("daemon: {}: {}", e.code, e.message))),
            },
            Err(e) => Err(("daemon_unreachable", format!("{e:#}"))),
        }
    }

    /// Names a learning session's call and its arguments (`daemon::learn`).
    pub fn learn_call(
        &mut self,
        session: &str,
        call_id: &str,
        tool: &str,
        arguments: serde_json::Value,
    ) -> Result<(), (&'static str, String)> {
        let op = Op::LearnCall(crate::daemon::protocol::LearnCall {
            session: session.into(),
            call_id: call_id.chars().filter(|c| !c.is_control()).take(4096).collect(),
            tool: tool.into(),
            arguments,
        });
        match self.call(&op) {
            Ok(r) => r.result.map(drop).map_err(|e| ("grant_refused", format!("daemon: {}: {}", e.code, e.message))),
            Err(e) => Err(("daemon_unreachable", format!("{e:#}"))),
        }
    }

    pub fn revoke(&mut self, session: &str, task: &str) -> anyhow::Result<()> {
        let r = self.call(&Op::Revoke(Revoke { session: session.into(), task: Some(task.into()) }))?;
        r.result.map(|_| ()).map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))
    }

    pub fn unregister(&mut self, session: &str) {
        let _ = self.call(&Op::Unregister(Unregister { session: session.into() }));
    }
}

/// Runs the proxy until the client disconnects; returns the process exit code.
pub fn run(opts: ProxyOptions) -> anyhow::Result<i32> {
    // The server is our child and may run as our uid: make sure it cannot ptrace us (and so
    // reach the daemon through our connection) or read our memory through /proc.
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let tools = match opts.learn {
        Some(ttl) => tools::ToolsPolicy::learning(ttl, opts.learn_seeds.clone()),
        None => tools::ToolsPolicy::load(&opts.tools).with_context(|| "loading the tools policy")?,
    };
    let bin = spawn::which(&opts.command[0])?;
    // Whatever any call may write (the templates' write roots), besides the explicit roots.
    let write_ceiling = match &opts.write_ceiling {
        Some(extra) => {
            let mut roots = tools.write_roots().map_err(|e| anyhow::anyhow!("write ceiling: {e}"))?;
            roots.extend(extra.iter().cloned());
            Some(roots)
        }
        None => None,
    };
    let launch = spawn::Launch {
        write_ceiling,
        allow_metadata: opts.allow_metadata,
        socket: opts.socket.clone(),
        session: opts.session.clone(),
        bin,
        argv: opts.command.clone(),
        baseline: opts.baseline.clone(),
        vars: opts.vars.clone(),
        parent: opts.parent.clone(),
    };
    let (mut proxy, rx) = proxy::Proxy::new(launch, tools, DaemonClient::new(opts.socket), opts.max_restarts);
    if let Some(slot) = opts.server_report.clone() {
        proxy.report_ends(slot);
    }
    proxy.start_server().context("starting the MCP server")?;
    proxy.client_reader();
    Ok(proxy.run(&rx))
}
