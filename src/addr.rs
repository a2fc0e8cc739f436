//! Host name → socket address, the same way for the service and the client, and the one loopback
//! rule (the token rule built on it is `auth`'s).

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

#[cfg(test)]
mod tests {
    use super::*;

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
