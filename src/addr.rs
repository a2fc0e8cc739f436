//! Host name → socket address, the same way for the service and the client; and the one rule on
//! which hosts may serve without a token, and how a token is compared.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// The first address of `host:port`, preferring IPv4 as the BLD Remote peer does
/// ("localhost" → 127.0.0.1). The error says why, for the caller's message.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(|e| e.to_string())?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| "no address found".to_string())
}

/// The one loopback rule: `localhost`, or a loopback IP address. No name lookup, so it answers at
/// once for any string (the service also checks the address it bound).
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim();
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host.eq_ignore_ascii_case("localhost.")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Where a client reaches a service bound to `host`: that host, or loopback when it listens on
/// every address (`0.0.0.0`, `::`), which is no address to connect to.
pub fn connect_host(host: &str) -> String {
    match host.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.to_string(),
        Ok(IpAddr::V6(ip)) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.to_string(),
        _ => host.to_string(),
    }
}

/// `execute_code` runs any Python: a host other machines can reach needs a token.
pub fn host_rule(host: &str, token: Option<&str>) -> Result<(), String> {
    if is_loopback(host) || token.is_some_and(|t| !t.is_empty()) {
        Ok(())
    } else {
        Err(insecure_host(host))
    }
}

/// The rule text of [`host_rule`], also used when the bound address turns out not to be loopback.
pub fn insecure_host(host: &str) -> String {
    format!(
        "must be loopback unless there is a token, got {host:?}: anyone who can reach it could run code in \
         Blender; set BLENDWIRE_TOKEN (clients then send \"token\") or listen on 127.0.0.1"
    )
}

/// Token comparison whose time does not depend on where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in b.iter().enumerate() {
        diff |= (a.get(i).copied().unwrap_or(0) ^ x) as usize;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cretX", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
    }

    #[test]
    fn loopback() {
        for h in ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["0.0.0.0", "192.168.1.2", "example.com", "", "::"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
