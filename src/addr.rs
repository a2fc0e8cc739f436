//! Host name → socket address, the same way for the service and the client.

use std::net::{SocketAddr, ToSocketAddrs};

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
