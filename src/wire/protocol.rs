//! The BLD Remote request/response shapes: JSON value → `Request`, and the response objects.

use crate::error::{JobError, RequestError};
use serde_json::{json, Map, Value};
use std::time::Duration;

use crate::defaults::MAX_TIMEOUT;

/// The command the service answers itself, without the main thread.
pub const SERVER_SHUTDOWN: &str = "server_shutdown";

/// blendwire's cancel command (`{"type": "cancel", "params": {"id": ...}}`): answered by the service
/// itself, at once.
pub const CANCEL: &str = "cancel";

/// Longest request `id`, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// blendwire's status command: answered by the service itself when it has a status source.
pub const GET_STATUS: &str = "get_status";

/// Command name under which legacy `{"code": ...}` / `{"message": ...}` requests reach the
/// dispatcher; its result is the whole response (BLD Remote MCP's legacy reply has no `status`).
pub const LEGACY: &str = "_legacy";

/// The protocols of the MCP add-on listener, told apart per connection by their framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// blender-mcp / mcp-for-blender: BLD Remote's shapes (unframed JSON, persistent connection);
    /// the Python handler answers the whole response.
    BlenderMcp,
    /// Blender Lab's MCP add-on: one NUL-terminated JSON request per connection, one
    /// NUL-terminated answer, then close.
    BlenderLab,
}

impl Dialect {
    /// The name `_core.set_dispatcher(fn, dialect=...)` and the status use.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::BlenderMcp => "blender_mcp",
            Dialect::BlenderLab => "blender_lab",
        }
    }

    pub fn from_name(name: &str) -> Option<Dialect> {
        match name {
            "blender_mcp" => Some(Dialect::BlenderMcp),
            "blender_lab" => Some(Dialect::BlenderLab),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: String,
    /// Without `_timeout_seconds`: that is for the service, not the handler.
    pub params: Map<String, Value>,
    /// From `params._timeout_seconds`; `None` means the service default.
    pub timeout: Option<Duration>,
    /// The client's name for the job (top-level `"id"`): echoed in its answer and progress
    /// messages, named by `cancel`.
    pub id: Option<Value>,
    /// Top-level `"progress": true`: send progress messages (and the job's stdout as it is
    /// printed) before the answer.
    pub progress: bool,
}

impl Request {
    pub fn is_legacy(&self) -> bool {
        self.command == LEGACY
    }
}

/// A request `id` as the text `cancel` matches: a string as it is, an integer as its digits.
pub fn id_key(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The rule for a request `id`: a non-empty string of up to [`MAX_ID_CHARS`] characters, or an
/// integer.
pub fn check_id(id: Value) -> Result<Value, RequestError> {
    match &id {
        Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_ID_CHARS => Ok(id),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(id),
        _ => Err(RequestError::Invalid(format!(
            "\"id\" must be a non-empty string of up to {MAX_ID_CHARS} characters or an integer naming the job, \
             e.g. \"id\": \"render-1\"; got {}",
            excerpt(&id, 60)
        ))),
    }
}

/// The first `n` characters of `v` as JSON, for messages about an unexpected response.
pub fn excerpt(v: &Value, n: usize) -> String {
    let text = v.to_string();
    match text.char_indices().nth(n) {
        Some((i, _)) => text[..i].to_string(),
        None => text,
    }
}

pub fn parse_request(value: Value) -> Result<Request, RequestError> {
    let mut obj = match value {
        Value::Object(o) => o,
        Value::Array(_) => return Err(RequestError::NotAnObject("an array")),
        Value::String(_) => return Err(RequestError::NotAnObject("a string")),
        Value::Number(_) => return Err(RequestError::NotAnObject("a number")),
        Value::Bool(_) => return Err(RequestError::NotAnObject("a boolean")),
        Value::Null => return Err(RequestError::NotAnObject("null")),
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(id) => Some(check_id(id)?),
    };
    let progress = match obj.remove("progress") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            return Err(RequestError::Invalid(
                "\"progress\" must be true (send progress messages before the answer) or false".into(),
            ))
        }
    };
    let mut params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(RequestError::Invalid(
            "\"params\" must be a JSON object, e.g. {\"type\": \"get_object_info\", \"params\": {\"name\": \"Cube\"}}"
                .into(),
        )),
    };
    match obj.remove("type") {
        Some(Value::String(command)) => {
            // shift_remove: the handler sees the other params in the order they were sent.
            let timeout = params.shift_remove("_timeout_seconds").and_then(timeout_secs);
            Ok(Request {
                command,
                params,
                timeout,
                id,
                progress,
            })
        }
        Some(_) => Err(RequestError::Invalid(
            "\"type\" must be a string naming a command".into(),
        )),
        None => {
            let mut legacy = Map::new();
            for key in ["code", "message"] {
                if let Some(v) = obj.remove(key) {
                    legacy.insert(key.to_string(), v);
                }
            }
            if legacy.is_empty() {
                return Err(RequestError::UnknownCommand {
                    name: String::new(),
                    known: vec![],
                });
            }
            Ok(Request {
                command: LEGACY.into(),
                params: legacy,
                timeout: None,
                id: None,
                progress: false,
            })
        }
    }
}

/// The job deadline a request asks for (`params._timeout_seconds`), as the service reads it.
pub fn requested_timeout(request: &Value) -> Option<Duration> {
    timeout_secs(request.get("params")?.get("_timeout_seconds")?.clone())
}

/// BLD Remote MCP's rule for `_timeout_seconds`: a positive number (or numeric string) capped at an
/// hour; anything else is the default.
fn timeout_secs(value: Value) -> Option<Duration> {
    let secs = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_TIMEOUT))
}

pub fn success(result: Value) -> Value {
    // Not json!(): with a variable it deep-copies `result` through serde (a tenth of the I/O
    // thread's time per request, and a second copy of a 10 MB answer).
    let mut obj = Map::with_capacity(2);
    obj.insert("status".into(), Value::String("success".into()));
    obj.insert("result".into(), result);
    Value::Object(obj)
}

pub fn job_error(e: &JobError) -> Value {
    json!({"status": "error", "message": e.to_string(), "error_code": e.wire_code()})
}

pub fn request_error(e: &RequestError) -> Value {
    let mut v = json!({"status": "error", "message": e.to_string(), "error_code": e.wire_code()});
    if let RequestError::UnknownCommand { known, .. } = e {
        v["available_commands"] = json!(known);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_with_params_and_timeout() {
        let r = parse_request(json!({"type": "get_object_info", "params": {"name": "Cube", "_timeout_seconds": 5}}))
            .unwrap();
        assert_eq!(r.command, "get_object_info");
        assert_eq!(r.params["name"], "Cube");
        assert_eq!(r.timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn the_handler_gets_the_params_without_timeout_seconds_in_their_order() {
        for t in [json!(5), json!("soon"), json!(null)] {
            let r =
                parse_request(json!({"type": "x", "params": {"a": 1, "_timeout_seconds": t, "b": 2, "c": 3}})).unwrap();
            assert_eq!(r.params.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        }
    }

    #[test]
    fn timeout_rules_follow_the_peer() {
        let t = |v: Value| {
            parse_request(json!({"type": "x", "params": {"_timeout_seconds": v}}))
                .unwrap()
                .timeout
        };
        assert_eq!(t(json!(99999)), Some(MAX_TIMEOUT));
        assert_eq!(t(json!("2.5")), Some(Duration::from_millis(2500)));
        assert_eq!(t(json!(0)), None);
        assert_eq!(t(json!(-3)), None);
        assert_eq!(t(json!("soon")), None);
    }

    #[test]
    fn legacy_forms() {
        let r = parse_request(json!({"code": "print(1)"})).unwrap();
        assert!(r.is_legacy());
        assert_eq!(r.params["code"], "print(1)");
        let r = parse_request(json!({"message": "hi"})).unwrap();
        assert_eq!(r.params["message"], "hi");
        // Legacy requests have no params: a `_timeout_seconds` beside them is not looked at.
        let r = parse_request(json!({"code": "x", "params": {"_timeout_seconds": 5}})).unwrap();
        assert_eq!((r.params.len(), r.timeout), (1, None));
    }

    #[test]
    fn id_and_progress() {
        let r = parse_request(json!({"type": "x", "id": "job-1", "progress": true})).unwrap();
        assert_eq!((r.id, r.progress), (Some(json!("job-1")), true));
        let r = parse_request(json!({"type": "x", "id": 7})).unwrap();
        assert_eq!((id_key(r.id.as_ref().unwrap()), r.progress), ("7".to_string(), false));
        for bad in [json!(""), json!(1.5), json!([1]), json!("x".repeat(MAX_ID_CHARS + 1))] {
            let e = parse_request(json!({"type": "x", "id": bad})).unwrap_err();
            assert!(e.to_string().contains("\"id\" must be"), "{e}");
        }
        let e = parse_request(json!({"type": "x", "progress": "yes"})).unwrap_err();
        assert!(e.to_string().contains("\"progress\" must be true"), "{e}");
    }

    #[test]
    fn bad_shapes() {
        assert_eq!(parse_request(json!([1])), Err(RequestError::NotAnObject("an array")));
        assert!(matches!(
            parse_request(json!({"type": 3})),
            Err(RequestError::Invalid(_))
        ));
        assert!(matches!(
            parse_request(json!({"type": "a", "params": [1]})),
            Err(RequestError::Invalid(_))
        ));
        assert!(matches!(
            parse_request(json!({})),
            Err(RequestError::UnknownCommand { .. })
        ));
    }
}
