//! Network grant entries to kernel map contents: the LPM trie entries ([`NetKey`] ->
//! [`NetPorts`], one per distinct kind and network, each with the merged ports of every entry
//! covering it) and the Unix socket keys ([`UnixKey`]); a userspace model of the trie lookup for
//! the tests. Pure, no kernel needed.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr, ToSocketAddrs as _},
    os::unix::ffi::OsStrExt as _,
};

use mcpguard_common::{
    NET_CONNECT_TCP, NET_KEY_FIXED_BITS, NET_LISTEN_UDP, NET_PORT_RANGES, NetKey, NetKeyData, NetPorts, UNIX_NAME_LEN,
    UnixKey,
};

use super::*;

/// Resolves a connect target to kernel entries: one per address (a DNS name may resolve to
/// several). Unix targets have none (see [`unix_kernel_name`]).
pub fn resolve_connect(
    t: &ConnectTarget,
    resolve: &mut dyn FnMut(&str) -> std::io::Result<Vec<IpAddr>>,
) -> Result<Vec<NetEntry>, NetError> {
    let ConnectTarget::Ip { proto, host, ports } = t else {
        return Ok(Vec::new());
    };
    let kind = proto.connect_kind();
    match host {
        Host::Net { addr, prefix } => Ok(vec![NetEntry { kind, addr: *addr, prefix: *prefix, ports: *ports }]),
        Host::Name(name) => {
            let addrs = resolve(name).map_err(|source| NetError::Resolve {
                host: name.clone(),
                target: t.to_string(),
                source,
            })?;
            let addrs: BTreeSet<Ipv6Addr> = addrs.into_iter().map(to_v6).collect();
            if addrs.is_empty() {
                return Err(NetError::NoAddresses { host: name.clone(), target: t.to_string() });
            }
            Ok(addrs.into_iter().map(|addr| NetEntry { kind, addr, prefix: 128, ports: *ports }).collect())
        }
    }
}

/// The system resolver (`getaddrinfo`): the addresses of `host`, deduplicated and sorted.
pub fn system_resolver(host: &str) -> std::io::Result<Vec<IpAddr>> {
    let addrs: BTreeSet<IpAddr> = (host, 0).to_socket_addrs()?.map(|sa| sa.ip()).collect();
    Ok(addrs.into_iter().collect())
}

/// The kernel entry of a listen target.
#[must_use]
pub fn listen_entry(t: &ListenTarget) -> NetEntry {
    NetEntry { kind: t.proto.listen_kind(), addr: t.addr, prefix: t.prefix, ports: t.ports }
}

fn grant_halves(grant: u64) -> [u32; 2] {
    [grant as u32, (grant >> 32) as u32]
}

/// Sorts and merges overlapping or adjacent ranges.
fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

/// LPM trie entries of a grant's network entries: one per distinct (kind, network). The kernel
/// checks only the ports of the longest matching prefix, so each entry carries the union of
/// the ports of every entry of its kind whose network covers it (its own included), merged and
/// sorted. Output is ordered by kind, address, prefix length.
pub fn lpm_entries(grant: u64, entries: &[NetEntry]) -> Result<Vec<(NetKey, NetPorts)>, NetError> {
    let mut own: BTreeMap<(u32, Ipv6Addr, u8), Vec<PortRange>> = BTreeMap::new();
    for e in entries {
        let reason = if !(NET_CONNECT_TCP..=NET_LISTEN_UDP).contains(&e.kind) {
            Some("unknown kind")
        } else if e.prefix > 128 {
            Some("prefix length over 128")
        } else if e.ports.lo == 0 || e.ports.lo > e.ports.hi {
            Some("port range must be 1 <= lo <= hi")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(NetError::BadEntry { entry: e.to_string(), reason });
        }
        own.entry((e.kind, network(e.addr, e.prefix), e.prefix)).or_default().push(e.ports);
    }
    let mut out = Vec::with_capacity(own.len());
    for &(kind, addr, prefix) in own.keys() {
        let union: Vec<PortRange> = own
            .iter()
            .filter(|((k, a, p), _)| *k == kind && covers(*a, *p, addr, prefix))
            .flat_map(|(_, ports)| ports.iter().copied())
            .collect();
        let merged = merge_ranges(union);
        if merged.len() > NET_PORT_RANGES {
            return Err(NetError::TooManyRanges {
                kind: kind_name(kind),
                prefix: display_net(addr, prefix),
                needed: merged.len(),
                limit: NET_PORT_RANGES,
            });
        }
        let mut ports = NetPorts { n: merged.len() as u32, ..NetPorts::default() };
        for (slot, r) in ports.ranges.iter_mut().zip(&merged) {
            *slot = [r.lo, r.hi];
        }
        let key = NetKey {
            prefixlen: NET_KEY_FIXED_BITS + u32::from(prefix),
            data: NetKeyData { kind, grant: grant_halves(grant), addr: addr.octets() },
        };
        out.push((key, ports));
    }
    Ok(out)
}

/// Whether `ports` (a trie value) allows `port`.
#[must_use]
pub fn port_allowed(ports: &NetPorts, port: u16) -> bool {
    let n = (ports.n as usize).min(NET_PORT_RANGES);
    ports.ranges[..n].iter().any(|[lo, hi]| (*lo..=*hi).contains(&port))
}

const NET_KEY_DATA_LEN: usize = size_of::<NetKeyData>();

/// The bytes of a trie key as the kernel compares them.
fn key_bytes(d: &NetKeyData) -> [u8; NET_KEY_DATA_LEN] {
    let mut b = [0u8; NET_KEY_DATA_LEN];
    b[..4].copy_from_slice(&d.kind.to_ne_bytes());
    b[4..8].copy_from_slice(&d.grant[0].to_ne_bytes());
    b[8..12].copy_from_slice(&d.grant[1].to_ne_bytes());
    b[12..].copy_from_slice(&d.addr);
    b
}

/// `true` if the first `bits` bits (most significant first, as the LPM trie reads them) agree.
fn first_bits_equal(a: &[u8], b: &[u8], bits: usize) -> bool {
    let (full, rest) = (bits / 8, bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

/// Userspace model of the kernel's LPM trie lookup of `(kind, grant, addr)` in `entries`: the
/// ports of the longest matching prefix.
#[must_use]
pub fn trie_lookup(entries: &[(NetKey, NetPorts)], kind: u32, grant: u64, addr: Ipv6Addr) -> Option<NetPorts> {
    let want = key_bytes(&NetKeyData { kind, grant: grant_halves(grant), addr: addr.octets() });
    entries
        .iter()
        .filter(|(k, _)| {
            let bits = k.prefixlen as usize;
            bits <= NET_KEY_DATA_LEN * 8 && first_bits_equal(&key_bytes(&k.data), &want, bits)
        })
        .max_by_key(|(k, _)| k.prefixlen)
        .map(|(_, p)| *p)
}

/// The `sun_path` bytes the kernel sees for a Unix target: the path, or NUL + the abstract
/// name. `None` for IP targets.
#[must_use]
pub fn unix_kernel_name(t: &ConnectTarget) -> Option<Vec<u8>> {
    match t {
        ConnectTarget::Ip { .. } => None,
        ConnectTarget::UnixPath(path) => Some(path.as_os_str().as_bytes().to_vec()),
        ConnectTarget::UnixAbstract(name) => {
            let mut v = Vec::with_capacity(1 + name.len());
            v.push(0);
            v.extend_from_slice(name.as_bytes());
            Some(v)
        }
    }
}

/// The [`UnixKey`] of a socket name (`sun_path` bytes; abstract names start with NUL),
/// zero-padded. A path may be at most `UNIX_NAME_LEN - 1` bytes (room for its terminating
/// NUL); an abstract name, which has no terminator, may fill all `UNIX_NAME_LEN` bytes.
pub fn unix_key(grant: u64, name: &[u8]) -> Result<UnixKey, NetError> {
    let shown = || format!("{:?}", String::from_utf8_lossy(name));
    let max = if name.first() == Some(&0) { UNIX_NAME_LEN } else { UNIX_NAME_LEN - 1 };
    if name.is_empty() || name == [0] {
        return Err(NetError::UnixName { name: shown(), reason: "empty name".to_owned() });
    }
    if name.len() > max {
        return Err(NetError::UnixName { name: shown(), reason: format!("{} bytes; at most {max} fit", name.len()) });
    }
    let mut key = UnixKey { grant, name: [0; UNIX_NAME_LEN], _pad: 0 };
    key.name[..name.len()].copy_from_slice(name);
    Ok(key)
}
