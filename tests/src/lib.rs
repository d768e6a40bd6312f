//! Fixtures for the kernel tests: a loaded engine, governed process trees that wait until they
//! are registered before running anything, scratch directories, and event waits with deadlines.
//! Every fixture cleans up on drop; tests govern only the processes they create.
use std::{
    io::Write as _,
    ops::{Deref, DerefMut},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mcpguard::{
    grant::kgrant::{self, KernelGrant},
    kernel::engine::{Engine, EngineOptions},
    kernel::events::Decision,
};
use mcpguard_common::{MODE_KILL, SessionState};

pub mod daemon;

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A fresh id unique within this test process (sessions and grants).
pub fn unique_id() -> u64 {
    (u64::from(std::process::id()) << 20) | NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What a dynamically linked program needs to start at all (loader cache, shared libraries).
pub fn runtime_read_paths() -> Vec<PathBuf> {
    ["/etc/ld.so.cache", "/usr/lib", "/usr/lib64"].iter().map(PathBuf::from).filter(|p| p.exists()).collect()
}

/// A loaded engine, unpinned: programs detach when it is dropped.
pub struct Kernel {
    pub engine: Engine,
    /// Events read from the ring buffer but not yet matched by a wait.
    pending: Vec<Decision>,
    /// Sessions and grants this fixture set up since it was handed out: ended and removed when
    /// a [`SharedKernel`] is given back, so the next scenario starts from an engine that governs
    /// nothing.
    sessions: Vec<u64>,
    /// Grants to remove when the scenario ends (`remove_grant` of each).
    pub grants: Vec<(u64, KernelGrant)>,
}

/// The engine of this test process, shared by every scenario (see [`Kernel::shared`]).
static SHARED: Mutex<Option<Kernel>> = Mutex::new(None);

/// Exclusive use of the shared engine for one scenario; on drop the scenario's sessions (with
/// their processes) and grants are removed from the kernel.
pub struct SharedKernel(MutexGuard<'static, Option<Kernel>>);

impl Deref for SharedKernel {
    type Target = Kernel;
    fn deref(&self) -> &Kernel {
        self.0.as_ref().expect("shared engine loaded")
    }
}

impl DerefMut for SharedKernel {
    fn deref_mut(&mut self) -> &mut Kernel {
        self.0.as_mut().expect("shared engine loaded")
    }
}

impl Drop for SharedKernel {
    fn drop(&mut self) {
        let k = &mut **self;
        for s in std::mem::take(&mut k.sessions) {
            k.engine.end_session(s);
        }
        for (id, g) in std::mem::take(&mut k.grants) {
            k.engine.remove_grant(id, &g);
        }
        k.pending.clear();
    }
}

/// The cgroup v2 directory the tests' network programs attach to (`<cgroup2>/mcpguard-tests`);
/// the test process moves itself in once, so everything it starts (daemons, governed processes)
/// is in it. Programs attached here see no process of the host outside the tests.
pub fn test_cgroup() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = mcpguard::kernel::cgroup::root().expect("cgroup v2 mounted");
        let dir = root.join("mcpguard-tests");
        std::fs::create_dir_all(&dir).expect("create the tests' cgroup");
        std::fs::write(dir.join("cgroup.procs"), "0").expect("move the test process into its cgroup");
        dir
    })
}

impl Kernel {
    /// The engine loaded once per test process and handed to one scenario at a time. Loading
    /// verifies every program (seconds under QEMU's TCG, most of a scenario's cost), so only the
    /// scenarios that test loading, adoption or what a fresh engine attaches take their own
    /// [`Kernel::load`]. Scenarios govern only the processes they create, each in sessions of
    /// its own, so sharing changes nothing they assert; a scenario that panicked leaves the
    /// engine usable (each map update is atomic), and its sessions are ended all the same.
    pub fn shared() -> SharedKernel {
        let mut g = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if g.is_none() {
            *g = Some(Self::load());
        }
        let mut k = SharedKernel(g);
        k.pending.clear();
        k
    }

    /// An engine of this scenario's own (programs detach when it is dropped).
    pub fn load() -> Self {
        assert!(nix::unistd::geteuid().is_root(), "kernel tests must run as root");
        let opts = EngineOptions { net_cgroup: Some(test_cgroup().to_path_buf()), ..EngineOptions::default() };
        let engine = Engine::load(&opts).expect("load eBPF object");
        // Shown with --nocapture (the VM matrix's budget is mostly loads: cargo xtask vm-test).
        eprintln!("MCPG-TIMING engine load {} backend {}", engine.load_time(), engine.backend().name());
        // The VM matrix sets this: the backend in force must be the one the kernel should give.
        if let Ok(want) = std::env::var("MCPG_EXPECT_BACKEND") {
            assert_eq!(engine.backend().name(), want, "backend probes: {:?}", engine.probes());
        }
        Self { engine, pending: Vec::new(), sessions: Vec::new(), grants: Vec::new() }
    }

    /// Compiles and installs a grant; returns its id and the compiled grant.
    pub fn grant(&mut self, exec: &[&Path], read: &[PathBuf], write: &[PathBuf]) -> (u64, KernelGrant) {
        let exec: Vec<(PathBuf, Option<String>)> = exec.iter().map(|p| (p.to_path_buf(), None)).collect();
        let g = kgrant::compile(&exec, read, write).expect("compile grant");
        let id = unique_id();
        self.engine.install_grant(id, &g).expect("install grant");
        self.grants.push((id, g.clone()));
        (id, g)
    }

    /// [`Kernel::grant`] from exec rules with command lines (`args`, `inline_code`, `env`).
    pub fn grant_rules(
        &mut self,
        exec: &[mcpguard::grant::policy::ExecRule],
        read: &[PathBuf],
        write: &[PathBuf],
    ) -> (u64, KernelGrant) {
        let paths: Vec<(PathBuf, Option<String>)> = exec.iter().map(|e| (e.path.clone(), None)).collect();
        let mut dedup: Vec<(PathBuf, Option<String>)> = Vec::new();
        for p in paths {
            if !dedup.contains(&p) {
                dedup.push(p);
            }
        }
        let mut g = kgrant::compile(&dedup, read, write).expect("compile grant");
        kgrant::add_cmdline(&mut g, exec).expect("compile command lines");
        let id = unique_id();
        self.engine.install_grant(id, &g).expect("install grant");
        self.grants.push((id, g.clone()));
        (id, g)
    }

    /// [`Kernel::grant`] with network targets (`connect`: `tcp://...`, `unix:...`; `listen`).
    pub fn grant_net(
        &mut self,
        exec: &[&Path],
        read: &[PathBuf],
        connect: &[&str],
        listen: &[&str],
    ) -> (u64, KernelGrant) {
        let exec: Vec<(PathBuf, Option<String>)> = exec.iter().map(|p| (p.to_path_buf(), None)).collect();
        let mut g = kgrant::compile(&exec, read, &[]).expect("compile grant");
        let connect: Vec<String> = connect.iter().map(ToString::to_string).collect();
        let listen: Vec<String> = listen.iter().map(ToString::to_string).collect();
        kgrant::compile_net(&mut g, &connect, &listen, &mut mcpguard::grant::net::system_resolver)
            .expect("compile network");
        let id = unique_id();
        self.engine.install_grant(id, &g).expect("install grant");
        self.grants.push((id, g.clone()));
        (id, g)
    }

    /// Session with a baseline grant (runtime libraries) and a task grant valid for `ttl`.
    pub fn session(&mut self, base: u64, task: u64, ttl: Duration) -> u64 {
        let session = unique_id();
        self.set(session, base, task, ttl);
        session
    }

    pub fn set(&mut self, session: u64, base: u64, task: u64, ttl: Duration) {
        self.set_mode(session, base, task, ttl, MODE_KILL);
    }

    /// Like `set`, with an explicit mode (`MODE_DENY`, `MODE_KILL`, `MODE_AUDIT`).
    pub fn set_mode(&mut self, session: u64, base: u64, task: u64, ttl: Duration, mode: u32) {
        let state = SessionState {
            base_grant: base,
            task_grant: task,
            task_expires_ns: boot_ns() + u64::try_from(ttl.as_nanos()).unwrap(),
            mode,
            flags: 0,
        };
        self.engine.set_session(session, state).expect("set session");
        if !self.sessions.contains(&session) {
            self.sessions.push(session);
        }
    }

    pub fn baseline(&mut self) -> u64 {
        self.grant(&[], &runtime_read_paths(), &[]).0
    }

    /// Waits until an event matching `pred` arrives for `session`, or panics at the deadline.
    pub fn wait_event(&mut self, session: u64, pred: impl Fn(&Decision) -> bool) -> Decision {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.pending.iter().position(|d| d.session_id == session && pred(d)) {
                return self.pending.remove(i);
            }
            if Instant::now() >= deadline {
                panic!("no matching event for session {session}; saw {:#?}", self.pending);
            }
            let batch = self.engine.next_events(Duration::from_millis(100));
            self.pending.extend(batch);
        }
    }

    /// All events for `session` that arrive within `window` (for asserting absence).
    pub fn events_for(&mut self, session: u64, window: Duration) -> Vec<Decision> {
        let deadline = Instant::now() + window;
        let (mut out, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending).into_iter().partition(|d| d.session_id == session);
        self.pending = rest;
        while Instant::now() < deadline {
            out.extend(
                self.engine.next_events(Duration::from_millis(50)).into_iter().filter(|d| d.session_id == session),
            );
        }
        out
    }
}

/// CLOCK_BOOTTIME in ns (the clock the kernel checks expiry against).
pub fn boot_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
    u64::try_from(ts.tv_sec()).unwrap() * 1_000_000_000 + u64::try_from(ts.tv_nsec()).unwrap()
}

/// A process started through `/bin/sh` that blocks until released, then `exec`s the command:
/// so it is governed before the command's first instruction. Killed and reaped on drop.
pub struct Gated {
    pub child: Child,
    gate: Option<std::process::ChildStdin>,
}

impl Gated {
    /// `argv[0]` must be an absolute path.
    pub fn spawn(argv: &[&str]) -> Self {
        Self::spawn_in(argv, None)
    }

    pub fn spawn_in(argv: &[&str], cwd: Option<&Path>) -> Self {
        Self::spawn_with(argv, cwd, |_| {})
    }

    /// As [`Gated::spawn_in`], with a hook to adjust the command before it is spawned (e.g. a
    /// `pre_exec` that makes a descriptor inheritable).
    pub fn spawn_with(argv: &[&str], cwd: Option<&Path>, configure: impl FnOnce(&mut Command)) -> Self {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            // "ready" proves the shell's own exec is complete: registering before that point would
            // govern the exec of the shell itself (the vfork parent is released before
            // sched_process_exec fires).
            .arg("echo ready; read _ ; exec \"$@\"")
            .arg("sh")
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("spawn gated child");
        let gate = child.stdin.take();
        let mut ready = [0u8; 6];
        use std::io::Read as _;
        child.stdout.as_mut().unwrap().read_exact(&mut ready).expect("gated child ready");
        assert_eq!(&ready, b"ready\n");
        Self { child, gate }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the command run: the shell reads one line, then execs it with stdin at EOF.
    pub fn release(&mut self) {
        self.release_with(b"");
    }

    /// Lets the command run with `input` on its stdin, then EOF. (The shell's `read` consumes
    /// exactly the gate line: dash reads its input byte by byte.)
    pub fn release_with(&mut self, input: &[u8]) {
        let mut gate = self.gate.take().expect("released twice");
        gate.write_all(b"go\n").expect("release gate");
        gate.write_all(input).expect("child input");
        drop(gate);
    }

    /// Reads one line of the command's stdout (unbuffered, so `finish` still sees the rest).
    /// Panics at EOF. Blocks until the line arrives: use only when the command prints it.
    pub fn read_line(&mut self) -> String {
        read_line_from(self.child.stdout.as_mut().expect("stdout taken"))
    }

    /// Waits (bounded) for exit; returns status and stdout.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                let mut out = String::new();
                if let Some(mut so) = self.child.stdout.take() {
                    use std::io::Read as _;
                    let _ = so.read_to_string(&mut out);
                }
                return (st, out);
            }
            assert!(Instant::now() < deadline, "child {} did not exit", self.child.id());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads one line byte by byte (no read-ahead); panics at EOF.
pub fn read_line_from(r: &mut impl std::io::Read) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = r.read(&mut b).expect("read line");
        assert!(n == 1, "EOF before end of line; got {:?}", String::from_utf8_lossy(&line));
        if b[0] == b'\n' {
            return String::from_utf8(line).expect("utf-8 line");
        }
        line.push(b[0]);
    }
}

pub fn killed(st: ExitStatus) -> bool {
    st.signal() == Some(libc::SIGKILL)
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("mcpg-test-{tag}-{}", unique_id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    /// Copies a system binary into the scratch dir (so tests can change it).
    pub fn copy_bin(&self, src: &str, name: &str) -> PathBuf {
        let dst = self.path(name);
        std::fs::copy(src, &dst).unwrap();
        dst
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (kernel dev_t, inode number) of the object at `path` (following symlinks): what an event
/// reports for it.
pub fn object_id(path: &Path) -> (u32, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let md = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (kgrant::kernel_dev(md.dev()), md.ino())
}

/// Where cgroup v2 is mounted (unified or hybrid mode), from `/proc/self/mounts`.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// A fresh child cgroup of the cgroup v2 root; removed on drop (after its processes are gone:
/// declare it before the processes placed in it, so that they are dropped first).
pub struct Cgroup {
    pub dir: PathBuf,
}

impl Cgroup {
    /// Panics with a clear message when cgroup v2 is not mounted: the kernel tests need it.
    pub fn new(tag: &str) -> Self {
        let root = cgroup2_root().expect(
            "cgroup v2 is not mounted (no `cgroup2` entry in /proc/self/mounts); the cgroup session \
             test needs it (mount -t cgroup2 none /sys/fs/cgroup/unified, or boot with cgroup v2)",
        );
        let dir = root.join(format!("mcpg-test-{tag}-{}", unique_id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self { dir }
    }

    /// The id `bpf_get_current_cgroup_id` returns for tasks in it: the directory's inode number.
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&self.dir).unwrap().ino()
    }

    /// Moves a process (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), format!("{pid}\n"))
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.dir.display()));
    }

    pub fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A process that has just been reaped may still be leaving the cgroup: retry, bounded.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What must not change about an object when an operation on it is refused: content (files),
/// mode, owner, modification time, inode number.
#[must_use]
pub fn snapshot(p: &Path) -> (Vec<u8>, u32, u32, i64, i64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let md = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let content = if md.is_file() { std::fs::read(p).unwrap() } else { Vec::new() };
    (content, md.mode(), md.uid(), md.mtime(), md.mtime_nsec(), md.ino())
}

/// An object's access and modification times, to the nanosecond.
#[must_use]
pub fn times(p: &Path) -> (i64, i64, i64, i64) {
    use std::os::unix::fs::MetadataExt as _;
    let md = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec())
}

/// The names in a directory, sorted.
#[must_use]
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The programs the path-operation tests run (a shell and the coreutils that change entries).
pub const PATH_TOOLS: [&str; 12] = [
    "/usr/bin/dash",
    "/usr/bin/touch",
    "/usr/bin/rm",
    "/usr/bin/mv",
    "/usr/bin/mkdir",
    "/usr/bin/ln",
    "/usr/bin/mkfifo",
    "/usr/bin/truncate",
    "/usr/bin/rmdir",
    "/usr/bin/cat",
    "/usr/bin/chmod",
    "/usr/bin/chown",
];
