//! Control-socket client used by the CLI verbs and the MCP proxy.
//!
//! Before sending anything, the client verifies that the process serving the socket is the
//! daemon: a governed root process could unlink the socket and bind its own, to collect grant
//! requests or answer them falsely. The daemon writes its pid next to the socket
//! (`SOCKET.pid`, root-owned, not writable by others) before it binds; the client requires the
//! socket's peer (`SO_PEERCRED`, taken by the kernel at `listen`) to be that pid, with the pid
//! file's owner as its uid. A governed process cannot write that file (its opens are governed,
//! and a write grant on `/run/mcpguard` is never given).
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::MetadataExt as _, net::UnixStream},
    path::Path,
};

use anyhow::{Context as _, bail};

use crate::daemon::protocol::{Op, Request, Response};

pub struct Client {
    stream: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(socket: &Path) -> anyhow::Result<Self> {
        let s = UnixStream::connect(socket).with_context(|| {
            format!("cannot reach the mcpguard daemon at {} (is `mcpguard daemon` running?)", socket.display())
        })?;
        verify_daemon(&s, socket)?;
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
    /// The `status` answer, as far as launchers read it.
    pub fn status(&mut self) -> anyhow::Result<crate::daemon::protocol::StatusView> {
        let v = serde_json::Value::Object(self.call_ok(Op::Status {})?);
        serde_json::from_value(v).context("the daemon's status answer is not what this client understands")
    }

    pub fn call_ok(&mut self, op: Op) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        match self.call(op)?.result {
            Ok(m) => Ok(m),
            Err(e) => bail!("daemon refused ({}): {}", e.code.as_str(), e.message),
        }
    }
}

/// The peer of `stream` is the daemon recorded in the pid file next to `socket`.
pub fn verify_daemon(stream: &UnixStream, socket: &Path) -> anyhow::Result<()> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .with_context(|| format!("reading the credentials of the process serving {}", socket.display()))?;
    let (peer_pid, peer_uid) = (u32::try_from(cred.pid()).unwrap_or(0), cred.uid());
    let pf = crate::daemon::protocol::pid_file(socket);
    let impostor = |why: String| {
        anyhow::anyhow!(
            "refusing {}: it is not served by the mcpguard daemon ({why}; served by pid {peer_pid}, uid {peer_uid}). \
             Something replaced the control socket: check for a process bound to it, and restart the daemon",
            socket.display()
        )
    };
    let md = std::fs::symlink_metadata(&pf).map_err(|e| impostor(format!("{}: {e}", pf.display())))?;
    if !md.is_file() || md.mode() & 0o022 != 0 {
        return Err(impostor(format!("{} is not a regular file writable only by its owner", pf.display())));
    }
    if md.uid() != 0 && md.uid() != nix::unistd::geteuid().as_raw() {
        return Err(impostor(format!("{} is owned by uid {}, neither root nor this user", pf.display(), md.uid())));
    }
    let text = std::fs::read_to_string(&pf).map_err(|e| impostor(format!("{}: {e}", pf.display())))?;
    let want: u32 = text.trim().parse().map_err(|_| impostor(format!("{} does not hold a pid", pf.display())))?;
    if peer_pid != want || peer_uid != md.uid() {
        return Err(impostor(format!("the daemon's pid file {} names pid {want}, uid {}", pf.display(), md.uid())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_sits_next_to_the_socket() {
        assert_eq!(
            crate::daemon::protocol::pid_file(Path::new("/run/mcpguard/mcpguard.sock")),
            Path::new("/run/mcpguard/mcpguard.sock.pid")
        );
    }

    #[test]
    fn a_socket_served_by_another_process_is_refused_before_anything_is_sent() {
        let dir = std::env::temp_dir().join(format!("mcpg-client-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("ctl.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        // No pid file: refused.
        let err = Client::connect(&sock).err().expect("no pid file").to_string();
        assert!(err.contains("not served by the mcpguard daemon") && err.contains(".pid"), "{err}");
        // A pid file naming another process: refused.
        std::fs::write(crate::daemon::protocol::pid_file(&sock), "1\n").unwrap();
        let err = Client::connect(&sock).err().expect("wrong pid").to_string();
        assert!(err.contains("names pid 1"), "{err}");
        // A group-writable pid file: refused even when it names the peer.
        std::fs::write(crate::daemon::protocol::pid_file(&sock), format!("{}\n", std::process::id())).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(crate::daemon::protocol::pid_file(&sock), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        let err = Client::connect(&sock).err().expect("writable pid file").to_string();
        assert!(err.contains("writable only by its owner"), "{err}");
        // The peer recorded by the owner of a proper pid file (this process listens): accepted.
        crate::daemon::server::write_pid_file(&sock).unwrap();
        Client::connect(&sock).expect("the recorded peer");
        drop(listener);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
