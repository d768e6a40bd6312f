//! Small programs the kernel tests run as governed processes, for behaviour no system binary
//! shows reliably. `no_main`: the std runtime's start-up would open `/proc/self/maps` (stack
//! guard), which the tests would then have to grant; this way the helper opens only what its
//! command names (plus the loader's libraries).
//!
//! - `thread-open PATH`: a second thread opens PATH for reading; prints `tid <TID>` first.
//! - `memfd-exec SRC`: copies SRC into a new memfd, prints `ino <INO> dev <ST_DEV>` of the memfd,
//!   then `fexecve`s it.
//! - `io-uring`: calls io_uring_setup(2); `raw-syscall [--wait] NR...`: see [`raw_syscalls`].
//! - `pidfd-signal`: see [`pidfd_signal`].
//! - `net OP TARGET [OP TARGET...]`: socket operations, one line each (`OP TARGET ok` or
//!   `OP TARGET errno N`): see [`net`].
//! - `times PATH`: sets PATH's times through every times syscall: see [`times`].
#![no_main]

use std::{
    ffi::{CStr, CString, c_char, c_int},
    io::Write as _,
    os::unix::fs::MetadataExt as _,
};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn thread_open(path: String) -> c_int {
    let t = std::thread::spawn(move || {
        // SAFETY: syscall without arguments.
        let tid = unsafe { libc::gettid() };
        say(&format!("tid {tid}"));
        std::fs::read(&path).map(|b| b.len())
    });
    match t.join() {
        Ok(Ok(n)) => {
            say(&format!("read {n}"));
            0
        }
        _ => 1,
    }
}

fn memfd_exec(src: &str) -> c_int {
    let Ok(bytes) = std::fs::read(src) else { return 2 };
    // SAFETY: valid NUL-terminated name; flags are plain constants.
    let mut fd = unsafe { libc::memfd_create(c"mcpg-helper".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_EXEC) };
    if fd < 0 {
        // MFD_EXEC exists from Linux 6.3; before that memfds are executable by default.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(c"mcpg-helper".as_ptr(), libc::MFD_CLOEXEC) };
    }
    if fd < 0 {
        return 3;
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if file.write_all(&bytes).is_err() {
        return 4;
    }
    let Ok(md) = file.metadata() else { return 5 };
    say(&format!("ino {} dev {}", md.ino(), md.dev()));
    let arg0 = CString::new("memfd-true").unwrap();
    let argv = [arg0.as_ptr(), std::ptr::null()];
    let envp: [*const c_char; 1] = [std::ptr::null()];
    // SAFETY: fd is open; argv and envp are NULL-terminated arrays of valid C strings.
    unsafe { libc::fexecve(fd, argv.as_ptr(), envp.as_ptr()) };
    6
}

/// Calls io_uring_setup(2) directly; prints the outcome. A governed process must not get here
/// alive with a ring: io_uring submissions would bypass the open hooks.
fn io_uring() -> c_int {
    let mut params = [0u8; 120]; // struct io_uring_params
    // SAFETY: io_uring_setup writes at most sizeof(struct io_uring_params) into params.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) };
    say(&format!("io_uring_setup {fd}"));
    if fd >= 0 { 0 } else { 3 }
}

/// Calls each syscall number with zero arguments and prints `syscall NR returned R errno E`;
/// then `alive` (the process survived them all). With `--wait` first, it then waits for EOF on
/// stdin (to keep running, e.g. as an MCP server).
fn raw_syscalls(args: &[String]) -> c_int {
    let (wait, nrs) = match args {
        [flag, nrs @ ..] if flag == "--wait" => (true, nrs),
        nrs => (false, nrs),
    };
    for nr in nrs {
        let nr: libc::c_long = nr.parse().unwrap_or(-1);
        // SAFETY: the guarded syscalls are called with null/zero arguments: at worst EFAULT
        // or EINVAL (and PTRACE_TRACEME, which only affects this process).
        let r = unsafe { libc::syscall(nr, 0, 0, 0, 0, 0) };
        let errno = if r < 0 { std::io::Error::last_os_error().raw_os_error().unwrap_or(0) } else { 0 };
        say(&format!("syscall {nr} returned {r} errno {errno}"));
    }
    say("alive");
    if wait {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    }
    0
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn cvt(r: isize) -> std::io::Result<isize> {
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
}

/// A raw socket of `domain`/`ty`, closed on drop.
fn raw_socket(domain: c_int, ty: c_int, proto: c_int) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain syscall; the fd returned is ours.
    let fd = cvt(unsafe { libc::socket(domain, ty, proto) } as isize)?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as c_int) })
}

fn sockaddr_of(addr: std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(std::ptr::from_mut(&mut ss).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: all-zero is a valid sockaddr_in6.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(std::ptr::from_mut(&mut ss).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// One socket operation; `Ok(())` when every call of it succeeded. Data sent is `mcpg:OP`.
fn net_op(op: &str, target: &str) -> std::io::Result<()> {
    use std::{
        io::Write as _,
        os::{fd::AsRawFd as _, linux::net::SocketAddrExt as _},
    };
    let data = format!("mcpg:{op}\n");
    let ip = || target.parse::<std::net::SocketAddr>().map_err(std::io::Error::other);
    match op {
        "tcp-connect" => std::net::TcpStream::connect(ip()?)?.write_all(data.as_bytes()),
        "udp-send" => {
            let a = ip()?;
            let any = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            std::net::UdpSocket::bind(any)?.send_to(data.as_bytes(), a).map(drop)
        }
        "udp-connect" => {
            let a = ip()?;
            let s = std::net::UdpSocket::bind(if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
            s.connect(a)?;
            s.send(data.as_bytes()).map(drop)
        }
        "tcp-fastopen" => {
            let a = ip()?;
            let s = raw_socket(if a.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 }, libc::SOCK_STREAM, 0)?;
            let (ss, len) = sockaddr_of(a);
            // SAFETY: valid buffer and address of the given length.
            cvt(unsafe {
                libc::sendto(
                    s.as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_FASTOPEN,
                    std::ptr::from_ref(&ss).cast(),
                    len,
                )
            })
            .map(drop)
        }
        "tcp-listen" => {
            let l = std::net::TcpListener::bind(ip()?)?;
            say(&format!("listening {}", l.local_addr()?));
            Ok(())
        }
        "tcp-listen-ephemeral" => {
            let s = raw_socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
            // SAFETY: plain syscall on our socket.
            cvt(unsafe { libc::listen(s.as_raw_fd(), 1) } as isize).map(drop)
        }
        "raw-socket" => raw_socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP).map(drop),
        "packet-socket" => raw_socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map(drop),
        "netlink-socket" => raw_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE).map(drop),
        "unix-connect" => {
            let s = match target.strip_prefix('@') {
                Some(name) => std::os::unix::net::UnixStream::connect_addr(
                    &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?,
                )?,
                None => std::os::unix::net::UnixStream::connect(target)?,
            };
            (&s).write_all(data.as_bytes())
        }
        "unix-send" => {
            let s = std::os::unix::net::UnixDatagram::unbound()?;
            match target.strip_prefix('@') {
                Some(name) => s.send_to_addr(
                    data.as_bytes(),
                    &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?,
                ),
                None => s.send_to(data.as_bytes(), target),
            }
            .map(drop)
        }
        // TARGET is GRANTED,OTHER: one thread connects 50 times (within the listener's backlog) from a sockaddr in memory that
        // a sibling thread keeps rewriting between the two addresses. Prints how many connects
        // succeeded; the kernel decides on its own copy of the address, so every connect that
        // succeeds reached the address the kernel checked.
        "race-connect" => {
            let (g, o) = target.split_once(',').ok_or_else(|| std::io::Error::other("GRANTED,OTHER"))?;
            let (g, o) = (
                g.parse::<std::net::SocketAddr>().map_err(std::io::Error::other)?,
                o.parse::<std::net::SocketAddr>().map_err(std::io::Error::other)?,
            );
            let (sg, len) = sockaddr_of(g);
            let (so, _) = sockaddr_of(o);
            let addr: &'static mut libc::sockaddr_storage = Box::leak(Box::new(sg));
            let p = std::ptr::from_mut(addr) as usize;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let st = stop.clone();
            let flipper = std::thread::spawn(move || {
                let mut flip = false;
                while !st.load(std::sync::atomic::Ordering::Relaxed) {
                    let v = if flip { sg } else { so };
                    // SAFETY: a racy write to plain bytes, on purpose (the connecting thread's
                    // buffer); both values are valid sockaddrs.
                    unsafe { std::ptr::write_volatile(p as *mut libc::sockaddr_storage, v) };
                    flip = !flip;
                }
            });
            let mut ok = 0;
            for _ in 0..50 {
                let s = raw_socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
                // SAFETY: the buffer stays valid (leaked); its bytes may change under the call.
                let r = unsafe { libc::connect(s.as_raw_fd(), (p as *const libc::sockaddr_storage).cast(), len) };
                if r == 0 {
                    ok += 1;
                    let _ = (&std::fs::File::from(s)).write_all(data.as_bytes());
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = flipper.join();
            say(&format!("race-connect ok {ok}"));
            Ok(())
        }
        "socketpair" => {
            let (a, b) = std::os::unix::net::UnixStream::pair()?;
            (&a).write_all(data.as_bytes())?;
            let mut buf = [0u8; 64];
            std::io::Read::read(&mut &b, &mut buf).map(drop)
        }
        _ => Err(std::io::Error::other(format!("unknown net op {op}"))),
    }
}

/// Runs each (OP, TARGET) pair and prints its outcome; exit status 0 when all were attempted.
fn net(args: &[String]) -> c_int {
    for pair in args.chunks(2) {
        let [op, target] = pair else { return 64 };
        match net_op(op, target) {
            Ok(()) => say(&format!("{op} {target} ok")),
            Err(e) => say(&format!("{op} {target} errno {}", errno_of(&e))),
        }
    }
    0
}

/// Sets `user.mcpg` on PATH; prints `setxattr ok` or `setxattr errno N`.
fn setxattr(path: &str) -> c_int {
    let Ok(p) = CString::new(path) else { return 64 };
    // SAFETY: valid C strings and a 1-byte value.
    let r = unsafe { libc::setxattr(p.as_ptr(), c"user.mcpg".as_ptr(), c"1".as_ptr().cast(), 1, 0) };
    if r == 0 {
        say("setxattr ok");
    } else {
        say(&format!("setxattr errno {}", std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)));
    }
    0
}

/// `times PATH`: sets PATH's times (atime 1000000000.5, mtime 1000000001.25) through each times
/// syscall in turn, then to now; prints `times NAME ok` or `times NAME errno N` per call:
/// `utimensat` (a path), `futimens` (an fd opened read-only), `utimes`, `utime`, `futimesat`,
/// `now` (`utimensat` with NULL times).
fn times(path: &str) -> c_int {
    let Ok(p) = CString::new(path) else { return 64 };
    let ts = [
        libc::timespec { tv_sec: 1_000_000_000, tv_nsec: 500_000_000 },
        libc::timespec { tv_sec: 1_000_000_001, tv_nsec: 250_000_000 },
    ];
    let tv = [
        libc::timeval { tv_sec: 1_000_000_000, tv_usec: 500_000 },
        libc::timeval { tv_sec: 1_000_000_001, tv_usec: 250_000 },
    ];
    let ut = libc::utimbuf { actime: 1_000_000_000, modtime: 1_000_000_001 };
    let report = |name: &str, r: libc::c_long| {
        if r == 0 {
            say(&format!("times {name} ok"));
        } else {
            say(&format!("times {name} errno {}", std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)));
        }
    };
    // SAFETY: valid C strings and arrays of the sizes each syscall reads; raw syscalls, so the
    // C library cannot turn one call into another.
    unsafe {
        report("utimensat", libc::syscall(libc::SYS_utimensat, libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), 0));
        let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            report("futimens", -1);
        } else {
            report("futimens", libc::syscall(libc::SYS_utimensat, fd, std::ptr::null::<c_char>(), ts.as_ptr(), 0));
            libc::close(fd);
        }
        report("utimes", libc::syscall(libc::SYS_utimes, p.as_ptr(), tv.as_ptr()));
        report("utime", libc::syscall(libc::SYS_utime, p.as_ptr(), &raw const ut));
        report("futimesat", libc::syscall(libc::SYS_futimesat, libc::AT_FDCWD, p.as_ptr(), tv.as_ptr()));
        report("now", libc::syscall(libc::SYS_utimensat, libc::AT_FDCWD, p.as_ptr(), std::ptr::null::<c_char>(), 0));
    }
    0
}

/// `race-exec PROG GOOD BAD N`: N times, forks a child in which a second thread keeps rewriting
/// the argument buffer between GOOD and BAD while the first thread `execve`s `PROG BUFFER`; prints
/// `exit CODE` or `signal SIG` per child. Whatever the kernel copied is what PROG runs with.
fn race_exec(prog: &str, good: &str, bad: &str, n: u32) -> c_int {
    use std::sync::atomic::{AtomicBool, Ordering};
    let len = good.len().max(bad.len()) + 1;
    let Ok(path) = CString::new(prog) else { return 2 };
    for _ in 0..n {
        // SAFETY: fork in a single-threaded process; the child only uses memory made here.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let buf: &'static mut [u8] = Box::leak(vec![0u8; len].into_boxed_slice());
            buf[..good.len()].copy_from_slice(good.as_bytes());
            let addr = buf.as_mut_ptr() as usize;
            let (g, b) = (good.as_bytes().to_vec(), bad.as_bytes().to_vec());
            static GO: AtomicBool = AtomicBool::new(false);
            std::thread::spawn(move || {
                let p = addr as *mut u8;
                GO.store(true, Ordering::SeqCst);
                loop {
                    for src in [&b, &g] {
                        // SAFETY: the leaked buffer outlives the process; races are the point.
                        unsafe {
                            std::ptr::write_bytes(p, 0, len);
                            std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len());
                        }
                    }
                }
            });
            while !GO.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
            let argv = [path.as_ptr(), addr as *const c_char, std::ptr::null()];
            let envp = [std::ptr::null::<c_char>()];
            // SAFETY: valid NUL-terminated arrays (the buffer always ends in NUL).
            unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            // SAFETY: plain exit.
            unsafe { libc::_exit(127) };
        }
        let mut st = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &raw mut st, 0) };
        if libc::WIFSIGNALED(st) {
            say(&format!("signal {}", libc::WTERMSIG(st)));
        } else {
            say(&format!("exit {}", libc::WEXITSTATUS(st)));
        }
    }
    0
}

/// `mprotect-exec SRC MARK`: maps SRC (a file, or `anon` for anonymous memory) readable, then
/// `mprotect`s it (`pkey_mprotect` with `pkey` as a third argument) to read+exec; prints
/// `mprotect ok` and writes MARK (what running code from it would do), or `mprotect errno N`.
fn mprotect_exec(src: &str, mark: &str, pkey: bool) -> c_int {
    const LEN: usize = 4096;
    let (fd, flags) = if src == "anon" {
        (-1, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS)
    } else {
        let Ok(p) = CString::new(src) else { return 64 };
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            say(&format!("open errno {}", std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)));
            return 1;
        }
        (fd, libc::MAP_PRIVATE)
    };
    // SAFETY: a fresh private mapping of our own.
    let addr = unsafe { libc::mmap(std::ptr::null_mut(), LEN, libc::PROT_READ, flags, fd, 0) };
    if addr == libc::MAP_FAILED {
        say(&format!("mmap errno {}", std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)));
        return 1;
    }
    let prot = libc::PROT_READ | libc::PROT_EXEC;
    // SAFETY: changes the protection of the mapping made above only.
    let r = unsafe {
        if pkey {
            libc::syscall(libc::SYS_pkey_mprotect, addr, LEN, prot, -1) as c_int
        } else {
            libc::mprotect(addr, LEN, prot)
        }
    };
    if r == 0 {
        say("mprotect ok");
        let _ = std::fs::write(mark, "ran\n");
    } else {
        say(&format!("mprotect errno {}", std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)));
    }
    0
}

/// `pidfd-signal`: `pidfd_send_signal(pidfd of itself, 0)`; prints `pidfd_send_signal ok` or
/// `pidfd_send_signal errno N`.
fn pidfd_signal() -> c_int {
    // SAFETY: plain syscalls on our own process.
    let r = unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0);
        if fd < 0 {
            say(&format!("pidfd_open errno {}", *libc::__errno_location()));
            return 1;
        }
        libc::syscall(libc::SYS_pidfd_send_signal, fd, 0, std::ptr::null::<u8>(), 0)
    };
    if r == 0 {
        say("pidfd_send_signal ok");
    } else {
        // SAFETY: errno of the call above.
        say(&format!("pidfd_send_signal errno {}", unsafe { *libc::__errno_location() }));
    }
    0
}

#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let args: Vec<String> = (0..usize::try_from(argc).unwrap_or(0))
        // SAFETY: the C runtime passes `argc` valid NUL-terminated strings.
        .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) }.to_string_lossy().into_owned())
        .collect();
    match args.get(1..).unwrap_or_default() {
        [cmd, path] if cmd == "thread-open" => thread_open(path.clone()),
        [cmd, src] if cmd == "memfd-exec" => memfd_exec(src),
        [cmd] if cmd == "io-uring" => io_uring(),
        [cmd, rest @ ..] if cmd == "raw-syscall" && !rest.is_empty() => raw_syscalls(rest),
        [cmd, rest @ ..] if cmd == "net" && !rest.is_empty() => net(rest),
        [cmd, path] if cmd == "setxattr" => setxattr(path),
        [cmd, path] if cmd == "times" => times(path),
        [cmd] if cmd == "pidfd-signal" => pidfd_signal(),
        [cmd, src, mark] if cmd == "mprotect-exec" => mprotect_exec(src, mark, false),
        [cmd, src, mark, k] if cmd == "mprotect-exec" && k == "pkey" => mprotect_exec(src, mark, true),
        [cmd, prog, good, bad, n] if cmd == "race-exec" => race_exec(prog, good, bad, n.parse().unwrap_or(1)),
        _ => {
            eprintln!("usage: mcpg-helper thread-open PATH | memfd-exec SRC | io-uring | raw-syscall [--wait] NR...");
            64
        }
    }
}
