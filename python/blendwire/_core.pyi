"""Type stubs for blendwire._core, the Rust core.

Threads: `tick`, `pump` and the dispatcher run on Blender's main thread. Everything else is
thread-safe. No function holds the GIL while it waits.
Errors are the classes of `blendwire.errors`.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, final

from typing_extensions import Self

__all__ = [
    "Client",
    "INTERRUPT_SIGNAL",
    "JobOutput",
    "McpServer",
    "PENDING_KEY",
    "__version__",
    "activity",
    "announce_instance",
    "audit_path",
    "check_audit_settings",
    "checkpoint_settings",
    "check_ca_file",
    "check_engine_url",
    "check_mcp_http",
    "check_router_settings",
    "check_service_settings",
    "choose_instance",
    "defaults",
    "discover_instances",
    "enable_interrupts",
    "flush_audit",
    "flush_logs",
    "instances_dir",
    "interrupt_message",
    "interrupt_running",
    "is_loopback",
    "job_streams",
    "log_level_name",
    "mcp_addon_address",
    "mcp_addon_port_from_env",
    "pump",
    "report_progress",
    "router_running",
    "service_address",
    "set_audit",
    "set_dispatcher",
    "set_keeper",
    "set_log_level",
    "set_queue_capacity",
    "set_router_dispatcher",
    "shutdown",
    "start_router",
    "start_service",
    "state_dir",
    "status",
    "stop_pump",
    "stop_router",
    "stop_service",
    "stop_when_process_exits",
    "take_stop_request",
    "tick",
    "update_instance",
    "withdraw_instance",
]

__version__: str

# ---- main-thread bridge --------------------------------------------------------------------

def set_dispatcher(fn_: Callable[[str, dict[str, Any]], Any] | None, dialect: str | None = None) -> None:
    """Set the function the main thread calls for each command job: `fn(type, params) -> result`.
    `dialect`: None or "bld_remote" (the command service), "blender_mcp" or "blender_lab" (the MCP
    add-on listener's; their dispatchers return the whole response); ValueError for another.

    The return value must be JSON-serialisable; it becomes the response's `result`.
    Raise `blendwire.errors.CommandError(message, error_code)` for a clean error response;
    any other exception becomes `error_code: handler_exception` with its traceback in `message`.
    `None` unsets it (queued jobs then fail with `error_code: no_dispatcher`).
    """

def set_keeper(fn_: Callable[[str, dict[str, Any]], Any] | None) -> None:
    """Set the main thread's keeper `fn(phase, info)`: "before" ahead of every job that may change
    data, with `info = {"job": {"command", "client", "listener", "dialect", "id"}, "undo_name"}`;
    it returns `{"checkpoint": ID}` (or `{"checkpoint": None}` when checkpoints are off); raising is
    a failed checkpoint (the job still runs, its answer says so). "after" once the job ran, with
    `info["ok"]`. None removes it."""

def set_audit(
    *, audit_log: str | None = None, audit_code: str | None = None, audit_max_bytes: int | None = None
) -> str | None:
    """Open the process's audit log for the listeners started from now on: `audit_log` a file
    (None: `state_dir()/audit.jsonl`; "off": no log), `audit_code` "full" (the code, capped, and its
    sha256) or "hash" (only the sha256), `audit_max_bytes` the size it is rotated at. Returns the
    file, or None when off. ValueError naming `audit_log` when the file cannot be written."""

def check_audit_settings(
    *, audit_log: str | None = None, audit_code: str | None = None, audit_max_bytes: int | None = None
) -> list[tuple[str, str]]:
    """(setting, rule) for each audit setting that breaks its rule; the file is tried as well
    (created if missing)."""

def audit_path() -> str | None:
    """The audit log's file while it is on, else None."""

def flush_audit() -> None:
    """Wait until every audit line so far is written."""

def state_dir() -> str:
    """The user's state directory (`$XDG_STATE_HOME/blendwire`, else `~/.local/state/blendwire`):
    checkpoints and the audit log by default. Made 0700 if missing; OSError if it is not private."""

def set_router_dispatcher(fn_: Callable[[str, dict[str, Any]], Any] | None) -> None:
    """Set the function the main thread calls for the router's jobs: `fn(op, params)`, with op
    "auth" -> {"token", "username", "blend_file_path"} (asked before every connect attempt),
    "registry" -> the registry_update payload {"type": "registry_updated", "total_addons",
    "available_tools"}, "command" {addon_id, command, params, message_id} -> the result data (a
    dict) or, for a handler result with check_is_finished(), {"__blendwire_pending__": handle},
    "poll" {handle, cancel} -> the final data, or the pending marker again while not finished.
    Raise errors.CommandError(message, CODE) for command_failed with that code (NO_HANDLERS,
    COMMAND_NOT_FOUND, EXECUTION_FAILED, ...); other exceptions become handler_exception."""

def tick(budget_ms: float | None = None) -> int:
    """GUI timers: run queued jobs on this (main) thread until the queue is empty or `budget_ms`
    (None: defaults()["tick_budget_ms"]) is spent (the budget never interrupts a job, it is
    checked between jobs; a job's deadline does, see INTERRUPT_SIGNAL). Returns how many jobs are still waiting."""

def pump() -> str:
    """`blender -b` / bpy module: block this (main) thread, GIL released while waiting, running each
    job the moment it arrives, until `stop_pump()` or a `server_shutdown` command.
    Returns the reason: "stopped" (stop_pump) or "shutdown" (server_shutdown), or whatever reason
    string was given to stop_pump. Python signal handlers get to run at least every 100 ms, so
    KeyboardInterrupt (or an exception raised by a SIGTERM handler) propagates out of pump()."""

def stop_pump(reason: str | None = None) -> None:
    """Make a running (or the next) pump() return `reason` (None: "stopped"). Thread-safe."""

def take_stop_request() -> str | None:
    """GUI: the pending stop reason ("shutdown" after a server_shutdown command), cleared on read;
    None if there is none. The timer callback calls this after tick()."""

def set_log_level(level: int | str) -> str:
    """Level of the core's own log records (a `logging` level name or number; default INFO).
    Records reach Python's `logging` (loggers `blendwire.*`) on the main thread, in tick/pump.
    Returns the canonical name (see log_level_name); ValueError for an unknown name."""

def flush_logs() -> None:
    """Hand pending core log records to `logging` now (main thread)."""

def activity() -> int:
    """A counter that changes whenever a job is queued (cheap): GUI timers use it to run on every
    main-loop turn while clients are active and slow down when idle."""

def set_queue_capacity(capacity: int | None = None) -> None:
    """Bound of the main-thread queue (None: the default, 1024; at most 1000000). A full queue
    answers `busy` at once. ValueError("queue_capacity must be between 1 and 1000000, got 0")."""

INTERRUPT_SIGNAL: int
"""The signal (SIGUSR2) the core sends Blender's main thread to interrupt a job that runs past its
deadline, or runs when a stop comes; every ~75 ms while that job still runs."""

def enable_interrupts(on: bool) -> None:
    """The runtime installed a handler for INTERRUPT_SIGNAL on the main thread (True): the core may
    send it. False (the default): never (its default action would end the process)."""

def interrupt_message() -> str | None:
    """In the INTERRUPT_SIGNAL handler: the message to raise `errors.Interrupted` with when the job
    running on this thread is to be interrupted, else None (a late signal)."""

def interrupt_running(reason: str) -> None:
    """Interrupt the running job (if any) for a stop with `reason`, even from the main thread."""

def report_progress(fraction: float | None = None, message: str | None = None) -> bool:
    """The running job reports progress (`blendwire.progress`): True if its client asked for
    progress, else False. ValueError for a fraction outside 0..1."""

@final
class JobOutput:
    """A job's captured stdout whose native `write` also streams to the job's client (when it
    asked for progress; else a plain capture)."""

    def __init__(self) -> None: ...
    def write(self, s: str) -> int: ...
    def getvalue(self) -> str: ...

def job_streams() -> bool:
    """Whether the running job's client asked for progress (then its stdout is streamed)."""

# ---- command service -----------------------------------------------------------------------

def start_service(
    host: str | None = None,
    port: int | None = None,
    commands: Sequence[str] = ...,
    *,
    mcp_addon_port: int | None = None,
    default_timeout: float | None = None,
    max_request_bytes: int | None = None,
    max_connections: int | None = None,
    read_timeout: float | None = None,
    write_timeout: float | None = None,
    token: str | None = None,
) -> tuple[str, int]:
    """Start the TCP command service (and with `mcp_addon_port` the MCP add-on listener there; see
    mcp_addon_address()). `commands` are the command types the dispatcher handles
    (`server_shutdown` is built in; anything else is answered `unknown_rpc_command`).
    Limits: a request must arrive whole within `read_timeout` of its first byte, a response be
    taken by the client within `write_timeout`, at most `max_connections` at once (more are
    answered `too_many_connections`). With `token`, every request must carry `"token": token`
    (else `unauthorized`, nothing runs); a non-loopback host is refused without one.
    Every setting left None takes its default (see defaults()).
    Returns the bound (host, port): port 0 picks a free one.
    Raises ValueError("{setting} {rule}") for settings that break a rule of
    check_service_settings(), PortInUse (naming the port) or ServiceError (already running, bad
    host, a host off loopback without a token)."""

def stop_service(timeout: float | None = None) -> bool:
    """Stop the service: close the listener (the port is free when this returns) and every
    connection; queued jobs of those connections are not run. True if it was running."""

def service_address() -> tuple[str, int] | None:
    """(host, port) while the service runs, else None."""

def stop_when_process_exits(pid: int) -> None:
    """Stop the pump (reason "parent exited") when process `pid` exits, watched on the service's
    I/O thread. RuntimeError if the service is not running; OSError if the process is already
    gone or pidfds are not supported."""

def status() -> dict:
    """Counters and state, e.g.
    {"version": "0.1.0", "uptime_s": 1.2,
     "service": {"running": True, "host": "127.0.0.1", "port": 6688, "connections_open": 1,
                 "connections_total": 5, "requests": 10, "errors": {"busy": 0, ...}},
     "router": {"state": "connected"|"connecting"|"backoff"|"gave_up"|"stopped", "url", "namespace",
                "consecutive_failures", "retry_in_s", "connected_for_s", "watchdog_s" (None unless
                armed), "last_error", "attempts", "connects", "commands_received",
                "commands_completed", "commands_failed", "duplicates", "queued_replies",
                "replies_dropped"},
     "main_thread": {"state": "idle"} or {"state": "running", "job", "command" ("execute_code",
                "router:command addon.cmd"), "client" ("127.0.0.1:40112" or None), "running_s",
                "deadline_in_s" (negative once passed), "interrupt_pending", "interrupts_sent"},
     "bridge": {"queue_depth": 0, "capacity": 1024, "completed": 9, "failed": 1, "expired": 0,
                "cancelled": 0, "busy_rejections": 0, "results_dropped": 0, "log_records_dropped": 0,
                "last_latency_ms": 0.1,
                "max_job_ms": 0.3, "max_tick_ms": 8.2,
                "latency_ms": {"count": 9, "p50": 0.128, "p90": 0.256, "p99": 0.512}}}
    (latency: queue wait + run on the main thread, as power-of-two bucket bounds)."""

def shutdown(timeout: float | None = None) -> None:
    """Stop the service and the background threads (call at exit / add-on unregister)."""

# ---- running instances (`blendwire list`) --------------------------------------------------

def instances_dir() -> str:
    """Where running services announce themselves: $XDG_RUNTIME_DIR/blendwire, else
    <temp dir>/blendwire-<uid> (mode 0700; one 0600 JSON file per instance)."""

def announce_instance(runtime: str, blender_version: str, blend_file: str | None = None) -> str:
    """Announce the running service in instances_dir() until stop_service() (which removes the
    file); runtime is "background", "bpy" or "gui". Returns the file's path. RuntimeError when
    the service is not running, ValueError for an unknown runtime, OSError when the file cannot
    be written (or the directory is not the user's own with mode 0700)."""

def update_instance(blend_file: str | None) -> bool:
    """The open .blend file changed (None: unsaved): rewrite the announcement. False when nothing
    is announced or the path is the same."""

def withdraw_instance() -> bool:
    """Remove this process's announcement now; True if there was one."""

def discover_instances() -> list[dict[str, Any]]:
    """The running instances, oldest first; stale files (process gone, pid reused, port not
    answering) are skipped and deleted. Each: {"format": 1, "pid", "process_start", "host",
    "port", "mcp_addon_port" (or None), "token_required", "blend_file" (or None), "blender_version",
    "runtime", "blendwire_version", "started_at" (Unix time)}."""

def choose_instance(selector: str | None = None) -> dict[str, Any]:
    """The one running instance `selector` names: a port or pid (digits), else part of the .blend
    file's name (case-insensitive); None: the only one running. LookupError when none runs (saying
    how to start one), when none matches or when several do (listing them)."""

# ---- router (cr8_engine Socket.IO client) -------------------------------------------------

def start_router(
    url: str,
    *,
    socketio_path: str | None = None,
    namespace: str | None = None,
    fallback_auth: Mapping[str, Any] | None = None,
    watchdog_seconds: float | None = None,
    watchdog_after_failures: int | None = None,
    backoff_initial: float | None = None,
    backoff_max: float | None = None,
    backoff_jitter: float | None = None,
    handshake_timeout: float | None = None,
    command_timeout: float | None = None,
    poll_limit: float | None = None,
    outbox_max_count: int | None = None,
    outbox_max_bytes: int | None = None,
    ca_file: str | None = None,
) -> None:
    """Connect to the engine at `url` (http://host:port, or https:// for TLS) and keep connected: every failure
    (refused, dropped, namespace rejected) is retried with jittered exponential backoff for as long
    as the router runs. After `watchdog_after_failures` failed attempts in a row the watchdog arms;
    a connect disarms it; after `watchdog_seconds` (0 = never) the bridge stop reason "watchdog" is
    raised: pump() returns "watchdog" / take_stop_request() gives "watchdog", and the Blender side
    must save and quit. Every setting left None takes its default (see defaults());
    `watchdog_seconds=None` reads $BLENDWIRE_WATCHDOG_SECONDS, else 300. The CONNECT auth is the
    dispatcher's "auth" answer; if the main thread does not answer in time, `fallback_auth`, and
    without one the attempt sends no CONNECT and counts as failed. An https:// engine's certificate
    must name its host and chain to the system's trust store or to `ca_file` (PEM; None reads
    $BLENDWIRE_CA_FILE); a refused certificate is a failed attempt like any other.
    Raises ServiceError if already running, ValueError("{setting} {rule}") for settings that break
    a rule of check_router_settings() (e.g. a CA file that is not PEM)."""

def stop_router(timeout: float | None = None) -> bool:
    """Stop the router and close its connection. True if it was running."""

def router_running() -> bool:
    """True while a router runs (also after its watchdog fired, until stop_router())."""

# ---- settings: defaults and rules, worded once ---------------------------------------------

def defaults() -> dict[str, Any]:
    """Every setting's default by name: host, port (6688), queue_capacity (1024), max_connections,
    max_request_bytes, default_timeout, read_timeout, write_timeout, stop_timeout, tick_budget_ms,
    engine_url, socketio_path, namespace, watchdog_seconds (300), watchdog_env (the variable read
    when watchdog_seconds is None), watchdog_after_failures, backoff_initial, backoff_max,
    backoff_jitter, handshake_timeout, auth_timeout, command_timeout, poll_interval, poll_limit,
    outbox_max_count, outbox_max_bytes, ca_file_env (the variable read when ca_file is None),
    client_timeout (33), client_connect_timeout (5),
    mcp_timeout (600), mcp_connect_timeout (2), audit_log (`state_dir()/audit.jsonl`), audit_code
    ("full"), audit_max_bytes (10 MiB), audit_keep (5). Client and McpServer take None for these."""

def check_service_settings(
    host: str | None = None,
    port: int | None = None,
    commands: Sequence[str] = ...,
    *,
    default_timeout: float | None = None,
    max_request_bytes: int | None = None,
    max_connections: int | None = None,
    read_timeout: float | None = None,
    write_timeout: float | None = None,
    token: str | None = None,
    queue_capacity: int | None = None,
) -> list[tuple[str, str]]:
    """Every problem of these settings as (setting, rule), e.g. ("port", "must be between 0 and
    65535 (0 picks a free port), got 70000"); [] when start_service would accept them. Includes
    the host rule (off loopback only with a token). Prefix the rule with your own label."""

def checkpoint_settings(
    checkpoints: int | None = None, checkpoint_bytes: int | None = None, checkpoint_dir: str | None = None
) -> dict[str, Any]:
    """The checkpoint settings with the defaults filled in: {"checkpoints": N (0 = off),
    "checkpoint_bytes": B, "checkpoint_dir": an absolute folder (default: state_dir()/checkpoints)}.
    ValueError naming every bad one ("checkpoints must be 0 (off) or ...")."""

def check_router_settings(
    url: str,
    *,
    socketio_path: str | None = None,
    namespace: str | None = None,
    fallback_auth: Mapping[str, Any] | None = None,
    watchdog_seconds: float | None = None,
    watchdog_after_failures: int | None = None,
    backoff_initial: float | None = None,
    backoff_max: float | None = None,
    backoff_jitter: float | None = None,
    handshake_timeout: float | None = None,
    command_timeout: float | None = None,
    poll_limit: float | None = None,
    outbox_max_count: int | None = None,
    outbox_max_bytes: int | None = None,
    ca_file: str | None = None,
) -> list[tuple[str, str]]:
    """Every problem of these router settings as (setting, rule); [] when start_router would
    accept them. With watchdog_seconds None, a bad $BLENDWIRE_WATCHDOG_SECONDS is reported; with
    ca_file None, a bad $BLENDWIRE_CA_FILE."""

def check_engine_url(url: str) -> str | None:
    """The engine URL rule: http://, https://, ws:// or wss://, a host, a valid port, no query.
    The problem as a rule text ("must start with http:// or https://, ...") or None."""

def check_ca_file(path: str) -> str | None:
    """The CA-file rule: a readable PEM file of CA certificates ("" means none). The problem as a
    rule text ("cannot be read (...)", "has no certificate (...)") or None."""

def is_loopback(host: str) -> bool:
    """The one loopback rule (no name lookup): "localhost" or a loopback IP address."""

def log_level_name(value: int | str) -> str:
    """The canonical level name for a `logging` level name or number: "DEBUG", "INFO", "WARNING"
    or "ERROR" ("WARN" -> "WARNING", "TRACE" -> "DEBUG", "CRITICAL" -> "ERROR").
    ValueError("unknown log level ...; use DEBUG, INFO, WARNING or ERROR") otherwise."""

# ---- MCP server ----------------------------------------------------------------------------

def check_mcp_http(spec: str, token: str | None = None, allow_origins: Sequence[str] = ...) -> str | None:
    """The problem of an MCP HTTP listen address `[HOST:]PORT` (HOST default 127.0.0.1; off
    loopback only with a token) or of an allowed origin, as a rule text; None when fine."""

@final
class McpServer:
    """The Model Context Protocol server of `blendwire mcp`, running on threads of its own for the
    Blender service at host:port (neither given: every running `blendwire serve`, picked per call
    by the tools' `blender` argument): over this process's stdin/stdout (logs to stderr) until stdin
    closes, and/or over Streamable HTTP at http://HOST:PORT/mcp (`http="[HOST:]PORT"`) until
    stop(). Tools: get_scene_info, get_object_info, execute_code, get_viewport_screenshot (image
    content), put/get/remove persist data, list_blenders, check_connection_status; resources and a
    workflow prompt. Blender may come and go: calls
    fail fast while it is down; execute_code is never resent after a lost connection.

    HTTP is loopback unless `token` is set; requests must name this listener in `Host` (loopback
    names, the bound address, `allow_hosts`), a present `Origin` must be loopback or in
    `allow_origins` (else 403), and with a token every request needs `Authorization: Bearer
    <token>` (else 401). The listener is bound before the constructor returns (RuntimeError if
    it cannot be; ValueError for bad settings)."""

    def __new__(
        cls,
        host: str | None = None,
        port: int | None = None,
        *,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        token: str | None = None,
        stdio: bool = True,
        http: str | None = None,
        allow_origins: Sequence[str] = ...,
        allow_hosts: Sequence[str] = ...,
    ) -> Self: ...
    @property
    def http_address(self) -> tuple[str, int] | None:
        """(host, port) of the HTTP listener as bound (the real port when 0 was asked)."""
    def wait(self, timeout: float) -> bool:
        """True once it has stopped (RuntimeError if it failed), False after `timeout` seconds
        while it runs. The GIL is released while waiting."""
    def stop(self) -> None:
        """Stop serving (open HTTP sessions end); returns at once."""

# ---- client --------------------------------------------------------------------------------

@final
class Client:
    """Persistent connections to a blendwire / BLD Remote service. Thread-safe: concurrent calls
    each use a connection of their own (idle ones are kept for the next calls).

    Connects lazily; reconnects with backoff and jitter (until `timeout`) when the connection is
    found closed before a call is sent. A connection lost after sending raises ConnectionLost and is
    never retried silently."""

    def __new__(
        cls,
        host: str | None = None,
        port: int | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        token: str | None = None,
    ) -> Self:
        """`timeout` bounds each call; `connect_timeout` (at most `timeout`) bounds the
        (re)connect attempts, retried with backoff, before ConnectionFailed. `token` is sent with
        every request (for services started with one)."""
    def call(
        self,
        type: str,
        params: Mapping[str, Any] | None = None,
        progress: Callable[[dict], Any] | None = None,
        job_id: str | int | None = None,
    ) -> Any:
        """Send `{"type": type, "params": params, "id": job_id}`; return the response's `result`.
        Raises CommandError (status error; `.error_code`), Timeout, ConnectionFailed, ConnectionLost,
        ProtocolError. `progress` gets each progress message (the request asks for them);
        KeyboardInterrupt while waiting, or an exception out of `progress`, cancels the job and is
        raised. `job_id` defaults to a fresh id of this client."""
    def cancel(self, job_id: str | int | None = None) -> bool:
        """Cancel the job `job_id`, or (None) every call of this client still waiting; True if a
        queued or running job was found."""
    def call_many(
        self, calls: Iterable[str | tuple[str] | tuple[str, Mapping[str, Any] | None]], return_errors: bool = False
    ) -> list[Any]:
        """Pipelined calls on the one connection (needs a blendwire service): the results in
        order. A failed call raises its CommandError once every answer is read, or with
        `return_errors` stands in the list as the CommandError instance."""
    def request(self, message: Mapping[str, Any]) -> dict:
        """Send any JSON object; return the whole response object (no status check)."""
    def close(self) -> None: ...
    @property
    def connected(self) -> bool: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def timeout(self) -> float: ...

PENDING_KEY: str

def mcp_addon_address() -> tuple[str, int] | None: ...
def mcp_addon_port_from_env() -> int | None: ...
