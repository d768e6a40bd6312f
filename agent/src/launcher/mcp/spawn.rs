//! Starting the MCP server governed from its first instruction, while the proxy itself stays
//! outside the session (it must keep using the control socket, which refuses governed peers).
//!
//! The proxy forks a child that blocks on a gate pipe before doing anything; the proxy registers
//! the child's pid with the daemon (root may register any pid; a non-root peer its own direct
//! child), and only then opens the gate: the child `execv`s the server, whose exec is the first
//! thing checked against the session's baseline (the launched binary is approved at register).
//! Between the gate and `execv` the child installs the seccomp guard filter
//! ([`crate::launcher::seccomp`]) and, unless launched without one, the Landlock write ceiling
//! ([`crate::launcher::landlock`]): the ruleset is built by the proxy once the daemon has answered the
//! registration with the ceiling, and passed to the child with the gate byte (`SCM_RIGHTS` on a
//! socketpair). If either fails the child exits without running the server.
use std::{
    collections::BTreeMap,
    ffi::CString,
    fs::File,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use nix::{
    fcntl::OFlag,
    sys::signal::{Signal, kill},
    unistd::{ForkResult, Pid, pipe2},
};

use crate::{
    daemon::protocol::{ErrorCode, Op, Register},
    launcher::client::Client,
    launcher::seccomp::GuardFilter,
};

/// What to launch, and how to register it.
#[derive(Debug, Clone)]
pub struct Launch {
    pub socket: PathBuf,
    pub session: String,
    /// Resolved absolute binary (what the daemon approves and what is executed).
    pub bin: PathBuf,
    /// argv as given (argv[0] kept: a venv's python finds its `pyvenv.cfg` through it).
    pub argv: Vec<String>,
    pub baseline: String,
    pub vars: BTreeMap<String, String>,
    /// Roots the daemon adds the baseline's write paths to for the Landlock write ceiling
    /// (`landlock.rs`); `None`: no ceiling.
    pub write_ceiling: Option<Vec<PathBuf>>,
    /// The seccomp filter lets modes, owners and xattrs be changed and times be set to given
    /// values.
    pub allow_metadata: bool,
    /// The session this one is delegated from (`daemon::delegation`).
    pub parent: Option<String>,
}

pub struct Server {
    pub pid: Pid,
    pub stdin: File,
    pub stdout: File,
}

/// Resolves a command like the shell would (PATH lookup), to an absolute canonical path.
pub fn which(cmd: &str) -> anyhow::Result<PathBuf> {
    if cmd.contains('/') {
        return std::fs::canonicalize(cmd).with_context(|| format!("command `{cmd}` not found"));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let p = dir.join(cmd);
        if p.is_file() {
            return std::fs::canonicalize(&p).with_context(|| format!("resolving {}", p.display()));
        }
    }
    bail!("command `{cmd}` not found in PATH")
}

fn cstring(s: &[u8]) -> anyhow::Result<CString> {
    CString::new(s).context("argument contains a NUL byte")
}

/// The environment variable naming the session's token file (`daemon::tokens`).
pub const TOKEN_ENV: &str = "MCPGUARD_TOKEN_FILE";

/// True when the daemon decides signals through the launcher's seccomp signal filter
/// (`channels.signal` is `launcher`: the kill backend).
pub fn daemon_decides_signals(c: &mut Client) -> anyhow::Result<bool> {
    Ok(c.status()?.channels.get("signal").is_some_and(|m| m == "launcher"))
}

/// Forks the gated child, registers it, releases it. The returned pipes are the server's
/// stdin and stdout; its stderr is the proxy's.
pub fn spawn(l: &Launch) -> anyhow::Result<Server> {
    let bin = cstring(l.bin.as_os_str().as_bytes())?;
    let args: Vec<CString> = l.argv.iter().map(|a| cstring(a.as_bytes())).collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let guard = GuardFilter::with_metadata(l.allow_metadata)?;
    let status = Client::connect(&l.socket)?.status()?;
    let signals = status
        .channels
        .get("signal")
        .is_some_and(|m| m == "launcher")
        .then(crate::launcher::seccomp::SignalFilter::new)
        .transpose()?;
    // The server's environment: the proxy's, with the session's token file named.
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != TOKEN_ENV)
        .map(|(k, v)| cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<_, _>>()?;
    if let Some(dir) = &status.token_dir {
        let file = dir.join(&l.session).join("token");
        env.push(cstring(&[TOKEN_ENV.as_bytes(), b"=", file.as_os_str().as_bytes()].concat())?);
    }
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (in_r, in_w) = pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    let (gate_r, gate_w) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair")?;
    let (fd_in, fd_out, fd_gate) = (in_r.as_raw_fd(), out_w.as_raw_fd(), gate_r.as_raw_fd());
    // SAFETY: the child only makes async-signal-safe calls (dup2, signal, read, prctl, seccomp,
    // write, execve, _exit) on memory prepared before the fork, so other threads' state (locks,
    // allocator) is not used.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        ForkResult::Child => unsafe {
            if libc::dup2(fd_in, 0) < 0 || libc::dup2(fd_out, 1) < 0 {
                libc::_exit(126);
            }
            // Rust ignores SIGPIPE; an ignored disposition would survive exec.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            // The signal filter first: the parent names its listener (4 bytes, the descriptor
            // number; -1 without) when it registers us, and the daemon takes it from us.
            let mut listener: libc::c_int = -1;
            if let Some(f) = &signals {
                match f.install() {
                    Ok(fd) => listener = std::os::fd::IntoRawFd::into_raw_fd(fd),
                    Err(_) => {
                        let msg = b"mcpguard: installing the seccomp signal filter failed; server not started\n";
                        libc::write(2, msg.as_ptr().cast(), msg.len());
                        libc::_exit(124);
                    }
                }
            }
            if libc::write(fd_gate, (&raw const listener).cast(), 4) != 4 {
                libc::_exit(125);
            }
            // The gate: one byte, `g` (go) or `c` (go, confined by the ruleset that comes with it).
            let (n, b, ruleset) = gate_recv(fd_gate);
            if n != 1 || (b != b'g' && b != b'c') || (b == b'c') != (ruleset >= 0) {
                libc::_exit(125); // not registered: never run ungoverned
            }
            if guard.install().is_err() {
                let msg = b"mcpguard: installing the seccomp guard filter failed; server not started\n";
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(124);
            }
            if ruleset >= 0 && libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) != 0 {
                let msg = b"mcpguard: applying the Landlock write ceiling failed; server not started\n";
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(124);
            }
            if ruleset >= 0 {
                libc::close(ruleset);
            }
            if listener >= 0 {
                libc::close(listener);
            }
            libc::execve(bin.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127)
        },
        ForkResult::Parent { child } => {
            drop((in_r, out_w, gate_r));
            let released =
                read_listener(&gate_w).and_then(|listener| register(l, child, listener)).and_then(|ceiling| {
                    let ruleset = ceiling.as_ref().map(crate::launcher::landlock::Ceiling::prepare).transpose()?;
                    gate_send(&gate_w, ruleset.as_ref()).context("releasing the server")
                });
            if let Err(e) = released {
                let _ = kill(child, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(e);
            }
            drop(gate_w);
            Ok(Server { pid: child, stdin: File::from(in_w), stdout: File::from(out_r) })
        }
    }
}

/// Opens the gate: `g`, or `c` with the Landlock ruleset's descriptor attached.
fn gate_send(gate: &std::os::fd::OwnedFd, ruleset: Option<&crate::launcher::landlock::Prepared>) -> anyhow::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fds;
    let (byte, cmsgs): (&[u8], Vec<ControlMessage<'_>>) = match ruleset {
        Some(r) => {
            fds = [r.as_raw_fd()];
            (b"c", vec![ControlMessage::ScmRights(&fds)])
        }
        None => (b"g", Vec::new()),
    };
    let iov = [std::io::IoSlice::new(byte)];
    sendmsg::<()>(gate.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// The child's side of the gate: (bytes read, the byte, the descriptor received or -1). Only
/// `recvmsg` on stack memory: safe after `fork` in a multi-threaded parent.
unsafe fn gate_recv(fd: libc::c_int) -> (isize, u8, libc::c_int) {
    let mut b = 0u8;
    // Room for one cmsghdr carrying one int (CMSG_SPACE(4) = 24 on 64-bit), 8-aligned.
    let mut cbuf = [0u64; 4];
    let mut iov = libc::iovec { iov_base: (&raw mut b).cast(), iov_len: 1 };
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1 as _;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // (socklen_t on musl, size_t on glibc)
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: valid msghdr over stack buffers.
        let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        }
        break n;
    };
    let mut received = -1;
    // SAFETY: walking the control buffer the kernel filled, with the libc macros.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&raw const msg);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
            received = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
        }
    }
    (n, b, received)
}

/// The child's signal listener descriptor number (`None`: no signal filter).
fn read_listener(gate: &std::os::fd::OwnedFd) -> anyhow::Result<Option<u32>> {
    let mut b = [0u8; 4];
    let mut f = File::from(gate.try_clone().context("gate")?);
    std::io::Read::read_exact(&mut f, &mut b).context("the server did not start (signal filter)")?;
    Ok(u32::try_from(i32::from_ne_bytes(b)).ok())
}

/// Registers the child; returns the write ceiling to apply (`None`: not confined).
fn register(
    l: &Launch,
    child: Pid,
    signal_notifier: Option<u32>,
) -> anyhow::Result<Option<crate::launcher::landlock::Ceiling>> {
    let mut command = l.argv.clone();
    command[0] = l.bin.display().to_string();
    let pid = u32::try_from(child.as_raw()).context("pid")?;
    // The child installs the guard filter after the gate opens, before `execv`.
    let op = Op::Register(Register {
        write_ceiling: l.write_ceiling.clone(),
        signal_notifier,
        parent: l.parent.clone(),
        ..Register::launched(l.session.clone(), pid, command, l.baseline.clone(), l.vars.clone())
    });
    // After a kill, processes the old server left behind may still hold the session for a
    // moment (they are being killed by `kill_leftovers`): retry briefly.
    for attempt in 0.. {
        let mut c = Client::connect(&l.socket)?;
        match c.call(op.clone())?.result {
            Ok(r) => return crate::launcher::landlock::Ceiling::from_response(&r),
            Err(e) if e.code == ErrorCode::SessionExists && attempt < 40 => {
                log::debug!("register attempt {attempt}: {}", e.message);
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => bail!("daemon refused to register the server ({}): {}", e.code, e.message),
        }
    }
    unreachable!()
}

/// SIGKILLs what is left of a session's process tree (e.g. a helper the killed server had
/// started), by the daemon's own list: only processes governed in that session.
pub fn kill_leftovers(socket: &Path, session: &str) {
    let Ok(mut c) = Client::connect(socket) else { return };
    let Ok(st) = c.status() else { return };
    for s in st.sessions.iter().filter(|s| s.name == session) {
        for &p in &s.processes {
            if let Ok(pid) = i32::try_from(p) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}
