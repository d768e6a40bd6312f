//! The stdio proxy's core: one thread owns all state and handles events from the client reader,
//! the server reader and the clock. Messages are forwarded byte for byte; the proxy only
//! originates error responses (refused / killed / timed-out calls), cancellations of timed-out
//! calls, and the replayed `initialize` after a restart.
//!
//! Concurrency: `tools/call` requests are serialised. While one call is in flight (its grant in
//! force), later calls wait in a FIFO queue and are granted and forwarded one at a time, so a
//! server never runs with more than one call's grant and every kernel decision is attributable
//! to exactly one call. Other requests (tools/list, resources/*, pings) are not queued.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel},
    time::{Duration, Instant},
};

use nix::sys::wait::{WaitStatus, waitpid};
use serde_json::{Value, json};

use super::{
    DaemonClient,
    jsonrpc::{self, id_key},
    pins::{PinState, Pins},
    spawn::{self, Launch, Server},
    tools::ToolsPolicy,
};

/// Feeds each non-empty line (without its newline) to `f` until EOF (true) or `f` refuses (false).
fn read_lines(r: impl std::io::Read, mut f: impl FnMut(Vec<u8>) -> bool) -> bool {
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
        let l = line.strip_suffix(b"\n").unwrap_or(&line);
        if !l.is_empty() && !f(l.to_vec()) {
            return false;
        }
        line.clear();
    }
    true
}

pub enum Ev {
    Client(Vec<u8>),
    ClientEof,
    Server(u64, Vec<u8>),
    ServerExit(u64, WaitStatus),
}

/// What the proxy tells its owner about the server (`ProxyOptions::server_report`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServerReport {
    /// How the server last ended (`exited with status 0`, `killed by SIGSEGV`).
    pub ended: Option<String>,
    /// The tools it listed (pinned).
    pub listed: std::collections::BTreeSet<String>,
}

/// The `tools/call` in flight: its grant is in force until `deadline`.
struct Inflight {
    id: Value,
    key: String,
    tool: String,
    task: String,
    deadline: Instant,
}

/// A client's `tools/call` waiting for the one in flight to end.
struct QueuedCall {
    id: Value,
    line: Vec<u8>,
    msg: Value,
}

/// The call queue: calls are serialised, one in flight (with its grant), the others in order.
#[derive(Default)]
struct CallQueue {
    waiting: VecDeque<QueuedCall>,
    inflight: Option<Inflight>,
}

/// The request ledger (JSON-RPC bookkeeping): client requests forwarded to the server and not
/// yet answered (key -> id, method), and late responses to drop (cancelled or timed-out calls,
/// the replayed initialize).
#[derive(Default)]
struct Ledger {
    outstanding: HashMap<String, (Value, String)>,
    dropped: HashSet<String>,
}

/// The server running now (its generation tells its events from a predecessor's).
struct Running {
    generation: u64,
    stdin: File,
    pid: nix::unistd::Pid,
}

/// The server's lifecycle across restarts: the one running, restarts used, and the client's
/// handshake replayed to a restarted server (other traffic held back until it is answered).
struct Lifecycle {
    server: Option<Running>,
    generation: u64,
    restarts: u32,
    max_restarts: u32,
    init: Option<Value>,
    initialized: Option<Vec<u8>>,
    /// Waiting for the replayed initialize's response: other traffic is held back.
    replay: Option<String>,
    held: Vec<Vec<u8>>,
}

/// The proxy: the launch and tools policy it was started with, its daemon client, and the three
/// parts above, driven by one thread (`run`).
pub struct Proxy {
    launch: Launch,
    tools: ToolsPolicy,
    daemon: DaemonClient,
    tx: Sender<Ev>,
    out: std::io::Stdout,
    pins: Pins,
    calls: CallQueue,
    ledger: Ledger,
    life: Lifecycle,
    exit_code: Option<i32>,
    /// Where the server's tools and ends are told (`mcpguard learn` reports them).
    ended: Option<std::sync::Arc<std::sync::Mutex<ServerReport>>>,
}

impl Proxy {
    pub fn new(launch: Launch, tools: ToolsPolicy, daemon: DaemonClient, max_restarts: u32) -> (Self, Receiver<Ev>) {
        let (tx, rx) = channel();
        let life = Lifecycle {
            server: None,
            generation: 0,
            restarts: 0,
            max_restarts,
            init: None,
            initialized: None,
            replay: None,
            held: Vec::new(),
        };
        let p = Self {
            launch,
            tools,
            daemon,
            tx,
            out: std::io::stdout(),
            pins: Pins::default(),
            calls: CallQueue::default(),
            ledger: Ledger::default(),
            life,
            exit_code: None,
            ended: None,
        };
        (p, rx)
    }

    /// Tells `slot` the tools the server listed and how it ended, each time it does.
    pub fn report_ends(&mut self, slot: std::sync::Arc<std::sync::Mutex<ServerReport>>) {
        self.ended = Some(slot);
    }

    pub fn start_server(&mut self) -> anyhow::Result<()> {
        let Server { pid, stdin, stdout } = spawn::spawn(&self.launch)?;
        self.life.generation += 1;
        let generation = self.life.generation;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            if !read_lines(stdout, |l| tx.send(Ev::Server(generation, l)).is_ok()) {
                return;
            }
            // Stdout closed: the server is gone (or unusable); make sure, then reap it.
            let st = match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    std::thread::sleep(Duration::from_millis(200));
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    waitpid(pid, None)
                }
                other => other,
            };
            let _ = tx.send(Ev::ServerExit(generation, st.unwrap_or(WaitStatus::StillAlive)));
        });
        self.life.server = Some(Running { generation, stdin, pid });
        log::info!("session {}: server pid {pid} started (generation {generation})", self.launch.session);
        Ok(())
    }

    pub fn client_reader(&self) {
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            if read_lines(std::io::stdin(), |l| tx.send(Ev::Client(l)).is_ok()) {
                let _ = tx.send(Ev::ClientEof);
            }
        });
    }

    /// Runs until the client closes its end (or the session dies); returns the exit code.
    pub fn run(mut self, rx: &Receiver<Ev>) -> i32 {
        loop {
            if let Some(code) = self.exit_code {
                self.shutdown(rx);
                return code;
            }
            let ev = match self.calls.inflight.as_ref().map(|c| c.deadline) {
                Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                    Ok(ev) => ev,
                    Err(RecvTimeoutError::Timeout) => {
                        self.timeout();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return 1,
                },
                None => match rx.recv() {
                    Ok(ev) => ev,
                    Err(_) => return 1,
                },
            };
            match ev {
                Ev::Client(line) => self.on_client(line),
                Ev::ClientEof => {
                    self.shutdown(rx);
                    return 0;
                }
                Ev::Server(g, line) if g == self.life.generation => self.on_server(&line),
                Ev::ServerExit(g, st) if g == self.life.generation => self.server_died(st),
                Ev::Server(..) | Ev::ServerExit(..) => {}
            }
        }
    }

    fn send_client(&mut self, line: &[u8]) {
        let mut o = self.out.lock();
        let ok = o.write_all(line).and_then(|()| o.write_all(b"\n")).and_then(|()| o.flush());
        if ok.is_err() {
            self.exit_code = Some(0); // the client is gone
        }
    }

    fn send_server(&mut self, line: &[u8]) {
        if self.life.replay.is_some() {
            self.life.held.push(line.to_vec());
            return;
        }
        if let Some(Running { stdin, .. }) = &mut self.life.server {
            // A failed write means the server is gone: its exit event answers what is pending.
            let _ = stdin.write_all(line).and_then(|()| stdin.write_all(b"\n")).and_then(|()| stdin.flush());
        }
    }

    fn reply_error(&mut self, id: &Value, code: i64, message: &str, data: Value) {
        let line = jsonrpc::error_line(id, code, message, data);
        self.send_client(line.as_bytes());
    }

    fn on_client(&mut self, line: Vec<u8>) {
        let Ok(msg) = serde_json::from_slice::<Value>(&line) else {
            return self.send_server(&line); // not JSON: the server answers with a parse error
        };
        if let Value::Array(items) = &msg {
            if items.iter().any(|m| jsonrpc::method(m) == Some("tools/call")) {
                for m in items.iter().filter(|m| jsonrpc::is_request(m)) {
                    let msg = "mcpguard: batched tools/call is not supported; send calls one per message";
                    self.reply_error(&m["id"], jsonrpc::INVALID_REQUEST, msg, json!({"reason": "batch"}));
                }
                return;
            }
            for m in items.iter().filter(|m| jsonrpc::is_request(m)) {
                self.note_request(m);
            }
            return self.send_server(&line);
        }
        match jsonrpc::method(&msg) {
            Some("tools/call") if jsonrpc::is_request(&msg) => {
                self.calls.waiting.push_back(QueuedCall { id: msg["id"].clone(), line, msg });
                self.pump();
            }
            Some("initialize") if jsonrpc::is_request(&msg) => {
                self.life.init = Some(msg.clone());
                self.note_request(&msg);
                self.send_server(&line);
            }
            Some("notifications/initialized") => {
                self.life.initialized = Some(line.clone());
                self.send_server(&line);
            }
            Some("notifications/cancelled") => self.cancelled(&msg, &line),
            _ => {
                if jsonrpc::is_request(&msg) {
                    self.note_request(&msg);
                }
                self.send_server(&line);
            }
        }
    }

    fn note_request(&mut self, m: &Value) {
        let method = jsonrpc::method(m).unwrap_or_default().to_owned();
        self.ledger.outstanding.insert(id_key(&m["id"]), (m["id"].clone(), method));
    }

    fn cancelled(&mut self, msg: &Value, line: &[u8]) {
        let rid = id_key(&msg["params"]["requestId"]);
        if let Some(pos) = self.calls.waiting.iter().position(|c| id_key(&c.id) == rid) {
            self.calls.waiting.remove(pos); // never reached the server
            return;
        }
        self.send_server(line);
        if self.calls.inflight.as_ref().is_some_and(|c| c.key == rid) {
            let call = self.calls.inflight.take().expect("checked");
            self.ledger.dropped.insert(call.key.clone());
            self.end_call(&call, "cancelled");
            self.pump();
        }
    }

    /// Starts queued calls while none is in flight.
    fn pump(&mut self) {
        while self.calls.inflight.is_none() && self.life.replay.is_none() && self.life.server.is_some() {
            let Some(QueuedCall { id, line, msg }) = self.calls.waiting.pop_front() else {
                return;
            };
            let tool = msg["params"]["name"].as_str().unwrap_or_default().to_owned();
            match self.grant_call(&id, &tool, &msg["params"]["arguments"]) {
                Ok(call) => {
                    self.calls.inflight = Some(call);
                    self.note_request(&msg);
                    self.send_server(&line);
                }
                Err((reason, message)) => {
                    log::warn!(
                        "session {}: tools/call {} ({tool}) refused: {reason}: {message}",
                        self.launch.session,
                        id_key(&id)
                    );
                    let text = format!("mcpguard refused tools/call `{tool}`: {reason}: {message}");
                    self.reply_error(&id, jsonrpc::REFUSED, &text, json!({"reason": reason, "tool": tool}));
                }
            }
        }
    }

    fn grant_call(&mut self, id: &Value, tool: &str, args: &Value) -> Result<Inflight, (&'static str, String)> {
        match self.pins.state(tool) {
            PinState::Approved => {}
            PinState::NotListed => {
                return Err((
                    "not_listed",
                    "the tool was not in the approved tools/list (list tools before calling them)".into(),
                ));
            }
            PinState::Changed => {
                return Err((
                    "tool_changed",
                    "the tool's definition changed since it was approved at the first tools/list; restart the session to re-approve".into(),
                ));
            }
        }
        let args = (!args.is_null()).then_some(args);
        let g = self.tools.grant_for(tool, args).map_err(|r| (r.reason, r.message))?;
        let task = jsonrpc::task_name(id);
        let call_id = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
        self.daemon.grant_call(&self.launch.session, &task, tool, &call_id, &g)?;
        if self.tools.learning.is_some() {
            self.daemon.learn_call(&self.launch.session, &call_id, tool, args.cloned().unwrap_or_default())?;
        }
        log::info!(
            "session {}: tools/call {call_id} ({tool}) granted {} for {:?}",
            self.launch.session,
            g.template,
            g.ttl
        );
        Ok(Inflight { id: id.clone(), key: id_key(id), tool: tool.to_owned(), task, deadline: Instant::now() + g.ttl })
    }

    fn end_call(&mut self, call: &Inflight, why: &str) {
        self.ledger.outstanding.remove(&call.key);
        if let Err(e) = self.daemon.revoke(&self.launch.session, &call.task) {
            log::debug!("revoking {} ({why}): {e}", call.task);
        }
        log::info!(
            "session {}: tools/call {} ({}) ended: {why}; grant revoked",
            self.launch.session,
            call.key,
            call.tool
        );
    }

    fn timeout(&mut self) {
        let Some(call) = self.calls.inflight.take() else { return };
        self.ledger.dropped.insert(call.key.clone());
        self.end_call(&call, "timed out");
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": call.id, "reason": "mcpguard: the call's grant expired"}});
        self.send_server(cancel.to_string().as_bytes());
        let msg = format!("mcpguard: tools/call `{}` did not finish within its grant's TTL; cancelled", call.tool);
        self.reply_error(&call.id, jsonrpc::TIMEOUT, &msg, json!({"reason": "timeout", "tool": call.tool}));
        self.pump();
    }

    fn on_server(&mut self, line: &[u8]) {
        let Ok(msg) = serde_json::from_slice::<Value>(line) else {
            return self.send_client(line);
        };
        let items: Vec<&Value> = match &msg {
            Value::Array(a) => a.iter().collect(),
            m => vec![m],
        };
        let mut forward = true;
        for m in items.into_iter().filter(|m| jsonrpc::is_response(m)) {
            let key = id_key(&m["id"]);
            if self.life.replay.as_deref() == Some(key.as_str()) {
                forward = false;
                self.replay_done();
                continue;
            }
            if self.ledger.dropped.remove(&key) {
                forward = false;
                continue;
            }
            let method = self.ledger.outstanding.remove(&key).map(|(_, m)| m);
            if method.as_deref() == Some("tools/list") {
                let changed = self.pins.observe(&m["result"]);
                if let Some(slot) = &self.ended {
                    slot.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .listed
                        .extend(self.pins.names().cloned());
                }
                for t in changed {
                    log::warn!(
                        "session {}: tool `{t}` changed after approval; its calls are refused",
                        self.launch.session
                    );
                }
            }
            if self.calls.inflight.as_ref().is_some_and(|c| c.key == key) {
                let call = self.calls.inflight.take().expect("checked");
                self.end_call(&call, "response");
            }
        }
        if forward {
            self.send_client(line);
        }
        self.pump();
    }

    fn replay_done(&mut self) {
        self.life.replay = None;
        if let Some(n) = self.life.initialized.clone() {
            self.send_server(&n);
        }
        for l in std::mem::take(&mut self.life.held) {
            self.send_server(&l);
        }
        log::info!("session {}: server re-initialised", self.launch.session);
    }

    fn server_died(&mut self, st: WaitStatus) {
        self.life.server = None;
        let killed = matches!(st, WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _));
        let how = match st {
            WaitStatus::Signaled(_, s, _) => format!("killed by {s:?}"),
            WaitStatus::Exited(_, c) => format!("exited with status {c}"),
            other => format!("{other:?}"),
        };
        log::warn!("session {}: server {how}", self.launch.session);
        if let Some(slot) = &self.ended {
            slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).ended = Some(how.clone());
        }
        spawn::kill_leftovers(&self.launch.socket, &self.launch.session);
        let restart = self.life.restarts < self.life.max_restarts;
        if let Some(call) = self.calls.inflight.take() {
            self.end_call(&call, &how);
            let cause = if killed {
                "mcpguard's kill backend stopped the server for a forbidden exec or open during this call (see the audit log)"
            } else {
                "the server ended during this call"
            };
            let next = if restart { "the server is being restarted" } else { "the session is over" };
            let msg = format!("mcpguard: tools/call `{}` failed: server {how}: {cause}; {next}", call.tool);
            let reason = if killed { "server_killed" } else { "server_exited" };
            self.reply_error(&call.id, jsonrpc::SERVER_DIED, &msg, json!({"reason": reason, "tool": call.tool}));
        }
        for (key, (id, method)) in std::mem::take(&mut self.ledger.outstanding) {
            if self.life.replay.as_deref() != Some(key.as_str()) {
                let msg = format!("mcpguard: server {how} before answering {method}");
                self.reply_error(&id, jsonrpc::SERVER_DIED, &msg, json!({"reason": "server_exited"}));
            }
        }
        self.life.replay = None;
        self.life.held.clear();
        if !restart {
            self.fail_queue("the session is over: the server ended and the restart limit is reached");
            self.exit_code = Some(1);
            return;
        }
        self.life.restarts += 1;
        if let Err(e) = self.start_server() {
            log::error!("session {}: restarting the server: {e:#}", self.launch.session);
            self.fail_queue("the server could not be restarted");
            self.exit_code = Some(1);
            return;
        }
        // Replay the client's initialize (if the session used the handshake) under our own id.
        if let Some(mut init) = self.life.init.clone() {
            let key = format!("mcpguard-replay-{}", self.life.restarts);
            init["id"] = Value::String(key.clone());
            self.send_server(init.to_string().as_bytes());
            self.life.replay = Some(format!("\"{key}\""));
        }
        self.pump();
    }

    fn fail_queue(&mut self, why: &str) {
        for QueuedCall { id, .. } in std::mem::take(&mut self.calls.waiting) {
            self.reply_error(&id, jsonrpc::SERVER_DIED, &format!("mcpguard: {why}"), json!({"reason": "session_dead"}));
        }
    }

    /// The client closed its end (or the session is over): end the call in flight, close the
    /// server's stdin, give it a moment, stop what is left, and forget the session.
    fn shutdown(mut self, rx: &Receiver<Ev>) {
        if let Some(call) = self.calls.inflight.take() {
            self.end_call(&call, "client closed");
        }
        if let Some(Running { generation, stdin, pid }) = self.life.server.take() {
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(Ev::ServerExit(g, _)) if g == generation => break,
                    Ok(_) => {}
                    Err(_) => {
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                        let _ = rx.recv_timeout(Duration::from_secs(2));
                        break;
                    }
                }
            }
        }
        spawn::kill_leftovers(&self.launch.socket, &self.launch.session);
        self.daemon.unregister(&self.launch.session);
    }
}
