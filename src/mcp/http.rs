//! MCP over Streamable HTTP at `/mcp`: rmcp's own transport (`StreamableHttpService`, sessions in
//! memory) served by axum on hyper, as rmcp's examples do. This module adds the listener
//! (`TCP_NODELAY`), a call's lone response answered as JSON ([`json_when_whole`]: cheaper for
//! clients) and the guard rails, safe by default:
//!
//! - loopback unless a token is set (the service's rule, `auth::check_bound`, on the bound address);
//! - `Host` must name this listener: a loopback name or the bound host (or an `--allow-host`), with
//!   this port; anything else is a DNS-rebinding attempt and gets 403 (rmcp's check);
//! - a present `Origin` must be a loopback origin (any port, http or https) or an `--allow-origin`;
//!   else 403 (rmcp's check, enforced even with no extra origins). Requests without `Origin`
//!   (agents, IDEs: not browsers) pass;
//! - with a token (`$BLENDWIRE_TOKEN`), every request needs `Authorization: Bearer <token>`; else
//!   401. The token is compared in constant time and never logged.
//!
//! A refused request never reaches the MCP handler, so nothing runs in Blender.

use super::BlenderTools;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, uri::Authority, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use futures_util::StreamExt;
use rmcp::transport::streamable_http_server::{
    session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The path MCP is served at (the Streamable HTTP convention).
pub const PATH: &str = "/mcp";

/// Where and for whom `blendwire mcp --http` listens.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// Required of every HTTP client when set (`Authorization: Bearer`); required off loopback.
    pub token: Option<String>,
    /// Browser origins allowed besides the loopback ones, e.g. `https://app.example.com:443`.
    pub allowed_origins: Vec<String>,
    /// Host names clients may use besides the loopback names and the bound host (e.g. this
    /// machine's name when bound to 0.0.0.0); this port is implied when none is given.
    pub allowed_hosts: Vec<String>,
}

/// `[HOST:]PORT` (`[::1]:8000` for IPv6): the host defaults to loopback.
pub fn parse_listen(spec: &str) -> Result<(String, u16), String> {
    let spec = spec.trim();
    let (host, port) = match spec.rsplit_once(':') {
        // A bare IPv6 address has colons but no brackets: it needs them to carry a port.
        Some((host, _)) if host.contains(':') && !host.starts_with('[') => {
            return Err(format!(
                "must be [HOST:]PORT, got {spec:?}; write an IPv6 host in brackets, e.g. [::1]:8000"
            ))
        }
        Some((host, port)) => (host.trim_start_matches('[').trim_end_matches(']'), port),
        None => (crate::defaults::DEFAULT_HOST, spec),
    };
    if host.is_empty() {
        return Err(format!("must be [HOST:]PORT, got {spec:?} (an empty host)"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("must be [HOST:]PORT with PORT from 0 to 65535 (0 = a free port), got {spec:?}"))?;
    Ok((host.to_string(), port))
}

/// Every problem of `--http SPEC` with this token before anything starts: the address form and the
/// off-loopback token rule (checked again on the bound address at start).
pub fn check(spec: &str, token: Option<&str>) -> Result<(String, u16), String> {
    let (host, port) = parse_listen(spec)?;
    crate::auth::check_host(&host, token)?;
    Ok((host, port))
}

/// Bind the listener now (so a taken port or a bad host fails at start), applying the token rule
/// to the address as bound, as the service does.
pub(super) fn bind(config: &HttpConfig) -> Result<std::net::TcpListener, String> {
    let addr = crate::addr::resolve(&config.host, config.port)
        .map_err(|e| format!("cannot resolve the MCP HTTP host {:?}: {e}", config.host))?;
    crate::auth::check_bound(&config.host, addr.ip(), config.token.as_deref())
        .map_err(|rule| format!("the MCP HTTP host {rule}"))?;
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen for MCP on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen for MCP on {addr}: {e}"))?;
    Ok(listener)
}

/// `host:port` as a Host header carries it (IPv6 in brackets).
fn authority(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// The Host values this listener answers to: loopback names, the bound host unless it is the
/// unspecified address (clients cannot name it), and the extra hosts; all with the bound port
/// unless an extra host names its own (a reverse proxy's).
pub fn allowed_hosts(config: &HttpConfig, bound: SocketAddr) -> Vec<String> {
    let port = bound.port();
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|h| authority(h, port))
        .collect();
    if !bound.ip().is_unspecified() {
        hosts.push(authority(&bound.ip().to_string(), port));
        hosts.push(authority(
            config.host.trim_start_matches('[').trim_end_matches(']'),
            port,
        ));
    }
    for h in &config.allowed_hosts {
        match Authority::try_from(h.as_str()) {
            Ok(a) if a.port_u16().is_some() => hosts.push(h.clone()),
            _ => hosts.push(authority(h.trim_start_matches('[').trim_end_matches(']'), port)),
        }
    }
    hosts.dedup();
    hosts
}

/// The Origin values accepted: loopback pages (any port, http or https) and the extra origins.
pub fn allowed_origins(config: &HttpConfig) -> Vec<String> {
    let mut origins: Vec<String> = ["http", "https"]
        .iter()
        .flat_map(|scheme| ["localhost", "127.0.0.1", "[::1]"].map(|h| format!("{scheme}://{h}:*")))
        .collect();
    origins.extend(config.allowed_origins.iter().cloned());
    origins
}

/// An `--allow-origin` value: `scheme://host[:port]` (`:*` for any port) or `null`.
pub fn check_origin(origin: &str) -> Result<(), String> {
    let ok = origin == "null"
        || origin.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty() && !rest.is_empty() && !rest.contains('/') && !rest.contains('?')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be an origin, scheme://host[:port] (\":*\" for any port) or null, got {origin:?}"
        ))
    }
}

/// A header for the log: lossy UTF-8, at most 200 characters (it is the client's text).
fn header_text(request: &Request, name: header::HeaderName) -> Option<String> {
    request
        .headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).chars().take(200).collect())
}

struct Guard {
    /// The token every request must carry, when set.
    token: Option<Vec<u8>>,
}

/// Does `Authorization` carry this bearer token? The scheme is case-insensitive (RFC 9110); the
/// token is compared in constant time.
fn bearer_matches(authorization: Option<&HeaderValue>, token: &[u8]) -> bool {
    let value = authorization.map(HeaderValue::as_bytes).unwrap_or_default();
    let given = match value.iter().position(|b| *b == b' ') {
        Some(i) if value[..i].eq_ignore_ascii_case(b"bearer") => value[i + 1..].trim_ascii(),
        _ => return false,
    };
    crate::auth::constant_time_eq(given, token)
}

/// The bearer token check, before rmcp sees the request; and one log line per refusal (rmcp's own
/// Host/Origin refusals included), naming the headers at fault but never the token.
async fn guard(State(g): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let (host, origin) = (
        header_text(&request, header::HOST),
        header_text(&request, header::ORIGIN),
    );
    if let Some(token) = &g.token {
        if !bearer_matches(request.headers().get(header::AUTHORIZATION), token) {
            eprintln!(
                "blendwire mcp: refused an HTTP request without the right bearer token (401; Host {}, Origin {})",
                host.as_deref().unwrap_or("-"),
                origin.as_deref().unwrap_or("-"),
            );
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "Unauthorized: this MCP endpoint needs `Authorization: Bearer <token>` (the server's $BLENDWIRE_TOKEN)",
            )
                .into_response();
        }
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::FORBIDDEN {
        eprintln!(
            "blendwire mcp: refused an HTTP request (403; Host {}, Origin {}): not this listener's host, or an \
             origin that is neither loopback nor allowed (--allow-host, --allow-origin)",
            host.as_deref().unwrap_or("-"),
            origin.as_deref().unwrap_or("-"),
        );
    }
    response
}

/// What the first event of an SSE answer is, for [`json_when_whole`].
#[derive(Debug, PartialEq)]
enum FirstEvent {
    /// No data (an SSE priming event: an id and a retry interval): read on.
    Priming,
    /// The request's JSON-RPC response (or error): the whole answer.
    Response(Vec<u8>),
    /// A notification, a server request or a keep-alive comment: more will follow.
    More,
}

/// What one SSE event is, given its lines without the blank line that ends it, as rmcp writes
/// them (sse-stream: `data: ...`, `id: ...`, `retry: ...`; keep-alive comments `:`).
fn first_event(event: &[u8]) -> FirstEvent {
    let mut data: Option<Vec<u8>> = None;
    let mut comment = false;
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            let d = data.get_or_insert_with(Vec::new);
            if !d.is_empty() {
                d.push(b'\n');
            }
            d.extend_from_slice(value);
        } else if line.starts_with(b":") {
            comment = true;
        }
    }
    match data {
        Some(d) if !d.is_empty() => {
            let is_response = serde_json::from_slice::<serde_json::Value>(&d).is_ok_and(|v| {
                v.get("id").is_some()
                    && v.get("method").is_none()
                    && (v.get("result").is_some() || v.get("error").is_some())
            });
            if is_response {
                FirstEvent::Response(d)
            } else {
                FirstEvent::More
            }
        }
        _ if comment => FirstEvent::More,
        _ => FirstEvent::Priming,
    }
}

/// rmcp answers every POST of a session with an SSE stream (tower.rs `handle_post`: the session
/// branch returns `sse_stream_response(session_manager.create_stream(..))`; its `json_response`
/// only applies to stateless requests, and sessions are what carry subscriptions). An SSE answer
/// costs an HTTP client more: e.g. the official Python client stops reading at the response event
/// and so cannot reuse the connection (one new TCP connection per call). So: when the first event
/// after the priming one is the response itself, answer it as `application/json`, as rmcp's
/// stateless `json_response` does; when a notification (progress), a server request or a
/// keep-alive comment (no message for `sse_keep_alive`) comes first, the stream goes on as SSE
/// with what was read.
async fn json_when_whole(request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    json_if_whole(next.run(request).await).await
}

/// [`json_when_whole`] on one answer.
async fn json_if_whole(response: Response) -> Response {
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if response.status() != StatusCode::OK || !is_sse {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut stream = body.into_data_stream();
    let mut read: Vec<Result<Bytes, axum::Error>> = Vec::new();
    let mut pending: Vec<u8> = Vec::new(); // the event being read
    let mut scanned = 0; // bytes of `pending` known to hold no event end (a large answer comes in pieces)
    'read: while let Some(chunk) = stream.next().await {
        let Ok(bytes) = &chunk else {
            read.push(chunk);
            break;
        };
        pending.extend_from_slice(bytes);
        read.push(chunk);
        while let Some(end) = pending[scanned..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|i| scanned + i)
        {
            match first_event(&pending[..end]) {
                FirstEvent::Priming => {
                    pending.drain(..end + 2);
                    scanned = 0;
                }
                FirstEvent::Response(json) => {
                    // The rest of the stream is dropped, as when a client leaves: it has nothing
                    // more for this request (rmcp ends a request's stream at its response).
                    parts
                        .headers
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    parts.headers.remove(header::CACHE_CONTROL);
                    return Response::from_parts(parts, Body::from(json));
                }
                FirstEvent::More => break 'read,
            }
        }
        scanned = pending.len().saturating_sub(1);
    }
    let body = futures_util::stream::iter(read).chain(stream);
    Response::from_parts(parts, Body::from_stream(body))
}

/// Serve until `stop` is cancelled. Sessions share `tools` (one Blender client: its connections
/// and job ids), so every call is its own job whichever agent sends it.
pub(super) async fn serve(
    listener: std::net::TcpListener,
    config: HttpConfig,
    tools: BlenderTools,
    stop: CancellationToken,
) -> Result<(), String> {
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| format!("cannot listen for MCP: {e}"))?;
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts(&config, bound))
        .with_allowed_origins(allowed_origins(&config))
        .enforce_origin_validation()
        .with_cancellation_token(stop.child_token());
    // What the service takes by default, not rmcp's 4 MiB: a large execute_code fails in Blender's
    // service with its own message, as over stdio, rather than here.
    mcp_config.max_request_body_bytes = crate::defaults::DEFAULT_MAX_REQUEST_BYTES;
    let tools = BlenderTools {
        dialect: crate::journal::Protocol::McpHttp,
        ..tools
    };
    let service = StreamableHttpService::new(
        move || Ok(tools.for_session()),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    let state = Arc::new(Guard {
        token: config
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| t.as_bytes().to_vec()),
    });
    let app = axum::Router::new()
        .route_service(PATH, service)
        .layer(axum::middleware::from_fn(json_when_whole))
        .layer(axum::middleware::from_fn_with_state(state, guard));
    // No Nagle delay: an SSE answer is several small writes (progress, then the response), each
    // of which should leave at once rather than wait for the client's ACK of the one before.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("blendwire mcp: cannot set TCP_NODELAY on an HTTP connection: {e}");
        }
    });
    // The client's address reaches the tools (the audit log's `peer`) as ConnectInfo.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .map_err(|e| format!("the MCP HTTP server stopped: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("8000"), Ok(("127.0.0.1".into(), 8000)));
        assert_eq!(parse_listen("0.0.0.0:0"), Ok(("0.0.0.0".into(), 0)));
        assert_eq!(parse_listen("[::1]:9"), Ok(("::1".into(), 9)));
        for bad in ["", "x", ":80", "h:70000", "::1:80", "h:-1"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn off_loopback_needs_a_token() {
        assert!(check("0.0.0.0:8000", None).unwrap_err().contains("BLENDWIRE_TOKEN"));
        assert!(check("0.0.0.0:8000", Some("t")).is_ok());
        assert!(check("localhost:8000", None).is_ok());
    }

    fn sse(frames: &[&str]) -> Response {
        let frames: Vec<Result<Bytes, std::io::Error>> = frames
            .iter()
            .map(|f| Ok(Bytes::copy_from_slice(f.as_bytes())))
            .collect();
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .header("mcp-session-id", "s1")
            .body(Body::from_stream(futures_util::stream::iter(frames)))
            .unwrap()
    }

    async fn answer(response: Response) -> (String, String) {
        let response = json_if_whole(response).await;
        let kind = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_string();
        assert_eq!(response.headers()["mcp-session-id"], "s1");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (kind, String::from_utf8(body.to_vec()).unwrap())
    }

    const PRIMING: &str = "data: \nid: 0\nretry: 3000\n\n";
    const RESPONSE: &str = "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\nid: 1\n\n";
    const PROGRESS: &str = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\nid: 1\n\n";

    #[tokio::test]
    async fn a_lone_response_is_json_anything_else_stays_an_event_stream() {
        let json = "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}";
        // The response after the priming event, in one frame or split anywhere: JSON.
        assert_eq!(
            answer(sse(&[PRIMING, RESPONSE])).await,
            ("application/json".into(), json.into())
        );
        let both = format!("{PRIMING}{RESPONSE}");
        let (a, b) = both.split_at(PRIMING.len() + 7);
        assert_eq!(answer(sse(&[a, b])).await, ("application/json".into(), json.into()));
        let (a, rest) = both.split_at(PRIMING.len() - 1); // between the two newlines
        let (b, c) = rest.split_at(rest.len() - 1);
        assert_eq!(answer(sse(&[a, b, c])).await, ("application/json".into(), json.into()));
        let error = "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-1,\"message\":\"m\"}}\n\n";
        assert_eq!(answer(sse(&[error])).await.0, "application/json");
        // Progress first, a keep-alive comment first, or no response at all: the same stream.
        for frames in [
            &[PRIMING, PROGRESS, RESPONSE][..],
            &[PRIMING, ":\n\n", RESPONSE],
            &[PRIMING],
            &[
                PRIMING,
                "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"sampling/createMessage\"}\n\n",
            ],
        ] {
            assert_eq!(answer(sse(frames)).await, ("text/event-stream".into(), frames.concat()));
        }
    }

    #[test]
    fn bearer_tokens() {
        let matches = |v: &str| bearer_matches(Some(&HeaderValue::from_str(v).unwrap()), b"s3cret");
        assert!(matches("Bearer s3cret") && matches("bearer s3cret") && matches("BEARER  s3cret "));
        for bad in [
            "s3cret",
            "Bearer",
            "Bearer ",
            "Bearer s3cre",
            "Bearer s3cretx",
            "Basic s3cret",
            "Bearers3cret",
        ] {
            assert!(!matches(bad), "{bad}");
        }
        assert!(!bearer_matches(None, b"s3cret"));
    }

    #[test]
    fn hosts_carry_the_port() {
        let config = HttpConfig {
            host: "0.0.0.0".into(),
            port: 0,
            token: Some("t".into()),
            allowed_origins: vec![],
            allowed_hosts: vec!["box.lan".into(), "proxy.example.com:443".into()],
        };
        let hosts = allowed_hosts(&config, "0.0.0.0:8123".parse().unwrap());
        assert_eq!(
            hosts,
            [
                "localhost:8123",
                "127.0.0.1:8123",
                "[::1]:8123",
                "box.lan:8123",
                "proxy.example.com:443"
            ]
        );
        assert!(check_origin("https://app.example.com:*").is_ok() && check_origin("null").is_ok());
        assert!(check_origin("app.example.com").is_err() && check_origin("http://a/b").is_err());
    }
}
