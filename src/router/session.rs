//! One Socket.IO connection over a websocket (tokio-tungstenite): handshake, then serve.
//!
//! Reading the socket directly (instead of through a client library with its own reconnect loop)
//! is what lets the manager see every drop at once and own every retry.

use super::{tls, ConnectError, Connector, Link, LinkEnd, RouterConfig, RouterError, Shared};
use crate::socketio::{self, Packet};
use crate::wire::encode;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{connect_async_tls_with_config, Connector as TlsConnector, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct WsConnector {
    ws_url: String,
    /// The host the certificate must name (for the messages; rustls checks it).
    host: String,
    /// `Some` for a `wss://` engine: built once per router, shared by every attempt.
    tls: Option<Arc<rustls::ClientConfig>>,
    namespace: String,
    handshake_timeout: Duration,
}

/// `http://host:port` + `/ws/socket.io/` → `ws://host:port/ws/socket.io/?EIO=4&transport=websocket`;
/// `https://` (or `wss://`) → `wss://...`.
pub fn websocket_url(base: &str, path: &str) -> Result<String, RouterError> {
    let bad = |why: &str| RouterError::BadUrl {
        url: base.to_string(),
        why: why.to_string(),
    };
    let base = base.trim().trim_end_matches('/');
    let (scheme, rest) = base.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad("the scheme must be http://, https://, ws:// or wss://")),
    };
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(bad("expected scheme://host:port with no query"));
    }
    let path = format!("/{}/", path.trim_matches('/'));
    Ok(format!("{scheme}://{rest}{path}?EIO=4&transport=websocket"))
}

impl WsConnector {
    pub fn new(config: &RouterConfig) -> Result<Self, RouterError> {
        super::url::require_engine_url(&config.url)?;
        let ws_url = websocket_url(&config.url, &config.socketio_path)?;
        let tls = if ws_url.starts_with("wss://") {
            Some(tls::client_config(config.ca_file.as_deref())?)
        } else {
            None
        };
        Ok(WsConnector {
            host: super::url::url_host(&config.url).to_string(),
            ws_url,
            tls,
            namespace: config.namespace.clone(),
            handshake_timeout: config.handshake_timeout,
        })
    }

    async fn handshake(&self, auth: Value) -> Result<WsLink, ConnectError> {
        let connector = self.tls.clone().map(TlsConnector::Rustls);
        let (mut ws, _) = connect_async_tls_with_config(self.ws_url.as_str(), None, false, connector)
            .await
            .map_err(|e| self.connect_error(e))?;
        let ping_window = loop {
            match next_packet(&mut ws).await? {
                Packet::Open {
                    ping_interval,
                    ping_timeout,
                    ..
                } => break ping_interval + ping_timeout,
                Packet::Noop => continue,
                other => {
                    return Err(ConnectError::Protocol(format!(
                        "expected the Engine.IO open packet, got {other:?}"
                    )))
                }
            }
        };
        send(&mut ws, socketio::encode_connect(&self.namespace, &auth))
            .await
            .map_err(ConnectError::Unreachable)?;
        loop {
            match next_packet(&mut ws).await? {
                Packet::Connect { ns, .. } if ns == self.namespace => break,
                Packet::ConnectError { ns, message } if ns == self.namespace => {
                    return Err(ConnectError::Rejected(if message.is_empty() {
                        "no reason given".into()
                    } else {
                        message
                    }))
                }
                Packet::Ping => send(&mut ws, socketio::PONG.into())
                    .await
                    .map_err(ConnectError::Unreachable)?,
                Packet::Close => return Err(ConnectError::Unreachable("closed during the handshake".into())),
                _ => continue,
            }
        }
        Ok(WsLink {
            ws,
            namespace: self.namespace.clone(),
            event_prefix: event_prefix(&self.namespace),
            ping_window,
        })
    }
}

impl WsConnector {
    /// A refused certificate is a [`ConnectError::Tls`] that says what to change; anything else
    /// (refused, reset, DNS) is unreachable.
    fn connect_error(&self, e: tungstenite::Error) -> ConnectError {
        let rustls_error = match &e {
            tungstenite::Error::Io(io) => io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
            _ => None,
        };
        match (rustls_error, &e) {
            (Some(tls_error), _) => ConnectError::Tls(tls::describe(tls_error, &self.host)),
            (None, tungstenite::Error::Tls(why)) => ConnectError::Tls(format!("{why} (host {:?})", self.host)),
            _ => ConnectError::Unreachable(e.to_string()),
        }
    }
}

impl Connector for WsConnector {
    type Link = WsLink;

    async fn connect(&self, auth: Value) -> Result<WsLink, ConnectError> {
        tokio::time::timeout(self.handshake_timeout, self.handshake(auth))
            .await
            .map_err(|_| ConnectError::Timeout)?
    }
}

async fn send(ws: &mut Ws, text: String) -> Result<(), String> {
    ws.send(Message::Text(text.into())).await.map_err(|e| e.to_string())
}

/// The next Engine.IO packet; websocket-level pings are answered by tungstenite itself.
async fn next_packet(ws: &mut Ws) -> Result<Packet, ConnectError> {
    loop {
        match ws.next().await {
            None | Some(Ok(Message::Close(_))) => return Err(ConnectError::Unreachable("connection closed".into())),
            Some(Err(e)) => return Err(ConnectError::Unreachable(e.to_string())),
            Some(Ok(Message::Text(text))) => {
                return socketio::decode(text.as_str()).map_err(|e| ConnectError::Protocol(e.to_string()))
            }
            Some(Ok(_)) => continue,
        }
    }
}

pub struct WsLink {
    ws: Ws,
    namespace: String,
    /// What every event sent on the namespace starts with: `42/ns,`.
    event_prefix: String,
    /// Silence longer than the server's ping interval + timeout means the connection is dead.
    ping_window: Duration,
}

impl WsLink {
    async fn emit(&mut self, event: &str, data: &Value) -> Result<(), LinkEnd> {
        send(&mut self.ws, event_text(&self.event_prefix, event, data))
            .await
            .map_err(LinkEnd::Dropped)
    }

    /// Send every queued reply, oldest first; one that fails goes back to the front.
    async fn flush(&mut self, shared: &Shared) -> Result<(), LinkEnd> {
        while let Some(reply) = shared.pop_reply() {
            let text = event_text(&self.event_prefix, reply.event, &reply.body);
            if let Err(e) = send(&mut self.ws, text).await {
                shared.unpop_reply(reply);
                return Err(LinkEnd::Dropped(e));
            }
        }
        Ok(())
    }

    async fn serve(&mut self, shared: &Arc<Shared>) -> Result<(), LinkEnd> {
        // The registry comes from the main thread, which may be busy for a while: it is asked
        // (again, while unanswered) alongside serving, so pings and commands are answered
        // meanwhile; when the session ends the request is dropped with it.
        let registry = shared.registry();
        tokio::pin!(registry);
        let mut registered = false;
        loop {
            self.flush(shared).await?;
            tokio::select! {
                payload = &mut registry, if !registered => {
                    registered = true;
                    if let Some(payload) = payload {
                        self.emit("registry_update", &payload).await?;
                    }
                    self.emit(
                        "connection_status",
                        &json!({"status": "Connected", "message": "Blender registered"}),
                    )
                    .await?;
                }
                msg = tokio::time::timeout(self.ping_window, self.ws.next()) => match msg {
                    Err(_) => return Err(LinkEnd::PingTimeout),
                    Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Err(LinkEnd::Closed),
                    Ok(Some(Err(e))) => return Err(LinkEnd::Dropped(e.to_string())),
                    Ok(Some(Ok(Message::Text(text)))) => match socketio::decode(text.as_str()) {
                        Ok(Packet::Ping) => send(&mut self.ws, socketio::PONG.into()).await.map_err(LinkEnd::Dropped)?,
                        Ok(Packet::Event { ns, name, args, .. }) if ns == self.namespace && name == "command_received" => {
                            shared.on_command(args.into_iter().next());
                        }
                        Ok(Packet::Disconnect { ns }) if ns == self.namespace => return Err(LinkEnd::Kicked),
                        Ok(Packet::Close) => return Err(LinkEnd::Closed),
                        Ok(_) => {}
                        Err(e) => log::warn!("ignoring a packet from the engine: {e}"),
                    },
                    Ok(Some(Ok(_))) => {}
                },
                _ = shared.outbox_ready.notified() => {}
            }
        }
    }
}

/// `42/ns,` (`42` on the default namespace), as `socketio::encode_event` starts an event.
fn event_prefix(namespace: &str) -> String {
    match namespace {
        "/" => "42".to_string(),
        ns => format!("42{ns},"),
    }
}

/// What `socketio::encode_event` writes, with `data` serialised once straight into the text:
/// encode_event first copies `data` into a json! array, and a reply can be megabytes.
fn event_text(prefix: &str, event: &str, data: &Value) -> String {
    let mut out = Vec::with_capacity(prefix.len() + encode::str_len(event) + encode::encoded_len(data) + 3);
    out.extend_from_slice(prefix.as_bytes());
    out.push(b'[');
    encode::write_str(&mut out, event);
    out.push(b',');
    encode::write(&mut out, data);
    out.push(b']');
    // Always UTF-8 (it was written from strs); the lossy path only keeps this free of a panic.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl Link for WsLink {
    async fn run(mut self, shared: Arc<Shared>) -> LinkEnd {
        match self.serve(&shared).await {
            Ok(()) => LinkEnd::Closed,
            Err(end) => end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            websocket_url("http://127.0.0.1:8000/", "/ws/socket.io/").unwrap(),
            "ws://127.0.0.1:8000/ws/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            websocket_url("ws://engine:9", "ws/socket.io").unwrap(),
            "ws://engine:9/ws/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            websocket_url("https://engine.example/", "/ws/socket.io/").unwrap(),
            "wss://engine.example/ws/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            websocket_url("WSS://[::1]:8443", "/ws/socket.io/").unwrap(),
            "wss://[::1]:8443/ws/socket.io/?EIO=4&transport=websocket"
        );
        assert!(websocket_url("127.0.0.1:8000", "/x/").is_err());
        assert!(websocket_url("ftp://h", "/x/").is_err());
    }

    #[test]
    fn hosts() {
        use crate::router::url::url_host;
        assert_eq!(url_host("https://engine.example:8443/base"), "engine.example");
        assert_eq!(url_host("wss://u:p@127.0.0.1/ws/"), "127.0.0.1");
        assert_eq!(url_host("https://[::1]:8443"), "::1");
        assert_eq!(url_host("http://h"), "h");
    }

    #[test]
    fn only_tls_urls_build_a_tls_config() {
        let plain = WsConnector::new(&RouterConfig::default()).unwrap();
        assert!(plain.tls.is_none());
        let tls = WsConnector::new(&RouterConfig {
            url: "https://localhost:8443".into(),
            ..RouterConfig::default()
        })
        .unwrap();
        assert!(tls.tls.is_some());
        assert_eq!(tls.host, "localhost");
        let bad_ca = WsConnector::new(&RouterConfig {
            url: "https://localhost:8443".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..RouterConfig::default()
        });
        assert!(matches!(bad_ca, Err(RouterError::CaFile(_))));
    }

    #[test]
    fn event_text_is_what_socketio_encodes() {
        let data = json!({"message_id": "m", "payload": {"data": {"s": "é\n\"\u{1}".repeat(50), "n": [1.5, -2]}}});
        for ns in ["/", "/blender"] {
            for event in ["command_completed", "odd \"name\""] {
                let text = event_text(&event_prefix(ns), event, &data);
                assert_eq!(text, socketio::encode_event(ns, event, &data));
                assert_eq!(text.capacity(), text.len(), "sized once, never grown");
            }
        }
    }
}
