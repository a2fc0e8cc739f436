//! The `command_completed` / `command_failed` envelopes the router sends back to the engine.

use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

fn metadata(route: &Value) -> Value {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    json!({"timestamp": timestamp, "source": "blender", "route": route})
}

/// A finished command, ready to send as `command_completed` / `command_failed`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub event: &'static str,
    pub message_id: String,
    pub body: Value,
}

impl Reply {
    pub fn completed(message_id: &str, route: &Value, data: Value) -> Reply {
        let data = if data.is_object() {
            data
        } else {
            Value::Object(Map::from_iter([("result".to_string(), data)]))
        };
        // `data` is moved in, not written inside json!() (which deep-copies a variable).
        let mut body = json!({
            "message_id": message_id,
            "type": "command_completed",
            "payload": {"status": "success"},
            "metadata": metadata(route),
        });
        body["payload"]["data"] = data;
        Reply {
            event: "command_completed",
            message_id: message_id.to_string(),
            body,
        }
    }

    /// `code` is one of cr8_engine's codes (`COMMAND_NOT_FOUND`, `EXECUTION_FAILED`, ...).
    pub fn failed(message_id: &str, route: &Value, code: &str, message: &str) -> Reply {
        Reply {
            event: "command_failed",
            message_id: message_id.to_string(),
            body: json!({
                "message_id": message_id,
                "type": "command_failed",
                "payload": {
                    "status": "error",
                    "message": message,
                    "error_code": code,
                    "data": {"error_code": code, "message": message},
                },
                "metadata": metadata(route),
            }),
        }
    }

    /// Bytes of the body as sent, counted without writing it out.
    pub(super) fn size(&self) -> usize {
        crate::wire::encode::encoded_len(&self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_envelopes() {
        let ok = Reply::completed("m1", &json!("direct"), json!({"n": 1}));
        assert_eq!(ok.event, "command_completed");
        assert_eq!(ok.body["payload"], json!({"status": "success", "data": {"n": 1}}));
        assert_eq!(ok.body["metadata"]["route"], "direct");
        assert_eq!(ok.body["metadata"]["source"], "blender");
        let wrapped = Reply::completed("m1", &Value::Null, json!(5));
        assert_eq!(wrapped.body["payload"]["data"], json!({"result": 5}));
        let bad = Reply::failed("m2", &json!("agent"), "COMMAND_NOT_FOUND", "no such command");
        assert_eq!(bad.body["type"], "command_failed");
        assert_eq!(bad.body["payload"]["status"], "error");
        assert_eq!(bad.body["payload"]["data"]["error_code"], "COMMAND_NOT_FOUND");
    }

    #[test]
    fn reply_size_is_its_encoded_length() {
        let r = Reply::completed("m", &json!("agent"), json!({"s": "é\n\"".repeat(10)}));
        assert_eq!(r.size(), r.body.to_string().len());
    }

    #[test]
    fn an_unserializable_result_is_unserializable_result() {
        use crate::bridge::Bridge;
        use crate::error::JobError;
        use crate::router::{RouterConfig, Shared};
        use std::sync::Arc;
        use std::time::Duration;
        // What the pyo3 bridge reports for `{"obj": object()}`.
        const UNSUPPORTED: &str = "unsupported type object; handlers must return JSON data \
                                   (dict with str keys, list, str, int, float, bool, None)";

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let reply = rt.block_on(async {
            let bridge = Arc::new(Bridge::new(8));
            let shared = Shared::new(RouterConfig::default(), bridge.clone());
            shared.on_command(Some(json!({"message_id": "m", "addon_id": "a", "command": "c"})));
            tokio::time::timeout(Duration::from_secs(10), async {
                let job = loop {
                    match bridge.try_next() {
                        Some(job) => break job,
                        None => tokio::task::yield_now().await,
                    }
                };
                bridge.run(job, |_| Err(JobError::Unserializable(UNSUPPORTED.into())));
                loop {
                    match shared.pop_reply() {
                        Some(reply) => break reply,
                        None => tokio::task::yield_now().await,
                    }
                }
            })
            .await
            .expect("a reply")
        });
        assert_eq!(reply.event, "command_failed");
        let payload = &reply.body["payload"];
        assert_eq!(payload["error_code"], "UNSERIALIZABLE_RESULT");
        assert_eq!(
            payload["message"],
            format!("the handler's result cannot be sent as JSON: {UNSUPPORTED}")
        );
    }
}
