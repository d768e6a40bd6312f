//! Small programs the kernel tests run as governed processes, for behaviour no system binary
//! shows reliably. `no_main`: the std runtime's start-up would open `/proc/self/maps` (stack
//! guard), which the tests would then have to grant; this way the helper opens only what its
//! command names (plus the loader's libraries).
//!
//! - `thread-open PATH`: a second thread opens PATH for reading; prints `tid <TID>` first.
//! - `memfd-exec SRC`: copies SRC into a new memfd, prints `ino <INO> dev <ST_DEV>` of the memfd,
//!   then `fexecve`s it.
//! - `io-uring`: calls io_uring_setup(2); `raw-syscall [--wait] NR...`: see [`raw_syscalls`].
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
        _ => {
            eprintln!("usage: mcpg-helper thread-open PATH | memfd-exec SRC | io-uring | raw-syscall [--wait] NR...");
            64
        }
    }
}
