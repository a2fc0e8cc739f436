//! Who may reach a listener that runs code: the token rule on the listening address, and the
//! token comparison. Asked by the settings checks, the service and `blendwire mcp`'s HTTP
//! transport; low in the graph (it imports only `addr`), so none of them imports another for it.

use crate::addr::is_loopback;
use std::net::IpAddr;

/// A token that counts: present and not empty.
fn has_token(token: Option<&str>) -> bool {
    token.is_some_and(|t| !t.is_empty())
}

/// `execute_code` runs any Python: a host other machines can reach needs a token. By the host's
/// name or address as given, before anything is bound.
pub fn check_host(host: &str, token: Option<&str>) -> Result<(), String> {
    if is_loopback(host) || has_token(token) {
        Ok(())
    } else {
        Err(insecure_host(host))
    }
}

/// The same rule on the address `host` was bound to (a name may resolve off loopback): the
/// rule's wording when it is broken.
pub fn check_bound(host: &str, bound: IpAddr, token: Option<&str>) -> Result<(), String> {
    if bound.is_loopback() || has_token(token) {
        Ok(())
    } else {
        Err(insecure_host(host))
    }
}

/// The rule's wording, for a host that breaks it.
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
    fn off_loopback_needs_a_token() {
        assert!(check_host("127.0.0.1", None).is_ok());
        assert!(check_host("localhost", Some("")).is_ok());
        assert!(check_host("0.0.0.0", Some("t")).is_ok());
        let refused = check_host("0.0.0.0", Some("")).unwrap_err();
        assert!(
            refused.contains("BLENDWIRE_TOKEN") && refused.contains("\"0.0.0.0\""),
            "{refused}"
        );
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert!(check_bound("localhost", lo, None).is_ok());
        assert!(check_bound("example", any, Some("t")).is_ok());
        assert!(check_bound("example", any, None).unwrap_err().contains("\"example\""));
    }
}
