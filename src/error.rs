//! Every error the core can produce, and its one mapping to a wire `error_code`.
//! (The one mapping to Python exceptions lives in `python/errors.rs`.)

use std::time::Duration;

/// Why a main-thread job produced no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    #[error("Blender is busy: the main-thread queue is full ({capacity} jobs waiting); retry later")]
    Busy { capacity: usize },
    #[error("timed out after {} s waiting for Blender's main thread to run '{command}' (Blender busy, or nothing drains the queue); pass params._timeout_seconds to wait longer", fmt_secs(*.after))]
    Timeout { command: String, after: Duration },
    #[error("the job's deadline passed before Blender's main thread got to it; it was not run")]
    Expired,
    /// The job ran past its deadline (or a stop came) and was interrupted: an exception raised in
    /// it between bytecodes. `frames`: the last frames of where it was.
    #[error("'{command}' interrupted after {} s ({why}); pass params._timeout_seconds for a longer job; last frames:\n{frames}", fmt_secs(*.after))]
    Interrupted {
        command: String,
        after: Duration,
        why: String,
        frames: String,
    },
    /// The job ran past its deadline and did not return within the grace after the interrupt (a
    /// long call outside Python); it may still finish.
    #[error("'{command}' is still running {} s after its deadline of {} s: it was interrupted but is in a call that does not return to Python (it may still finish; `blendwire status` shows it)", fmt_secs(*.grace), fmt_secs(*.after))]
    StillRunning {
        command: String,
        after: Duration,
        grace: Duration,
    },
    #[error("the job was cancelled: the service is shutting down")]
    Cancelled,
    /// Its client cancelled it before it ran.
    #[error("'{command}' was cancelled by its client before it ran")]
    CancelledQueued { command: String },
    /// Its client cancelled it while it ran: interrupted as at a deadline.
    #[error("'{command}' was cancelled by its client after {} s of running; last frames:\n{frames}", fmt_secs(*.after))]
    CancelledRunning {
        command: String,
        after: Duration,
        frames: String,
    },
    #[error("no command dispatcher is set in Blender (is the blendwire add-on enabled?)")]
    NoDispatcher,
    #[error("the handler's result cannot be sent as JSON: {0}")]
    Unserializable(String),
    /// A handler failed; `code` comes from the handler (e.g. `invalid_params`) or is
    /// `handler_exception` for an unexpected exception (then `message` holds the traceback).
    #[error("{message}")]
    Handler { code: String, message: String },
}

impl JobError {
    /// Nothing of the job ran (refused, expired or cancelled in the queue, no dispatcher): running
    /// it again cannot do anything twice.
    pub fn never_ran(&self) -> bool {
        matches!(
            self,
            JobError::Busy { .. } | JobError::Expired | JobError::CancelledQueued { .. } | JobError::NoDispatcher
        )
    }

    pub fn wire_code(&self) -> &str {
        match self {
            JobError::Busy { .. } => "busy",
            JobError::Timeout { .. } => "timeout",
            JobError::Expired => "expired",
            JobError::Interrupted { .. } => "interrupted",
            JobError::StillRunning { .. } => "timeout",
            JobError::Cancelled | JobError::CancelledQueued { .. } | JobError::CancelledRunning { .. } => "cancelled",
            JobError::NoDispatcher => "no_dispatcher",
            JobError::Unserializable(_) => "unserializable_result",
            JobError::Handler { code, .. } => code,
        }
    }
}

/// Why a request could not even be turned into a job.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed JSON: {0}; send one JSON object per request, e.g. {{\"type\": \"get_scene_info\", \"params\": {{}}}}")]
    InvalidJson(String),
    #[error("request exceeds the size limit of {limit} bytes; the connection is closed")]
    TooLarge { limit: usize },
    #[error("JSON nested deeper than {limit} levels; the connection is closed")]
    TooDeep { limit: usize },
    #[error("a request must be a JSON object like {{\"type\": ..., \"params\": {{...}}}}, got {0}")]
    NotAnObject(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("{}", unknown_command(name, known))]
    UnknownCommand { name: String, known: Vec<String> },
    #[error("too many connections (limit {limit}); close idle connections and retry")]
    TooManyConnections { limit: usize },
    #[error("request incomplete after {} s; the connection is closed (send each request whole)", fmt_secs(*.after))]
    Incomplete { after: Duration },
    #[error("this service requires a token: add \"token\": \"<BLENDWIRE_TOKEN>\" to every request")]
    Unauthorized,
}

impl RequestError {
    pub fn wire_code(&self) -> &'static str {
        match self {
            RequestError::InvalidJson(_) => "invalid_json",
            RequestError::TooLarge { .. } => "request_too_large",
            RequestError::TooDeep { .. } => "too_deep",
            RequestError::NotAnObject(_) | RequestError::Invalid(_) => "invalid_request",
            RequestError::UnknownCommand { .. } => "unknown_rpc_command",
            RequestError::TooManyConnections { .. } => "too_many_connections",
            RequestError::Incomplete { .. } => "incomplete_request",
            RequestError::Unauthorized => "unauthorized",
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("port {port} on {host} is already in use (another Blender with blendwire or BLD Remote MCP running? find it with `ss -ltnp 'sport = :{port}'`), or pick another port (0 = any free one)")]
    PortInUse { host: String, port: u16 },
    #[error("cannot listen on {host:?}: {detail}")]
    BadAddress { host: String, detail: String },
    /// The wording is the host rule's, `addr::insecure_host`.
    #[error("host {}", crate::addr::insecure_host(host))]
    InsecureHost { host: String },
    #[error("the service is already running on {0}; stop it first")]
    AlreadyRunning(std::net::SocketAddr),
    #[error("cannot start the service: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {detail} (tried for {} s); is Blender running with the service? start one with `blendwire serve --port {port}`", fmt_secs(*.waited), port = addr.rsplit(':').next().unwrap_or(""))]
    ConnectFailed {
        addr: String,
        detail: String,
        waited: Duration,
    },
    #[error("no response from {addr} within {} s", fmt_secs(*.after))]
    Timeout { addr: String, after: Duration },
    #[error("connection to {addr} lost during the call ({detail}); the command may or may not have run")]
    ConnectionLost { addr: String, detail: String },
    #[error("invalid response from {addr}: {detail}")]
    Protocol { addr: String, detail: String },
}

pub(crate) fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s:.3}").trim_end_matches('0').to_string()
    }
}

fn unknown_command(name: &str, known: &[String]) -> String {
    let list = known.join(", ");
    if name.is_empty() {
        format!("the request has no \"type\"; send {{\"type\": COMMAND, \"params\": {{...}}}} with one of: {list}")
    } else {
        format!("unknown command type {name:?}; known commands: {list}")
    }
}
