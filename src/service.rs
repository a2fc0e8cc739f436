//! The BLD-Remote-compatible TCP command service.
//!
//! One tokio task per connection. Requests of one connection are queued for the main thread up to
//! `PIPELINE_DEPTH` at a time (a client that pipelines keeps the main thread busy instead of
//! waiting a round trip per call) and answered strictly in request order; answers that are ready
//! together go out in one write. While a request waits for the main thread the task keeps
//! reading, so a client that resets is noticed (its queued jobs are then skipped) and further
//! pipelined requests are buffered (up to the size limit).

use crate::error::{JobError, RequestError, ServiceError};
use crate::framing::{Decoder, Limits};
use crate::metrics::ServiceMetrics;
use crate::protocol::{self, parse_request, Request, SERVER_SHUTDOWN};
use crate::queue::{Bridge, JobResult, Payload};
use crate::shutdown::{Controller, Shutdown, StopReason};
use serde_json::{json, Value};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub use crate::settings::DEFAULT_PORT;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub host: String,
    pub port: u16,
    /// Command types the main-thread dispatcher handles.
    pub commands: Vec<String>,
    /// Server-side wait for the main thread, unless `params._timeout_seconds` says otherwise.
    pub default_timeout: Duration,
    pub limits: Limits,
    pub max_connections: usize,
    /// A request must arrive whole within this time from its first byte (slow clients).
    pub read_timeout: Duration,
    /// A response must be accepted by the client within this time (clients that never read).
    pub write_timeout: Duration,
    /// When set, every request must carry `"token": <this>`; required off loopback.
    pub token: Option<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        use crate::settings as s;
        ServiceConfig {
            host: s::DEFAULT_HOST.into(),
            port: s::DEFAULT_PORT,
            commands: vec![],
            default_timeout: s::DEFAULT_TIMEOUT,
            limits: Limits {
                max_frame_bytes: s::DEFAULT_MAX_REQUEST_BYTES,
                ..Limits::default()
            },
            max_connections: s::DEFAULT_MAX_CONNECTIONS,
            read_timeout: s::DEFAULT_READ_TIMEOUT,
            write_timeout: s::DEFAULT_WRITE_TIMEOUT,
            token: None,
        }
    }
}

/// A running service. Dropping it stops it.
pub struct Service {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    shutdown: Controller,
    pub metrics: Arc<ServiceMetrics>,
    started: Instant,
    bridge: Arc<Bridge>,
}

struct Ctx {
    bridge: Arc<Bridge>,
    commands: HashSet<String>,
    /// Sorted, for `unknown_rpc_command` answers.
    known: Vec<String>,
    default_timeout: Duration,
    limits: Limits,
    max_connections: usize,
    read_timeout: Duration,
    write_timeout: Duration,
    token: Option<String>,
    metrics: Arc<ServiceMetrics>,
}

impl Service {
    pub fn start(config: ServiceConfig, bridge: Arc<Bridge>) -> Result<Service, ServiceError> {
        let addr = crate::addr::resolve(&config.host, config.port).map_err(|detail| ServiceError::BadAddress {
            host: config.host.clone(),
            detail,
        })?;
        // execute_code is arbitrary code execution: off loopback, only with a token. The rule is
        // `settings::host`, applied to the address as bound (a name may resolve to loopback).
        if !addr.ip().is_loopback() && crate::settings::host(&config.host, config.token.as_deref()).is_err() {
            return Err(ServiceError::InsecureHost {
                host: config.host.clone(),
            });
        }
        let listener = std::net::TcpListener::bind(addr).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => ServiceError::PortInUse {
                host: config.host.clone(),
                port: config.port,
            },
            std::io::ErrorKind::AddrNotAvailable => ServiceError::BadAddress {
                host: config.host.clone(),
                detail: e.to_string(),
            },
            _ => ServiceError::Io(e),
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        // One I/O thread is plenty: the main thread is the bottleneck, and an idle Blender
        // should carry as few threads as possible.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("blendwire-io")
            .enable_io()
            .enable_time()
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let shutdown = Controller::new();
        let metrics = Arc::new(ServiceMetrics::default());
        let mut known: Vec<String> = config
            .commands
            .iter()
            .cloned()
            .chain([SERVER_SHUTDOWN.to_string()])
            .collect();
        known.sort();
        known.dedup();
        let ctx = Arc::new(Ctx {
            bridge: bridge.clone(),
            commands: config.commands.iter().cloned().collect(),
            known,
            default_timeout: config.default_timeout,
            limits: config.limits,
            max_connections: config.max_connections.max(1),
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
            token: config.token.filter(|t| !t.is_empty()),
            metrics: metrics.clone(),
        });
        if let Some(handle) = shutdown.handle() {
            runtime.spawn(accept_loop(listener, ctx, handle));
        }
        log::info!("command service listening on {addr}");
        Ok(Service {
            runtime: Some(runtime),
            addr,
            shutdown,
            metrics,
            started: Instant::now(),
            bridge,
        })
    }

    /// Ask the main thread to stop (reason "parent exited") when process `pid` exits. The wait
    /// runs on the service's I/O thread; it ends with the service.
    pub fn stop_when_process_exits(&self, pid: u32) -> std::io::Result<()> {
        let (Some(rt), Some(mut shutdown)) = (&self.runtime, self.shutdown.handle()) else {
            return Ok(());
        };
        let fd = crate::parentwatch::open(pid)?;
        let bridge = self.bridge.clone();
        let _guard = rt.enter(); // AsyncFd registers with this runtime's reactor
        rt.spawn(async move {
            tokio::select! {
                exited = crate::parentwatch::exited(fd) => match exited {
                    Ok(()) => {
                        log::info!("process {pid} exited: stopping");
                        bridge.request_stop(StopReason::ParentExited);
                    }
                    Err(e) => log::warn!("cannot watch process {pid}: {e}"),
                },
                _ = shutdown.signalled() => {}
            }
        });
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// False once stopped or after a `server_shutdown` command (the listener is closed then).
    pub fn is_serving(&self) -> bool {
        !self.shutdown.is_signalled()
    }

    /// Close the listener and every connection, and end the I/O thread (bounded wait).
    /// Must not be called from inside the service's own runtime.
    pub fn stop(mut self, timeout: Duration) {
        self.stop_inner(timeout);
    }

    fn stop_inner(&mut self, timeout: Duration) {
        let Some(rt) = self.runtime.take() else { return };
        // Connections end at once on the signal, after writing any answer already computed;
        // they get half the time to do so before their tasks are dropped.
        if !self.shutdown.stop_and_wait(&rt, timeout / 2) {
            log::warn!(
                "command service on {}: some connections did not close in time",
                self.addr
            );
        }
        rt.shutdown_timeout(timeout);
        log::info!("command service on {} stopped", self.addr);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop_inner(Duration::from_secs(2));
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let open = ctx.metrics.connections_open.get();
                    if open >= ctx.max_connections as i64 {
                        log::warn!("refusing connection from {peer}: {open} connections open");
                        tokio::spawn(refuse(stream, ctx.clone(), shutdown.clone()));
                        continue;
                    }
                    log::debug!("connection from {peer} opened");
                    ctx.metrics.connections_total.inc();
                    tokio::spawn(Connection::new(stream, peer, ctx.clone(), shutdown.clone()).run());
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.signalled() => break,
        }
    }
    // The listener is dropped here, so the port is free as soon as the shutdown is signalled.
}

/// `_shutdown`: held until the answer is written, so a stop waits for it.
async fn refuse(mut stream: TcpStream, ctx: Arc<Ctx>, _shutdown: Shutdown) {
    let e = RequestError::TooManyConnections {
        limit: ctx.max_connections,
    };
    ctx.metrics.errors.inc(e.wire_code());
    let _ = stream.write_all(&to_bytes(&protocol::request_error(&e))).await;
    let _ = stream.shutdown().await;
}

fn to_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    crate::encode::write_value(&mut out, v);
    out
}

/// What to do after handling one request.
enum Step {
    Reply(Value),
    /// `server_shutdown`: answer, then stop the service and the pump.
    ReplyThenShutdown(Value),
    /// Answer a request that leaves the stream unusable (too large, ...), then close.
    ReplyThenClose(Value),
    /// The client is gone or the service stops: just close.
    Close,
}

/// A request of this connection that has not been answered yet.
enum Pending {
    Ready(Step),
    /// Queued for the main thread.
    Waiting(Job),
}

struct Job {
    rx: oneshot::Receiver<JobResult>,
    deadline: Instant,
    command: String,
    legacy: bool,
    wait: Duration,
}

impl Job {
    fn answer(self, result: JobResult) -> Step {
        match result {
            Ok(result) if self.legacy => Step::Reply(result),
            Ok(result) => Step::Reply(protocol::success(result)),
            Err(e) => Step::Reply(protocol::job_error(&e)),
        }
    }
}

/// How waiting for a main-thread job ended.
enum Waited {
    Done(JobResult),
    TimedOut,
    ClientGone,
    Shutdown,
}

/// Requests of one connection queued for the main thread at once (pipelining clients); their
/// answers still go out in request order.
pub const PIPELINE_DEPTH: usize = 32;

struct Connection {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    decoder: Decoder,
    chunk: Box<[u8]>,
    /// Answers serialised and not yet written (several, when pipelined answers are ready together).
    out: Vec<u8>,
    /// The client will send no more (it may still wait for answers).
    eof: bool,
    /// When the request now being received started to arrive.
    partial_since: Option<Instant>,
    ctx: Arc<Ctx>,
    shutdown: Shutdown,
    /// For the close line in the log (every way out of `run` ends in Drop).
    peer: SocketAddr,
}

impl Connection {
    fn new(stream: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>, shutdown: Shutdown) -> Self {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        ctx.metrics.connections_open.add(1);
        Connection {
            rd,
            wr,
            decoder: Decoder::new(ctx.limits),
            chunk: vec![0u8; 64 * 1024].into_boxed_slice(),
            out: Vec::new(),
            eof: false,
            partial_since: None,
            ctx,
            shutdown,
            peer,
        }
    }

    async fn run(mut self) {
        if self.shutdown.is_signalled() {
            return;
        }
        let mut pending: VecDeque<Pending> = VecDeque::new();
        // After server_shutdown or a fatal framing error no further request is taken.
        let mut last_taken = false;
        loop {
            self.take_requests(&mut pending, &mut last_taken);
            let Some(front) = pending.pop_front() else {
                if self.eof || last_taken || !self.read_more().await {
                    return;
                }
                continue;
            };
            let mut step = match front {
                Pending::Ready(step) => step,
                Pending::Waiting(job) => self.finish(job).await,
            };
            // Answers already computed behind this one go out in the same write.
            let last = loop {
                match step {
                    Step::Reply(v) => {
                        self.encode(&v);
                        match next_ready(&mut pending) {
                            Some(next) => step = next,
                            None => break None,
                        }
                    }
                    other => break Some(other),
                }
            };
            // A last answer (shutdown, or an error that ends the stream) goes in the same write.
            if let Some(Step::ReplyThenShutdown(v) | Step::ReplyThenClose(v)) = &last {
                self.encode(v);
            }
            let written = self.flush().await;
            match last {
                None | Some(Step::Reply(_)) if written => {}
                None | Some(Step::Reply(_)) | Some(Step::Close) => return,
                Some(Step::ReplyThenShutdown(_)) => {
                    log::info!("server_shutdown received: stopping the service");
                    self.ctx.bridge.request_stop(StopReason::Shutdown);
                    self.shutdown.signal();
                    return;
                }
                Some(Step::ReplyThenClose(_)) => {
                    if written {
                        let _ = self.wr.shutdown().await;
                    }
                    return;
                }
            }
        }
    }

    /// Decode the requests that have arrived and queue them, up to the pipeline depth. Only the
    /// first one when the main-thread queue is filling up: pipelining must not turn into `busy`
    /// answers that one-at-a-time handling would not have caused.
    fn take_requests(&mut self, pending: &mut VecDeque<Pending>, last_taken: &mut bool) {
        while !*last_taken && pending.len() < PIPELINE_DEPTH {
            if !pending.is_empty() && self.ctx.bridge.len() >= self.ctx.bridge.capacity() / 4 {
                return;
            }
            let Some(frame) = self.decoder.next_frame() else { return };
            let p = match frame {
                Ok(value) => self.prepare(value),
                Err(e) if e.is_fatal() => Pending::Ready(Step::ReplyThenClose(protocol::request_error(&e))),
                Err(e) => Pending::Ready(Step::Reply(protocol::request_error(&e))),
            };
            *last_taken = matches!(p, Pending::Ready(Step::ReplyThenShutdown(_) | Step::ReplyThenClose(_)));
            pending.push_back(p);
        }
    }

    /// Read more of the client's bytes (nothing is pending). False: close the connection.
    async fn read_more(&mut self) -> bool {
        self.partial_since = match (self.decoder.mid_frame(), self.partial_since) {
            (true, None) => Some(Instant::now()),
            (true, since) => since,
            (false, _) => None,
        };
        let stalled_at = self.partial_since.map(|t| t + self.ctx.read_timeout);
        tokio::select! {
            biased;
            _ = self.shutdown.signalled() => false,
            read = self.rd.read(&mut self.chunk) => match read {
                Ok(0) => {
                    self.eof = true;
                    true
                }
                Ok(n) => {
                    self.decoder.extend(&self.chunk[..n]);
                    true
                }
                Err(_) => false,
            },
            _ = sleep_until_opt(stalled_at) => {
                let e = RequestError::Incomplete { after: self.ctx.read_timeout };
                self.encode(&protocol::request_error(&e));
                self.flush().await;
                false
            }
        }
    }

    /// Serialise one answer into the output buffer (counting errors by code).
    fn encode(&mut self, response: &Value) {
        if response.get("status").and_then(Value::as_str) == Some("error") {
            let code = response.get("error_code").and_then(Value::as_str).unwrap_or("error");
            self.ctx.metrics.errors.inc(code);
        }
        crate::encode::write_value(&mut self.out, response);
    }

    /// Write the buffered answers. False if the client cannot take them (then close).
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        // A client that never reads fills its socket buffer; it gets write_timeout, then is cut.
        let written = tokio::time::timeout(self.ctx.write_timeout, self.wr.write_all(&self.out)).await;
        // Keep a small buffer for the next answers; give back a large one.
        if self.out.capacity() > 1 << 20 {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        matches!(written, Ok(Ok(())))
    }

    /// Validate a request; answer it at once or queue it for the main thread.
    fn prepare(&mut self, value: Value) -> Pending {
        self.ctx.metrics.requests.inc();
        if let Some(token) = &self.ctx.token {
            let given = value.get("token").and_then(Value::as_str).unwrap_or("");
            if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                return Pending::Ready(Step::Reply(protocol::request_error(&RequestError::Unauthorized)));
            }
        }
        let request = match parse_request(value) {
            Ok(r) => r,
            Err(RequestError::UnknownCommand { name, .. }) => return Pending::Ready(self.unknown(name)),
            Err(e) => return Pending::Ready(Step::Reply(protocol::request_error(&e))),
        };
        if request.command == SERVER_SHUTDOWN {
            return Pending::Ready(Step::ReplyThenShutdown(protocol::success(
                json!({"message": "Server shutdown initiated"}),
            )));
        }
        if !request.is_legacy() && !self.ctx.commands.contains(&request.command) {
            return Pending::Ready(self.unknown(request.command));
        }
        let Request {
            command,
            params,
            timeout,
        } = request;
        let legacy = command == protocol::LEGACY;
        let wait = timeout.unwrap_or(self.ctx.default_timeout);
        let deadline = Instant::now() + wait;
        let payload = Payload::Command {
            name: command.clone(),
            params,
        };
        match self.ctx.bridge.submit(payload, deadline) {
            Ok(rx) => Pending::Waiting(Job {
                rx,
                deadline,
                command,
                legacy,
                wait,
            }),
            Err(e) => Pending::Ready(Step::Reply(protocol::job_error(&e))),
        }
    }

    async fn finish(&mut self, mut job: Job) -> Step {
        match self.await_reply(&mut job.rx, job.deadline).await {
            Waited::Done(result) => job.answer(result),
            Waited::TimedOut => Step::Reply(protocol::job_error(&JobError::Timeout {
                command: job.command,
                after: job.wait,
            })),
            Waited::ClientGone | Waited::Shutdown => Step::Close,
        }
    }

    fn unknown(&self, name: String) -> Step {
        let e = RequestError::UnknownCommand {
            name,
            known: self.ctx.known.clone(),
        };
        Step::Reply(protocol::request_error(&e))
    }

    /// Wait for the main thread's answer, reading ahead meanwhile so that a reset is noticed.
    async fn await_reply(&mut self, rx: &mut oneshot::Receiver<JobResult>, deadline: Instant) -> Waited {
        let timer = tokio::time::sleep_until(deadline.into());
        tokio::pin!(timer);
        loop {
            let can_read = self.decoder.buffered() <= self.ctx.limits.max_frame_bytes;
            tokio::select! {
                biased;
                reply = &mut *rx => return Waited::Done(reply.unwrap_or(Err(JobError::Cancelled))),
                _ = &mut timer => return Waited::TimedOut,
                _ = self.shutdown.signalled() => return Waited::Shutdown,
                // A client that closes while its request waits has given up on it (BLD Remote
                // clients never half-close), so its job is not run.
                read = self.rd.read(&mut self.chunk), if can_read => match read {
                    Ok(0) | Err(_) => return Waited::ClientGone,
                    Ok(n) => self.decoder.extend(&self.chunk[..n]),
                },
            }
        }
    }
}

/// The next pending answer if it is there already (answered at once, or the main thread is done).
fn next_ready(pending: &mut VecDeque<Pending>) -> Option<Step> {
    let result = match pending.front_mut()? {
        Pending::Ready(_) => None,
        Pending::Waiting(job) => match job.rx.try_recv() {
            Ok(result) => Some(result),
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(JobError::Cancelled)),
        },
    };
    match (pending.pop_front()?, result) {
        (Pending::Ready(step), _) => Some(step),
        (Pending::Waiting(job), Some(result)) => Some(job.answer(result)),
        (Pending::Waiting(_), None) => None, // not reached: a waiting job always has a result here
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Token comparison whose time does not depend on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in b.iter().enumerate() {
        diff |= (a.get(i).copied().unwrap_or(0) ^ x) as usize;
    }
    diff == 0
}

impl Drop for Connection {
    fn drop(&mut self) {
        log::debug!("connection from {} closed", self.peer);
        self.ctx.metrics.connections_open.add(-1);
    }
}
