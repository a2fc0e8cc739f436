//! cr8_engine commands: a `command_received` payload → [`Command`], or the [`BadCommand`] that
//! says what is wrong with it.

use serde_json::{Map, Value};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
