//! The Engine.IO v4 / Socket.IO v5 text packets a websocket client needs, and nothing more.
//!
//! One websocket text frame is one Engine.IO packet: a type digit, then for a `message` (4) a
//! Socket.IO packet: type digit, optional `/namespace,`, optional ack id, optional JSON data.
//! Binary attachments are not used by cr8_engine and are rejected.

use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// Engine.IO handshake: `0{"sid":..,"pingInterval":..,"pingTimeout":..}`.
    Open {
        sid: String,
        ping_interval: Duration,
        ping_timeout: Duration,
    },
    Close,
    Ping,
    Pong,
    Noop,
    Connect {
        ns: String,
        data: Option<Value>,
    },
    ConnectError {
        ns: String,
        message: String,
    },
    Disconnect {
        ns: String,
    },
    Event {
        ns: String,
        ack: Option<u64>,
        name: String,
        args: Vec<Value>,
    },
    Ack {
        ns: String,
        ack: u64,
        args: Vec<Value>,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("empty packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownEngineType(char),
    #[error("unknown Socket.IO packet type {0:?}")]
    UnknownSocketType(char),
    #[error("binary Socket.IO packets are not supported")]
    Binary,
    #[error("bad packet data: {0}")]
    BadData(String),
}

pub fn decode(text: &str) -> Result<Packet, CodecError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    let rest = chars.as_str();
    match kind {
        '0' => decode_open(rest),
        '1' => Ok(Packet::Close),
        '2' => Ok(Packet::Ping),
        '3' => Ok(Packet::Pong),
        '6' => Ok(Packet::Noop),
        '4' => decode_socket(rest),
        other => Err(CodecError::UnknownEngineType(other)),
    }
}

fn decode_open(rest: &str) -> Result<Packet, CodecError> {
    let v: Value = serde_json::from_str(rest).map_err(|e| CodecError::BadData(e.to_string()))?;
    let ms = |key: &str, default: u64| Duration::from_millis(v.get(key).and_then(Value::as_u64).unwrap_or(default));
    Ok(Packet::Open {
        sid: v.get("sid").and_then(Value::as_str).unwrap_or_default().to_string(),
        ping_interval: ms("pingInterval", 25_000),
        ping_timeout: ms("pingTimeout", 20_000),
    })
}

fn decode_socket(text: &str) -> Result<Packet, CodecError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    let mut rest = chars.as_str();
    if matches!(kind, '5' | '6') {
        return Err(CodecError::Binary);
    }
    let ns = if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        let ns = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
        ns.to_string()
    } else {
        "/".to_string()
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        let id = rest[..digits]
            .parse::<u64>()
            .map_err(|e| CodecError::BadData(e.to_string()))?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };
    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str::<Value>(rest).map_err(|e| CodecError::BadData(e.to_string()))?)
    };
    match kind {
        '0' => Ok(Packet::Connect { ns, data }),
        '1' => Ok(Packet::Disconnect { ns }),
        '4' => {
            let message = match &data {
                Some(Value::Object(o)) => o.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            Ok(Packet::ConnectError { ns, message })
        }
        '2' | '3' => {
            let Some(Value::Array(mut args)) = data else {
                return Err(CodecError::BadData("an event's data must be a JSON array".into()));
            };
            if kind == '3' {
                let ack = ack.ok_or_else(|| CodecError::BadData("ACK without an id".into()))?;
                return Ok(Packet::Ack { ns, ack, args });
            }
            if args.is_empty() {
                return Err(CodecError::BadData("an event needs a name".into()));
            }
            let Value::String(name) = args.remove(0) else {
                return Err(CodecError::BadData("an event name must be a string".into()));
            };
            Ok(Packet::Event { ns, ack, name, args })
        }
        other => Err(CodecError::UnknownSocketType(other)),
    }
}

fn ns_prefix(ns: &str) -> String {
    if ns == "/" {
        String::new()
    } else {
        format!("{ns},")
    }
}

/// `40/ns,{auth}`: join a namespace with an auth payload.
pub fn encode_connect(ns: &str, auth: &Value) -> String {
    format!("40{}{}", ns_prefix(ns), auth)
}

/// `42/ns,["name",data]`.
pub fn encode_event(ns: &str, name: &str, data: &Value) -> String {
    format!("42{}{}", ns_prefix(ns), json!([name, data]))
}

pub fn encode_disconnect(ns: &str) -> String {
    format!("41{}", ns_prefix(ns))
}

pub const PONG: &str = "3";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_packets() {
        assert_eq!(
            decode(r#"0{"sid":"abc","upgrades":[],"pingInterval":90000,"pingTimeout":120000,"maxPayload":1000000}"#),
            Ok(Packet::Open {
                sid: "abc".into(),
                ping_interval: Duration::from_secs(90),
                ping_timeout: Duration::from_secs(120)
            })
        );
        assert_eq!(decode("2"), Ok(Packet::Ping));
        assert_eq!(decode("1"), Ok(Packet::Close));
        assert_eq!(decode(""), Err(CodecError::Empty));
        assert_eq!(decode("9"), Err(CodecError::UnknownEngineType('9')));
    }

    #[test]
    fn namespace_connect_and_errors() {
        assert_eq!(
            decode(r#"40/blender,{"sid":"x"}"#),
            Ok(Packet::Connect {
                ns: "/blender".into(),
                data: Some(json!({"sid": "x"}))
            })
        );
        assert_eq!(
            decode(r#"44/blender,{"message":"Not authorized"}"#),
            Ok(Packet::ConnectError {
                ns: "/blender".into(),
                message: "Not authorized".into()
            })
        );
        assert_eq!(decode("41/blender,"), Ok(Packet::Disconnect { ns: "/blender".into() }));
    }

    #[test]
    fn events_with_and_without_ack() {
        assert_eq!(
            decode(r#"42/blender,["command_received",{"message_id":"m1"}]"#),
            Ok(Packet::Event {
                ns: "/blender".into(),
                ack: None,
                name: "command_received".into(),
                args: vec![json!({"message_id": "m1"})]
            })
        );
        assert_eq!(
            decode(r#"4217["ping"]"#),
            Ok(Packet::Event {
                ns: "/".into(),
                ack: Some(17),
                name: "ping".into(),
                args: vec![]
            })
        );
        assert!(matches!(
            decode(r#"42/blender,{"not":"array"}"#),
            Err(CodecError::BadData(_))
        ));
        assert!(matches!(decode(r#"42/blender,[1]"#), Err(CodecError::BadData(_))));
        assert_eq!(
            decode(r#"451-/blender,["x",{"_placeholder":true,"num":0}]"#),
            Err(CodecError::Binary)
        );
    }

    #[test]
    fn round_trip_of_what_we_send() {
        let auth = json!({"token": "t", "username": "u", "blend_file_path": ""});
        assert_eq!(
            decode(&encode_connect("/blender", &auth)),
            Ok(Packet::Connect {
                ns: "/blender".into(),
                data: Some(auth)
            })
        );
        let data = json!({"message_id": "m", "payload": {"status": "success"}});
        assert_eq!(
            decode(&encode_event("/blender", "command_completed", &data)),
            Ok(Packet::Event {
                ns: "/blender".into(),
                ack: None,
                name: "command_completed".into(),
                args: vec![data]
            })
        );
        assert_eq!(encode_disconnect("/blender"), "41/blender,");
    }
}
