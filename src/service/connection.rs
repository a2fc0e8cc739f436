//! One client's bytes ↔ frames: reads with the size limit and the read timeout, answers buffered
//! and written together within the write timeout.

use super::Ctx;
use crate::bridge::progress::Progress;
use crate::bridge::JobResult;
use crate::error::{JobError, RequestError};
use crate::shutdown::Shutdown;
use crate::wire::framing::Decoder;
use crate::wire::protocol;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How one read ended.
pub(super) enum Read {
    /// Bytes arrived (or the client half-closed: see `at_eof`).
    Data,
    /// The client is gone, or the service stops.
    Closed,
    /// The deadline passed first.
    TimedOut,
}

/// How waiting for a main-thread job ended.
pub(super) enum Waited {
    Done(JobResult),
    TimedOut,
    ClientGone,
    Shutdown,
}

pub(super) struct Connection {
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
    pub(super) ctx: Arc<Ctx>,
    pub(super) shutdown: Shutdown,
    /// For the close line in the log (every way out of the task ends in Drop).
    peer: SocketAddr,
    /// A frame taken to tell the dialect apart, handed out again by `next_frame`.
    pushed_back: Option<Result<Value, RequestError>>,
    /// A NUL byte has arrived (Blender Lab's request terminator).
    saw_nul: bool,
}

impl Connection {
    pub(super) fn new(stream: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>, shutdown: Shutdown) -> Self {
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
            pushed_back: None,
            saw_nul: false,
        }
    }

    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client has half-closed: no more requests will come.
    pub(super) fn at_eof(&self) -> bool {
        self.eof
    }

    /// The next whole request that has arrived, if any (decoded under the size and depth limits).
    pub(super) fn next_frame(&mut self) -> Option<Result<Value, RequestError>> {
        self.pushed_back.take().or_else(|| self.decoder.next_frame())
    }

    /// Hand `frame` out again as the next one.
    pub(super) fn push_back(&mut self, frame: Result<Value, RequestError>) {
        self.pushed_back = Some(frame);
    }

    pub(super) fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Whether a NUL byte has arrived on this connection.
    pub(super) fn saw_nul(&self) -> bool {
        self.saw_nul
    }

    /// Read more of the client's bytes, up to `until` (`None`: no deadline).
    pub(super) async fn read_some(&mut self, until: Option<Instant>) -> Read {
        tokio::select! {
            biased;
            _ = self.shutdown.signalled() => Read::Closed,
            read = self.rd.read(&mut self.chunk) => match read {
                Ok(0) => {
                    self.eof = true;
                    Read::Data
                }
                Ok(n) => {
                    self.saw_nul |= self.chunk[..n].contains(&0);
                    self.decoder.extend(&self.chunk[..n]);
                    Read::Data
                }
                Err(_) => Read::Closed,
            },
            _ = sleep_until_opt(until) => Read::TimedOut,
        }
    }

    /// Wait until `until` (reading and ignoring what the client sends). False if the client left
    /// or the service stops meanwhile.
    pub(super) async fn idle_until(&mut self, until: Instant) -> bool {
        loop {
            if Instant::now() >= until {
                return true;
            }
            let can_read = self.decoder.buffered() <= self.ctx.limits.max_frame_bytes && !self.eof;
            tokio::select! {
                biased;
                _ = self.shutdown.signalled() => return false,
                read = self.rd.read(&mut self.chunk), if can_read => match read {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => self.decoder.extend(&self.chunk[..n]),
                },
                _ = tokio::time::sleep_until(until.into()) => return true,
            }
        }
    }

    /// Read more of the client's bytes (nothing is pending). False: close the connection.
    pub(super) async fn read_more(&mut self) -> bool {
        self.partial_since = match (self.decoder.mid_frame(), self.partial_since) {
            (true, None) => Some(Instant::now()),
            (true, since) => since,
            (false, _) => None,
        };
        let stalled_at = self.partial_since.map(|t| t + self.ctx.read_timeout);
        match self.read_some(stalled_at).await {
            Read::Data => true,
            Read::Closed => false,
            Read::TimedOut => {
                let e = RequestError::Incomplete {
                    after: self.ctx.read_timeout,
                };
                self.encode(&protocol::request_error(&e));
                self.flush().await;
                false
            }
        }
    }

    /// Wait for the main thread's answer, reading ahead meanwhile so that a reset is noticed.
    /// `progress`: the job's progress and request id, when its client asked for progress messages:
    /// they are sent as the job reports, at most one per `progress::MIN_INTERVAL`, and what is
    /// left goes out just before the answer.
    pub(super) async fn await_reply(
        &mut self,
        rx: &mut oneshot::Receiver<JobResult>,
        deadline: Instant,
        progress: Option<(&Progress, Option<&Value>)>,
    ) -> Waited {
        let timer = tokio::time::sleep_until(deadline.into());
        tokio::pin!(timer);
        let mut next_progress = Instant::now();
        loop {
            let can_read = self.decoder.buffered() <= self.ctx.limits.max_frame_bytes;
            let event = tokio::select! {
                biased;
                reply = &mut *rx => Event::Reply(reply.unwrap_or(Err(JobError::Cancelled))),
                _ = &mut timer => return Waited::TimedOut,
                _ = self.shutdown.signalled() => return Waited::Shutdown,
                _ = progress_due(progress.map(|p| p.0), next_progress) => Event::Progress,
                // A client that closes while its request waits has given up on it (BLD Remote
                // clients never half-close), so its job is not run.
                read = self.rd.read(&mut self.chunk), if can_read => match read {
                    Ok(0) | Err(_) => return Waited::ClientGone,
                    Ok(n) => Event::Read(n),
                },
            };
            match event {
                Event::Read(n) => self.decoder.extend(&self.chunk[..n]),
                Event::Reply(result) => {
                    // The last progress (output printed just before the job returned) comes first.
                    if let Some(msg) = progress.and_then(|(p, id)| p.take(id)) {
                        self.encode(&msg);
                    }
                    return Waited::Done(result);
                }
                Event::Progress => {
                    if let Some(msg) = progress.and_then(|(p, id)| p.take(id)) {
                        self.encode(&msg);
                        if !self.flush().await {
                            return Waited::ClientGone;
                        }
                    }
                    next_progress = Instant::now() + crate::bridge::progress::MIN_INTERVAL;
                }
            }
        }
    }

    /// Serialise one answer into the output buffer (counting errors by code).
    pub(super) fn encode(&mut self, response: &Value) {
        self.count_error(response);
        crate::wire::encode::write_value(&mut self.out, response);
    }

    fn count_error(&self, response: &Value) {
        if response.get("status").and_then(Value::as_str) == Some("error") {
            let code = response.get("error_code").and_then(Value::as_str).unwrap_or("error");
            self.ctx.metrics.errors.inc(code);
        }
    }

    /// Serialise Blender Lab's answer: ASCII JSON (`\u` escapes, as its add-on writes) and the
    /// NUL that ends it.
    pub(super) fn encode_lab(&mut self, response: &Value) {
        self.count_error(response);
        let mut utf8 = Vec::new();
        crate::wire::encode::write_value(&mut utf8, response);
        ascii_escape(&utf8, &mut self.out);
        self.out.push(0);
    }

    /// Write the buffered answers. False if the client cannot take them (then close).
    pub(super) async fn flush(&mut self) -> bool {
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

    /// Tell the client nothing more comes (after the answer that ends a broken stream).
    pub(super) async fn close_write(&mut self) {
        let _ = self.wr.shutdown().await;
    }
}

/// Compact JSON text → the same text with every non-ASCII character as `\uXXXX` (UTF-16, so
/// surrogate pairs beyond the BMP). Non-ASCII can only occur inside strings, where the escape
/// means the same character.
fn ascii_escape(json: &[u8], out: &mut Vec<u8>) {
    let Ok(text) = std::str::from_utf8(json) else {
        out.extend_from_slice(json);
        return;
    };
    out.reserve(json.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c as u8);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
            }
        }
    }
}

/// What woke a connection waiting for its job.
enum Event {
    Reply(JobResult),
    Read(usize),
    Progress,
}

/// Resolves when the job has reported something and `not_before` has passed (never without
/// progress). A report made meanwhile is kept by `Progress` and seen then.
async fn progress_due(progress: Option<&Progress>, not_before: Instant) {
    match progress {
        Some(p) => {
            tokio::time::sleep_until(not_before.into()).await;
            p.changed().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        log::debug!("connection from {} closed", self.peer);
        self.ctx.metrics.connections_open.add(-1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lab_answers_are_ascii() {
        let mut out = Vec::new();
        super::ascii_escape("{\"a\":\"é🦀\"}".as_bytes(), &mut out);
        assert_eq!(std::str::from_utf8(&out).unwrap(), r#"{"a":"\u00e9\ud83e\udd80"}"#);
        let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(back["a"], "é🦀");
    }
}
