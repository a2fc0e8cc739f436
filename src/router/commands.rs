//! cr8_engine commands: `command_received` payload → `Command`, the reply envelopes, the bounded
//! memory of seen message ids, and the bounded outbox of replies not yet sent.

use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub message_id: String,
    pub addon_id: String,
    pub command: String,
    pub params: Map<String, Value>,
    /// `metadata.route`, echoed in the reply.
    pub route: Value,
}

/// A `command_received` payload that cannot become a job; answered `command_failed` when it has
/// a message id to answer to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BadCommand {
    pub message_id: Option<String>,
    pub route: Value,
    pub message: String,
}

impl Command {
    /// What makes two commands the same one for [`Recent`]: its name and message_id.
    pub fn key(&self) -> String {
        format!("{}\u{0}{}", self.command, self.message_id)
    }

    /// The router dispatcher's params for this command. `params` is moved out, not copied
    /// (json! would deep-copy it).
    pub fn take_job_params(&mut self) -> Map<String, Value> {
        Map::from_iter([
            ("addon_id".to_string(), Value::String(self.addon_id.clone())),
            ("command".to_string(), Value::String(self.command.clone())),
            ("params".to_string(), Value::Object(std::mem::take(&mut self.params))),
            ("message_id".to_string(), Value::String(self.message_id.clone())),
        ])
    }
}

/// `payload` is taken apart, not copied: its params become the command's.
pub fn parse_command(payload: Value) -> Result<Command, BadCommand> {
    let mut obj = match payload {
        Value::Object(obj) => obj,
        _ => Map::new(),
    };
    let message_id = match obj.get("message_id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let route = match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m.remove("route").unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let bad = |message: String| BadCommand {
        message_id: message_id.clone(),
        route: route.clone(),
        message,
    };
    let Some(message_id) = message_id.clone() else {
        return Err(bad("command_received without a message_id".into()));
    };
    let mut text = |k: &str| match obj.remove(k) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(bad(format!("command_received needs a non-empty string \"{k}\""))),
    };
    let addon_id = text("addon_id")?;
    let command = text("command")?;
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(bad("\"params\" must be a JSON object".into())),
    };
    Ok(Command {
        message_id,
        addon_id,
        command,
        params,
        route,
    })
}

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
    fn size(&self) -> usize {
        crate::wire::encode::encoded_len(&self.body)
    }
}

/// What a command that came before is now, for a repeat of it (same command and message_id).
#[derive(Debug, Clone, PartialEq)]
pub enum Repeat {
    /// Not seen (or forgotten): run it. It is now remembered as running.
    First,
    /// Still running: its one answer is on the way.
    Running,
    /// It ran and was answered; the answer is kept while within the byte budget. The engine asks
    /// again when its node died before reading the first answer, so it gets it again (never a
    /// second run).
    Answered(Option<Reply>),
}

#[derive(Debug)]
enum Seen {
    Running,
    Answered(Option<Reply>),
}

/// The last `capacity` commands, so that a repeated one runs once and is answered again; the
/// answers themselves are kept only within `max_bytes` (the oldest forgotten first).
#[derive(Debug)]
pub struct Recent {
    order: VecDeque<String>,
    seen: HashMap<String, Seen>,
    capacity: usize,
    /// Keys whose answer is kept, oldest first, and those answers' bytes.
    kept: VecDeque<String>,
    kept_bytes: usize,
    max_bytes: usize,
}

impl Recent {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Recent {
            order: VecDeque::new(),
            seen: HashMap::new(),
            capacity: capacity.max(1),
            kept: VecDeque::new(),
            kept_bytes: 0,
            max_bytes,
        }
    }

    /// What `key` is; a new key is remembered as running.
    pub fn begin(&mut self, key: &str) -> Repeat {
        match self.seen.get(key) {
            Some(Seen::Running) => return Repeat::Running,
            Some(Seen::Answered(reply)) => return Repeat::Answered(reply.clone()),
            None => {}
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                if let Some(Seen::Answered(Some(reply))) = self.seen.remove(&old) {
                    self.kept_bytes -= reply.size();
                    // Answers mostly come in order: the oldest command's is usually the oldest kept.
                    if self.kept.front() == Some(&old) {
                        self.kept.pop_front();
                    } else {
                        self.kept.retain(|k| *k != old);
                    }
                }
            }
        }
        self.order.push_back(key.to_string());
        self.seen.insert(key.to_string(), Seen::Running);
        Repeat::First
    }

    /// `key` was answered with `reply`.
    pub fn answered(&mut self, key: &str, reply: &Reply) {
        let Some(entry) = self.seen.get_mut(key) else { return };
        let size = reply.size();
        if size > self.max_bytes {
            *entry = Seen::Answered(None);
            return;
        }
        *entry = Seen::Answered(Some(reply.clone()));
        self.kept.push_back(key.to_string());
        self.kept_bytes += size;
        while self.kept_bytes > self.max_bytes {
            let Some(old) = self.kept.pop_front() else { break };
            if let Some(Seen::Answered(kept)) = self.seen.get_mut(&old) {
                if let Some(reply) = kept.take() {
                    self.kept_bytes -= reply.size();
                }
            }
        }
    }

    /// `key` never ran (the queue was full, its deadline passed first): a repeat may run it.
    pub fn forget(&mut self, key: &str) {
        if self.seen.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

/// Replies waiting to be sent, oldest first, bounded by count and bytes.
#[derive(Debug)]
pub struct Outbox {
    replies: VecDeque<(Reply, usize)>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl Outbox {
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Outbox {
            replies: VecDeque::new(),
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes,
        }
    }

    /// Queue a reply; returns the message ids dropped (oldest first) to stay within the bounds.
    pub fn push(&mut self, reply: Reply) -> Vec<String> {
        let size = reply.size();
        self.bytes += size;
        self.replies.push_back((reply, size));
        let mut dropped = vec![];
        while self.replies.len() > self.max_count || (self.bytes > self.max_bytes && self.replies.len() > 1) {
            if let Some((old, s)) = self.replies.pop_front() {
                self.bytes -= s;
                dropped.push(old.message_id);
            }
        }
        dropped
    }

    /// Put a reply that could not be sent back at the front.
    pub fn push_front(&mut self, reply: Reply) {
        let size = reply.size();
        self.bytes += size;
        self.replies.push_front((reply, size));
    }

    pub fn pop(&mut self) -> Option<Reply> {
        let (reply, size) = self.replies.pop_front()?;
        self.bytes -= size;
        Some(reply)
    }

    /// A reply to `message_id` waits here (not sent yet).
    pub fn holds(&self, message_id: &str) -> bool {
        self.replies.iter().any(|(r, _)| r.message_id == message_id)
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_engine_shape() {
        let c = parse_command(json!({
            "type": "addon_command", "addon_id": "cr8_router", "command": "get_available_addons",
            "params": {"x": 1}, "message_id": "m1", "metadata": {"route": "agent"}
        }))
        .unwrap();
        assert_eq!(
            (c.addon_id.as_str(), c.command.as_str(), c.message_id.as_str()),
            ("cr8_router", "get_available_addons", "m1")
        );
        assert_eq!(c.route, json!("agent"));
        assert_eq!(c.params["x"], 1);
    }

    #[test]
    fn bad_payloads_say_what_is_missing() {
        let e = parse_command(json!({"message_id": "m2", "addon_id": "a"})).unwrap_err();
        assert_eq!(e.message_id.as_deref(), Some("m2"));
        assert!(e.message.contains("\"command\""));
        assert_eq!(parse_command(json!([1, 2])).unwrap_err().message_id, None);
        assert!(parse_command(json!({"message_id": "m", "addon_id": "a", "command": "c", "params": 3})).is_err());
    }

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
    fn job_params_move_the_command_params() {
        let mut c = parse_command(json!({
            "message_id": "m", "addon_id": "a", "command": "c", "params": {"x": [1]}
        }))
        .unwrap();
        let params = c.take_job_params();
        assert_eq!(
            Value::Object(params),
            json!({"addon_id": "a", "command": "c", "params": {"x": [1]}, "message_id": "m"})
        );
        assert!(c.params.is_empty());
    }

    #[test]
    fn reply_size_is_its_encoded_length() {
        let r = Reply::completed("m", &json!("agent"), json!({"s": "é\n\"".repeat(10)}));
        assert_eq!(r.size(), r.body.to_string().len());
    }

    /// The main thread's conversion of a handler's result failed (Python: `{"obj": object()}`):
    /// the core alone answers `UNSERIALIZABLE_RESULT`, with the conversion's message.
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

    #[test]
    fn recent_commands_run_once_and_are_answered_again() {
        let mut r = Recent::new(2, 1 << 20);
        assert_eq!(r.begin("a"), Repeat::First);
        assert_eq!(r.begin("a"), Repeat::Running);
        let reply = Reply::completed("a", &Value::Null, json!({"x": 1}));
        r.answered("a", &reply);
        assert_eq!(r.begin("a"), Repeat::Answered(Some(reply)));
        assert_eq!(r.begin("b"), Repeat::First);
        assert_eq!(r.begin("c"), Repeat::First); // forgets "a"
        assert_eq!(r.begin("a"), Repeat::First);
        r.forget("a"); // it never ran: a repeat runs it
        assert_eq!(r.begin("a"), Repeat::First);
    }

    #[test]
    fn recent_answers_are_kept_within_their_bytes() {
        let big = |id: &str| Reply::completed(id, &Value::Null, json!({"pad": "x".repeat(200)}));
        let mut r = Recent::new(10, 600);
        let b = big("b");
        assert!(b.size() > 300 && b.size() < 600, "{}", b.size());
        assert_eq!(r.begin("a"), Repeat::First);
        r.answered("a", &big("a"));
        assert_eq!(r.begin("b"), Repeat::First);
        r.answered("b", &b);
        // "a"'s answer made room for "b"'s: "a" is still answered (never run again), without its body.
        assert_eq!(r.begin("a"), Repeat::Answered(None));
        assert_eq!(r.begin("b"), Repeat::Answered(Some(b.clone())));
        assert_eq!(r.begin("c"), Repeat::First);
        let huge = Reply::completed("c", &Value::Null, json!({"pad": "x".repeat(700)}));
        r.answered("c", &huge);
        assert_eq!(r.begin("c"), Repeat::Answered(None));
        assert_eq!(r.kept_bytes, b.size());
    }

    #[test]
    fn outbox_keeps_order_and_drops_the_oldest() {
        let mut o = Outbox::new(2, 1 << 20);
        for id in ["a", "b", "c"] {
            let dropped = o.push(Reply::completed(id, &Value::Null, json!({})));
            if id == "c" {
                assert_eq!(dropped, vec!["a".to_string()]);
            }
        }
        assert_eq!(o.pop().unwrap().message_id, "b");
        let c = o.pop().unwrap();
        o.push_front(c);
        assert_eq!(o.pop().unwrap().message_id, "c");
        assert!(o.is_empty());
        o.push(Reply::completed("d", &Value::Null, json!({})));
        assert!(o.holds("d") && !o.holds("c"));
        let mut small = Outbox::new(100, 300);
        small.push(Reply::completed("x", &Value::Null, json!({"pad": "x".repeat(200)})));
        let dropped = small.push(Reply::completed("y", &Value::Null, json!({"pad": "y".repeat(200)})));
        assert_eq!(dropped, vec!["x".to_string()]);
    }
}
