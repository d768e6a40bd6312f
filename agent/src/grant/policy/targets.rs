//! Network targets in policies: canonical connect/listen strings, and `url` variables.
use super::push_unique;

/// Canonical form of connect (`listen` false) or listen targets, or the first error.
pub fn canonical_net(list: &[String], listen: bool) -> Result<Vec<String>, (usize, String)> {
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let c = if listen {
            t.parse::<crate::grant::net::ListenTarget>().map(|x| x.to_string())
        } else {
            t.parse::<crate::grant::net::ConnectTarget>().map(|x| x.to_string())
        };
        push_unique(&mut out, c.map_err(|e| (i, e.to_string()))?);
    }
    Ok(out)
}

/// `HOST:PORT` of an `http(s)://` URL (IPv6 hosts in brackets), if the URL is covered by one of
/// `within` (connect targets; empty: any host). Parsed with the `url` crate (WHATWG rules, as
/// HTTP clients parse): userinfo tricks (`http://127.0.0.1@evil/`) yield the real host.
pub fn url_host_port(value: &str, within: &[String]) -> Result<String, String> {
    let u = url::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not http or https", u.scheme()));
    }
    let port = u.port_or_known_default().ok_or("no port")?;
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        None => return Err("no host".into()),
    };
    let hostport = format!("{host}:{port}");
    if within.is_empty() || within.iter().any(|w| net_covers(w, &host, port)) {
        Ok(hostport)
    } else {
        Err(format!("{hostport} is not within [{}]", within.join(", ")))
    }
}

/// Does the tcp connect target `pattern` cover `host` (an IP literal, `[v6]`, or a DNS name) and
/// `port`? Names match names exactly; addresses match prefixes.
fn net_covers(pattern: &str, host: &str, port: u16) -> bool {
    use crate::grant::net::{ConnectTarget, Host};
    let Ok(ConnectTarget::Ip { host: want, ports, .. }) = pattern.parse::<ConnectTarget>() else { return false };
    if !ports.contains(port) {
        return false;
    }
    match want {
        Host::Name(n) => n == host,
        Host::Net { addr, prefix } => {
            let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() else {
                return false;
            };
            let a = u128::from(crate::grant::net::to_v6(ip));
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            a & mask == u128::from(addr) & mask
        }
    }
}
