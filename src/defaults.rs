//! Every default value and fixed limit of the crate, in one place and at the bottom of the module
//! graph: it imports nothing from the crate, so any module may ask it (settings resolves user
//! settings against these; the service, queue, router, client and MCP read them directly).

use std::time::Duration;

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 6688;
/// The port both MCP add-on ecosystems expect (blender-mcp and Blender Lab); the second listener
/// is off unless a port is given (`--mcp-addon-port`, [`MCP_ADDON_PORT_ENV`]).
pub const DEFAULT_MCP_ADDON_PORT: u16 = 9876;
/// Read by the CLI and the add-on when no `mcp_addon_port` is given.
pub const MCP_ADDON_PORT_ENV: &str = "BLENDWIRE_MCP_ADDON_PORT";
/// Blender Lab's own limits (its add-on's, kept for its clients): a request larger than this gets
/// an error; one not whole within [`LAB_READ_TIMEOUT`] gets "Client timed out". Both are capped by
/// the service's `max_request_bytes` / `read_timeout`.
pub const LAB_MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
pub const LAB_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
pub const MAX_QUEUE_CAPACITY: usize = 1_000_000;
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Below this even a small `execute_code` request would not fit.
pub const MIN_REQUEST_BYTES: usize = 1024;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop_service`/`stop_router`/`shutdown` wait for their threads by default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Main-thread time per GUI timer tick.
pub const DEFAULT_TICK_BUDGET_MS: f64 = 8.0;
/// Longest duration any setting accepts.
pub const MAX_SECONDS: f64 = 30.0 * 86_400.0;

pub const DEFAULT_ENGINE_URL: &str = "http://127.0.0.1:8000";
pub const DEFAULT_SOCKETIO_PATH: &str = "/ws/socket.io/";
pub const DEFAULT_NAMESPACE: &str = "/blender";
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(300);
/// Read when `watchdog_seconds` is not given.
pub const WATCHDOG_ENV: &str = "BLENDWIRE_WATCHDOG_SECONDS";
pub const DEFAULT_WATCHDOG_AFTER_FAILURES: u32 = 5;
/// The router's reconnect backoff (`BackoffPolicy::DEFAULT`).
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(2);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
pub const DEFAULT_BACKOFF_FACTOR: f64 = 2.0;
pub const DEFAULT_BACKOFF_JITTER: f64 = 0.5;
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1200);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_POLL_LIMIT: Duration = Duration::from_secs(3600);
pub const DEFAULT_OUTBOX_MAX_COUNT: usize = 1000;
pub const DEFAULT_OUTBOX_MAX_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_REMEMBERED_IDS: usize = 4096;
/// After a running job's deadline, how long its caller waits for the job's own answer (the
/// interrupt's `interrupted` error) before it is answered `timeout`: a job in a long C call only
/// sees the interrupt when control returns to Python.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(2);
/// After a job's deadline and the interrupt grace, how long a client still waits for the answer
/// to arrive.
pub const ANSWER_SLACK: Duration = Duration::from_secs(1);
/// `blendwire.Client`: each call, answer included; and the (re)connect attempts within it. It
/// outwaits the service's default deadline and the interrupt grace, so that a job stopped at that
/// deadline is heard as `interrupted` rather than given up on a moment before (33 s).
pub const DEFAULT_CLIENT_TIMEOUT: Duration =
    Duration::from_secs(DEFAULT_TIMEOUT.as_secs() + INTERRUPT_GRACE.as_secs() + ANSWER_SLACK.as_secs());
pub const DEFAULT_CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `blendwire mcp`: a tool call may run long (renders); reaching Blender must fail fast.
pub const DEFAULT_MCP_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_MCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest server-side wait a client may ask for with `params._timeout_seconds` (as BLD Remote MCP).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// How many of a connection's requests the service queues at once (answered in request order);
/// `blendwire.Client` keeps no more in flight, so that its pipelining never waits on the service.
pub const PIPELINE_DEPTH: usize = 32;

// ---- the audit log (journal::audit) ----
/// The audit log's file in the state directory (`journal::state_dir()`).
pub const AUDIT_FILE_NAME: &str = "audit.jsonl";
/// A log file past this size is rotated (`audit.jsonl.1`, ...).
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept besides the current one (`audit.jsonl.1` .. `.5`); older ones are removed.
pub const DEFAULT_AUDIT_KEEP: usize = 5;
/// The code a line keeps at most (`"code_truncated": true` past it); its sha256 is of all of it.
pub const AUDIT_CODE_CAP: usize = 64 * 1024;

/// Checkpoints (issue 22): how many a Blender process keeps before a changing job (0 = off), and
/// their byte budget; pruned oldest first past either. The folder defaults to
/// `journal::state_dir()/checkpoints`.
pub const DEFAULT_CHECKPOINTS: usize = 20;
pub const DEFAULT_CHECKPOINT_BYTES: usize = 2 * 1024 * 1024 * 1024;
/// Below this not even the default scene's checkpoint (about 0.9 MB) would be kept.
pub const MIN_CHECKPOINT_BYTES: usize = 1024 * 1024;
/// The checkpoint folder's name inside the state directory.
pub const CHECKPOINT_DIR_NAME: &str = "checkpoints";
