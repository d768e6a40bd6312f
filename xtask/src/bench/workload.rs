//! The measured side: `xtask bench workload --kind K ...` (hidden). Runs in a process of its own
//! so that it can be governed from its first instruction, pinned to its own CPU, and so that a
//! kill stops only it. Loops use raw libc calls: the loop body is the syscall and nothing else.
//!
//! Output (stdout, one line): `ns ELAPSED_NS ITERS` for timed loops, `paced COUNT ELAPSED_NS`
//! for the paced event generator, `connect OUTCOME` for the one-off connect probe. `probe-parent` and `sleepers` are long-lived helpers driven
//! line by line over stdin (see their functions).
use std::{
    ffi::CString,
    hint::black_box,
    io::{BufRead as _, Write as _},
    net::SocketAddrV4,
    path::PathBuf,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `getppid()` in a loop: a syscall none of the programs hook.
    Getppid,
    /// `open(path, O_RDONLY)` + `close` in a loop.
    Open,
    /// `fork()`, `execve(path)` (a static binary that exits at once), `waitpid` in a loop.
    Forkexec,
    /// `mmap(path, PROT_READ | PROT_EXEC)` + `munmap` of one page in a loop (the kill backend's
    /// `sys_enter_mmap` program decides every executable file mapping).
    Mmap,
    /// `mprotect(PROT_READ | PROT_EXEC)` and back to `PROT_READ` of one page of `path`, mapped
    /// once, in a loop (the kill backend's `sys_enter_mprotect` program finds the page's file
    /// with `bpf_find_vma` and decides it; the way back has no `PROT_EXEC` and is not looked at).
    Mprotect,
    /// `utimensat(AT_FDCWD, path, NULL, 0)` in a loop: the file's times set to now.
    Utimes,
    /// `socket(AF_INET, SOCK_STREAM)` + `connect(addr)` + `close` in a loop, to the harness's
    /// loopback listener (see `connect_close`).
    Connect,
    /// One `connect` to `addr`; prints `connect ok`, `connect refused` (EPERM: a grant refused
    /// it) or `connect error: E`, and exits 0 whatever the outcome (a sanity check, not timed).
    ConnectOnce,
    /// Opens of `path` paced at `rate` per second for `secs` seconds (denied-open events).
    Paced,
    /// Forks probe processes on request: each opens `path` in a loop until it is killed.
    ProbeParent,
    /// Forks `iters` processes that block until stdin closes (sessions for the memory test).
    Sleepers,
    /// `kill(getpid(), 0)` in a loop (signal.rs: decided by the daemon in a launched session on
    /// the kill backend).
    Signal,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_enum)]
    pub kind: Kind,
    #[arg(long, default_value_t = 0)]
    pub iters: u64,
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// IPv4 address and port (`connect`, `connect-once`).
    #[arg(long)]
    pub addr: Option<SocketAddrV4>,
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 0.0)]
    pub secs: f64,
    /// Install a per-process seccomp filter first (`filter`, `notif`: see seccomp.rs).
    #[arg(long)]
    pub seccomp: Option<String>,
}

/// The command line that runs `args` in a fresh process of the current (release) binary.
#[must_use]
pub fn argv(exe: &str, kind: &str, iters: u64, warmup: u64, path: Option<&std::path::Path>) -> Vec<String> {
    let mut v: Vec<String> = [exe, "bench", "workload", "--kind", kind].iter().map(|s| (*s).to_owned()).collect();
    v.extend(["--iters".into(), iters.to_string(), "--warmup".into(), warmup.to_string()]);
    if let Some(p) = path {
        v.extend(["--path".into(), p.display().to_string()]);
    }
    v
}

pub fn run(a: &Args) -> Result<()> {
    match a.seccomp.as_deref() {
        None => {}
        Some("filter") => super::seccomp::install(false)?,
        Some("notif") => super::seccomp::install(true)?,
        Some("launcher") => mcpguard::launcher::seccomp::GuardFilter::new()?.install()?,
        Some(o) => bail!("--seccomp {o}: expected filter, notif or launcher"),
    }
    let path = || -> Result<CString> { super::proc::cpath(a.path.as_deref().context("--path is required")?) };
    let addr = || a.addr.map(sockaddr).context("--addr is required");
    let out = match a.kind {
        Kind::Getppid => {
            let body = || {
                // SAFETY: plain syscall.
                black_box(unsafe { libc::getppid() });
                Ok(())
            };
            timed(a, body)?
        }
        Kind::Open => {
            let p = path()?;
            timed(a, || open_close(&p))?
        }
        Kind::Forkexec => {
            let p = path()?;
            let argv = [p.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null::<libc::c_char>()];
            timed(a, || fork_exec(&argv, &envp))?
        }
        Kind::Mmap => {
            let p = path()?;
            // SAFETY: valid C string.
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                bail!("open {}: {}", p.to_string_lossy(), std::io::Error::last_os_error());
            }
            timed(a, || map_exec(fd))?
        }
        Kind::Mprotect => {
            let p = path()?;
            // SAFETY: valid C string; one private read-only page of our own, never unmapped.
            let page = unsafe {
                let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    bail!("open {}: {}", p.to_string_lossy(), std::io::Error::last_os_error());
                }
                let m = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE, fd, 0);
                if m == libc::MAP_FAILED {
                    bail!("mmap: {}", std::io::Error::last_os_error());
                }
                m
            };
            timed(a, || protect_exec(page))?
        }
        Kind::Utimes => {
            let p = path()?;
            timed(a, || {
                // SAFETY: valid C string; NULL times: set to now.
                if unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), std::ptr::null(), 0) } != 0 {
                    bail!("utimensat: {}", std::io::Error::last_os_error());
                }
                Ok(())
            })?
        }
        Kind::Connect => {
            let sa = addr()?;
            timed(a, || connect_close(&sa))?
        }
        Kind::ConnectOnce => connect_once(&addr()?),
        Kind::Signal => {
            // SAFETY: plain syscalls.
            let me = unsafe { libc::getpid() };
            timed(a, || {
                // SAFETY: signal 0 to ourselves: a permission and existence probe.
                if unsafe { libc::kill(me, 0) } != 0 {
                    bail!("kill(self, 0): {}", std::io::Error::last_os_error());
                }
                Ok(())
            })?
        }
        Kind::Paced => paced(&path()?, a.rate, a.secs)?,
        Kind::ProbeParent => return probe_parent(),
        Kind::Sleepers => return sleepers(a.iters),
    };
    let mut so = std::io::stdout().lock();
    writeln!(so, "{out}")?;
    so.flush()?;
    Ok(())
}

fn timed(a: &Args, mut body: impl FnMut() -> Result<()>) -> Result<String> {
    for _ in 0..a.warmup {
        body()?;
    }
    let t = Instant::now();
    for _ in 0..a.iters {
        body()?;
    }
    Ok(format!("ns {} {}", t.elapsed().as_nanos(), a.iters))
}

#[inline]
fn protect_exec(page: *mut libc::c_void) -> Result<()> {
    // SAFETY: the page mapped by the caller; only its protection changes, it is never touched.
    unsafe {
        if libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC) != 0 {
            bail!("mprotect(PROT_EXEC): {}", std::io::Error::last_os_error());
        }
        if libc::mprotect(page, 4096, libc::PROT_READ) != 0 {
            bail!("mprotect(PROT_READ): {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[inline]
fn map_exec(fd: libc::c_int) -> Result<()> {
    // SAFETY: a fresh private mapping of one page, unmapped at once, never touched.
    unsafe {
        let m = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_PRIVATE, fd, 0);
        if m == libc::MAP_FAILED {
            bail!("mmap(PROT_EXEC): {}", std::io::Error::last_os_error());
        }
        libc::munmap(m, 4096);
    }
    Ok(())
}

#[inline]
fn open_close(p: &CString) -> Result<()> {
    // SAFETY: valid C string; the descriptor is closed at once.
    unsafe {
        let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            bail!("open: {}", std::io::Error::last_os_error());
        }
        libc::close(fd);
    }
    Ok(())
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// A TCP socket with an abortive close (`SO_LINGER` on, 0 s: `close` sends a RST and frees the
/// connection at once). With an orderly close this side, closing first, would keep every
/// connection in TIME_WAIT for 60 s and the loop would run out of ephemeral ports (28,232 by
/// default) within a block; the extra `setsockopt` is the same in every arm.
fn tcp_socket() -> std::io::Result<libc::c_int> {
    // SAFETY: plain syscalls on a descriptor we own; a valid linger struct and its size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, libc::IPPROTO_TCP);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let lg = libc::linger { l_onoff: 1, l_linger: 0 };
        let len = size_of::<libc::linger>() as libc::socklen_t;
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, (&raw const lg).cast(), len) != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(fd)
    }
}

/// `connect` on a fresh socket; the descriptor is closed either way.
fn connect(sa: &libc::sockaddr_in) -> std::io::Result<()> {
    let fd = tcp_socket()?;
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a valid sockaddr_in and its size; our own descriptor, closed once.
    unsafe {
        let r = if libc::connect(fd, (&raw const *sa).cast(), len) == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        };
        libc::close(fd);
        r
    }
}

/// One turn of the `connect` workload: socket, connect (the loopback handshake completes inside
/// the call), close.
#[inline]
fn connect_close(sa: &libc::sockaddr_in) -> Result<()> {
    connect(sa).context("connect")
}

fn connect_once(sa: &libc::sockaddr_in) -> String {
    match connect(sa) {
        Ok(()) => "connect ok".into(),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => "connect refused".into(),
        Err(e) => format!("connect error: {e}"),
    }
}

fn fork_exec(argv: &[*const libc::c_char; 2], envp: &[*const libc::c_char; 1]) -> Result<()> {
    // SAFETY: single-threaded process; the child only calls execve and _exit.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
        let mut st = 0;
        libc::waitpid(pid, &raw mut st, 0);
        if st != 0 {
            bail!("exec child ended with wait status {st:#x}");
        }
    }
    Ok(())
}

/// Opens at `rate`/s, evenly spaced (busy-waiting to each due time; no sleeps, whose wake-up
/// latency would bunch the events), for at most `secs`. If one core cannot keep up, it runs
/// flat out and the achieved rate (`COUNT / ELAPSED`) says so.
fn paced(p: &CString, rate: f64, secs: f64) -> Result<String> {
    if rate <= 0.0 || secs <= 0.0 {
        bail!("--rate and --secs must be positive");
    }
    let total = (rate * secs) as u64;
    let period_ns = 1e9 / rate;
    let end_ns = (secs * 1e9) as u128;
    let t = Instant::now();
    let mut n = 0u64;
    loop {
        let e = t.elapsed().as_nanos();
        if n >= total || e >= end_ns {
            break;
        }
        if e < (n as f64 * period_ns) as u128 {
            std::hint::spin_loop();
            continue;
        }
        open_close(p)?;
        n += 1;
    }
    Ok(format!("paced {n} {}", t.elapsed().as_nanos()))
}

/// `spawn PATH` → forks a probe that opens PATH in a loop (its first open must succeed: it then
/// reports ready) and answers `pid N`, or `dead` if the probe died before its first open
/// completed; `quit` (or EOF) ends. Exited probes are reaped before each command.
fn probe_parent() -> Result<()> {
    let stdin = std::io::stdin();
    let mut so = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        // SAFETY: reaping our own children.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        let line = line?;
        let Some(path) = line.strip_prefix("spawn ") else { break };
        let p = CString::new(path)?;
        let mut fds = [0; 2];
        // SAFETY: two ints for pipe2.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        // SAFETY: single-threaded; the child loops on open/close/write and never returns.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                libc::close(fds[0]);
                libc::close(0);
                libc::close(1);
                let mut first = true;
                loop {
                    let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        libc::_exit(3);
                    }
                    libc::close(fd);
                    if first {
                        first = false;
                        libc::write(fds[1], b"r".as_ptr().cast(), 1);
                        libc::close(fds[1]);
                    }
                }
            }
        }
        // SAFETY: closing our copy of the write end; reading one byte.
        let ready = unsafe {
            libc::close(fds[1]);
            let mut b = 0u8;
            let n = libc::read(fds[0], (&raw mut b).cast(), 1);
            libc::close(fds[0]);
            n == 1
        };
        if pid < 0 || !ready {
            writeln!(so, "dead")?;
        } else {
            writeln!(so, "pid {pid}")?;
        }
        so.flush()?;
    }
    Ok(())
}

/// Forks `n` children that block reading stdin (they exit at EOF), prints `pids P1 P2 ...`, then
/// waits for EOF itself and reaps them.
fn sleepers(n: u64) -> Result<()> {
    let mut pids = Vec::new();
    for _ in 0..n {
        // SAFETY: single-threaded; the child blocks in read and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                let mut b = [0u8; 64];
                while libc::read(0, b.as_mut_ptr().cast(), b.len()) > 0 {}
                libc::_exit(0);
            }
        }
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        pids.push(pid.to_string());
    }
    let mut so = std::io::stdout().lock();
    writeln!(so, "pids {}", pids.join(" "))?;
    so.flush()?;
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    // SAFETY: reaping our own children.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
    Ok(())
}
