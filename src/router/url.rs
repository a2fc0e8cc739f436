//! The engine URL rule (`http://`, `https://`, `ws://`, `wss://`), owned by the router that dials
//! it; `settings` checks a user's URL with it and the connector refuses to start without it.

/// The engine URL rule: `http://`, `https://` (TLS), `ws://` or `wss://`, a host, an optional
/// valid port, no query. `Err` is the rule text; `Ok` is the URL trimmed.
pub fn engine_url(url: &str) -> Result<&str, String> {
    let trimmed = url.trim();
    let example = "e.g. http://127.0.0.1:8000 or https://engine.example";
    let Some((scheme, rest)) = trimmed.split_once("://") else {
        return Err(format!("must start with http:// or https://, {example}, got {url:?}"));
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https" | "ws" | "wss") {
        return Err(format!("must start with http:// or https://, {example}, got {url:?}"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(char::is_whitespace) {
        return Err(format!(
            "must be scheme://host:port with no query, spaces or fragment, {example}, got {url:?}"
        ));
    }
    let (host, port) = host_and_port(rest);
    if host.is_empty() {
        return Err(format!("must name a host, {example}, got {url:?}"));
    }
    if let Some(port) = port.filter(|p| !p.is_empty()) {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(format!("has a bad port {port:?} (use 1-65535), got {url:?}"));
        }
    }
    Ok(trimmed)
}

/// The host (IPv6 without brackets) and port text of `[user@]host[:port][/path...]`.
fn host_and_port(rest: &str) -> (&str, Option<&str>) {
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, hostport)| hostport);
    if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (v6, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    }
}

/// The host of a URL as [`engine_url`] reads it: what a TLS certificate must name.
pub fn url_host(url: &str) -> &str {
    let rest = url.trim().split_once("://").map_or(url, |(_, rest)| rest);
    host_and_port(rest).0
}

/// [`engine_url`] for the router's connector, which refuses to start on a bad URL.
pub fn require_engine_url(url: &str) -> Result<(), super::RouterError> {
    engine_url(url).map(drop).map_err(|why| super::RouterError::BadUrl {
        url: url.to_string(),
        why,
    })
}
