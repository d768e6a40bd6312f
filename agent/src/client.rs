//! Control-socket client used by the CLI verbs.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
};

use anyhow::{Context as _, bail};

use crate::protocol::{Op, Request, Response};

pub struct Client {
    stream: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(socket: &Path) -> anyhow::Result<Self> {
        let s = UnixStream::connect(socket).with_context(|| {
            format!("cannot reach the mcpguard daemon at {} (is `mcpguard daemon` running?)", socket.display())
        })?;
        Ok(Self { stream: BufReader::new(s) })
    }

    /// Sends one request; returns the response (an error response is returned, not raised).
    pub fn call(&mut self, op: Op) -> anyhow::Result<Response> {
        let line = Request::new(Some(1), op).to_line();
        self.stream.get_mut().write_all(line.as_bytes()).context("sending request")?;
        self.read_response()
    }

    pub fn read_response(&mut self) -> anyhow::Result<Response> {
        let mut buf = String::new();
        if self.stream.read_line(&mut buf).context("reading response")? == 0 {
            bail!("the daemon closed the connection");
        }
        Response::parse(buf.trim_end().as_bytes()).map_err(|e| anyhow::anyhow!("bad response from daemon: {e}"))
    }

    /// Next raw line (event streams).
    pub fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        let mut buf = String::new();
        Ok((self.stream.read_line(&mut buf)? > 0).then(|| buf.trim_end().to_owned()))
    }

    /// Calls and turns an error response into an error naming the daemon's code and message.
    pub fn call_ok(&mut self, op: Op) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        match self.call(op)?.result {
            Ok(m) => Ok(m),
            Err(e) => bail!("daemon refused ({}): {}", e.code.as_str(), e.message),
        }
    }
}
