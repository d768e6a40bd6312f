//! Network and Unix sockets: a governed process reaches only the addresses, ports and sockets its
//! grants name.
//!
//! - IP, every backend: cgroup socket-address programs (`connect4/6`, `sendmsg4/6` for datagrams
//!   sent with an address, `bind4/6`) decide on the address the kernel copied in, before the
//!   connect, send or bind happens: returning 0 refuses it with EPERM. `sock_create` refuses inet
//!   sockets that no grant can name (raw, ICMP, SCTP, MPTCP...).
//! - `listen` (an unbound socket is bound to an ephemeral port by `listen` without passing a bind
//!   hook): the socket's bound address must be granted. LSM `socket_listen` (EPERM), or on the
//!   kill backend `sys_enter_listen` (SIGKILL before `listen` returns).
//! - Unix sockets, deny backends: LSM `unix_stream_connect` / `unix_may_send` see the peer socket:
//!   a path-bound peer is decided by its file object (a symlink, rename or bind mount cannot alias
//!   it), an abstract one by its name. Unnamed peers (socketpair) pass.
//! - Unix sockets, kill backend: the `connect_unix` / `sendmsg_unix` address programs (Linux 6.7+)
//!   refuse with EPERM any name that is not a granted abstract name or a granted socket's path;
//!   a path connect let through is checked by the peer's object at `sys_exit_connect` (kill).
//!
//! Ungoverned processes: one lookup (`governed`) per hook, before anything is read.
use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_addr},
    macros::{cgroup_sock, cgroup_sock_addr, lsm, tracepoint},
    programs::{FEntryContext, LsmContext, SockAddrContext, SockContext, TracePointContext},
};
use mcpguard_common::{
    HOOK_BIND, HOOK_CONNECT, HOOK_SENDMSG, HOOK_SOCKET, MODE_AUDIT, NET_CONNECT_TCP, NET_CONNECT_UDP, NET_LISTEN_TCP,
    NET_LISTEN_UDP, NET_UNIX, NET_UNIX_NAME, REASON_NO_GRANT, REASON_NOT_GRANTED, REASON_UNRESOLVED, SessionState,
    UNIX_NAME_LEN, UnixKey,
};

use crate::{
    decide::{Governed, Verdict, decide_net, decide_unix_name, decide_unix_obj, governed, grant_in_force},
    kernel::{
        Kptr, PathPos, Unresolved, current_fd_file, current_task, current_tgid, dentry_inode, inode_obj, off, rd,
        rd_ptr,
    },
    lsm::deny_addr,
    maps::UNIX_PENDING,
    programs::{enforce_addr, enforce_pos, sys_arg},
    report::{ADDR_NAME, Addr, Emitter, Report, emit},
};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// Return values of cgroup socket programs.
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

#[inline(always)]
const fn v4_mapped(ip4_be: u32) -> [u8; 16] {
    let b = ip4_be.to_ne_bytes();
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, b[0], b[1], b[2], b[3]]
}

#[inline(always)]
const fn v6_bytes(w: [u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (w[0].to_ne_bytes(), w[1].to_ne_bytes(), w[2].to_ne_bytes(), w[3].to_ne_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3]]
}

/// A refusal by a cgroup program: EPERM (the process keeps running) unless the session audits.
/// Cgroup programs run with migration, not preemption, disabled: full-size ring records.
#[inline(always)]
fn refuse(g: &Governed, v: Verdict, hook: u32, access: u32, target: u64, addr: Addr) -> i32 {
    let audit = g.state.is_some_and(|s| s.mode == MODE_AUDIT);
    let action = if audit { mcpguard_common::ACTION_AUDITED } else { mcpguard_common::ACTION_DENIED };
    emit(
        &Report { session: g.session, grant: v.grant, hook, action, reason: v.reason, access, pos: None, target, addr },
        Emitter::Trampoline,
    );
    if audit { ALLOW } else { REFUSE }
}

/// The kind of grant an IP socket operation needs (0: none can allow it).
#[inline(always)]
const fn ip_kind(hook: u32, protocol: u32) -> u32 {
    match (hook == HOOK_BIND, protocol) {
        (false, IPPROTO_TCP) => NET_CONNECT_TCP,
        (false, IPPROTO_UDP) => NET_CONNECT_UDP,
        (true, IPPROTO_TCP) => NET_LISTEN_TCP,
        (true, IPPROTO_UDP) => NET_LISTEN_UDP,
        _ => 0,
    }
}

/// `connect`, `sendmsg` with an address, `bind`: the address the kernel is about to use.
#[inline(always)]
fn on_sock_addr(sa: *mut bpf_sock_addr, v6: bool, hook: u32) -> i32 {
    let Some(g) = governed(current_tgid()) else { return ALLOW };
    // SAFETY: context fields this attach type may read, 4 bytes each.
    let (protocol, port_raw) =
        unsafe { (core::ptr::read_volatile(&(*sa).protocol), core::ptr::read_volatile(&(*sa).user_port)) };
    let port = u16::from_be(port_raw as u16);
    let addr = if v6 {
        // SAFETY: as above (the IPv6 programs may read user_ip6).
        let w = unsafe {
            [
                core::ptr::read_volatile(&(*sa).user_ip6[0]),
                core::ptr::read_volatile(&(*sa).user_ip6[1]),
                core::ptr::read_volatile(&(*sa).user_ip6[2]),
                core::ptr::read_volatile(&(*sa).user_ip6[3]),
            ]
        };
        v6_bytes(w)
    } else {
        // SAFETY: as above (the IPv4 programs may read user_ip4).
        v4_mapped(unsafe { core::ptr::read_volatile(&(*sa).user_ip4) })
    };
    // An ephemeral bind (port 0) receives nothing until `listen`, which is decided itself.
    if hook == HOOK_BIND && port == 0 {
        return ALLOW;
    }
    let kind = ip_kind(hook, protocol);
    let v = match g.state {
        None => Verdict::deny(REASON_NO_GRANT, 0),
        Some(st) if kind == 0 => Verdict::deny(REASON_NOT_GRANTED, grant_in_force(&st)),
        Some(st) => decide_net(&st, kind, &addr, port),
    };
    if v.allow { ALLOW } else { refuse(&g, v, hook, kind, 0, Addr::ip(addr, port)) }
}

#[cgroup_sock_addr(connect4)]
pub fn mcpg_connect4(ctx: SockAddrContext) -> i32 {
    on_sock_addr(ctx.sock_addr, false, HOOK_CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn mcpg_connect6(ctx: SockAddrContext) -> i32 {
    on_sock_addr(ctx.sock_addr, true, HOOK_CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn mcpg_sendmsg4(ctx: SockAddrContext) -> i32 {
    on_sock_addr(ctx.sock_addr, false, HOOK_SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn mcpg_sendmsg6(ctx: SockAddrContext) -> i32 {
    on_sock_addr(ctx.sock_addr, true, HOOK_SENDMSG)
}

#[cgroup_sock_addr(bind4)]
pub fn mcpg_bind4(ctx: SockAddrContext) -> i32 {
    on_sock_addr(ctx.sock_addr, false, HOOK_BIND)
}

#[cgroup_sock_addr(bind6)]
pub fn mcpg_bind6(ctx: SockAddrContext) -> i32 {
    on_sock_addr(ctx.sock_addr, true, HOOK_BIND)
}

/// Inet sockets a grant can name are TCP streams and UDP datagrams; a governed process may not
/// create any other (raw sockets would bypass every address hook).
#[cgroup_sock(sock_create)]
pub fn mcpg_sock_create(ctx: SockContext) -> i32 {
    let Some(g) = governed(current_tgid()) else { return ALLOW };
    let sk: *mut bpf_sock = ctx.sock;
    // SAFETY: context fields sock_create may read.
    let (family, ty, protocol) = unsafe {
        (
            core::ptr::read_volatile(&(*sk).family),
            core::ptr::read_volatile(&(*sk).type_),
            core::ptr::read_volatile(&(*sk).protocol),
        )
    };
    if (ty == SOCK_STREAM && protocol == IPPROTO_TCP) || (ty == SOCK_DGRAM && protocol == IPPROTO_UDP) {
        return ALLOW;
    }
    let grant = g.state.map_or(0, |s| grant_in_force(&s));
    refuse(
        &g,
        Verdict::deny(REASON_NOT_GRANTED, grant),
        HOOK_SOCKET,
        family << 16 | ty,
        u64::from(protocol),
        Addr::NONE,
    )
}

// ---- socket families ------------------------------------------------------------------------

/// Families a grant can name: Unix, IPv4, IPv6. Any other (packet sockets, netlink, vsock, XDP,
/// ...) reaches past every address hook.
#[inline(always)]
const fn family_nameable(family: u32) -> bool {
    family == AF_UNIX as u32 || family == AF_INET as u32 || family == AF_INET6 as u32
}

/// `socket(family, type, protocol)` of a family no grant can name: the verdict to carry out.
#[inline(always)]
fn family_verdict(g: &Governed) -> Verdict {
    Verdict::deny(REASON_NOT_GRANTED, g.state.map_or(0, |s| grant_in_force(&s)))
}

/// LSM `socket_create` / `security_socket_create` (sockets the kernel makes for itself pass).
#[inline(always)]
fn on_socket_create(family: u32, ty: u32, protocol: u32, kern: u32) -> i32 {
    if kern != 0 || family_nameable(family) {
        return 0;
    }
    let Some(g) = governed(current_tgid()) else { return 0 };
    deny_addr(&g, family_verdict(&g), HOOK_SOCKET, family << 16 | (ty & 0xffff), None, u64::from(protocol), Addr::NONE)
}

/// Kill backend: `socket()` of such a family kills the process at syscall entry.
#[tracepoint(category = "syscalls", name = "sys_enter_socket")]
pub fn mcpg_socket(ctx: TracePointContext) -> u32 {
    let family = sys_arg(&ctx, 0) as u32;
    if family_nameable(family) {
        return 0;
    }
    let Some(g) = governed(current_tgid()) else { return 0 };
    let access = family << 16 | (sys_arg(&ctx, 1) as u32 & 0xffff);
    crate::programs::enforce_target(&g, family_verdict(&g), HOOK_SOCKET, access, sys_arg(&ctx, 2));
    0
}

// ---- listen ---------------------------------------------------------------------------------

/// A decision with what to report: plain fields (no `Result` of tuples: see `report::Addr`).
#[derive(Clone, Copy)]
struct Outcome {
    v: Verdict,
    /// `NET_*` kind, the event's `access`.
    kind: u32,
    /// The socket's position (a path-bound Unix peer), null when none.
    pos: PathPos,
    addr: Addr,
}

const NO_POS: PathPos = PathPos { dentry: core::ptr::null(), vfsmnt: core::ptr::null() };

impl Outcome {
    #[inline(always)]
    const fn of(v: Verdict, kind: u32) -> Self {
        Self { v, kind, pos: NO_POS, addr: Addr::NONE }
    }
    #[inline(always)]
    const fn pass() -> Self {
        Self::of(Verdict { allow: true, reason: 0, grant: 0 }, 0)
    }
    #[inline(always)]
    fn pos(&self) -> Option<PathPos> {
        if self.pos.dentry.is_null() { None } else { Some(self.pos) }
    }
}

/// `Ok` value or return `$fail` from the enclosing function.
macro_rules! tri {
    ($e:expr, $fail:expr) => {
        match $e {
            Ok(v) => v,
            Err(Unresolved) => return $fail,
        }
    };
}

/// The grants' answer for listening on the socket `sk` (its bound address and port). Unix
/// sockets pass (binding a path is a path operation; an abstract name reaches nothing outside
/// the session).
#[inline(always)]
fn listen_verdict(g: &Governed, sk: Kptr) -> Outcome {
    let fail = Outcome::of(Verdict::deny(REASON_UNRESOLVED, 0), NET_LISTEN_TCP);
    let family: u16 = tri!(rd(sk, off!(sk_family)), fail);
    if family == AF_UNIX {
        return Outcome::pass();
    }
    let Some(st) = g.state else {
        return Outcome::of(Verdict::deny(REASON_NO_GRANT, 0), NET_LISTEN_TCP);
    };
    let port: u16 = tri!(rd(sk, off!(sk_num)), fail);
    let addr = if family == AF_INET {
        v4_mapped(tri!(rd(sk, off!(sk_rcv_saddr)), fail))
    } else if family == AF_INET6 {
        tri!(rd(sk, off!(sk_v6_rcv_saddr)), fail)
    } else {
        return Outcome::of(Verdict::deny(REASON_NOT_GRANTED, grant_in_force(&st)), 0);
    };
    let protocol: u16 = tri!(rd(sk, off!(sk_protocol)), fail);
    let v = if u32::from(protocol) == IPPROTO_TCP {
        decide_net(&st, NET_LISTEN_TCP, &addr, port)
    } else {
        Verdict::deny(REASON_NOT_GRANTED, grant_in_force(&st))
    };
    Outcome { addr: Addr::ip(addr, port), ..Outcome::of(v, NET_LISTEN_TCP) }
}

/// `security_socket_listen` / LSM `socket_listen`.
#[inline(always)]
fn on_listen(sock: Kptr) -> i32 {
    let Some(g) = governed(current_tgid()) else { return 0 };
    let o = match rd_ptr(sock, off!(socket_sk)) {
        Ok(sk) => listen_verdict(&g, sk),
        Err(Unresolved) => Outcome::of(Verdict::deny(REASON_UNRESOLVED, 0), NET_LISTEN_TCP),
    };
    if o.v.allow { 0 } else { deny_addr(&g, o.v, HOOK_BIND, o.kind, None, 0, o.addr) }
}

/// Kill backend: `listen(fd, backlog)` on a socket whose bound address is not granted kills the
/// process at syscall entry (it is dead before `listen` returns; its sockets close with it).
#[tracepoint(category = "syscalls", name = "sys_enter_listen")]
pub fn mcpg_listen(ctx: TracePointContext) -> u32 {
    let Some(g) = governed(current_tgid()) else { return 0 };
    let o = listen_fd_verdict(&g, sys_arg(&ctx, 0));
    if !o.v.allow {
        enforce_addr(&g, o.v, HOOK_BIND, o.kind, o.addr);
    }
    0
}

/// [`listen_verdict`] of the socket at `fd` of the current task.
#[inline(always)]
fn listen_fd_verdict(g: &Governed, fd: u64) -> Outcome {
    let fail = Outcome::of(Verdict::deny(REASON_UNRESOLVED, 0), NET_LISTEN_TCP);
    let file = tri!(current_fd_file(current_task(), fd), fail);
    let sock = tri!(rd_ptr(file, off!(file_private_data)), fail);
    let sk = tri!(rd_ptr(sock, off!(socket_sk)), fail);
    listen_verdict(g, sk)
}

// ---- Unix sockets, deny backends: the peer socket object ----------------------------------

/// The grants' answer for reaching the Unix socket `peer` (a `struct sock *`, the start of its
/// `unix_sock`), with the position or name to report.
#[inline(always)]
fn unix_peer_verdict(st: &SessionState, peer: Kptr) -> Outcome {
    let fail = Outcome::of(Verdict::deny(REASON_UNRESOLVED, grant_in_force(st)), NET_UNIX);
    let path = peer.wrapping_add(off!(unix_path));
    let dentry: u64 = tri!(rd(path, off!(path_dentry)), fail);
    if dentry != 0 {
        let pos = PathPos { dentry: dentry as Kptr, vfsmnt: tri!(rd_ptr(path, off!(path_mnt)), fail) };
        let inode = tri!(dentry_inode(dentry as Kptr), fail);
        let obj = tri!(inode_obj(inode), fail);
        return Outcome { pos, ..Outcome::of(decide_unix_obj(st, obj), NET_UNIX) };
    }
    let addr: u64 = tri!(rd(peer, off!(unix_addr)), fail);
    if addr == 0 {
        // Unnamed (socketpair, or a socket never bound): reachable only through a descriptor the
        // process was given.
        return Outcome::pass();
    }
    let addr = addr as Kptr;
    let len: i32 = tri!(rd(addr, off!(unix_address_len)), fail);
    // sockaddr_un: sun_family (2 bytes), then sun_path.
    let n = (len as u32).saturating_sub(2).min(UNIX_NAME_LEN as u32);
    let name = addr.wrapping_add(off!(unix_address_name) + 2);
    let mut key = UnixKey { grant: 0, name: tri!(rd(name, 0), fail), _pad: 0 };
    zero_from(&mut key.name, n);
    Outcome { addr: Addr::name(name, n), ..Outcome::of(decide_unix_name(st, &mut key), NET_UNIX_NAME) }
}

/// Zeroes `name[n..]` (the kernel's buffer holds only `n` bytes of the name), a word at a time
/// and without branches: a branch per byte on an unknown `n` multiplies the verifier's states
/// (E2BIG at load).
#[inline(always)]
fn zero_from(name: &mut [u8; UNIX_NAME_LEN], n: u32) {
    let n = i64::from(n);
    for (i, w) in name.chunks_exact_mut(4).enumerate() {
        // Bytes of this word to keep: clamp(n - 4i, 0, 4).
        let d = n - 4 * i as i64;
        let d = d & !(d >> 63);
        let over = (d - 4) & !((d - 4) >> 63);
        let keep = (d - over) as u64;
        let mask = ((1u64 << (8 * keep)) - 1) as u32;
        let v = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) & mask;
        w.copy_from_slice(&v.to_ne_bytes());
    }
}

/// `peer`: the `struct sock *` reached, or null when it could not be read.
#[inline(always)]
fn on_unix(peer: Kptr) -> i32 {
    let Some(g) = governed(current_tgid()) else { return 0 };
    let Some(st) = g.state else {
        return deny_addr(&g, Verdict::deny(REASON_NO_GRANT, 0), HOOK_CONNECT, NET_UNIX, None, 0, Addr::NONE);
    };
    let o = if peer.is_null() {
        Outcome::of(Verdict::deny(REASON_UNRESOLVED, grant_in_force(&st)), NET_UNIX)
    } else {
        unix_peer_verdict(&st, peer)
    };
    if o.v.allow { 0 } else { deny_addr(&g, o.v, HOOK_CONNECT, o.kind, o.pos(), 0, o.addr) }
}

/// `unix_may_send(sock, other)`: `other` is the peer's `struct socket *`.
#[inline(always)]
fn on_unix_send(other: Kptr) -> i32 {
    on_unix(rd_ptr(other, off!(socket_sk)).unwrap_or(core::ptr::null()))
}

// ---- Unix sockets, kill backend: the name the process gave -------------------------------

/// `struct bpf_sock_addr_kern` (include/linux/filter.h, 6.7+): `sk`, `uaddr`, `tmp_reg`, `t_ctx`,
/// `uaddrlen`. The context register points at it; it is read by value (no context rewriting).
#[repr(C)]
#[derive(Clone, Copy)]
struct SockAddrKern {
    sk: u64,
    uaddr: u64,
    tmp_reg: u64,
    t_ctx: u64,
    uaddrlen: u32,
    _pad: u32,
}

#[inline(always)]
fn unix_name_verdict(st: &SessionState, ctx: *mut core::ffi::c_void) -> Outcome {
    let fail = Outcome::of(Verdict::deny(REASON_UNRESOLVED, grant_in_force(st)), NET_UNIX_NAME);
    let k: SockAddrKern = tri!(rd(ctx as Kptr, 0), fail);
    let n = k.uaddrlen.saturating_sub(2).min(UNIX_NAME_LEN as u32);
    let name = (k.uaddr as Kptr).wrapping_add(2);
    let mut key = UnixKey { grant: 0, name: tri!(rd(name, 0), fail), _pad: 0 };
    // The name as given, `n` bytes: a path's terminating NUL (when counted) falls in the
    // padding; bytes after a NUL that `n` still counts make the name match nothing (fail closed).
    zero_from(&mut key.name, n);
    Outcome { addr: Addr::name(name, n), ..Outcome::of(decide_unix_name(st, &mut key), NET_UNIX_NAME) }
}

#[inline(always)]
fn on_unix_addr(ctx: *mut core::ffi::c_void, hook: u32) -> i32 {
    let Some(g) = governed(current_tgid()) else { return ALLOW };
    let Some(st) = g.state else {
        return refuse(&g, Verdict::deny(REASON_NO_GRANT, 0), hook, NET_UNIX_NAME, 0, Addr::NONE);
    };
    let o = unix_name_verdict(&st, ctx);
    if !o.v.allow {
        return refuse(&g, o.v, hook, o.kind, 0, o.addr);
    }
    // A path connect let through by name is checked by the peer's object when it returns
    // (`mcpg_connect_exit`): another socket renamed or mounted over the granted path is not
    // the granted socket. Without room to remember it, refuse (fail closed).
    if hook == HOOK_CONNECT && o.addr.kind == ADDR_NAME && !o.addr.name.is_null() {
        let first: u8 = rd(o.addr.name, 0).unwrap_or(0);
        if first != 0 {
            let sk: u64 = rd(ctx as Kptr, 0).unwrap_or(0);
            let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
            if sk == 0 || UNIX_PENDING.insert(&id, &sk, 0).is_err() {
                return refuse(&g, Verdict::deny(REASON_UNRESOLVED, o.v.grant), hook, o.kind, 0, o.addr);
            }
        }
    }
    ALLOW
}

/// Kill backend: the object check of a Unix connect its address program let through by name.
/// At syscall exit the connect is done and the peer known: a peer that is not the granted socket
/// object kills the process before it runs another instruction (it has sent nothing on the
/// socket). Everyone else: one lookup per connect, while something is governed.
#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn mcpg_connect_exit(ctx: TracePointContext) -> u32 {
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    // SAFETY: value read by value.
    let Some(sk) = (unsafe { UNIX_PENDING.get(&id) }).copied() else { return 0 };
    let _ = UNIX_PENDING.remove(&id);
    let ret = sys_arg(&ctx, 0) as i64;
    if ret != 0 {
        return 0; // the connect failed: nothing was reached
    }
    let Some(g) = governed(current_tgid()) else { return 0 };
    let Some(st) = g.state else {
        enforce_pos(&g, Verdict::deny(REASON_NO_GRANT, 0), HOOK_CONNECT, NET_UNIX, None);
        return 0;
    };
    let o = match rd_ptr(sk as Kptr, off!(unix_peer)) {
        Ok(peer) => unix_peer_verdict(&st, peer),
        Err(Unresolved) => Outcome::of(Verdict::deny(REASON_UNRESOLVED, grant_in_force(&st)), NET_UNIX),
    };
    if !o.v.allow {
        enforce_pos(&g, o.v, HOOK_CONNECT, NET_UNIX, o.pos());
    }
    0
}

// Compiled in a section aya parses (`cgroup/connect4`); the agent loads them itself with the Unix
// attach types (`UNIX_ADDR_PROGS`).
#[unsafe(no_mangle)]
#[unsafe(link_section = "cgroup/connect4")]
pub fn mcpg_connect_unix(ctx: *mut core::ffi::c_void) -> i32 {
    on_unix_addr(ctx, HOOK_CONNECT)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "cgroup/sendmsg4")]
pub fn mcpg_sendmsg_unix(ctx: *mut core::ffi::c_void) -> i32 {
    on_unix_addr(ctx, HOOK_SENDMSG)
}

// ---- LSM / fmod_ret entry points (see paths.rs for the macro) -------------------------------

crate::paths::path_hook!(mcpg_lsm_listen, "socket_listen", mcpg_fmod_listen, "fentry/security_socket_listen", 2, |c| {
    on_listen(c.arg(0))
});
// socket_create(family, type, protocol, kern)
crate::paths::path_hook!(mcpg_lsm_socket, "socket_create", mcpg_fmod_socket, "fentry/security_socket_create", 4, |c| {
    on_socket_create(c.arg(0), c.arg(1), c.arg(2), c.arg(3))
});
// unix_stream_connect(sock, other: struct sock *, newsk)
crate::paths::path_hook!(
    mcpg_lsm_unix_conn,
    "unix_stream_connect",
    mcpg_fmod_unix_conn,
    "fentry/security_unix_stream_connect",
    3,
    |c| on_unix(c.arg(1))
);
// unix_may_send(sock, other: struct socket *)
crate::paths::path_hook!(
    mcpg_lsm_unix_send,
    "unix_may_send",
    mcpg_fmod_unix_send,
    "fentry/security_unix_may_send",
    2,
    |c| on_unix_send(c.arg(1))
);
