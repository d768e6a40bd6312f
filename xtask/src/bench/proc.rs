//! Processes the benchmark starts: a gated spawn (the child is stopped before `execve` until it
//! is governed, so it runs governed from its first instruction), CPU pinning, and /proc facts
//! (resident memory, CPU time) about processes we started.
use std::{
    ffi::CString,
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// CPUs this process may run on (from its affinity mask).
#[must_use]
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Pins `pid` (0: the calling thread) to one CPU.
pub fn pin(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: as above.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if rc != 0 {
        bail!("sched_setaffinity({pid}, cpu {cpu}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn pipe() -> Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: two ints for pipe2.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors we own.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// A child process we forked. It waits before `execve` until [`Gated::release`]; its stdin and
/// stdout are pipes to us, stderr is ours. Killed and reaped on drop if still running.
pub struct Gated {
    pub pid: i32,
    gate: Option<File>,
    pub input: Option<File>,
    pub output: BufReader<File>,
    reaped: bool,
}

impl Gated {
    /// Forks; the child blocks on a gate pipe, then execs `argv[0]` (absolute path) with `argv`.
    pub fn spawn(argv: &[String]) -> Result<Self> {
        let cargs: Vec<CString> = argv.iter().map(|a| CString::new(a.as_str())).collect::<Result<_, _>>()?;
        let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let (gate_r, gate_w) = pipe()?;
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        use std::os::fd::AsRawFd as _;
        let (g, i, o) = (gate_r.as_raw_fd(), in_r.as_raw_fd(), out_w.as_raw_fd());
        // SAFETY: between fork and execv the child only calls async-signal-safe functions
        // (read, dup2, execv, _exit) on data prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                let mut b = 0u8;
                if libc::read(g, (&raw mut b).cast(), 1) != 1 {
                    libc::_exit(120); // released by closing the gate: the parent gave up
                }
                if libc::dup2(i, 0) < 0 || libc::dup2(o, 1) < 0 {
                    libc::_exit(121);
                }
                libc::execv(ptrs[0], ptrs.as_ptr());
                libc::_exit(122);
            }
        }
        drop((gate_r, in_r, out_w));
        Ok(Self { pid, gate: Some(gate_w), input: Some(in_w), output: BufReader::new(out_r), reaped: false })
    }

    /// Lets the child exec.
    pub fn release(&mut self) -> Result<()> {
        let mut g = self.gate.take().context("released twice")?;
        g.write_all(b"g").context("releasing the gated child")?;
        Ok(())
    }

    /// One line of the child's stdout (without the newline); error at EOF.
    pub fn read_line(&mut self) -> Result<String> {
        let mut s = String::new();
        if self.output.read_line(&mut s)? == 0 {
            bail!("child {} closed its output (exited or was killed)", self.pid);
        }
        Ok(s.trim_end().to_owned())
    }

    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let w = self.input.as_mut().context("child input closed")?;
        writeln!(w, "{line}")?;
        w.flush()?;
        Ok(())
    }

    /// Waits for exit; returns the raw wait status.
    pub fn wait(&mut self) -> Result<i32> {
        self.gate.take();
        self.input.take();
        let mut st = 0;
        // SAFETY: our own child.
        if unsafe { libc::waitpid(self.pid, &raw mut st, 0) } != self.pid {
            bail!("waitpid {}: {}", self.pid, std::io::Error::last_os_error());
        }
        self.reaped = true;
        Ok(st)
    }

    /// Waits and requires a clean exit; the error says whether a signal (SIGKILL: the kernel
    /// programs stopped it) or an exit code ended it.
    pub fn wait_ok(&mut self) -> Result<()> {
        let st = self.wait()?;
        if libc::WIFSIGNALED(st) {
            bail!("child {} was killed by signal {}", self.pid, libc::WTERMSIG(st));
        }
        if libc::WEXITSTATUS(st) != 0 {
            bail!("child {} exited with {}", self.pid, libc::WEXITSTATUS(st));
        }
        Ok(())
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: our own child, not yet reaped (its pid cannot have been reused).
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// A pidfd for `pid` (readable once the process has exited).
pub fn pidfd_open(pid: i32) -> Result<File> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        bail!("pidfd_open({pid}): {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(i32::try_from(fd)?) })
}

/// Polls `fds` for readability for up to `timeout`; returns which are readable.
pub fn poll_readable(fds: &[&File], timeout: Duration) -> Result<Vec<bool>> {
    use std::os::fd::AsRawFd as _;
    let mut p: Vec<libc::pollfd> =
        fds.iter().map(|f| libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: a valid pollfd array.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if n < 0 {
        bail!("poll: {}", std::io::Error::last_os_error());
    }
    Ok(p.iter().map(|x| x.revents != 0).collect())
}

/// CLOCK_BOOTTIME in ns (the clock of kernel event timestamps).
#[must_use]
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A `/proc/PID/status` field in kB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: i32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// On-CPU time in ns of each thread of `pid`, with the thread's name (`/proc/PID/task/*/schedstat`,
/// first field: ns precision, unlike the tick-based rusage fields of `stat`).
#[must_use]
pub fn threads_cpu_ns(pid: i32) -> Vec<(String, u64)> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| {
            let ns = std::fs::read_to_string(e.path().join("schedstat")).ok()?.split(' ').next()?.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?.trim().to_owned();
            Some((name, ns))
        })
        .collect()
}

/// Counts newlines in a file from `offset` on (audit lines written by the daemon).
pub fn count_lines_from(path: &Path, offset: u64) -> Result<u64> {
    use std::io::Seek as _;
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// Waits until `f` returns true, polling every `step`; false at the deadline.
pub fn wait_until(deadline: Duration, step: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// A path as a C string (for the workload's raw syscalls).
pub fn cpath(p: &Path) -> Result<CString> {
    Ok(CString::new(p.as_os_str().as_bytes())?)
}
