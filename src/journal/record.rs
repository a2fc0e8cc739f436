//! The record of one request: who sent what, on which listener, whether it may change data, and
//! (once the main thread has taken it) the checkpoint kept before it ran.

use serde::Serialize;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// The listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Listener {
    /// The command service (BLD Remote's port).
    Service,
    /// `--mcp-addon-port` (blender-mcp's and Blender Lab's add-on protocols).
    Addon,
    /// The cr8 router's Socket.IO connection.
    Router,
    /// `blendwire mcp` (stdio or HTTP).
    Mcp,
}

/// The protocol (dialect) the request spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    BldRemote,
    BlenderMcp,
    BlenderLab,
    Cr8,
    McpStdio,
    McpHttp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::BldRemote => "bld_remote",
            Protocol::BlenderMcp => "blender_mcp",
            Protocol::BlenderLab => "blender_lab",
            Protocol::Cr8 => "cr8",
            Protocol::McpStdio => "mcp_stdio",
            Protocol::McpHttp => "mcp_http",
        }
    }
}

/// Whether a request may change Blender's data (see [`super::effect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Reads,
    Changes,
}

/// What became of the checkpoint before a changing job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Checkpoint {
    /// Kept under this id (`restore_checkpoint {"id": ...}`).
    Kept { id: String },
    /// Could not be kept (a full disk, ...): the job ran anyway; the answer and the audit say so.
    Failed { error: String },
    /// Checkpoints are off (`--checkpoints 0`) or nothing keeps them in this process.
    Off,
}

/// Numbers the records of this process, so that a job's start and end lines pair up.
static SEQ: AtomicU64 = AtomicU64::new(1);

/// One request, as every later step sees it: made once where the request is parsed.
#[derive(Debug)]
pub struct JobRecord {
    /// This process's number for the record (pairs the audit's start and end lines).
    pub seq: u64,
    pub listener: Listener,
    pub dialect: Protocol,
    /// The client's address, where there is one.
    pub peer: Option<String>,
    /// The name of the token the request carried (never the token itself); None without auth.
    pub token_label: Option<String>,
    /// The request's own `id`, if it had one.
    pub request_id: Option<Value>,
    /// `execute_code`, `router:command addon.cmd`, ...
    pub command: String,
    /// The code the request runs, when it runs code.
    pub code: Option<String>,
    pub effect: Effect,
    /// When the request was taken (the audit's `duration_ms` counts from here).
    pub received: Instant,
    checkpoint: OnceLock<Checkpoint>,
}

impl JobRecord {
    /// A record of `command` in `dialect` on `listener`; its effect by the rule of `effect`.
    pub fn new(listener: Listener, dialect: Protocol, command: impl Into<String>) -> JobRecord {
        let command = command.into();
        JobRecord {
            seq: SEQ.fetch_add(1, Relaxed),
            listener,
            dialect,
            peer: None,
            token_label: None,
            request_id: None,
            effect: super::effect(dialect, &command),
            command,
            code: None,
            received: Instant::now(),
            checkpoint: OnceLock::new(),
        }
    }

    pub fn peer(mut self, peer: Option<String>) -> Self {
        self.peer = peer;
        self
    }

    pub fn token_label(mut self, label: Option<String>) -> Self {
        self.token_label = label;
        self
    }

    pub fn request_id(mut self, id: Option<Value>) -> Self {
        self.request_id = id;
        self
    }

    /// The code a request's params carry (`code`, as `execute_code`, the legacy form and Blender
    /// Lab send it), if any.
    pub fn code_of(mut self, params: &Map<String, Value>) -> Self {
        self.code = params.get("code").and_then(Value::as_str).map(str::to_string);
        self
    }

    pub fn changes(&self) -> bool {
        self.effect == Effect::Changes
    }

    /// Set once, on the main thread, before the job runs.
    pub fn set_checkpoint(&self, checkpoint: Checkpoint) {
        let _ = self.checkpoint.set(checkpoint);
    }

    /// None until the main thread has taken (or tried to take) the checkpoint, and for reads.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.get()
    }

    /// The checkpoint's id, if one was kept.
    pub fn checkpoint_id(&self) -> Option<&str> {
        match self.checkpoint.get() {
            Some(Checkpoint::Kept { id }) => Some(id),
            _ => None,
        }
    }

    /// The job as a checkpoint and `list_checkpoints` name it:
    /// `{"command", "client", "listener", "dialect", "id"}`.
    pub fn job(&self) -> Value {
        json!({
            "command": self.command,
            "client": self.peer,
            "listener": self.listener,
            "dialect": self.dialect,
            "id": self.request_id,
        })
    }

    /// The name of the job's undo step in the GUI (Blender keeps 64 bytes of it).
    pub fn undo_name(&self) -> String {
        let mut name = format!("blendwire: {} ({})", self.command, self.dialect.name());
        if name.len() > 63 {
            let mut end = 63;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            name.truncate(end);
        }
        name
    }

    /// What the main thread's keeper is handed before and after a changing job.
    pub fn for_keeper(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("job".into(), self.job());
        m.insert("undo_name".into(), Value::String(self.undo_name()));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_its_job_and_keeps_one_checkpoint() {
        let r = JobRecord::new(Listener::Service, Protocol::BldRemote, "execute_code")
            .peer(Some("127.0.0.1:5000".into()))
            .request_id(Some(json!(7)));
        assert!(r.changes());
        assert_eq!(r.undo_name(), "blendwire: execute_code (bld_remote)");
        assert_eq!(
            r.job(),
            json!({"command": "execute_code", "client": "127.0.0.1:5000", "listener": "service",
                   "dialect": "bld_remote", "id": 7})
        );
        assert_eq!(r.checkpoint_id(), None);
        r.set_checkpoint(Checkpoint::Kept { id: "a".into() });
        r.set_checkpoint(Checkpoint::Kept { id: "b".into() });
        assert_eq!(r.checkpoint_id(), Some("a"));
    }

    #[test]
    fn long_undo_names_are_cut_on_a_character() {
        let r = JobRecord::new(
            Listener::Router,
            Protocol::Cr8,
            format!("router:command {}", "é".repeat(60)),
        );
        assert!(r.undo_name().len() <= 63);
    }
}
