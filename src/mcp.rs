//! `blendwire mcp`: a Model Context Protocol server over stdio and/or Streamable HTTP (the official
//! SDK, `rmcp`; HTTP in [`http`], resources and the prompt in [`resources`]) whose tools forward
//! to a blendwire / BLD Remote MCP service through a `Client` (persistent connections, one per
//! concurrent call).
//!
//! Every call names its Blender job (the request `id`): an agent's `notifications/cancelled`
//! cancels that job (queued: dropped; running: interrupted), and with a `progressToken` the job's
//! progress and printed output come back as `notifications/progress`.
//!
//! Nothing talks to Blender until a tool is called, so `initialize` and `tools/list` are answered
//! at once whether Blender runs or not. The blocking `Client` runs on tokio's blocking pool, never
//! on a worker. A connection lost mid-call is retried once only for commands that cannot change
//! the scene; `execute_code` (and the persist writes) are reported as interrupted instead.
//! Logs go to stderr: stdout carries the protocol. Over HTTP, every session shares one client, so
//! several agents at once each get their own jobs (and connections).

use crate::client::{self, Client, Event, Flow, ResponseError};
use crate::error::ClientError;
use crate::instances::{self, ChooseError, Instance};
use base64::Engine as _;
use parking_lot::Mutex;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams, GetPromptResponse,
    Implementation, InitializeResult, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProgressToken, ReadResourceRequestParams,
    ReadResourceResponse, ServerCapabilities, ServerConfig, SubscribeRequestParams, Tool, ToolAnnotations,
    UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

// A file beside this one, not src/mcp/: a directory named `mcp` under src/ would make ruff take the
// `mcp` SDK for a first-party package.
#[path = "mcp_http.rs"]
pub mod http;
#[path = "mcp_resources.rs"]
pub mod resources;
pub use http::HttpConfig;

/// The longest server-side wait the service accepts (`params._timeout_seconds`).
const MAX_JOB_SECONDS: f64 = crate::defaults::MAX_TIMEOUT.as_secs_f64();
const UNKNOWN: u8 = 2;

/// Which Blender service(s) the tools talk to.
#[derive(Clone, Debug)]
pub enum Blenders {
    /// One service at host:port (`--blender-port`, `$BLD_REMOTE_MCP_PORT`, `serve --mcp-http`).
    One { host: String, port: u16 },
    /// Every running `blendwire serve` (announced in the runtime directory, `crate::instances`),
    /// chosen per call by the tools' `blender` argument; the only one needs no argument. With none
    /// announced, the default address (a Blender that serves without announcing, e.g. the add-on).
    Announced,
}

pub struct McpConfig {
    pub blenders: Blenders,
    /// Per call, response included; longer than any job's server-side deadline.
    pub timeout: Duration,
    /// How long a call keeps trying to reach Blender before failing with "not reachable".
    pub connect_timeout: Duration,
    /// Sent as `"token"` with every request (services started with BLENDWIRE_TOKEN require it).
    pub token: Option<String>,
}

/// Which transports one `blendwire mcp` serves (both share the tools, hence the Blender client).
pub enum Transports {
    /// stdin/stdout, until stdin closes.
    Stdio,
    /// Streamable HTTP only, until stopped.
    Http(HttpConfig),
    /// Both; closing stdin stops both (the agent that started this process is gone).
    StdioAndHttp(HttpConfig),
}

/// A running MCP server on a thread of its own (own tokio runtime), stopped by [`McpServer::stop`]
/// or when dropped.
pub struct McpServer {
    http_addr: Option<SocketAddr>,
    stop: CancellationToken,
    done: Mutex<mpsc::Receiver<Result<(), String>>>,
    /// What `done` said once it said it: `wait` can be asked again.
    outcome: Mutex<Option<Result<(), String>>>,
}

impl McpServer {
    /// Start serving. The HTTP listener is bound before this returns, so a taken port, a bad host
    /// or a missing token off loopback fails here.
    pub fn start(config: McpConfig, transports: Transports) -> Result<McpServer, String> {
        let (stdio, http) = match transports {
            Transports::Stdio => (true, None),
            Transports::Http(h) => (false, Some(h)),
            Transports::StdioAndHttp(h) => (true, Some(h)),
        };
        let http = match http {
            Some(h) => Some((http::bind(&h)?, h)),
            None => None,
        };
        let http_addr = match &http {
            Some((listener, _)) => Some(listener.local_addr().map_err(|e| e.to_string())?),
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("blendwire-mcp")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the MCP runtime: {e}"))?;
        let server = BlenderTools::new(config);
        let target = match server.announced {
            Some(_) => format!("every running blendwire serve (else {})", server.addr),
            None => server.addr.clone(),
        };
        match http_addr {
            Some(a) => eprintln!(
                "blendwire mcp: MCP over Streamable HTTP at http://{a}{}{}, Blender service at {}",
                http::PATH,
                if stdio { " and on stdio" } else { "" },
                target
            ),
            None => eprintln!("blendwire mcp: MCP on stdio, Blender service at {target}"),
        }
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel();
        let stopper = stop.clone();
        std::thread::Builder::new()
            .name("blendwire-mcp".into())
            .spawn(move || {
                let outcome = runtime.block_on(serve(server, stdio, http, stopper));
                // A call still blocked on Blender (e.g. a long execute_code) must not keep the
                // process alive after the client went away.
                runtime.shutdown_timeout(Duration::from_secs(1));
                let _ = tx.send(outcome);
            })
            .map_err(|e| format!("cannot start the MCP server thread: {e}"))?;
        Ok(McpServer {
            http_addr,
            stop,
            done: Mutex::new(rx),
            outcome: Mutex::new(None),
        })
    }

    /// The bound HTTP address (the real port when 0 was asked), if serving HTTP.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Ask it to stop (open HTTP sessions are ended); `wait` tells when it has.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Its outcome once it has stopped, waiting at most `timeout`; None while it runs.
    pub fn wait(&self, timeout: Duration) -> Option<Result<(), String>> {
        let mut outcome = self.outcome.lock();
        if outcome.is_none() {
            *outcome = match self.done.lock().recv_timeout(timeout) {
                Ok(result) => Some(result),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Err(
                    "the MCP server thread ended without a result (a bug: it panicked)".into(),
                )),
            };
        }
        outcome.clone()
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(
    server: BlenderTools,
    stdio: bool,
    http: Option<(std::net::TcpListener, HttpConfig)>,
    stop: CancellationToken,
) -> Result<(), String> {
    let http_task =
        http.map(|(listener, config)| tokio::spawn(http::serve(listener, config, server.clone(), stop.clone())));
    let outcome = if stdio {
        let outcome = serve_stdio(server, &stop).await;
        stop.cancel();
        outcome
    } else {
        stop.cancelled().await;
        Ok(())
    };
    if let Some(task) = http_task {
        // Sessions end with `stop`; a stream that lingers is not waited for long.
        match tokio::time::timeout(Duration::from_secs(2), task).await {
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => return Err(format!("the MCP HTTP server failed: {e}")),
            _ => {}
        }
    }
    outcome
}

async fn serve_stdio(server: BlenderTools, stop: &CancellationToken) -> Result<(), String> {
    // stdio_pipes: when the client gave us pipes (the usual case), reads and writes run on the
    // reactor instead of a blocking thread per message.
    let initialized = tokio::select! {
        initialized = server.serve(rmcp::transport::stdio_pipes()) => initialized,
        _ = stop.cancelled() => return Ok(()),
    };
    let running = match initialized {
        Ok(running) => running,
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => {
            eprintln!("blendwire mcp: stdin closed, exiting");
            return Ok(());
        }
        Err(other) => return Err(format!("MCP initialization failed: {other}")),
    };
    let ct = running.cancellation_token();
    tokio::select! {
        ended = running.waiting() => {
            ended.map_err(|e| format!("the MCP service stopped: {e}"))?;
            eprintln!("blendwire mcp: stdin closed, exiting");
        }
        _ = stop.cancelled() => ct.cancel(),
    }
    Ok(())
}

/// May a command be sent again after the connection dropped mid-call?
#[derive(Clone, Copy, PartialEq)]
enum Retry {
    /// Read-only: the first attempt changed nothing, so once more is safe.
    Once,
    /// It may have run (and changed the scene or stored data): report, never resend.
    Never,
}

/// The tools, shared by every session (clones share the Blender client, hence its connections
/// and job ids).
#[derive(Clone)]
pub struct BlenderTools {
    client: Arc<Client>,
    addr: String,
    timeout: Duration,
    /// Whether the last call reached Blender (UNKNOWN before the first): only changes are logged.
    reachable: Arc<AtomicU8>,
    /// With [`Blenders::Announced`]: the services found so far, each with its client (the fields
    /// above are then the default address's, and each call works on a copy for its Blender).
    announced: Option<Arc<Announced>>,
    /// Subscriptions to the scene, across sessions.
    watch: Arc<resources::SceneWatch>,
    /// This session's subscription (each HTTP session gets its own, see `for_session`).
    subscription: Arc<resources::Subscriber>,
}

/// One Blender service and what the tools keep for it.
#[derive(Clone)]
struct Link {
    client: Arc<Client>,
    addr: String,
    reachable: Arc<AtomicU8>,
}

impl Link {
    fn new(host: &str, port: u16, config: &McpConfig) -> Link {
        Link::with(host, port, config.timeout, config.connect_timeout, config.token.clone())
    }

    fn with(host: &str, port: u16, timeout: Duration, connect_timeout: Duration, token: Option<String>) -> Link {
        let host = crate::addr::connect_host(host);
        let host = host.as_str();
        Link {
            client: Arc::new(Client::new(host, port, timeout, connect_timeout).with_token(token)),
            addr: format!("{host}:{port}"),
            reachable: Arc::new(AtomicU8::new(UNKNOWN)),
        }
    }
}

/// The announced services met so far, each with its own client (connections, job ids).
struct Announced {
    links: Mutex<Vec<Link>>,
    timeout: Duration,
    connect_timeout: Duration,
    token: Option<String>,
}

impl Announced {
    fn link(&self, instance: &Instance) -> Link {
        let addr = format!("{}:{}", instance.connect_host(), instance.port);
        let mut links = self.links.lock();
        if let Some(link) = links.iter().find(|l| l.addr == addr) {
            return link.clone();
        }
        let link = Link::with(
            &instance.connect_host(),
            instance.port,
            self.timeout,
            self.connect_timeout,
            self.token.clone(),
        );
        links.push(link.clone());
        link
    }
}

/// The tools' argument that picks a Blender when several run.
pub const BLENDER_ARG: &str = "blender";

/// The MCP request a tool call serves (cancellation, progress token); None outside one (tests).
type Rq<'a> = Option<&'a RequestContext<RoleServer>>;

/// What a call has reported as MCP progress so far.
#[derive(Default)]
struct Reported {
    count: u64,
    percent: f64,
}

/// Why a tool produced no result; becomes an `isError` tool result with this text.
struct Failure(String);

type ToolOutcome = Result<Vec<ContentBlock>, Failure>;

impl BlenderTools {
    pub fn new(config: McpConfig) -> Self {
        let link = |host: &str, port: u16| Link::new(host, port, &config);
        let (default, announced) = match &config.blenders {
            Blenders::One { host, port } => (link(host, *port), None),
            Blenders::Announced => (
                link(crate::defaults::DEFAULT_HOST, crate::defaults::DEFAULT_PORT),
                Some(Arc::new(Announced {
                    links: Mutex::new(Vec::new()),
                    timeout: config.timeout,
                    connect_timeout: config.connect_timeout,
                    token: config.token.clone(),
                })),
            ),
        };
        BlenderTools {
            client: default.client,
            addr: default.addr,
            timeout: config.timeout,
            reachable: default.reachable,
            announced,
            watch: Arc::default(),
            subscription: Arc::default(),
        }
    }

    /// The tools for a new session: shared client and scene watch, a subscription of its own.
    pub fn for_session(&self) -> Self {
        BlenderTools {
            subscription: Arc::default(),
            ..self.clone()
        }
    }

    /// These tools for the Blender `selector` names (the `blender` argument): with one service
    /// configured, that one (a selector that names another is an error); with the announced ones,
    /// the one chosen (the only one without a selector), else the default address when none is
    /// announced.
    async fn for_blender(&self, selector: Option<&str>) -> Result<BlenderTools, Failure> {
        let Some(announced) = &self.announced else {
            return match selector {
                Some(s) if !self.addr.ends_with(&format!(":{}", s.trim())) => Err(Failure(format!(
                    "this MCP server talks to the one Blender at {} (--blender-port); blender={s:?} is not it. \
                     Run `blendwire mcp` without --blender-port to reach every running blendwire serve",
                    self.addr
                ))),
                _ => Ok(self.clone()),
            };
        };
        let wanted = selector.map(str::to_string);
        let chosen = tokio::task::spawn_blocking(move || instances::choose(wanted.as_deref()))
            .await
            .map_err(|e| Failure(format!("cannot read the running Blenders: {e}")))?;
        match chosen {
            Ok(instance) => {
                let link = announced.link(&instance);
                Ok(BlenderTools {
                    client: link.client,
                    addr: link.addr,
                    reachable: link.reachable,
                    ..self.clone()
                })
            }
            // Nothing announced: a Blender that serves without announcing (the add-on) may still
            // be at the default address; the connect error then says how to start one.
            Err(ChooseError::NoneRunning) if selector.is_none() => Ok(self.clone()),
            Err(e) => Err(Failure(format!(
                "{e}; pass the tools' {BLENDER_ARG} argument (list_blenders shows them)"
            ))),
        }
    }

    /// These tools for resources and the scene subscription: they take no `blender` argument, so
    /// they are the only (or the default) Blender's.
    async fn for_resources(&self) -> Result<BlenderTools, ErrorData> {
        self.for_blender(None)
            .await
            .map_err(|Failure(message)| ErrorData::invalid_params(message, None))
    }

    /// The list_blenders tool: the services these tools can reach.
    async fn list_blenders(&self) -> ToolOutcome {
        let found = match &self.announced {
            None => json!({"mode": "one", "address": self.addr, "blenders": []}),
            Some(_) => {
                let all = tokio::task::spawn_blocking(instances::discover)
                    .await
                    .map_err(|e| Failure(format!("cannot read the running Blenders: {e}")))?;
                let list: Vec<Value> = all.iter().map(Instance::to_json).collect();
                json!({
                    "mode": "announced",
                    "directory": instances::dir().display().to_string(),
                    "blenders": list,
                    "hint": match all.len() {
                        0 => format!("no blendwire serve is running; the tools try {} (start one with `blendwire serve`)", self.addr),
                        1 => "one Blender: the tools use it without a blender argument".to_string(),
                        _ => format!("several Blenders: pass {BLENDER_ARG} (a port, a pid, or part of the .blend file's name) to every tool"),
                    },
                })
            }
        };
        Ok(vec![ContentBlock::text(found.to_string())])
    }

    /// One request/response on a connection of the client, on the blocking pool. While it waits,
    /// the MCP request's cancellation cancels the Blender job (by the request's `id`), and the
    /// job's progress messages become `notifications/progress` when the agent gave a token.
    async fn exchange(&self, bytes: Arc<Vec<u8>>, id: &Value, rq: Rq<'_>) -> Result<Value, ClientError> {
        let client = Arc::clone(&self.client);
        // The tool's timeout_seconds is checked against this server's --timeout: no longer wait.
        let wait = self.timeout;
        let given_up = Arc::new(AtomicBool::new(false));
        let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
        let call = {
            let given_up = Arc::clone(&given_up);
            tokio::task::spawn_blocking(move || {
                let mut giving_up = false;
                client.request_streaming(&bytes, wait, &mut |event| {
                    if let Event::Progress(msg) = event {
                        let _ = progress_tx.send(msg);
                    }
                    if !giving_up && given_up.load(Ordering::Relaxed) {
                        giving_up = true;
                        return Flow::GiveUpAt(Instant::now() + crate::defaults::INTERRUPT_GRACE);
                    }
                    Flow::Continue
                })
            })
        };
        tokio::pin!(call);
        let token = rq.and_then(|rq| rq.meta.get_progress_token());
        let mut reported = Reported::default();
        let cancelled = async {
            match rq {
                Some(rq) => rq.ct.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(cancelled);
        let mut cancel_sent = false;
        let joined = loop {
            tokio::select! {
                joined = &mut call => break joined,
                Some(msg) = progress_rx.recv() => self.forward_progress(rq, token.as_ref(), &mut reported, &msg).await,
                _ = &mut cancelled, if !cancel_sent => {
                    cancel_sent = true;
                    given_up.store(true, Ordering::Relaxed);
                    let (client, id) = (Arc::clone(&self.client), id.clone());
                    eprintln!("blendwire mcp: the agent cancelled a call; cancelling its Blender job");
                    let _ = tokio::task::spawn_blocking(move || client.cancel(&id)).await;
                }
            }
        };
        // Progress that came just before the answer still goes first.
        while let Ok(msg) = progress_rx.try_recv() {
            self.forward_progress(rq, token.as_ref(), &mut reported, &msg).await;
        }
        match joined {
            Ok(result) => result,
            // Only on a panic in the client, or runtime shutdown: the stream state is unknown.
            Err(e) => Err(ClientError::ConnectionLost {
                addr: self.addr.clone(),
                detail: e.to_string(),
            }),
        }
    }

    /// A job's progress message as `notifications/progress`: the fraction as a percentage when the
    /// job reports one (else a count of updates, so it always rises), its message and new output
    /// as the text.
    async fn forward_progress(&self, rq: Rq<'_>, token: Option<&ProgressToken>, reported: &mut Reported, msg: &Value) {
        let (Some(rq), Some(token)) = (rq, token) else { return };
        reported.count += 1;
        let mut note = match msg.get("fraction").and_then(Value::as_f64) {
            Some(f) => {
                reported.percent = reported.percent.max(f * 100.0);
                ProgressNotificationParam::new(token.clone(), reported.percent).with_total(100.0)
            }
            None if reported.percent > 0.0 => {
                ProgressNotificationParam::new(token.clone(), reported.percent).with_total(100.0)
            }
            None => ProgressNotificationParam::new(token.clone(), reported.count as f64),
        };
        let text: Vec<&str> = ["message", "output"]
            .iter()
            .filter_map(|k| msg.get(*k).and_then(Value::as_str))
            .map(|t| t.trim_end())
            .filter(|t| !t.is_empty())
            .collect();
        if !text.is_empty() {
            note = note.with_message(text.join("\n"));
        }
        let _ = rq.peer.notify_progress(note).await;
    }

    /// Send `{"type": command, "params": params}`; the `result` of a success response.
    async fn command(&self, command: &str, params: Value, retry: Retry, rq: Rq<'_>) -> Result<Value, Failure> {
        self.command_coded(command, params, retry, rq).await.map_err(|(f, _)| f)
    }

    /// As [`Self::command`], with the service's `error_code` when it answered with an error.
    async fn command_coded(
        &self,
        command: &str,
        params: Value,
        retry: Retry,
        rq: Rq<'_>,
    ) -> Result<Value, (Failure, Option<String>)> {
        let mut request = client::command_request(command, params);
        let id = self.client.next_id();
        request["id"] = id.clone();
        if rq.is_some_and(|rq| rq.meta.get_progress_token().is_some()) {
            request["progress"] = Value::Bool(true);
        }
        let bytes = Arc::new(self.client.encode(request));
        let mut outcome = self.exchange(Arc::clone(&bytes), &id, rq).await;
        let mut retried = false;
        if retry == Retry::Once && matches!(outcome, Err(ClientError::ConnectionLost { .. })) {
            // The Client reconnects (with backoff, up to the connect timeout) on the next request.
            eprintln!(
                "blendwire mcp: connection to {} lost during {command}; retrying once (read-only)",
                self.addr
            );
            retried = true;
            outcome = self.exchange(bytes, &id, rq).await;
        }
        self.note_reachability(&outcome);
        let response = outcome.map_err(|e| (Failure(self.explain(command, e, retry, retried)), None))?;
        client::outcome(response).map_err(|e| match e {
            ResponseError::NoStatus { response } => (
                Failure(format!(
                    "unexpected response from {} (no \"status\"): {}",
                    self.addr,
                    crate::wire::protocol::excerpt(&response, 300)
                )),
                None,
            ),
            ResponseError::Command { ref code, .. } => {
                let code = code.clone();
                (Failure(e.to_string()), code)
            }
        })
    }

    fn note_reachability(&self, outcome: &Result<Value, ClientError>) {
        let now = !matches!(outcome, Err(ClientError::ConnectFailed { .. }));
        if self.reachable.swap(now as u8, Ordering::Relaxed) != now as u8 {
            if now {
                eprintln!("blendwire mcp: connected to Blender at {}", self.addr);
            } else {
                eprintln!("blendwire mcp: Blender at {} is not reachable", self.addr);
            }
        }
    }

    fn explain(&self, command: &str, e: ClientError, retry: Retry, retried: bool) -> String {
        match e {
            ClientError::ConnectFailed { .. } => format!(
                "Blender is not reachable: {e}. This MCP server keeps running: call the tool again once Blender is up."
            ),
            ClientError::ConnectionLost { .. } if retry == Retry::Never => format!(
                "{e}. Blender may have restarted or crashed; {command} was NOT retried because it may have \
                 changed Blender's state: check it (e.g. get_scene_info) before running it again."
            ),
            ClientError::ConnectionLost { .. } if retried => format!("{e} (also after one retry)"),
            ClientError::Timeout { .. } => format!(
                "{e}; the connection was reset. Blender may be frozen, or the command takes longer: \
                 execute_code accepts timeout_seconds (this MCP server waits at most {} s per call, see --timeout).",
                self.timeout.as_secs()
            ),
            _ => e.to_string(),
        }
    }

    async fn json_tool(&self, command: &str, params: Value, retry: Retry, rq: Rq<'_>) -> ToolOutcome {
        let result = self.command(command, params, retry, rq).await?;
        Ok(vec![ContentBlock::text(match result {
            Value::String(s) => s,
            other => other.to_string(),
        })])
    }

    async fn execute_code(&self, args: &Map<String, Value>, rq: Rq<'_>) -> ToolOutcome {
        let code = required_str(args, "code")?;
        let mut params = json!({"code": code});
        if let Some(t) = args.get("timeout_seconds").filter(|v| !v.is_null()) {
            let limit = (self.timeout.as_secs_f64() - 5.0).clamp(1.0, MAX_JOB_SECONDS);
            match t.as_f64() {
                Some(s) if s > 0.0 && s <= limit => params["_timeout_seconds"] = json!(s),
                _ => {
                    return Err(Failure(format!(
                        "timeout_seconds must be a number of seconds in (0, {limit}]; start `blendwire mcp --timeout` higher for longer jobs"
                    )))
                }
            }
        }
        let result = self.command("execute_code", params, Retry::Never, rq).await;
        // Even a failed job may have changed the scene part-way.
        self.watch.job_ended();
        let result = result?;
        let output = result.get("output");
        let text = |key: &str| {
            output
                .and_then(|o| o.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        // BLD Remote MCP 1.3.3 answers with `result` only; `output` is newer.
        let stdout = text("stdout")
            .or_else(|| result.get("result").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        let stderr = text("stderr").unwrap_or_default();
        let mut content = Vec::with_capacity(2);
        if !stdout.is_empty() || stderr.is_empty() {
            content.push(ContentBlock::text(if stdout.is_empty() && stderr.is_empty() {
                "(no output)".to_string()
            } else {
                stdout
            }));
        }
        if !stderr.is_empty() {
            content.push(ContentBlock::text(format!("stderr:\n{stderr}")));
        }
        Ok(content)
    }

    async fn screenshot(&self, args: &Map<String, Value>, rq: Rq<'_>) -> ToolOutcome {
        let max_size = match args.get("max_size").filter(|v| !v.is_null()) {
            None => 800,
            Some(v) => v.as_u64().filter(|n| (1..=16384).contains(n)).ok_or_else(|| {
                Failure("max_size must be an integer from 1 to 16384 (pixels of the longest side)".into())
            })?,
        };
        let format = match args
            .get("format")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("png") => "png",
            Some("jpeg") | Some("jpg") => "jpeg",
            Some(other) => return Err(Failure(format!("format must be \"png\" or \"jpeg\", got {other:?}"))),
        };
        // Inline: the image comes in the answer, never through a file path that this process
        // would have to share with Blender (another machine, WSL, a container).
        let params = json!({"max_size": max_size, "format": format, "inline": true});
        // Taking a screenshot changes nothing in the scene: safe to resend once.
        let mut result = self.command("get_viewport_screenshot", params, Retry::Once, rq).await?;
        let data = match result.get_mut("data").map(Value::take) {
            Some(Value::String(data)) => data,
            // A BLD Remote peer has no inline answer: it names the file it wrote on its side,
            // which only Blender can be relied on to read.
            _ => match result.get("filepath").and_then(Value::as_str) {
                Some(path) => base64::engine::general_purpose::STANDARD.encode(self.fetch_file(path, rq).await?),
                None => {
                    return Err(Failure(format!(
                        "unexpected screenshot answer from {} (neither data nor filepath): {}",
                        self.addr,
                        crate::wire::protocol::excerpt(&result, 300)
                    )))
                }
            },
        };
        let size = match (
            result.get("width").and_then(Value::as_u64),
            result.get("height").and_then(Value::as_u64),
        ) {
            (Some(w), Some(h)) => format!("{w}x{h} "),
            _ => String::new(),
        };
        let bytes = data.len() / 4 * 3 - data.bytes().rev().take_while(|b| *b == b'=').count();
        Ok(vec![
            ContentBlock::image(data, format!("image/{format}")),
            ContentBlock::text(format!(
                "{size}{format} screenshot of Blender's 3D viewport ({bytes} bytes)"
            )),
        ])
    }

    /// A file Blender wrote (then deleted), read back through Blender itself, wherever it runs.
    async fn fetch_file(&self, path: &str, rq: Rq<'_>) -> Result<Vec<u8>, Failure> {
        let code = format!(
            "import base64, os\np = {}\ntry:\n    print(base64.b64encode(open(p, 'rb').read()).decode('ascii'), end='')\nfinally:\n    os.remove(p)\n",
            Value::String(path.to_string())
        );
        let result = self
            .command("execute_code", json!({"code": code}), Retry::Never, rq)
            .await?;
        let encoded = result
            .get("output")
            .and_then(|o| o.get("stdout"))
            .or_else(|| result.get("result"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| Failure(format!("cannot read the screenshot file {path} back from Blender: {e}")))
    }

    /// The service's status first (answered without Blender's main thread), so a job that keeps
    /// the main thread busy is reported instead of waited for; the scene only when it is idle
    /// (or the peer has no `get_status`, as the BLD Remote add-on).
    async fn connection_status(&self, rq: Rq<'_>) -> ToolOutcome {
        let started = std::time::Instant::now();
        let main_thread = match self.command("get_status", json!({}), Retry::Once, rq).await {
            Ok(status) => status.get("main_thread").cloned(),
            // Not reachable: say so now rather than wait to connect a second time.
            Err(Failure(message)) if self.reachable.load(Ordering::Relaxed) == 0 => {
                let status = json!({"connected": false, "address": self.addr, "error": message});
                return Ok(vec![ContentBlock::text(status.to_string())]);
            }
            Err(_) => None,
        };
        let busy = main_thread
            .as_ref()
            .is_some_and(|m| m.get("state").and_then(Value::as_str) == Some("running"));
        let mut status = if busy {
            json!({
                "connected": true,
                "address": self.addr,
                "round_trip_ms": (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            })
        } else {
            match self.command("get_scene_info", json!({}), Retry::Once, rq).await {
                Ok(info) => json!({
                    "connected": true,
                    "address": self.addr,
                    "scene": info.get("name"),
                    "object_count": info.get("object_count"),
                    "round_trip_ms": (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
                }),
                Err(Failure(message)) => json!({"connected": false, "address": self.addr, "error": message}),
            }
        };
        if let Some(main_thread) = main_thread {
            status["main_thread"] = main_thread;
        }
        Ok(vec![ContentBlock::text(status.to_string())])
    }

    async fn dispatch(&self, name: &str, args: &Map<String, Value>, rq: Rq<'_>) -> Option<ToolOutcome> {
        if name == "list_blenders" {
            return Some(self.list_blenders().await);
        }
        if !tools().iter().any(|t| t.name == name) {
            return None;
        }
        let selector = match args.get(BLENDER_ARG) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Some(Err(Failure(format!(
                    "{BLENDER_ARG} must be a port, a pid or part of a .blend file's name, got {other}"
                ))))
            }
        };
        let this = match self.for_blender(selector.as_deref()).await {
            Ok(this) => this,
            Err(f) => return Some(Err(f)),
        };
        this.run_tool(name, args, rq).await
    }

    async fn run_tool(&self, name: &str, args: &Map<String, Value>, rq: Rq<'_>) -> Option<ToolOutcome> {
        Some(match name {
            "get_scene_info" => self.json_tool("get_scene_info", json!({}), Retry::Once, rq).await,
            "get_object_info" => match required_str(args, "name") {
                Ok(n) => {
                    self.json_tool("get_object_info", json!({"name": n}), Retry::Once, rq)
                        .await
                }
                Err(f) => Err(f),
            },
            "execute_code" => self.execute_code(args, rq).await,
            "get_viewport_screenshot" => self.screenshot(args, rq).await,
            "put_persist_data" => match (required_str(args, "key"), args.get("data").filter(|v| !v.is_null())) {
                (Ok(key), Some(data)) => {
                    self.json_tool("put_persist_data", json!({"key": key, "data": data}), Retry::Never, rq)
                        .await
                }
                (Err(f), _) => Err(f),
                (_, None) => Err(Failure("data is required: any JSON value except null".into())),
            },
            "get_persist_data" => match required_str(args, "key") {
                Ok(key) => {
                    let mut params = json!({"key": key});
                    if let Some(d) = args.get("default") {
                        params["default"] = d.clone();
                    }
                    self.json_tool("get_persist_data", params, Retry::Once, rq).await
                }
                Err(f) => Err(f),
            },
            "remove_persist_data" => match required_str(args, "key") {
                Ok(key) => {
                    self.json_tool("remove_persist_data", json!({"key": key}), Retry::Never, rq)
                        .await
                }
                Err(f) => Err(f),
            },
            "check_connection_status" => self.connection_status(rq).await,
            _ => return None,
        })
    }
}

fn required_str<'a>(args: &'a Map<String, Value>, key: &str) -> Result<&'a str, Failure> {
    match args.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(Failure(format!("{key} is required (a non-empty string)")))
        }
        Some(other) => Err(Failure(format!("{key} must be a string, got {other}"))),
    }
}

fn schema(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn tool(name: &'static str, description: &'static str, mut input: Value, read_only: bool) -> Tool {
    let props = input.get_mut("properties").and_then(Value::as_object_mut);
    if let Some(props) = props.filter(|_| name != "list_blenders") {
        props.insert(
            BLENDER_ARG.into(),
            json!({"type": ["string", "integer"], "description": "which Blender, when several run: its port, its pid, or part of its .blend file's name (list_blenders shows them); not needed with one"}),
        );
    }
    let annotations = ToolAnnotations::new()
        .read_only(read_only)
        .destructive(!read_only)
        .open_world(false);
    Tool::new(name, description, schema(input)).annotate(annotations)
}

/// The tool list: names and parameters follow the BLD Remote MCP commands.
pub fn tools() -> Vec<Tool> {
    let none = || json!({"type": "object", "properties": {}, "additionalProperties": false});
    let key = json!({"type": "string", "minLength": 1, "description": "the key the data is stored under"});
    vec![
        tool("get_scene_info", "Summary of the current Blender scene: name, object count, the first 10 objects, materials count and frame range.", none(), true),
        tool(
            "get_object_info",
            "Details of one object: type, location, rotation, scale, visibility, dimensions, materials, and mesh counts for meshes.",
            json!({"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "description": "the object's name, e.g. \"Cube\""}}, "required": ["name"], "additionalProperties": false}),
            true,
        ),
        tool(
            "execute_code",
            "Run Python inside Blender (bpy is imported, fresh globals per call) and return what it printed to stdout and stderr.",
            json!({"type": "object", "properties": {
                "code": {"type": "string", "minLength": 1, "description": "Python source; use print() to return values"},
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_JOB_SECONDS, "description": "how long Blender may take (default 30)"}
            }, "required": ["code"], "additionalProperties": false}),
            false,
        ),
        tool(
            "get_viewport_screenshot",
            "A screenshot of Blender's 3D viewport as inline image content, its longest side at most max_size pixels (needs Blender with its UI, not background mode).",
            json!({"type": "object", "properties": {
                "max_size": {"type": "integer", "minimum": 1, "maximum": 16384, "default": 800, "description": "longest side in pixels; larger screenshots are scaled down"},
                "format": {"type": "string", "enum": ["png", "jpeg"], "default": "png", "description": "image format"}
            }, "additionalProperties": false}),
            true,
        ),
        tool(
            "put_persist_data",
            "Store JSON data under a key in Blender's session (kept until Blender exits).",
            json!({"type": "object", "properties": {"key": key, "data": {"description": "any JSON value except null"}}, "required": ["key", "data"], "additionalProperties": false}),
            false,
        ),
        tool(
            "get_persist_data",
            "Read the data stored under a key; returns {data, found}.",
            json!({"type": "object", "properties": {"key": key, "default": {"description": "returned as data when the key is missing (default null)"}}, "required": ["key"], "additionalProperties": false}),
            true,
        ),
        tool(
            "remove_persist_data",
            "Delete the data stored under a key; returns {removed}.",
            json!({"type": "object", "properties": {"key": key}, "required": ["key"], "additionalProperties": false}),
            false,
        ),
        tool(
            "list_blenders",
            "The running Blenders these tools can reach (port, pid, .blend file, Blender version, runtime), for the other tools' blender argument.",
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
            true,
        ),
        tool("check_connection_status", "Whether Blender is reachable: address, scene name, object count and round-trip time, or the error; and what Blender's main thread is doing (idle, or the command running, for how long, its deadline).", none(), true),
    ]
}

impl ServerHandler for BlenderTools {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_prompts()
            .build();
        InitializeResult::new(capabilities)
            .with_server_info(Implementation::new("blendwire", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "Tools for a running Blender with the blendwire service at {} (start it with `blendwire serve --port {}`). \
                 Resources: blender://scene (subscribable), blender://object/{{name}}, blender://materials, \
                 blender://collections, blender://status. The prompt blender_workflow says how to work with them.",
                self.addr,
                self.client.port()
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::resource_templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let this = self.for_resources().await?;
        Ok(this.read_resource_at(&request.uri, Some(&context)).await?.into())
    }

    // resources/subscribe is the legacy (handshake) protocol's, which MCP clients negotiate today;
    // rmcp marks it deprecated in favour of 2026-07-28's subscriptions/listen.
    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let this = self.for_resources().await?;
        this.subscribe_to(&request.uri, context.peer).await
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.unsubscribe_from(&request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(resources::prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != resources::WORKFLOW_PROMPT {
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown prompt {:?}; the prompt is {}",
                    request.name,
                    resources::WORKFLOW_PROMPT
                ),
                None,
            ));
        }
        Ok(resources::workflow_prompt(request.arguments.as_ref()).into())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        match self.dispatch(&request.name, &args, Some(&context)).await {
            Some(Ok(content)) => Ok(CallToolResult::success(content).into()),
            Some(Err(Failure(message))) => Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into()),
            None => Err(ErrorData::invalid_params(
                format!(
                    "unknown tool {:?}; the tools are: {}",
                    request.name,
                    tools().iter().map(|t| t.name.as_ref()).collect::<Vec<_>>().join(", ")
                ),
                None,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_a_one_line_description() {
        let tools = tools();
        assert_eq!(tools.len(), 9);
        for t in &tools {
            assert_eq!(t.input_schema.get("type"), Some(&json!("object")), "{}", t.name);
            let d = t.description.as_deref().unwrap_or_default();
            assert!(!d.is_empty() && !d.contains('\n'), "{}", t.name);
        }
    }

    #[test]
    fn connect_failure_names_the_address_and_how_to_start_blender() {
        let tools = BlenderTools::new(McpConfig {
            blenders: Blenders::One {
                host: "127.0.0.1".into(),
                port: 1,
            },
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(50),
            token: None,
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let Err(Failure(message)) = rt.block_on(tools.command("get_scene_info", json!({}), Retry::Once, None)) else {
            panic!("port 1 answered");
        };
        assert!(
            message.contains("127.0.0.1:1") && message.contains("blendwire serve --port 1"),
            "{message}"
        );
    }
}
