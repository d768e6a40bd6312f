//! The network part of a grant: parses connect and listen targets (`tcp://HOST:PORT`,
//! `udp://[2001:db8::/32]:8000-8080`, `unix:/run/x.sock`, `unix:@name`, ...) and compiles them
//! to the kernel's LPM trie entries ([`NetKey`] -> [`NetPorts`]) and Unix socket keys
//! ([`UnixKey`]). Pure userspace, no kernel needed; unit-tested.
//!
//! Every address is handled in its IPv6 form: an IPv4 address `a.b.c.d` is `::ffff:a.b.c.d`
//! and an IPv4 `/n` is a `/(96 + n)` prefix, so both spellings of an IPv4 address decide alike.
//! A consequence: an IPv6 prefix covering `::ffff:0:0/96` (such as `[::/0]`) covers IPv4 too.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    str::FromStr,
};

use mcpguard_common::{NET_CONNECT_TCP, NET_CONNECT_UDP, NET_LISTEN_TCP, NET_LISTEN_UDP, UNIX_NAME_LEN};

/// Longest Unix socket path, and longest abstract name (without its leading NUL).
const UNIX_MAX: usize = UNIX_NAME_LEN - 1;
/// Longest DNS name, and longest label.
const DNS_NAME_MAX: usize = 253;
const DNS_LABEL_MAX: usize = 63;

const CONNECT_FORMS: &str = "tcp://HOST:PORT, udp://HOST:PORT, unix:/PATH or unix:@NAME";
const CONNECT_SCHEMES: &str = "tcp://, udp:// or unix:";
const LISTEN_FORMS: &str = "tcp://ADDR:PORT or udp://ADDR:PORT";
const LISTEN_SCHEMES: &str = "tcp:// or udp://";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("unknown scheme `{scheme}` in `{input}`: expected {expected}")]
    UnknownScheme { input: String, scheme: String, expected: &'static str },
    #[error("invalid target `{input}`: {problem}; expected {expected}")]
    Malformed { input: String, problem: String, expected: &'static str },
    #[error("invalid host `{host}` in `{input}`: {reason}")]
    BadHost { input: String, host: String, reason: String },
    #[error("invalid port `{port}` in `{input}`: {reason}")]
    BadPort { input: String, port: String, reason: String },
    #[error("invalid target `{input}`: {cidr} has host bits set; did you mean {network}?")]
    HostBits { input: String, cidr: String, network: String },
    #[error("invalid listen target `{input}`: listen addresses must be IP literals, not DNS names like `{host}`")]
    ListenName { input: String, host: String },
    #[error(
        "invalid listen target `{input}`: Unix sockets cannot be listen targets (binding a socket path \
         needs write access to its directory)"
    )]
    ListenUnix { input: String },
    #[error("invalid Unix socket target `{input}`: {reason}")]
    BadUnix { input: String, reason: String },
    #[error("cannot resolve `{host}` (in `{target}`): {source}")]
    Resolve {
        host: String,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{host}` (in `{target}`) resolved to no addresses")]
    NoAddresses { host: String, target: String },
    #[error(
        "{kind} {prefix}: {needed} separate port ranges apply there (its own and those of the prefixes \
         covering it), but a kernel entry holds at most {limit}; merge the ports into fewer ranges"
    )]
    TooManyRanges { kind: &'static str, prefix: String, needed: usize, limit: usize },
    #[error("invalid network entry {entry}: {reason}")]
    BadEntry { entry: String, reason: &'static str },
    #[error("invalid Unix socket name {name}: {reason}")]
    UnixName { name: String, reason: String },
}

/// Transport protocol of an IP target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// [`NET_CONNECT_TCP`] or [`NET_CONNECT_UDP`].
    #[must_use]
    pub fn connect_kind(self) -> u32 {
        match self {
            Self::Tcp => NET_CONNECT_TCP,
            Self::Udp => NET_CONNECT_UDP,
        }
    }
    /// [`NET_LISTEN_TCP`] or [`NET_LISTEN_UDP`].
    #[must_use]
    pub fn listen_kind(self) -> u32 {
        match self {
            Self::Tcp => NET_LISTEN_TCP,
            Self::Udp => NET_LISTEN_UDP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// Inclusive port range, `1 <= lo <= hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// Every port (`*`).
    pub const ALL: Self = Self { lo: 1, hi: u16::MAX };

    #[must_use]
    pub fn contains(self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ALL {
            f.write_str("*")
        } else if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Host part of an IP target: a network over the IPv6 form (host bits zero), or a DNS name
/// (lowercase), resolved when the grant is compiled.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Host {
    Net {
        addr: Ipv6Addr,
        /// `0..=128`, over the IPv6 form (an IPv4 `/n` is `96 + n`).
        prefix: u8,
    },
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Net { addr, prefix } => f.write_str(&display_net(*addr, *prefix)),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// Where a grant may connect (or send) to. Serialised as its canonical string.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ConnectTarget {
    Ip {
        proto: Proto,
        host: Host,
        ports: PortRange,
    },
    /// A Unix socket by path (absolute, at most 107 bytes).
    UnixPath(PathBuf),
    /// An abstract Unix socket, by its name without the leading NUL (at most 107 bytes).
    UnixAbstract(String),
}

/// Where a grant may bind (listen). `0.0.0.0` / `[::]` are the any-address binds of each
/// family. Serialised as its canonical string.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ListenTarget {
    pub proto: Proto,
    /// IPv6 form, host bits zero.
    pub addr: Ipv6Addr,
    /// `0..=128`, over the IPv6 form.
    pub prefix: u8,
    pub ports: PortRange,
}

/// One resolved network grant entry (no DNS names left).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetEntry {
    /// [`NET_CONNECT_TCP`] .. [`NET_LISTEN_UDP`].
    pub kind: u32,
    pub addr: Ipv6Addr,
    pub prefix: u8,
    pub ports: PortRange,
}

impl fmt::Display for NetEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", kind_name(self.kind), display_net(self.addr, self.prefix), self.ports)
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses

/// IPv4 -> IPv4-mapped IPv6 (`::ffff:a.b.c.d`); IPv6 unchanged.
#[must_use]
pub fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// An address in its usual spelling: IPv4-mapped addresses in dotted IPv4 form.
#[must_use]
pub fn display_ip(addr: Ipv6Addr) -> String {
    match addr.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => addr.to_string(),
    }
}

/// `addr` with the bits after `prefix` cleared.
fn network(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
    Ipv6Addr::from(u128::from(addr) & mask)
}

/// `true` if the network `outer/outer_prefix` contains `inner/inner_prefix`.
fn covers(outer: Ipv6Addr, outer_prefix: u8, inner: Ipv6Addr, inner_prefix: u8) -> bool {
    outer_prefix <= inner_prefix && network(inner, outer_prefix) == network(outer, outer_prefix)
}

/// Target syntax for a network: `10.0.0.0/8`, `10.1.2.3`, `[2001:db8::/32]`, `[::1]`.
fn display_net(addr: Ipv6Addr, prefix: u8) -> String {
    match addr.to_ipv4_mapped() {
        Some(v4) if prefix >= 96 => {
            if prefix == 128 {
                v4.to_string()
            } else {
                format!("{v4}/{}", prefix - 96)
            }
        }
        _ if prefix == 128 => format!("[{addr}]"),
        _ => format!("[{addr}/{prefix}]"),
    }
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        NET_CONNECT_TCP => "tcp connect",
        NET_CONNECT_UDP => "udp connect",
        NET_LISTEN_TCP => "tcp listen",
        NET_LISTEN_UDP => "udp listen",
        _ => "unknown kind",
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// What [`parse_ip`] is parsing, for its messages.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    input: &'a str,
    forms: &'static str,
    schemes: &'static str,
    listen: bool,
}

impl Ctx<'_> {
    fn malformed(&self, problem: impl Into<String>) -> NetError {
        NetError::Malformed { input: self.input.to_owned(), problem: problem.into(), expected: self.forms }
    }
    fn bad_host(&self, host: &str, reason: impl Into<String>) -> NetError {
        NetError::BadHost { input: self.input.to_owned(), host: host.to_owned(), reason: reason.into() }
    }
    fn bad_port(&self, port: &str, reason: impl Into<String>) -> NetError {
        NetError::BadPort { input: self.input.to_owned(), port: port.to_owned(), reason: reason.into() }
    }
}

/// `tcp://HOST:PORT` / `udp://HOST:PORT`.
fn parse_ip(cx: Ctx<'_>) -> Result<(Proto, Host, PortRange), NetError> {
    let Some((scheme, rest)) = cx.input.split_once("://") else {
        return Err(cx.malformed("no scheme"));
    };
    let proto = match scheme {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => {
            return Err(NetError::UnknownScheme {
                input: cx.input.to_owned(),
                scheme: scheme.to_owned(),
                expected: cx.schemes,
            });
        }
    };
    if rest.is_empty() {
        return Err(cx.malformed("no host"));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((inner, after)) = bracketed.split_once(']') else {
            return Err(cx.malformed("`[` without a closing `]`"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(cx.malformed("no `:PORT` after `]`"));
        };
        (parse_v6_host(cx, inner)?, port)
    } else {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(cx.malformed("no `:PORT`"));
        };
        if host.contains(':') {
            return Err(cx.bad_host(host, "IPv6 addresses must be written in brackets, e.g. tcp://[::1]:443"));
        }
        (parse_plain_host(cx, host)?, port)
    };
    Ok((proto, host, parse_ports(cx, port)?))
}

/// Inside brackets: an IPv6 address, optionally `/PREFIX`.
fn parse_v6_host(cx: Ctx<'_>, inner: &str) -> Result<Host, NetError> {
    let written = format!("[{inner}]");
    let (addr, prefix) = match inner.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (inner, None),
    };
    let addr: Ipv6Addr = addr.parse().map_err(|_| cx.bad_host(&written, "not an IPv6 address"))?;
    let prefix = match prefix {
        Some(p) => parse_prefix(p, 128).ok_or_else(|| cx.bad_host(&written, "prefix length must be 0-128"))?,
        None => 128,
    };
    checked_net(cx, &written, addr, prefix)
}

/// Without brackets: an IPv4 address or CIDR, or a DNS name.
fn parse_plain_host(cx: Ctx<'_>, host: &str) -> Result<Host, NetError> {
    if host.is_empty() {
        return Err(cx.malformed("no host"));
    }
    if let Some((a, p)) = host.split_once('/') {
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| cx.bad_host(host, "not an IPv4 CIDR (IPv6 networks go in brackets: [2001:db8::/32])"))?;
        let prefix = parse_prefix(p, 32).ok_or_else(|| cx.bad_host(host, "IPv4 prefix length must be 0-32"))?;
        return checked_net(cx, host, addr.to_ipv6_mapped(), 96 + prefix);
    }
    if let Ok(addr) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Net { addr: addr.to_ipv6_mapped(), prefix: 128 });
    }
    // A name whose last label is numeric is a mistyped address, never a DNS name.
    if host.rsplit('.').next().is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(cx.bad_host(host, "not a valid IPv4 address"));
    }
    if cx.listen {
        return Err(NetError::ListenName { input: cx.input.to_owned(), host: host.to_owned() });
    }
    validate_dns_name(host).map_err(|reason| cx.bad_host(host, reason))?;
    Ok(Host::Name(host.to_ascii_lowercase()))
}

/// Prefix length: decimal digits, at most `max`.
fn parse_prefix(s: &str, max: u8) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u8>().ok().filter(|p| *p <= max)
}

/// A network whose host bits must be zero.
fn checked_net(cx: Ctx<'_>, written: &str, addr: Ipv6Addr, prefix: u8) -> Result<Host, NetError> {
    let net = network(addr, prefix);
    if net != addr {
        return Err(NetError::HostBits {
            input: cx.input.to_owned(),
            cidr: written.to_owned(),
            network: display_net(net, prefix),
        });
    }
    Ok(Host::Net { addr, prefix })
}

fn validate_dns_name(name: &str) -> Result<(), String> {
    if name.len() > DNS_NAME_MAX {
        return Err(format!("DNS names are at most {DNS_NAME_MAX} characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty DNS label (leading, trailing or doubled `.`)".to_owned());
        }
        if label.len() > DNS_LABEL_MAX {
            return Err(format!("DNS label `{label}` is longer than {DNS_LABEL_MAX} characters"));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(format!(
                "`{}` is not allowed in a DNS name (letters, digits, `-` and `.` are)",
                c.escape_debug()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("DNS label `{label}` starts or ends with `-`"));
        }
    }
    Ok(())
}

/// `N`, `LO-HI` or `*`; ports 1-65535.
fn parse_ports(cx: Ctx<'_>, s: &str) -> Result<PortRange, NetError> {
    if s == "*" {
        return Ok(PortRange::ALL);
    }
    let one = |p: &str| -> Result<u16, NetError> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(cx.bad_port(s, "expected a port number 1-65535, a range LO-HI, or `*`"));
        }
        match p.parse::<u16>() {
            Ok(0) => Err(cx.bad_port(s, "port 0 is not a port (ports are 1-65535)")),
            Ok(n) => Ok(n),
            Err(_) => Err(cx.bad_port(s, "ports are 1-65535")),
        }
    };
    let range = match s.split_once('-') {
        Some((lo, hi)) => PortRange { lo: one(lo)?, hi: one(hi)? },
        None => {
            let p = one(s)?;
            PortRange { lo: p, hi: p }
        }
    };
    if range.lo > range.hi {
        return Err(cx.bad_port(s, "range is backwards (LO must be <= HI)"));
    }
    Ok(range)
}

fn parse_unix(input: &str, rest: &str) -> Result<ConnectTarget, NetError> {
    let bad = |reason: String| NetError::BadUnix { input: input.to_owned(), reason };
    if let Some(name) = rest.strip_prefix('@') {
        if name.is_empty() {
            return Err(bad("abstract socket name is empty".to_owned()));
        }
        if name.contains('\0') {
            return Err(bad("abstract socket name contains a NUL byte".to_owned()));
        }
        if name.len() > UNIX_MAX {
            return Err(bad(format!("abstract socket name is {} bytes; at most {UNIX_MAX} fit", name.len())));
        }
        return Ok(ConnectTarget::UnixAbstract(name.to_owned()));
    }
    if rest.starts_with("//") {
        return Err(bad("write unix:/PATH (one slash), not a URL-style unix://PATH".to_owned()));
    }
    if !rest.starts_with('/') {
        return Err(bad("socket path must be absolute (unix:/PATH), or an abstract name (unix:@NAME)".to_owned()));
    }
    if rest.contains('\0') {
        return Err(bad("socket path contains a NUL byte".to_owned()));
    }
    if rest.len() > UNIX_MAX {
        return Err(bad(format!("socket path is {} bytes; at most {UNIX_MAX} fit", rest.len())));
    }
    Ok(ConnectTarget::UnixPath(PathBuf::from(rest)))
}

impl FromStr for ConnectTarget {
    type Err = NetError;

    fn from_str(input: &str) -> Result<Self, NetError> {
        if let Some(rest) = input.strip_prefix("unix:") {
            return parse_unix(input, rest);
        }
        let cx = Ctx { input, forms: CONNECT_FORMS, schemes: CONNECT_SCHEMES, listen: false };
        let (proto, host, ports) = parse_ip(cx)?;
        Ok(Self::Ip { proto, host, ports })
    }
}

impl FromStr for ListenTarget {
    type Err = NetError;

    fn from_str(input: &str) -> Result<Self, NetError> {
        if input.starts_with("unix:") {
            return Err(NetError::ListenUnix { input: input.to_owned() });
        }
        let cx = Ctx { input, forms: LISTEN_FORMS, schemes: LISTEN_SCHEMES, listen: true };
        match parse_ip(cx)? {
            (proto, Host::Net { addr, prefix }, ports) => Ok(Self { proto, addr, prefix, ports }),
            // parse_ip refuses names when `listen` is set.
            (_, Host::Name(host), _) => Err(NetError::ListenName { input: input.to_owned(), host }),
        }
    }
}

impl fmt::Display for ConnectTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip { proto, host, ports } => write!(f, "{proto}://{host}:{ports}"),
            Self::UnixPath(path) => write!(f, "unix:{}", path.display()),
            Self::UnixAbstract(name) => write!(f, "unix:@{name}"),
        }
    }
}

impl fmt::Display for ListenTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.proto, display_net(self.addr, self.prefix), self.ports)
    }
}

impl TryFrom<String> for ConnectTarget {
    type Error = NetError;
    fn try_from(s: String) -> Result<Self, NetError> {
        s.parse()
    }
}

impl From<ConnectTarget> for String {
    fn from(t: ConnectTarget) -> Self {
        t.to_string()
    }
}

impl TryFrom<String> for ListenTarget {
    type Error = NetError;
    fn try_from(s: String) -> Result<Self, NetError> {
        s.parse()
    }
}

impl From<ListenTarget> for String {
    fn from(t: ListenTarget) -> Self {
        t.to_string()
    }
}

mod compile;
pub use compile::*;

#[cfg(test)]
mod tests;
