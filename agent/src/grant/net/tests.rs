use std::io;

use mcpguard_common::{NET_KEY_FIXED_BITS, NET_PORT_RANGES, NetPorts};

use super::*;

fn connect(s: &str) -> ConnectTarget {
    s.parse().unwrap_or_else(|e| panic!("`{s}` should parse: {e}"))
}

fn listen(s: &str) -> ListenTarget {
    s.parse().unwrap_or_else(|e| panic!("`{s}` should parse: {e}"))
}

fn connect_err(s: &str) -> String {
    match s.parse::<ConnectTarget>() {
        Ok(t) => panic!("`{s}` should not parse, got {t:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("`{s}`")), "message for `{s}` does not quote it: {msg}");
            msg
        }
    }
}

fn listen_err(s: &str) -> String {
    match s.parse::<ListenTarget>() {
        Ok(t) => panic!("`{s}` should not parse, got {t:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("`{s}`")), "message for `{s}` does not quote it: {msg}");
            msg
        }
    }
}

fn v4(s: &str) -> Ipv6Addr {
    s.parse::<Ipv4Addr>().unwrap().to_ipv6_mapped()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ip(proto: Proto, addr: Ipv6Addr, prefix: u8, lo: u16, hi: u16) -> ConnectTarget {
    ConnectTarget::Ip { proto, host: Host::Net { addr, prefix }, ports: PortRange { lo, hi } }
}

fn entry(kind: u32, addr: Ipv6Addr, prefix: u8, lo: u16, hi: u16) -> NetEntry {
    NetEntry { kind, addr, prefix, ports: PortRange { lo, hi } }
}

fn ranges(p: &NetPorts) -> Vec<(u16, u16)> {
    p.ranges[..p.n as usize].iter().map(|[lo, hi]| (*lo, *hi)).collect()
}

// --- parsing: accepted forms ------------------------------------------------------------

#[test]
fn connect_ipv4_forms() {
    assert_eq!(connect("tcp://127.0.0.1:80"), ip(Proto::Tcp, v4("127.0.0.1"), 128, 80, 80));
    assert_eq!(connect("udp://10.0.0.0/8:53"), ip(Proto::Udp, v4("10.0.0.0"), 104, 53, 53));
    assert_eq!(connect("tcp://0.0.0.0/0:*"), ip(Proto::Tcp, v4("0.0.0.0"), 96, 1, 65535));
    assert_eq!(connect("tcp://192.168.1.7/32:8000-8080"), ip(Proto::Tcp, v4("192.168.1.7"), 128, 8000, 8080));
    assert_eq!(connect("tcp://1.2.3.4:65535"), ip(Proto::Tcp, v4("1.2.3.4"), 128, 65535, 65535));
    assert_eq!(connect("tcp://1.2.3.4:1-65535"), connect("tcp://1.2.3.4:*"));
}

#[test]
fn connect_ipv6_forms() {
    assert_eq!(connect("tcp://[::1]:443"), ip(Proto::Tcp, Ipv6Addr::LOCALHOST, 128, 443, 443));
    assert_eq!(connect("udp://[2001:db8::/32]:1-1024"), ip(Proto::Udp, v6("2001:db8::"), 32, 1, 1024));
    assert_eq!(connect("tcp://[::/0]:*"), ip(Proto::Tcp, Ipv6Addr::UNSPECIFIED, 0, 1, 65535));
    assert_eq!(connect("tcp://[2001:db8::1/128]:22"), ip(Proto::Tcp, v6("2001:db8::1"), 128, 22, 22));
}

#[test]
fn connect_dns_names() {
    let t = connect("tcp://API.Example.COM:443");
    assert_eq!(
        t,
        ConnectTarget::Ip {
            proto: Proto::Tcp,
            host: Host::Name("api.example.com".into()),
            ports: PortRange { lo: 443, hi: 443 }
        }
    );
    assert_eq!(t.to_string(), "tcp://api.example.com:443");
    connect("udp://localhost:53");
    connect("tcp://a-b.c0.d:1");
    connect("tcp://1e100.net:80");
    connect(&format!("tcp://{}.com:80", "a".repeat(63)));
    // 4 * 63 + 1 = 253 characters.
    let longest = [&"a".repeat(63), &"b".repeat(63), &"c".repeat(63), &"d".repeat(61)].map(|s| s.as_str()).join(".");
    assert_eq!(longest.len(), 253);
    connect(&format!("tcp://{longest}:80"));
}

#[test]
fn connect_unix_forms() {
    assert_eq!(connect("unix:/run/app.sock"), ConnectTarget::UnixPath("/run/app.sock".into()));
    assert_eq!(connect("unix:@my-bus"), ConnectTarget::UnixAbstract("my-bus".into()));
    assert_eq!(connect("unix:@/tmp/dbus-x"), ConnectTarget::UnixAbstract("/tmp/dbus-x".into()));
    let longest_path = format!("/{}", "p".repeat(106));
    assert_eq!(connect(&format!("unix:{longest_path}")), ConnectTarget::UnixPath(longest_path.into()));
    let longest_name = "n".repeat(107);
    assert_eq!(connect(&format!("unix:@{longest_name}")), ConnectTarget::UnixAbstract(longest_name));
}

#[test]
fn listen_forms() {
    let t = listen("tcp://0.0.0.0:8080");
    assert_eq!(
        t,
        ListenTarget { proto: Proto::Tcp, addr: v4("0.0.0.0"), prefix: 128, ports: PortRange { lo: 8080, hi: 8080 } }
    );
    let t = listen("udp://[::]:5353");
    assert_eq!(
        t,
        ListenTarget {
            proto: Proto::Udp,
            addr: Ipv6Addr::UNSPECIFIED,
            prefix: 128,
            ports: PortRange { lo: 5353, hi: 5353 }
        }
    );
    let t = listen("tcp://127.0.0.0/8:3000-3999");
    assert_eq!((t.addr, t.prefix, t.ports), (v4("127.0.0.0"), 104, PortRange { lo: 3000, hi: 3999 }));
    let t = listen("tcp://[fd00::/8]:*");
    assert_eq!((t.addr, t.prefix, t.ports), (v6("fd00::"), 8, PortRange::ALL));
    assert_eq!(listen("tcp://[::ffff:127.0.0.1]:80"), listen("tcp://127.0.0.1:80"));
}

// --- parsing: errors --------------------------------------------------------------------

#[test]
fn connect_scheme_errors() {
    let msg = connect_err("http://x:1");
    assert_eq!(msg, "unknown scheme `http` in `http://x:1`: expected tcp://, udp:// or unix:");
    assert!(connect_err("TCP://x:1").contains("unknown scheme `TCP`"));
    assert!(connect_err("example.com:443").contains("expected tcp://HOST:PORT"));
    assert!(connect_err("").contains("no scheme"));
    assert!(connect_err("tcp://").contains("no host"));
    assert!(connect_err("tcp://:80").contains("no host"));
}

#[test]
fn connect_host_errors() {
    assert!(connect_err("tcp://example.com").contains("no `:PORT`"));
    assert!(connect_err("tcp://::1:80").contains("must be written in brackets"));
    assert!(connect_err("tcp://[::1]").contains("no `:PORT` after `]`"));
    assert!(connect_err("tcp://[::1]80").contains("no `:PORT` after `]`"));
    assert!(connect_err("tcp://[::1:80").contains("without a closing `]`"));
    assert!(connect_err("tcp://[10.0.0.1]:80").contains("not an IPv6 address"));
    assert!(connect_err("tcp://[fe80::1%eth0]:80").contains("not an IPv6 address"));
    assert!(connect_err("tcp://[::/129]:80").contains("0-128"));
    assert!(connect_err("tcp://[::/]:80").contains("0-128"));
    assert!(connect_err("tcp://10.0.0.0/33:80").contains("0-32"));
    assert!(connect_err("tcp://10.0.0.0/x:80").contains("0-32"));
    assert!(connect_err("tcp://10.0.0.0/+8:80").contains("0-32"));
    assert!(connect_err("tcp://example.com/8:80").contains("not an IPv4 CIDR"));
    assert!(connect_err("tcp://10.0.0.256:80").contains("not a valid IPv4 address"));
    assert!(connect_err("tcp://010.0.0.1:80").contains("not a valid IPv4 address"));
    assert!(connect_err("tcp://1.2.3:80").contains("not a valid IPv4 address"));
    assert!(connect_err("tcp://under_score.com:80").contains("`_` is not allowed"));
    assert!(connect_err("tcp://example.com.:80").contains("empty DNS label"));
    assert!(connect_err("tcp://a..b:80").contains("empty DNS label"));
    assert!(connect_err("tcp://-a.com:80").contains("starts or ends with `-`"));
    assert!(connect_err("tcp://a-.com:80").contains("starts or ends with `-`"));
    assert!(connect_err("tcp://exämple.com:80").contains("`ä` is not allowed"));
    assert!(connect_err(&format!("tcp://{}.com:80", "a".repeat(64))).contains("longer than 63"));
    let too_long = format!("{}.com", ["a"; 125].join("."));
    assert_eq!(too_long.len(), 253);
    connect(&format!("tcp://{too_long}:80"));
    assert!(connect_err(&format!("tcp://a{too_long}:80")).contains("at most 253"));
}

#[test]
fn host_bits_errors() {
    let msg = connect_err("tcp://10.1.2.3/8:80");
    assert!(msg.ends_with("10.1.2.3/8 has host bits set; did you mean 10.0.0.0/8?"), "{msg}");
    let msg = connect_err("udp://[2001:db8::1/32]:53");
    assert!(msg.ends_with("[2001:db8::1/32] has host bits set; did you mean [2001:db8::/32]?"), "{msg}");
    let msg = connect_err("tcp://[::ffff:10.1.0.0/104]:80");
    assert!(msg.ends_with("did you mean 10.0.0.0/8?"), "{msg}");
    let msg = listen_err("tcp://192.168.1.1/24:80");
    assert!(msg.ends_with("did you mean 192.168.1.0/24?"), "{msg}");
    let msg = connect_err("tcp://1.2.3.4/0:80");
    assert!(msg.ends_with("did you mean 0.0.0.0/0?"), "{msg}");
}

#[test]
fn port_errors() {
    assert!(connect_err("tcp://1.2.3.4:0").contains("port 0"));
    assert!(connect_err("tcp://1.2.3.4:0-80").contains("port 0"));
    assert!(connect_err("tcp://1.2.3.4:65536").contains("1-65535"));
    assert!(connect_err("tcp://1.2.3.4:99999999999").contains("1-65535"));
    assert!(connect_err("tcp://1.2.3.4:").contains("invalid port ``"));
    assert!(connect_err("tcp://1.2.3.4:http").contains("invalid port `http`"));
    assert!(connect_err("tcp://1.2.3.4:+80").contains("invalid port `+80`"));
    assert!(connect_err("tcp://1.2.3.4:80/path").contains("invalid port `80/path`"));
    assert!(connect_err("tcp://1.2.3.4:8080-8000").contains("backwards"));
    assert!(connect_err("tcp://1.2.3.4:80-").contains("invalid port `80-`"));
    assert!(connect_err("tcp://1.2.3.4:-80").contains("invalid port `-80`"));
    assert!(connect_err("tcp://1.2.3.4:1-2-3").contains("invalid port `1-2-3`"));
    assert!(connect_err("tcp://1.2.3.4:**").contains("invalid port `**`"));
}

#[test]
fn unix_errors() {
    assert!(connect_err("unix:").contains("must be absolute"));
    assert!(connect_err("unix:run/x.sock").contains("must be absolute"));
    assert!(connect_err("unix:///run/x.sock").contains("not a URL-style"));
    assert!(connect_err("unix:/run/x\0.sock").contains("NUL"));
    assert!(connect_err(&format!("unix:/{}", "p".repeat(107))).contains("108 bytes; at most 107"));
    assert!(connect_err("unix:@").contains("name is empty"));
    assert!(connect_err("unix:@a\0b").contains("NUL"));
    assert!(connect_err(&format!("unix:@{}", "n".repeat(108))).contains("108 bytes; at most 107"));
}

#[test]
fn listen_errors() {
    let msg = listen_err("tcp://example.com:80");
    assert!(msg.contains("listen addresses must be IP literals"), "{msg}");
    assert!(listen_err("tcp://localhost:80").contains("listen addresses must be IP literals"));
    assert!(listen_err("unix:/run/x.sock").contains("Unix sockets cannot be listen targets"));
    assert!(listen_err("unix:@name").contains("Unix sockets cannot be listen targets"));
    assert_eq!(
        listen_err("http://0.0.0.0:80"),
        "unknown scheme `http` in `http://0.0.0.0:80`: expected tcp:// or udp://"
    );
    assert!(listen_err("0.0.0.0:80").contains("expected tcp://ADDR:PORT or udp://ADDR:PORT"));
    assert!(listen_err("tcp://0.0.0.0:0").contains("port 0"));
    assert!(listen_err("tcp://300.0.0.0:80").contains("not a valid IPv4 address"));
}

// --- canonical form ---------------------------------------------------------------------

#[test]
fn display_is_canonical_and_round_trips() {
    let cases = [
        ("tcp://127.0.0.1:80", "tcp://127.0.0.1:80"),
        ("tcp://127.0.0.1/32:80", "tcp://127.0.0.1:80"),
        ("udp://10.0.0.0/8:53", "udp://10.0.0.0/8:53"),
        ("tcp://0.0.0.0/0:1-65535", "tcp://0.0.0.0/0:*"),
        ("tcp://[::1]:8000-8080", "tcp://[::1]:8000-8080"),
        ("tcp://[::1/128]:22", "tcp://[::1]:22"),
        ("tcp://[2001:DB8:0:0::/32]:*", "tcp://[2001:db8::/32]:*"),
        ("tcp://[::/0]:443", "tcp://[::/0]:443"),
        ("tcp://[::ffff:127.0.0.1]:80", "tcp://127.0.0.1:80"),
        ("tcp://[::ffff:7f00:1]:80", "tcp://127.0.0.1:80"),
        ("tcp://[::ffff:10.0.0.0/104]:80", "tcp://10.0.0.0/8:80"),
        ("tcp://[::ffff:0.0.0.0/96]:80", "tcp://0.0.0.0/0:80"),
        ("tcp://Example.com:00080", "tcp://example.com:80"),
        ("tcp://1.2.3.4:7-7", "tcp://1.2.3.4:7"),
        ("unix:/run/app.sock", "unix:/run/app.sock"),
        ("unix:@bus", "unix:@bus"),
    ];
    for (input, canonical) in cases {
        let t = connect(input);
        assert_eq!(t.to_string(), canonical, "display of `{input}`");
        assert_eq!(connect(canonical), t, "round trip of `{input}`");
    }
    let listens = [
        ("tcp://0.0.0.0:8080", "tcp://0.0.0.0:8080"),
        ("udp://[::]:1-65535", "udp://[::]:*"),
        ("tcp://[::ffff:127.0.0.0/104]:3000-3999", "tcp://127.0.0.0/8:3000-3999"),
        ("tcp://[fd00::/8]:80", "tcp://[fd00::/8]:80"),
    ];
    for (input, canonical) in listens {
        let t = listen(input);
        assert_eq!(t.to_string(), canonical, "display of `{input}`");
        assert_eq!(listen(canonical), t, "round trip of `{input}`");
    }
}

#[test]
fn ipv4_mapped_equivalence() {
    assert_eq!(connect("tcp://[::ffff:127.0.0.1]:80"), connect("tcp://127.0.0.1:80"));
    assert_eq!(connect("udp://[::ffff:10.0.0.0/104]:53"), connect("udp://10.0.0.0/8:53"));
    assert_eq!(to_v6("127.0.0.1".parse().unwrap()), v6("::ffff:127.0.0.1"));
    assert_eq!(to_v6("::1".parse().unwrap()), Ipv6Addr::LOCALHOST);
    assert_eq!(display_ip(v6("::ffff:127.0.0.1")), "127.0.0.1");
    assert_eq!(display_ip(v6("2001:db8::1")), "2001:db8::1");
    // `::1` and `::` are IPv6, not IPv4-compatible addresses in disguise.
    assert_eq!(display_ip(Ipv6Addr::LOCALHOST), "::1");
    assert_eq!(display_ip(Ipv6Addr::UNSPECIFIED), "::");
    // Resolved IPv4 answers become mapped entries.
    let mut r = |_: &str| -> io::Result<Vec<IpAddr>> { Ok(vec!["10.1.2.3".parse().unwrap()]) };
    let e = resolve_connect(&connect("tcp://db.internal:5432"), &mut r).unwrap();
    assert_eq!(e, vec![entry(NET_CONNECT_TCP, v4("10.1.2.3"), 128, 5432, 5432)]);
}

#[test]
fn serde_uses_the_canonical_string() {
    let t = connect("tcp://[::ffff:10.0.0.0/104]:8000-8080");
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(json, r#""tcp://10.0.0.0/8:8000-8080""#);
    assert_eq!(serde_json::from_str::<ConnectTarget>(&json).unwrap(), t);
    let err = serde_json::from_str::<ConnectTarget>(r#""http://x:1""#).unwrap_err().to_string();
    assert!(err.contains("unknown scheme `http`"), "{err}");
    let l = listen("udp://[::]:*");
    let json = serde_json::to_string(&l).unwrap();
    assert_eq!(json, r#""udp://[::]:*""#);
    assert_eq!(serde_json::from_str::<ListenTarget>(&json).unwrap(), l);
    let e = entry(NET_LISTEN_TCP, v4("0.0.0.0"), 128, 80, 80);
    assert_eq!(serde_json::from_str::<NetEntry>(&serde_json::to_string(&e).unwrap()).unwrap(), e);
}

// --- resolution -------------------------------------------------------------------------

#[test]
fn resolve_literals_and_unix() {
    let mut never = |h: &str| -> io::Result<Vec<IpAddr>> { panic!("resolver called for {h}") };
    let e = resolve_connect(&connect("udp://10.0.0.0/8:53"), &mut never).unwrap();
    assert_eq!(e, vec![entry(NET_CONNECT_UDP, v4("10.0.0.0"), 104, 53, 53)]);
    let e = resolve_connect(&connect("tcp://[2001:db8::/32]:*"), &mut never).unwrap();
    assert_eq!(e, vec![entry(NET_CONNECT_TCP, v6("2001:db8::"), 32, 1, 65535)]);
    assert!(resolve_connect(&connect("unix:/run/x.sock"), &mut never).unwrap().is_empty());
    assert!(resolve_connect(&connect("unix:@bus"), &mut never).unwrap().is_empty());
}

#[test]
fn resolve_names() {
    let mut asked = Vec::new();
    let mut fake = |h: &str| -> io::Result<Vec<IpAddr>> {
        asked.push(h.to_owned());
        match h {
            "dual.example" => Ok(vec![
                "2001:db8::2".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
                "::ffff:192.0.2.1".parse().unwrap(), // same address again, mapped
                "2001:db8::1".parse().unwrap(),
            ]),
            "empty.example" => Ok(vec![]),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        }
    };
    let e = resolve_connect(&connect("tcp://Dual.Example:443"), &mut fake).unwrap();
    assert_eq!(
        e,
        vec![
            entry(NET_CONNECT_TCP, v4("192.0.2.1"), 128, 443, 443),
            entry(NET_CONNECT_TCP, v6("2001:db8::1"), 128, 443, 443),
            entry(NET_CONNECT_TCP, v6("2001:db8::2"), 128, 443, 443),
        ]
    );

    let msg = resolve_connect(&connect("udp://empty.example:53"), &mut fake).unwrap_err().to_string();
    assert_eq!(msg, "`empty.example` (in `udp://empty.example:53`) resolved to no addresses");

    let err = resolve_connect(&connect("tcp://gone.example:80"), &mut fake).unwrap_err();
    assert_eq!(err.to_string(), "cannot resolve `gone.example` (in `tcp://gone.example:80`): no such host");
    assert!(matches!(&err, NetError::Resolve { source, .. } if source.kind() == io::ErrorKind::NotFound));

    assert_eq!(asked, ["dual.example", "empty.example", "gone.example"]);
}

#[test]
fn system_resolver_numeric_hosts() {
    // Numeric hosts are answered without any lookup.
    assert_eq!(system_resolver("127.0.0.1").unwrap(), vec![IpAddr::from([127, 0, 0, 1])]);
    assert_eq!(system_resolver("::1").unwrap(), vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]);
}

#[test]
fn listen_entries() {
    assert_eq!(listen_entry(&listen("tcp://0.0.0.0:8080")), entry(NET_LISTEN_TCP, v4("0.0.0.0"), 128, 8080, 8080));
    assert_eq!(listen_entry(&listen("udp://[fd00::/8]:*")), entry(NET_LISTEN_UDP, v6("fd00::"), 8, 1, 65535));
}

// --- trie compilation -------------------------------------------------------------------

#[test]
fn lpm_key_layout() {
    let grant = 0x1122_3344_5566_7788;
    let out = lpm_entries(grant, &[entry(NET_CONNECT_UDP, v4("10.0.0.0"), 104, 53, 53)]).unwrap();
    assert_eq!(out.len(), 1);
    let (key, ports) = out[0];
    assert_eq!(key.prefixlen, NET_KEY_FIXED_BITS + 104);
    assert_eq!(key.data.kind, NET_CONNECT_UDP);
    assert_eq!(key.data.grant, [0x5566_7788, 0x1122_3344]);
    assert_eq!(key.data.addr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 0]);
    assert_eq!(ranges(&ports), [(53, 53)]);
}

#[test]
fn lpm_zeroes_host_bits_and_dedups() {
    let out = lpm_entries(
        1,
        &[entry(NET_CONNECT_TCP, v4("10.9.9.9"), 104, 80, 80), entry(NET_CONNECT_TCP, v4("10.0.0.0"), 104, 81, 81)],
    )
    .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.data.addr, v4("10.0.0.0").octets());
    assert_eq!(ranges(&out[0].1), [(80, 81)]);
}

#[test]
fn lpm_union_of_covering_prefixes() {
    // 10.0.0.0/8 port 80 and 10.1.2.3 port 443.
    let entries =
        [entry(NET_CONNECT_TCP, v4("10.0.0.0"), 104, 80, 80), entry(NET_CONNECT_TCP, v4("10.1.2.3"), 128, 443, 443)];
    let out = lpm_entries(7, &entries).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(ranges(&out[0].1), [(80, 80)]);
    assert_eq!(ranges(&out[1].1), [(80, 80), (443, 443)]);

    let allowed =
        |addr: &str, port| trie_lookup(&out, NET_CONNECT_TCP, 7, v4(addr)).is_some_and(|p| port_allowed(&p, port));
    assert!(allowed("10.1.2.3", 80));
    assert!(allowed("10.1.2.3", 443));
    assert!(allowed("10.9.9.9", 80));
    assert!(!allowed("10.9.9.9", 443));
    assert!(!allowed("11.0.0.1", 80));
    assert!(!allowed("10.1.2.3", 22));
}

#[test]
fn lpm_union_is_per_kind_and_nested() {
    let entries = [
        entry(NET_CONNECT_TCP, Ipv6Addr::UNSPECIFIED, 0, 443, 443), // [::/0] covers IPv4 too
        entry(NET_CONNECT_TCP, v4("10.0.0.0"), 104, 80, 80),
        entry(NET_CONNECT_TCP, v4("10.1.0.0"), 112, 81, 81),
        entry(NET_CONNECT_TCP, v4("10.1.2.3"), 128, 82, 82),
        entry(NET_CONNECT_UDP, v4("10.0.0.0"), 104, 53, 53), // other kind: never merged
        entry(NET_CONNECT_TCP, v4("11.0.0.0"), 104, 22, 22), // sibling: not covering
    ];
    let out = lpm_entries(3, &entries).unwrap();
    let look = |kind, addr: &str| trie_lookup(&out, kind, 3, v4(addr)).map(|p| ranges(&p));
    assert_eq!(look(NET_CONNECT_TCP, "10.1.2.3"), Some(vec![(80, 82), (443, 443)]));
    assert_eq!(look(NET_CONNECT_TCP, "10.1.9.9"), Some(vec![(80, 81), (443, 443)]));
    assert_eq!(look(NET_CONNECT_TCP, "10.2.0.1"), Some(vec![(80, 80), (443, 443)]));
    assert_eq!(look(NET_CONNECT_TCP, "11.1.1.1"), Some(vec![(22, 22), (443, 443)]));
    assert_eq!(look(NET_CONNECT_TCP, "8.8.8.8"), Some(vec![(443, 443)]));
    assert_eq!(look(NET_CONNECT_UDP, "10.1.2.3"), Some(vec![(53, 53)]));
    assert_eq!(look(NET_CONNECT_UDP, "11.1.1.1"), None);
    assert_eq!(look(NET_LISTEN_TCP, "10.1.2.3"), None);
    let v6_hit = trie_lookup(&out, NET_CONNECT_TCP, 3, v6("2001:db8::1")).map(|p| ranges(&p));
    assert_eq!(v6_hit, Some(vec![(443, 443)]));
}

#[test]
fn lpm_lookup_is_per_grant() {
    let a = lpm_entries(1, &[entry(NET_CONNECT_TCP, v4("10.0.0.0"), 104, 80, 80)]).unwrap();
    let b = lpm_entries(1 << 32, &[entry(NET_CONNECT_TCP, v4("10.0.0.0"), 104, 443, 443)]).unwrap();
    let both: Vec<_> = a.into_iter().chain(b).collect();
    let look = |grant| trie_lookup(&both, NET_CONNECT_TCP, grant, v4("10.1.1.1")).map(|p| ranges(&p));
    assert_eq!(look(1), Some(vec![(80, 80)]));
    assert_eq!(look(1 << 32), Some(vec![(443, 443)]));
    assert_eq!(look(2), None);
}

#[test]
fn lpm_merges_overlapping_and_adjacent_ranges() {
    let at = |lo, hi| entry(NET_LISTEN_UDP, v6("fd00::"), 8, lo, hi);
    let out = lpm_entries(
        1,
        &[
            at(100, 200),
            at(150, 250),
            at(251, 260),
            at(300, 300),
            at(1, 1),
            at(2, 2),
            at(65535, 65535),
            at(400, 300 + 100),
        ],
    )
    .unwrap();
    assert_eq!(ranges(&out[0].1), [(1, 2), (100, 260), (300, 300), (400, 400), (65535, 65535)]);
    let all = lpm_entries(1, &[at(1, 65535), at(80, 80), at(65535, 65535)]).unwrap();
    assert_eq!(ranges(&all[0].1), [(1, 65535)]);
}

#[test]
fn lpm_output_is_deterministic() {
    let mut entries = vec![
        entry(NET_LISTEN_TCP, v4("0.0.0.0"), 128, 80, 80),
        entry(NET_CONNECT_UDP, v4("10.0.0.0"), 104, 53, 53),
        entry(NET_CONNECT_TCP, v6("2001:db8::"), 32, 443, 443),
        entry(NET_CONNECT_TCP, v4("10.0.0.0"), 104, 80, 80),
        entry(NET_CONNECT_TCP, v4("10.1.2.3"), 128, 443, 443),
    ];
    let first = lpm_entries(9, &entries).unwrap();
    entries.reverse();
    assert_eq!(lpm_entries(9, &entries).unwrap(), first);
    let order: Vec<_> = first.iter().map(|(k, _)| (k.data.kind, k.prefixlen)).collect();
    assert_eq!(
        order,
        [
            (NET_CONNECT_TCP, 200),
            (NET_CONNECT_TCP, 224),
            (NET_CONNECT_TCP, 128),
            (NET_CONNECT_UDP, 200),
            (NET_LISTEN_TCP, 224)
        ]
    );
}

#[test]
fn lpm_range_limit() {
    let ports = |n: u16| -> Vec<NetEntry> {
        (0..n).map(|i| entry(NET_CONNECT_TCP, v4("10.0.0.0"), 104, 1000 + 2 * i, 1000 + 2 * i)).collect()
    };
    let limit = u16::try_from(NET_PORT_RANGES).unwrap();
    let out = lpm_entries(1, &ports(limit)).unwrap();
    assert_eq!(out[0].1.n as usize, NET_PORT_RANGES);
    let msg = lpm_entries(1, &ports(limit + 1)).unwrap_err().to_string();
    assert!(msg.starts_with("tcp connect 10.0.0.0/8: 9 separate port ranges"), "{msg}");
    assert!(msg.contains(&format!("at most {NET_PORT_RANGES}")), "{msg}");

    // The limit counts the union: each prefix alone fits, the more specific one does not.
    let mut nested = ports(limit);
    nested.push(entry(NET_CONNECT_TCP, v4("10.1.2.3"), 128, 5000, 5000));
    let msg = lpm_entries(1, &nested).unwrap_err().to_string();
    assert!(msg.starts_with("tcp connect 10.1.2.3: 9 separate port ranges"), "{msg}");
    // ...but adjacent ports merge back under the limit.
    let mut adjacent = ports(limit);
    adjacent.push(entry(NET_CONNECT_TCP, v4("10.1.2.3"), 128, 1001, 1001));
    assert!(lpm_entries(1, &adjacent).is_ok());
}

#[test]
fn lpm_rejects_invalid_entries() {
    let bad = [
        (entry(0, v4("10.0.0.0"), 104, 1, 1), "unknown kind"),
        (entry(NET_CONNECT_TCP, v4("10.0.0.0"), 129, 1, 1), "prefix length"),
        (entry(NET_CONNECT_TCP, v4("10.0.0.0"), 104, 0, 1), "port range"),
        (entry(NET_CONNECT_TCP, v4("10.0.0.0"), 104, 9, 8), "port range"),
    ];
    for (e, why) in bad {
        let msg = lpm_entries(1, &[e]).unwrap_err().to_string();
        assert!(msg.contains(why), "{msg}");
    }
    assert!(lpm_entries(1, &[]).unwrap().is_empty());
}

#[test]
fn port_allowed_respects_n() {
    let mut p = NetPorts { n: 2, ..NetPorts::default() };
    p.ranges[0] = [80, 80];
    p.ranges[1] = [8000, 8080];
    p.ranges[2] = [22, 22]; // beyond n: ignored
    assert!(port_allowed(&p, 80));
    assert!(port_allowed(&p, 8000));
    assert!(port_allowed(&p, 8080));
    assert!(!port_allowed(&p, 8081));
    assert!(!port_allowed(&p, 22));
    assert!(!port_allowed(&NetPorts::default(), 80));
    let garbage = NetPorts { n: u32::MAX, ranges: [[1, 1]; NET_PORT_RANGES] };
    assert!(port_allowed(&garbage, 1));
}

#[test]
fn trie_lookup_matches_partial_bytes() {
    // A /100 (IPv4 /4) boundary falls inside a byte: 16.0.0.0/4 covers 16-31.x.x.x only.
    let out = lpm_entries(1, &[entry(NET_CONNECT_TCP, v4("16.0.0.0"), 100, 1, 1)]).unwrap();
    assert!(trie_lookup(&out, NET_CONNECT_TCP, 1, v4("16.0.0.0")).is_some());
    assert!(trie_lookup(&out, NET_CONNECT_TCP, 1, v4("31.255.255.255")).is_some());
    assert!(trie_lookup(&out, NET_CONNECT_TCP, 1, v4("15.255.255.255")).is_none());
    assert!(trie_lookup(&out, NET_CONNECT_TCP, 1, v4("32.0.0.0")).is_none());
}

// --- Unix keys --------------------------------------------------------------------------

#[test]
fn unix_kernel_names() {
    assert_eq!(unix_kernel_name(&connect("unix:/run/x.sock")).unwrap(), b"/run/x.sock");
    assert_eq!(unix_kernel_name(&connect("unix:@bus")).unwrap(), b"\0bus");
    assert_eq!(unix_kernel_name(&connect("tcp://1.2.3.4:80")), None);
}

#[test]
fn unix_keys() {
    let k = unix_key(42, b"/run/x.sock").unwrap();
    assert_eq!(k.grant, 42);
    assert_eq!(&k.name[..11], b"/run/x.sock");
    assert!(k.name[11..].iter().all(|b| *b == 0));
    let k = unix_key(42, b"\0bus").unwrap();
    assert_eq!(&k.name[..4], b"\0bus");
    assert!(k.name[4..].iter().all(|b| *b == 0));

    // Everything the parser accepts fits a key.
    for t in [format!("unix:/{}", "p".repeat(106)), format!("unix:@{}", "n".repeat(107))] {
        let name = unix_kernel_name(&connect(&t)).unwrap();
        assert!(unix_key(1, &name).is_ok(), "{t}");
    }

    let msg = unix_key(1, &[b'/'; 108]).unwrap_err().to_string();
    assert!(msg.contains("108 bytes; at most 107"), "{msg}");
    let mut abstract_name = vec![0u8];
    abstract_name.extend([b'n'; 108]);
    let msg = unix_key(1, &abstract_name).unwrap_err().to_string();
    assert!(msg.contains("109 bytes; at most 108"), "{msg}");
    assert!(unix_key(1, b"").unwrap_err().to_string().contains("empty"));
    assert!(unix_key(1, b"\0").unwrap_err().to_string().contains("empty"));
}
