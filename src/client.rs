//! A blocking client with persistent connections, for scripts outside Blender.
//!
//! A call takes an idle connection (or opens one) and gives it back when answered, so calls from
//! several threads run side by side and a `cancel` or a status reaches the service while another
//! call waits. Before a request is sent, a connection the server has closed meanwhile is detected
//! (a non-blocking peek sees EOF) and replaced, with backoff and jitter, until the call's timeout;
//! a connection lost after the request went out is reported as `ConnectionLost`, never retried,
//! since the command may have run.
//!
//! `request_streaming` also hands the caller the job's progress messages and a tick every
//! [`TICK`] while it waits, where the caller may cancel (Ctrl-C in Python, an MCP cancellation).
//!
//! What a request looks like (`command_request`, the token) and what a response means
//! (`outcome`) live here too, so the Python `Client` and `blendwire mcp` read answers alike.

use crate::backoff::{Backoff, BackoffPolicy};
use crate::error::ClientError;
use crate::wire::framing::{Decoder, Limits};
use crate::wire::protocol::excerpt;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Pipelining bounds of `request_many`: as many as the service queues per connection.
const MAX_IN_FLIGHT: usize = crate::defaults::PIPELINE_DEPTH;
/// Well under a loopback socket's initial receive buffer (128 KiB), so that writing the requests
/// never blocks on a service that is itself blocked writing answers we have not read yet.
const IN_FLIGHT_BYTES: usize = 64 * 1024;
/// Idle connections kept for the next calls (more are closed when given back).
const MAX_IDLE: usize = 4;
/// How often a streaming call hands its caller a tick while it waits.
pub const TICK: Duration = Duration::from_millis(100);

/// What a streaming call hands its caller while it waits for the answer.
#[derive(Debug)]
pub enum Event {
    /// A `{"status": "progress", ...}` message of the job.
    Progress(Value),
    /// Nothing arrived for a [`TICK`].
    Tick,
}

/// What the caller of a streaming call wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Wait for the answer no longer than this (after cancelling the job: its own answer comes
    /// soon, or the connection is dropped then).
    GiveUpAt(Instant),
}

pub struct Client {
    host: String,
    port: u16,
    timeout: Duration,
    /// How long to keep trying to (re)connect; at most `timeout`.
    connect_timeout: Duration,
    /// Sent as `"token"` with every request (services started with a token require it).
    token: Option<String>,
    idle: Mutex<Vec<Conn>>,
    /// Names this client's requests (`<prefix>-<n>`), for `cancel`.
    id_prefix: String,
    ids: AtomicU64,
}

struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    chunk: Box<[u8]>,
    /// The socket timeouts last set (each a syscall): set again only when the call's deadline
    /// comes sooner, so a fast call costs one write and one read.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Client {
    pub fn new(host: &str, port: u16, timeout: Duration, connect_timeout: Duration) -> Self {
        let connect_timeout = connect_timeout.min(timeout);
        Client {
            host: host.to_string(),
            port,
            timeout,
            connect_timeout,
            token: None,
            idle: Mutex::new(Vec::new()),
            id_prefix: random_prefix(),
            ids: AtomicU64::new(0),
        }
    }

    /// A fresh request id, unique to this client (and, practically, among clients).
    pub fn next_id(&self) -> Value {
        Value::String(format!("{}-{}", self.id_prefix, self.ids.fetch_add(1, Relaxed) + 1))
    }

    /// The client sends `token` with every request; an empty one is none.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// `request` as bytes, with the client's token unless the request carries its own.
    pub fn encode(&self, mut request: Value) -> Vec<u8> {
        if let (Some(token), Some(obj)) = (&self.token, request.as_object_mut()) {
            obj.entry("token").or_insert_with(|| Value::String(token.clone()));
        }
        let mut bytes = Vec::new();
        crate::wire::encode::write_value(&mut bytes, &request);
        bytes
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether an idle connection is open (one in use by a call is not counted).
    pub fn is_connected(&self) -> bool {
        !self.idle.lock().is_empty()
    }

    /// Close the idle connections (calls in progress keep theirs until they end).
    pub fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock());
        drop(idle);
    }

    fn addr_text(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Send one request (already serialised JSON) and return the response object.
    pub fn request_bytes(&self, request: &[u8]) -> Result<Value, ClientError> {
        let deadline = Instant::now() + self.timeout;
        self.on_connection(|conn| {
            self.send(conn, request, deadline)?;
            self.read_answer(conn, deadline, None)
        })
    }

    /// How long a call of `request` waits for its answer: the client's timeout, or longer when
    /// the request gives its job a later deadline (`params._timeout_seconds`): then until that
    /// deadline, the interrupt grace and a moment for the answer, so that the job's own answer
    /// (`interrupted`, ...) is read rather than given up on.
    pub fn wait_for(&self, request: &Value) -> Duration {
        let job = crate::wire::protocol::requested_timeout(request).map_or(Duration::ZERO, |t| {
            t + crate::defaults::INTERRUPT_GRACE + crate::defaults::ANSWER_SLACK
        });
        self.timeout.max(job)
    }

    /// Send one request and return the response object, waiting up to `wait` and handing
    /// `on_event` the job's progress messages and a tick every [`TICK`] meanwhile; it may shorten
    /// the wait (see [`Flow`]).
    pub fn request_streaming(
        &self,
        request: &[u8],
        wait: Duration,
        on_event: &mut dyn FnMut(Event) -> Flow,
    ) -> Result<Value, ClientError> {
        let deadline = Instant::now() + wait;
        self.on_connection(|conn| {
            self.send(conn, request, deadline)?;
            self.read_answer(conn, deadline, Some(on_event))
        })
        .map_err(|e| match e {
            ClientError::Timeout { addr, .. } => ClientError::Timeout { addr, after: wait },
            other => other,
        })
    }

    /// Cancel this service's queued or running job(s) with request id `id` (on a connection of
    /// its own, so it is heard while the job's call waits). The `cancel` command's result.
    pub fn cancel(&self, id: &Value) -> Result<Value, ClientError> {
        let mut params = Map::new();
        params.insert("id".into(), id.clone());
        self.request(&command_request(crate::wire::protocol::CANCEL, Value::Object(params)))
    }

    /// Send several requests (each serialised JSON) without waiting for each answer, and return
    /// the answers in order. At most `MAX_IN_FLIGHT` requests and `IN_FLIGHT_BYTES` of them are
    /// unanswered at a time, so neither side can block writing while the other does too; the
    /// timeout bounds the wait for each answer. A connection lost midway is `ConnectionLost`
    /// (nothing is resent: some commands may have run).
    pub fn request_many(&self, requests: &[Vec<u8>]) -> Result<Vec<Value>, ClientError> {
        self.on_connection(|conn| self.exchange_many(conn, requests))
    }

    /// Run `f` on an idle connection (one the server has not closed), or a new one; give it back
    /// afterwards unless the call failed (then the stream position is unknown: it is closed).
    fn on_connection<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, ClientError>) -> Result<T, ClientError> {
        let idle = {
            let mut idle = self.idle.lock();
            loop {
                match idle.pop() {
                    Some(c) if c.is_open() => break Some(c),
                    Some(_) => continue,
                    None => break None,
                }
            }
        };
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.connect(Instant::now() + self.connect_timeout)?,
        };
        let result = f(&mut conn);
        if result.is_ok() {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }

    fn exchange_many(&self, conn: &mut Conn, requests: &[Vec<u8>]) -> Result<Vec<Value>, ClientError> {
        let mut answers = Vec::with_capacity(requests.len());
        let (mut sent, mut in_flight_bytes) = (0, 0);
        let mut batch = Vec::new();
        while answers.len() < requests.len() {
            let deadline = Instant::now() + self.timeout;
            batch.clear();
            while let Some(next) = requests.get(sent) {
                let in_flight = sent - answers.len();
                if in_flight > 0 && (in_flight >= MAX_IN_FLIGHT || in_flight_bytes + next.len() > IN_FLIGHT_BYTES) {
                    break;
                }
                batch.extend_from_slice(next);
                in_flight_bytes += next.len();
                sent += 1;
            }
            let midway = |e| self.midway(e, answers.len(), requests.len());
            if !batch.is_empty() {
                self.send(conn, &batch, deadline).map_err(midway)?;
            }
            let answer = self.read_answer(conn, deadline, None).map_err(midway)?;
            in_flight_bytes -= requests[answers.len()].len();
            answers.push(answer);
        }
        Ok(answers)
    }

    /// Send one request (with the client's token) and return the response object.
    pub fn request(&self, request: &Value) -> Result<Value, ClientError> {
        self.request_bytes(&self.encode(request.clone()))
    }

    /// Write request bytes, within the deadline.
    fn send(&self, conn: &mut Conn, bytes: &[u8], deadline: Instant) -> Result<(), ClientError> {
        conn.bound(Io::Write, deadline).ok_or_else(|| self.timed_out())?;
        conn.stream.write_all(bytes).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => self.timed_out(),
            _ => self.lost(&e.to_string()),
        })
    }

    /// Read the next complete answer. Progress messages before it go to `events` (and are
    /// skipped without one); with `events` the read also wakes every [`TICK`] to hand it a tick.
    fn read_answer(
        &self,
        conn: &mut Conn,
        mut deadline: Instant,
        mut events: Option<&mut dyn FnMut(Event) -> Flow>,
    ) -> Result<Value, ClientError> {
        loop {
            if let Some(frame) = conn.decoder.next_frame() {
                let frame = frame.map_err(|e| ClientError::Protocol {
                    addr: self.addr_text(),
                    detail: e.to_string(),
                })?;
                if !is_progress(&frame) {
                    return Ok(frame);
                }
                if let Some(on_event) = events.as_mut() {
                    deadline = flow(on_event(Event::Progress(frame)), deadline);
                }
                continue;
            }
            let wake = match events {
                Some(_) => deadline.min(Instant::now() + TICK),
                None => deadline,
            };
            conn.bound(Io::Read, wake).ok_or_else(|| self.timed_out())?;
            match conn.stream.read(&mut conn.chunk) {
                Ok(0) => return Err(self.lost("the server closed the connection before answering")),
                Ok(n) => conn.decoder.extend(&conn.chunk[..n]),
                // The socket timeout may be a little longer or shorter than what is left of the
                // call (see Conn::bound): only the deadline decides.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Err(self.timed_out());
                    }
                    if let Some(on_event) = events.as_mut() {
                        deadline = flow(on_event(Event::Tick), deadline);
                    } else {
                        conn.read_timeout = None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.lost(&e.to_string())),
            }
        }
    }

    fn connect(&self, deadline: Instant) -> Result<Conn, ClientError> {
        let started = Instant::now();
        let mut backoff = Backoff::new(BackoffPolicy::CLIENT);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let error = match crate::addr::resolve(&self.host, self.port) {
                Ok(addr) if !remaining.is_zero() => match TcpStream::connect_timeout(&addr, remaining) {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(Conn {
                            stream,
                            decoder: Decoder::new(Limits::default()),
                            chunk: vec![0u8; 64 * 1024].into_boxed_slice(),
                            read_timeout: None,
                            write_timeout: None,
                        });
                    }
                    Err(e) => e.to_string(),
                },
                Ok(_) => "timed out".to_string(),
                Err(e) => e,
            };
            let pause = backoff.next_delay();
            if Instant::now() + pause >= deadline {
                return Err(ClientError::ConnectFailed {
                    addr: self.addr_text(),
                    detail: error,
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(pause);
        }
    }

    fn timed_out(&self) -> ClientError {
        ClientError::Timeout {
            addr: self.addr_text(),
            after: self.timeout,
        }
    }

    /// A batch's lost connection says how far it got.
    fn midway(&self, e: ClientError, answered: usize, total: usize) -> ClientError {
        match e {
            ClientError::ConnectionLost { detail, .. } => {
                self.lost(&format!("{detail}; {answered} of {total} requests were answered"))
            }
            other => other,
        }
    }

    fn lost(&self, detail: &str) -> ClientError {
        ClientError::ConnectionLost {
            addr: self.addr_text(),
            detail: detail.to_string(),
        }
    }
}

/// A `{"status": "progress", ...}` message (sent before the answer to requests that asked).
fn is_progress(frame: &Value) -> bool {
    frame.get("status").and_then(Value::as_str) == Some("progress")
}

fn flow(flow: Flow, deadline: Instant) -> Instant {
    match flow {
        Flow::Continue => deadline,
        Flow::GiveUpAt(at) => deadline.min(at),
    }
}

/// 64 random bits as hex, from the standard library's per-process random hasher keys.
fn random_prefix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// What a response says instead of a `result`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResponseError {
    /// `status: error`. `code` is the response's `error_code`, if it has one (BLD Remote MCP
    /// may leave it out).
    #[error("{}", match code { Some(code) => format!("{message} [{code}]"), None => message.clone() })]
    Command {
        message: String,
        code: Option<String>,
        response: Value,
    },
    /// No `status`: whatever answered is not a blendwire / BLD Remote service.
    #[error("response has no \"status\": {}", excerpt(response, 200))]
    NoStatus { response: Value },
}

/// `{"type": command, "params": params}`.
pub fn command_request(command: &str, params: Value) -> Value {
    Value::Object(Map::from_iter([
        ("type".to_string(), Value::String(command.to_string())),
        ("params".to_string(), params),
    ]))
}

/// A response's `result` (moved out, not copied), or what it says instead.
pub fn outcome(response: Value) -> Result<Value, ResponseError> {
    let text = |key: &str| response.get(key).and_then(Value::as_str).map(str::to_string);
    match response.get("status").and_then(Value::as_str) {
        Some("success") => Ok(match response {
            Value::Object(mut obj) => obj.remove("result").unwrap_or(Value::Null),
            _ => Value::Null,
        }),
        Some("error") => Err(ResponseError::Command {
            message: text("message").unwrap_or_else(|| "command failed".to_string()),
            code: text("error_code"),
            response,
        }),
        _ => Err(ResponseError::NoStatus { response }),
    }
}

/// A socket timeout within this much of what is left of the call is left as it is, so that
/// back-to-back calls need not set it each time (a blocking read or write may end this much
/// before or after the call's deadline; a read that ends early is retried).
const TIMEOUT_SLACK: Duration = Duration::from_millis(20);

fn needs_setting(current: Option<Duration>, left: Duration) -> bool {
    current.is_none_or(|t| t > left + TIMEOUT_SLACK || t + TIMEOUT_SLACK < left)
}

impl Conn {
    /// False if the server closed (or reset) the connection while it sat idle.
    fn is_open(&self) -> bool {
        let mut probe = 0u8;
        // SAFETY: a one-byte peek into a local; MSG_DONTWAIT keeps the socket blocking for others.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&mut probe as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        // 0: EOF; > 0: bytes nobody asked for, the stream is out of step; -1 EAGAIN: open, idle.
        n < 0 && std::io::Error::last_os_error().kind() == ErrorKind::WouldBlock
    }

    /// Make sure a blocking read or write ends by `deadline` (± slack). None once it has passed.
    fn bound(&mut self, io: Io, deadline: Instant) -> Option<()> {
        let left = remaining(deadline)?;
        let (current, set): (_, SetTimeout) = match io {
            Io::Read => (&mut self.read_timeout, TcpStream::set_read_timeout),
            Io::Write => (&mut self.write_timeout, TcpStream::set_write_timeout),
        };
        if needs_setting(*current, left) {
            set(&self.stream, Some(left)).ok()?;
            *current = Some(left);
        }
        Some(())
    }
}

type SetTimeout = fn(&TcpStream, Option<Duration>) -> std::io::Result<()>;

#[derive(Clone, Copy)]
enum Io {
    Read,
    Write,
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn client(token: Option<&str>) -> Client {
        Client::new("127.0.0.1", 1, Duration::from_secs(1), Duration::from_secs(1))
            .with_token(token.map(str::to_string))
    }

    #[test]
    fn the_token_is_added_unless_the_request_has_one() {
        let req = command_request("get_scene_info", json!({}));
        assert_eq!(
            client(Some("s3")).encode(req.clone()),
            br#"{"type":"get_scene_info","params":{},"token":"s3"}"#
        );
        assert_eq!(client(Some("")).encode(req.clone()), serde_json::to_vec(&req).unwrap());
        let own = json!({"type": "x", "token": "mine"});
        assert_eq!(
            client(Some("s3")).encode(own.clone()),
            serde_json::to_vec(&own).unwrap()
        );
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome(json!({"status": "success", "result": [1]})), Ok(json!([1])));
        assert_eq!(outcome(json!({"status": "success"})), Ok(Value::Null));
        let failed = json!({"status": "error", "message": "no Cube", "error_code": "not_found"});
        let e = outcome(failed.clone()).unwrap_err();
        assert_eq!(e.to_string(), "no Cube [not_found]");
        assert_eq!(
            e,
            ResponseError::Command {
                message: "no Cube".into(),
                code: Some("not_found".into()),
                response: failed
            }
        );
        assert_eq!(
            outcome(json!({"status": "error"})).unwrap_err().to_string(),
            "command failed"
        );
        let odd = outcome(json!({"result": "x".repeat(500)})).unwrap_err();
        assert!(matches!(odd, ResponseError::NoStatus { .. }));
        assert_eq!(
            odd.to_string().chars().count(),
            "response has no \"status\": ".len() + 200
        );
    }
}
