//! The cr8_engine router client: one connection state machine that owns every retry.
//!
//! The first connect, a dropped connection and a rejected namespace all take the same path:
//! back off (exponential, jittered) and try again, for as long as the router runs. After N failed
//! attempts in a row the watchdog arms; a successful connect disarms it; when it fires the bridge
//! is asked to stop with reason "watchdog" and the Blender side saves and quits.
//! Commands become main-thread jobs; their replies wait in a bounded outbox while disconnected.
//!
//! Here: the config, the state every task shares ([`Shared`]: status, main-thread calls, auth) and
//! the [`Router`] handle. `manager` runs the connection state machine, `session` one connection,
//! `job` a command; `commands`, `reply`, `recent` and `outbox` are the command's data on its way.

pub mod commands;
mod job;
pub mod manager;
pub mod outbox;
pub mod recent;
pub mod reply;
pub mod session;
pub mod tls;
pub mod url;

use crate::backoff::{Backoff, BackoffPolicy};
use crate::bridge::running::Origin;
use crate::bridge::wait::{AnswerWait, Next};
use crate::bridge::{Bridge, JobResult, Payload, RouterOp};
use crate::error::JobError;
use crate::journal::{outcome_of, Audit, JobRecord, Listener, Protocol};
use crate::metrics::Counter;
use crate::shutdown::Controller;
use crate::watchdog::WatchdogPolicy;
use commands::parse_command;
use outbox::Outbox;
use parking_lot::Mutex;
use recent::{Recent, Repeat};
use reply::Reply;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Key of the marker a Python handler returns for a command still running (`check_is_finished`).

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Engine base URL, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    pub socketio_path: String,
    pub namespace: String,
    pub backoff: BackoffPolicy,
    pub watchdog: WatchdogPolicy,
    /// Websocket + Engine.IO + namespace handshake, per attempt.
    pub handshake_timeout: Duration,
    /// How long the main thread may take to answer the auth (or registry) request before the
    /// attempt fails (or `fallback_auth` is sent; the registry is asked again).
    pub auth_timeout: Duration,
    /// Deadline of a command's main-thread job.
    pub command_timeout: Duration,
    /// `check_is_finished` polling.
    pub poll_interval: Duration,
    pub poll_limit: Duration,
    pub outbox_max_count: usize,
    pub outbox_max_bytes: usize,
    pub remembered_ids: usize,
    /// Sent when the main thread does not answer the auth request in time; empty (the default):
    /// no CONNECT is sent then, the attempt fails and the next one asks again.
    pub fallback_auth: Value,
    /// CA certificates (PEM) trusted besides the system's store for `https://` engines.
    pub ca_file: Option<std::path::PathBuf>,
    /// The process's audit log (`Core::set_audit`): a line per command; None: off.
    pub audit: Option<Arc<Audit>>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        use crate::defaults as s;
        RouterConfig {
            url: s::DEFAULT_ENGINE_URL.into(),
            socketio_path: s::DEFAULT_SOCKETIO_PATH.into(),
            namespace: s::DEFAULT_NAMESPACE.into(),
            backoff: BackoffPolicy::DEFAULT,
            watchdog: WatchdogPolicy::default(),
            handshake_timeout: s::DEFAULT_HANDSHAKE_TIMEOUT,
            auth_timeout: s::DEFAULT_AUTH_TIMEOUT,
            command_timeout: s::DEFAULT_COMMAND_TIMEOUT,
            poll_interval: s::DEFAULT_POLL_INTERVAL,
            poll_limit: s::DEFAULT_POLL_LIMIT,
            outbox_max_count: s::DEFAULT_OUTBOX_MAX_COUNT,
            outbox_max_bytes: s::DEFAULT_OUTBOX_MAX_BYTES,
            remembered_ids: s::DEFAULT_REMEMBERED_IDS,
            fallback_auth: json!({}),
            ca_file: None,
            audit: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConnState {
    Connecting {
        attempt: u32,
    },
    Connected {
        since: Instant,
    },
    Backoff {
        attempt: u32,
        retry_at: Instant,
    },
    /// The watchdog fired: no more attempts; Blender saves and quits.
    GaveUp,
    Stopped,
}

impl ConnState {
    pub fn name(&self) -> &'static str {
        match self {
            ConnState::Connecting { .. } => "connecting",
            ConnState::Connected { .. } => "connected",
            ConnState::Backoff { .. } => "backoff",
            ConnState::GaveUp => "gave_up",
            ConnState::Stopped => "stopped",
        }
    }
}

/// Why a connect attempt failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectError {
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    #[error("namespace rejected by the engine: {0}")]
    Rejected(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("handshake timed out")]
    Timeout,
    /// The TLS handshake failed (an untrusted or wrong certificate, or no TLS on the other side);
    /// the text says what to change.
    #[error("TLS: {0}")]
    Tls(String),
    /// Blender's main thread did not answer the auth request in time and there is no
    /// `fallback_auth`: nothing was sent.
    #[error("no auth from Blender's main thread ({0}); not connecting without credentials")]
    NoAuth(String),
}

/// Why an established connection ended.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkEnd {
    #[error("the engine closed the connection")]
    Closed,
    #[error("the engine disconnected this client from the namespace")]
    Kicked,
    #[error("no packet from the engine within its ping window")]
    PingTimeout,
    #[error("connection dropped: {0}")]
    Dropped(String),
}

pub trait Connector: Send + Sync + 'static {
    type Link: Link;
    fn connect(&self, auth: Value) -> impl Future<Output = Result<Self::Link, ConnectError>> + Send;
}

pub trait Link: Send + 'static {
    /// Serve the connection until it ends.
    fn run(self, shared: Arc<Shared>) -> impl Future<Output = LinkEnd> + Send;
}

#[derive(Debug, Default)]
pub struct RouterMetrics {
    pub attempts: Counter,
    pub connects: Counter,
    pub commands_received: Counter,
    pub commands_completed: Counter,
    pub commands_failed: Counter,
    pub duplicates: Counter,
    pub replies_dropped: Counter,
}

/// The router's part of the status, serialised in declaration order (docs/protocols.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterStatus {
    pub url: String,
    pub namespace: String,
    /// [`ConnState::name`].
    pub state: &'static str,
    pub consecutive_failures: u32,
    /// Backing off: until the next attempt.
    pub retry_in_s: Option<f64>,
    pub connected_for_s: Option<f64>,
    /// Armed: until the watchdog fires.
    pub watchdog_s: Option<f64>,
    pub last_error: Option<String>,
    pub attempts: u64,
    pub connects: u64,
    pub commands_received: u64,
    pub commands_completed: u64,
    pub commands_failed: u64,
    pub duplicates: u64,
    pub queued_replies: usize,
    pub replies_dropped: u64,
}

/// State shared by the manager, the live connection and the command tasks.
pub struct Shared {
    pub config: RouterConfig,
    bridge: Arc<Bridge>,
    state: Mutex<ConnState>,
    consecutive_failures: Mutex<u32>,
    watchdog_fires_at: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    outbox: Mutex<Outbox>,
    pub outbox_ready: Notify,
    recent: Mutex<Recent>,
    pub metrics: RouterMetrics,
}

impl Shared {
    pub fn new(config: RouterConfig, bridge: Arc<Bridge>) -> Arc<Self> {
        Arc::new(Shared {
            outbox: Mutex::new(Outbox::new(config.outbox_max_count, config.outbox_max_bytes)),
            recent: Mutex::new(Recent::new(config.remembered_ids, config.outbox_max_bytes)),
            config,
            bridge,
            state: Mutex::new(ConnState::Stopped),
            consecutive_failures: Mutex::new(0),
            watchdog_fires_at: Mutex::new(None),
            last_error: Mutex::new(None),
            outbox_ready: Notify::new(),
            metrics: RouterMetrics::default(),
        })
    }

    pub fn state(&self) -> ConnState {
        *self.state.lock()
    }

    fn set_state(&self, s: ConnState) {
        *self.state.lock() = s;
    }

    pub fn watchdog_left(&self) -> Option<Duration> {
        self.watchdog_fires_at
            .lock()
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    pub fn queued_replies(&self) -> usize {
        self.outbox.lock().len()
    }

    /// The router's part of the status (docs/protocols.md).
    pub fn status(&self) -> RouterStatus {
        let m = &self.metrics;
        let state = self.state();
        let retry_in_s = match state {
            ConnState::Backoff { retry_at, .. } => {
                Some(retry_at.saturating_duration_since(Instant::now()).as_secs_f64())
            }
            _ => None,
        };
        let connected_for_s = match state {
            ConnState::Connected { since } => Some(since.elapsed().as_secs_f64()),
            _ => None,
        };
        RouterStatus {
            url: self.config.url.clone(),
            namespace: self.config.namespace.clone(),
            state: state.name(),
            consecutive_failures: *self.consecutive_failures.lock(),
            retry_in_s,
            connected_for_s,
            watchdog_s: self.watchdog_left().map(|d| d.as_secs_f64()),
            last_error: self.last_error.lock().clone(),
            attempts: m.attempts.get(),
            connects: m.connects.get(),
            commands_received: m.commands_received.get(),
            commands_completed: m.commands_completed.get(),
            commands_failed: m.commands_failed.get(),
            duplicates: m.duplicates.get(),
            queued_replies: self.queued_replies(),
            replies_dropped: m.replies_dropped.get(),
        }
    }

    /// [`Shared::status`] as JSON.
    pub fn snapshot(&self) -> Value {
        // Plain data with string keys: serialising it cannot fail.
        serde_json::to_value(self.status()).unwrap_or(Value::Null)
    }

    /// Run a router operation on Blender's main thread and wait for it (asynchronously).
    /// Past its deadline, the answer is waited for by the rule of `bridge::wait`.
    /// A command (not the router's own auth, registry and polls) has its audit lines: the start
    /// line, written before it is queued, and the end line with its outcome.
    pub async fn main_thread(&self, op: RouterOp, params: Map<String, Value>, timeout: Duration) -> JobResult {
        let command = Payload::router_label(op, &params);
        let record = Arc::new(JobRecord::new(Listener::Router, Protocol::Cr8, command.clone()).code_of(&params));
        let audit = self.config.audit.as_ref().filter(|_| op == RouterOp::Command);
        if let Some(audit) = audit.filter(|_| record.changes()) {
            // Not written (a full disk): the command still runs; the writer has said why.
            let _ = audit.start(&record).await;
        }
        let result = self.run_job(op, params, timeout, command, record.clone()).await;
        if let Some(audit) = audit {
            let outcome = match &result {
                Ok(v) => outcome_of(v),
                Err(e) => e.wire_code(),
            };
            audit.end(&record, outcome);
        }
        result
    }

    async fn run_job(
        &self,
        op: RouterOp,
        params: Map<String, Value>,
        timeout: Duration,
        command: String,
        record: Arc<JobRecord>,
    ) -> JobResult {
        let deadline = std::time::Instant::now() + timeout;
        let payload = Payload::Router { op, params };
        let origin = Origin {
            record: Some(record),
            ..Origin::default()
        };
        let mut ticket = self.bridge.submit_job(payload, deadline, origin)?;
        let mut wait = AnswerWait::new(ticket.id, deadline);
        // Waited for as durations (on tokio's clock, which tests may pause), not until instants.
        let mut wait_for = timeout;
        loop {
            if let Ok(reply) = tokio::time::timeout(wait_for, &mut ticket.rx).await {
                return reply.unwrap_or(Err(JobError::Cancelled));
            }
            match wait.timed_out(&self.bridge.main, &mut ticket.rx) {
                Next::Grace(more) => wait_for = more,
                Next::Answer(reply) => return reply,
                Next::Missed(missed) => return Err(missed.error(command, timeout)),
            }
        }
    }

    /// The CONNECT auth payload, read again for every attempt (tokens expire).
    ///
    /// The main thread did not answer in time (busy, or nothing drains the queue): the configured
    /// `fallback_auth` is sent if there is one, else no CONNECT at all (`ConnectError::NoAuth`): the
    /// attempt fails like any other (backoff, watchdog) and the next one asks again, rather than
    /// presenting the engine a CONNECT without a token. The main thread answered something that is
    /// not an object, or an error: asking again soon would not help; the fallback is sent (the
    /// engine decides).
    async fn auth(&self) -> Result<Value, ConnectError> {
        let why = match self
            .main_thread(RouterOp::Auth, Map::new(), self.config.auth_timeout)
            .await
        {
            Ok(v) if v.is_object() => return Ok(v),
            Ok(v) => format!("the auth handler returned {}, not an object", json_kind(&v)),
            Err(e) if not_answered(&e) && !self.has_fallback_auth() => {
                return Err(ConnectError::NoAuth(e.to_string()));
            }
            Err(e) => e.to_string(),
        };
        // Name the keys only: the values are credentials.
        let sent = match self.config.fallback_auth.as_object() {
            Some(o) if !o.is_empty() => {
                let keys: Vec<&str> = o.keys().map(String::as_str).collect();
                format!("the fallback auth (keys {})", keys.join(", "))
            }
            _ => "an empty auth {}".to_string(),
        };
        log::warn!("no engine auth from the main thread ({why}); sending {sent}");
        Ok(self.config.fallback_auth.clone())
    }

    fn has_fallback_auth(&self) -> bool {
        self.config.fallback_auth.as_object().is_some_and(|o| !o.is_empty())
    }

    /// The `registry_update` payload, from the main thread; `None` if its handler failed.
    ///
    /// While the main thread does not answer within `auth_timeout` (busy with a long job, a GUI
    /// still loading) it is asked again after a backoff (the router's policy), one warning per
    /// failed try, for as long as the caller polls this: a session drops it when it ends, which
    /// also withdraws the request still queued.
    pub async fn registry(&self) -> Option<Value> {
        let mut backoff = Backoff::new(self.config.backoff);
        let mut tries = 0u32;
        loop {
            tries += 1;
            match self
                .main_thread(RouterOp::Registry, Map::new(), self.config.auth_timeout)
                .await
            {
                Ok(v) => {
                    if tries > 1 {
                        log::info!("registry_update built at try {tries}");
                    }
                    return Some(v);
                }
                Err(e) if not_answered(&e) => {
                    let delay = backoff.next_delay();
                    log::warn!(
                        "registry_update not built yet (try {tries}): {e}; asking the main thread again in {:.1} s",
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    log::warn!("could not build registry_update: {e}");
                    return None;
                }
            }
        }
    }

    pub fn pop_reply(&self) -> Option<Reply> {
        self.outbox.lock().pop()
    }

    pub fn unpop_reply(&self, reply: Reply) {
        self.outbox.lock().push_front(reply);
    }

    fn queue_reply(&self, reply: Reply) {
        let dropped = self.outbox.lock().push(reply);
        for id in dropped {
            self.metrics.replies_dropped.inc();
            log::error!("reply for message_id {id} dropped: the outbox is full (engine unreachable too long)");
        }
        self.outbox_ready.notify_one();
    }

    /// A `command_received` event: answered later, through the outbox.
    pub fn on_command(self: &Arc<Self>, payload: Option<Value>) {
        self.metrics.commands_received.inc();
        match parse_command(payload.unwrap_or_default()) {
            Err(bad) => match bad.message_id {
                Some(id) => {
                    self.metrics.commands_failed.inc();
                    self.queue_reply(Reply::failed(&id, &bad.route, "INVALID_COMMAND", &bad.message));
                }
                None => log::warn!("ignoring command_received: {}", bad.message),
            },
            Ok(cmd) => {
                let repeat = self.recent.lock().begin(&cmd.key());
                match repeat {
                    Repeat::First => {}
                    Repeat::Running => {
                        self.metrics.duplicates.inc();
                        log::info!(
                            "repeated command {} (message_id {}) is still running: it will be answered once",
                            cmd.command,
                            cmd.message_id
                        );
                        return;
                    }
                    Repeat::Answered(reply) => {
                        self.metrics.duplicates.inc();
                        if self.outbox.lock().holds(&cmd.message_id) {
                            log::info!(
                                "repeated command {} (message_id {}): its answer waits in the outbox",
                                cmd.command,
                                cmd.message_id
                            );
                            return;
                        }
                        log::info!(
                            "repeated command {} (message_id {}) already ran: answering it again, not running it again",
                            cmd.command,
                            cmd.message_id
                        );
                        self.queue_reply(reply.unwrap_or_else(|| {
                            Reply::failed(
                                &cmd.message_id,
                                &cmd.route,
                                "DUPLICATE",
                                "this message_id already ran here; its answer was sent and is no longer kept \
                                 (send a new message_id to run the command again)",
                            )
                        }));
                        return;
                    }
                }
                tokio::spawn(job::run_command(self.clone(), cmd));
            }
        }
    }
}

/// The main thread did not answer (it never got to the job, or the job outlasted its deadline):
/// asking again later may work, unlike an answer that is an error.
fn not_answered(e: &JobError) -> bool {
    match e {
        JobError::Busy { .. }
        | JobError::Timeout { .. }
        | JobError::Expired
        | JobError::Interrupted { .. }
        | JobError::StillRunning { .. }
        | JobError::Cancelled
        | JobError::CancelledQueued { .. }
        | JobError::CancelledRunning { .. } => true,
        JobError::NoDispatcher | JobError::Unserializable(_) | JobError::Handler { .. } => false,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A running router: its own I/O thread, stopped on drop.
pub struct Router {
    runtime: Option<tokio::runtime::Runtime>,
    stop: Controller,
    pub shared: Arc<Shared>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// `why` is a rule text of `url::engine_url` (it names the URL).
    #[error("engine URL {why}")]
    BadUrl { url: String, why: String },
    #[error("ca_file {0}")]
    CaFile(#[from] tls::CaFileError),
    #[error("cannot start the router: {0}")]
    Io(#[from] std::io::Error),
}

impl Router {
    pub fn start(config: RouterConfig, bridge: Arc<Bridge>) -> Result<Router, RouterError> {
        let connector = session::WsConnector::new(&config)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("blendwire-router")
            .enable_io()
            .enable_time()
            .build()?;
        let shared = Shared::new(config, bridge);
        let stop = Controller::new();
        if let Some(handle) = stop.handle() {
            runtime.spawn(manager::run_manager(connector, shared.clone(), handle));
        }
        Ok(Router {
            runtime: Some(runtime),
            stop,
            shared,
        })
    }

    pub fn stop(mut self, timeout: Duration) {
        self.stop_inner(timeout);
    }

    fn stop_inner(&mut self, timeout: Duration) {
        if let Some(rt) = self.runtime.take() {
            // The manager ends at once on the signal (closing the connection); command tasks
            // still waiting for the main thread are dropped with the runtime.
            if !self.stop.stop_and_wait(&rt, timeout / 2) {
                log::warn!("the router did not stop in time");
            }
            rt.shutdown_timeout(timeout);
        }
        if self.shared.state() != ConnState::GaveUp {
            self.shared.set_state(ConnState::Stopped);
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.stop_inner(crate::defaults::DEFAULT_STOP_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_shape_in_its_order() {
        let config = RouterConfig {
            url: "http://127.0.0.1:8000".into(),
            ..RouterConfig::default()
        };
        let shared = Shared::new(config, Arc::new(Bridge::new(8)));
        let v = shared.snapshot();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "url",
                "namespace",
                "state",
                "consecutive_failures",
                "retry_in_s",
                "connected_for_s",
                "watchdog_s",
                "last_error",
                "attempts",
                "connects",
                "commands_received",
                "commands_completed",
                "commands_failed",
                "duplicates",
                "queued_replies",
                "replies_dropped"
            ]
        );
        assert_eq!(
            v,
            json!({
                "url": "http://127.0.0.1:8000", "namespace": "/blender", "state": "stopped",
                "consecutive_failures": 0, "retry_in_s": null, "connected_for_s": null, "watchdog_s": null,
                "last_error": null, "attempts": 0, "connects": 0, "commands_received": 0,
                "commands_completed": 0, "commands_failed": 0, "duplicates": 0, "queued_replies": 0,
                "replies_dropped": 0,
            })
        );
    }
}
