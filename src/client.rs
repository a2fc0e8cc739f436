//! A blocking client with one persistent connection, for scripts outside Blender.
//!
//! Calls are serialised on one connection (responses come back in order). Before a request is
//! sent, a connection the server has closed meanwhile is detected (a non-blocking peek sees EOF)
//! and replaced, with backoff and jitter, until the call's timeout; a connection lost after the
//! request went out is reported as `ConnectionLost`, never retried, since the command may have run.

use crate::backoff::{Backoff, BackoffPolicy};
use crate::error::ClientError;
use crate::framing::{Decoder, Limits};
use parking_lot::Mutex;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub struct Client {
    host: String,
    port: u16,
    timeout: Duration,
    /// How long to keep trying to (re)connect; at most `timeout`.
    connect_timeout: Duration,
    conn: Mutex<Option<Conn>>,
}

struct Conn {
    stream: TcpStream,
    decoder: Decoder,
}

impl Client {
    pub fn new(host: &str, port: u16, timeout: Duration, connect_timeout: Duration) -> Self {
        let connect_timeout = connect_timeout.min(timeout);
        Client { host: host.to_string(), port, timeout, connect_timeout, conn: Mutex::new(None) }
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

    pub fn is_connected(&self) -> bool {
        self.conn.lock().is_some()
    }

    pub fn close(&self) {
        self.conn.lock().take();
    }

    fn addr_text(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Send one request (already serialised JSON) and return the response object.
    pub fn request_bytes(&self, request: &[u8]) -> Result<Value, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut slot = self.conn.lock();
        if slot.as_ref().is_some_and(|c| !c.is_open()) {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(self.connect(deadline.min(Instant::now() + self.connect_timeout))?);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(self.lost("no connection"));
        };
        let result = self.exchange(conn, request, deadline);
        if result.is_err() {
            // Whatever happened, the stream position is unknown now.
            *slot = None;
        }
        result
    }

    pub fn request(&self, request: &Value) -> Result<Value, ClientError> {
        let bytes = serde_json::to_vec(request)
            .map_err(|e| ClientError::Protocol { addr: self.addr_text(), detail: e.to_string() })?;
        self.request_bytes(&bytes)
    }

    fn exchange(&self, conn: &mut Conn, request: &[u8], deadline: Instant) -> Result<Value, ClientError> {
        let remaining = || {
            deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(|| self.timed_out())
        };
        conn.stream.set_write_timeout(Some(remaining()?)).ok();
        conn.stream.write_all(request).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => self.timed_out(),
            _ => self.lost(&e.to_string()),
        })?;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(frame) = conn.decoder.next_frame() {
                return frame.map_err(|e| ClientError::Protocol { addr: self.addr_text(), detail: e.to_string() });
            }
            conn.stream.set_read_timeout(Some(remaining()?)).ok();
            match conn.stream.read(&mut chunk) {
                Ok(0) => return Err(self.lost("the server closed the connection before answering")),
                Ok(n) => conn.decoder.extend(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.timed_out())
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
                        return Ok(Conn { stream, decoder: Decoder::new(Limits::default()) });
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
        ClientError::Timeout { addr: self.addr_text(), after: self.timeout }
    }

    fn lost(&self, detail: &str) -> ClientError {
        ClientError::ConnectionLost { addr: self.addr_text(), detail: detail.to_string() }
    }
}

impl Conn {
    /// False if the server closed (or reset) the connection while it sat idle.
    fn is_open(&self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let open = match self.stream.peek(&mut probe) {
            Ok(0) => false,
            // Bytes nobody asked for: the stream is out of step.
            Ok(_) => false,
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        };
        open && self.stream.set_nonblocking(false).is_ok()
    }
}
