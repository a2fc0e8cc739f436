//! A connection's requests, answered in request order. Up to `PIPELINE_DEPTH` of them are queued
//! for the main thread at once (a client that pipelines keeps the main thread busy instead of
//! waiting a round trip per call); answers that are ready together go out in one write. While a
//! request waits for the main thread the connection keeps reading, so a client that resets is
//! noticed (its queued jobs are then skipped) and further pipelined requests are buffered (up to
//! the size limit).

use super::connection::{Connection, Waited};
use super::Ctx;
use crate::error::{JobError, RequestError};
use crate::progress::Progress;
use crate::protocol::{self, parse_request, Dialect, Request, SERVER_SHUTDOWN};
use crate::queue::{JobResult, Origin, Payload};
use crate::shutdown::StopReason;
use crate::supervisor::GRACE;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Requests of one connection queued for the main thread at once (pipelining clients); their
/// answers still go out in request order.
pub const PIPELINE_DEPTH: usize = 32;

/// What to do after handling one request.
enum Step {
    Reply(Value),
    /// Nothing after this one.
    End(End),
}

/// How a connection ends.
enum End {
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

/// How a handler's result becomes the answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// `{"status": "success", "result": <result>}` (the command service's commands).
    Wrapped,
    /// The result is the whole answer (the legacy `{"code"}`/`{"message"}` forms, blender-mcp's
    /// and Blender Lab's handlers).
    Whole,
}

pub(super) struct Job {
    /// The bridge's id of the job: is it running (then it is interrupted at the deadline)?
    id: u64,
    rx: oneshot::Receiver<JobResult>,
    deadline: Instant,
    command: String,
    /// How the handler's result becomes the answer.
    shape: Shape,
    wait: Duration,
    /// The request's `id`, echoed in its answer and progress messages.
    request_id: Option<Value>,
    /// Where the job reports progress, when the client asked for it.
    progress: Option<Arc<Progress>>,
}

impl Job {
    fn answer(&self, result: JobResult) -> Step {
        Step::Reply(match result {
            Ok(result) if self.shape == Shape::Whole => result,
            Ok(result) => with_id(protocol::success(result), &self.request_id),
            Err(e) => with_id(protocol::job_error(&e), &self.request_id),
        })
    }

    /// The answer if the main thread is done with the job (or dropped it).
    fn try_answer(&mut self) -> Option<Step> {
        let result = match self.rx.try_recv() {
            Ok(result) => result,
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Err(oneshot::error::TryRecvError::Closed) => Err(JobError::Cancelled),
        };
        Some(self.answer(result))
    }

    /// The answer, as the client gets it; None if the client left or the service stops.
    pub(super) async fn answer_of(mut self, conn: &mut Connection) -> Option<Value> {
        match self.finish(conn).await {
            Step::Reply(v) => Some(v),
            Step::End(_) => None,
        }
    }

    /// Give up on the job: it still runs if it was queued, its answer is dropped. A job whose
    /// waiter is gone is not run, so the answer is awaited (up to the job's deadline) on a task
    /// of its own.
    pub(super) fn detach(self) {
        let rx = self.rx;
        let until = self.deadline + GRACE;
        tokio::spawn(async move {
            let _ = tokio::time::timeout_at(until.into(), rx).await;
        });
    }

    /// Wait for the answer. At the deadline a job still queued is answered `timeout` (it will not
    /// run); one that runs is interrupted then (`crate::supervisor`), and its own answer, normally
    /// `interrupted`, is waited for up to `GRACE` more.
    async fn finish(&mut self, conn: &mut Connection) -> Step {
        let progress = self.progress.as_deref().map(|p| (p, self.request_id.as_ref()));
        let mut waited = conn.await_reply(&mut self.rx, self.deadline, progress).await;
        if matches!(waited, Waited::TimedOut) && conn.ctx.bridge.main.is_running(self.id) {
            waited = match conn.await_reply(&mut self.rx, self.deadline + GRACE, progress).await {
                Waited::TimedOut => {
                    let e = JobError::StillRunning {
                        command: self.command.clone(),
                        after: self.wait,
                        grace: GRACE,
                    };
                    return Step::Reply(with_id(protocol::job_error(&e), &self.request_id));
                }
                other => other,
            };
        }
        // A job that ended right at its deadline may have answered meanwhile: its answer wins.
        if matches!(waited, Waited::TimedOut) {
            if let Ok(result) = self.rx.try_recv() {
                waited = Waited::Done(result);
            }
        }
        match waited {
            Waited::Done(result) => self.answer(result),
            Waited::TimedOut => {
                let e = JobError::Timeout {
                    command: self.command.clone(),
                    after: self.wait,
                };
                Step::Reply(with_id(protocol::job_error(&e), &self.request_id))
            }
            Waited::ClientGone | Waited::Shutdown => Step::End(End::Close),
        }
    }
}

#[derive(Default)]
struct Pipeline {
    pending: VecDeque<Pending>,
    /// After server_shutdown or a fatal framing error no further request is taken.
    last_taken: bool,
    /// The MCP add-on listener's blender-mcp connections; None: the BLD Remote service.
    dialect: Option<Dialect>,
}

impl Pipeline {
    /// Decode the requests that have arrived and queue them, up to the pipeline depth. Only the
    /// first one when the main-thread queue is filling up: pipelining must not turn into `busy`
    /// answers that one-at-a-time handling would not have caused.
    fn take_requests(&mut self, conn: &mut Connection) {
        while !self.last_taken && self.pending.len() < PIPELINE_DEPTH {
            let bridge = &conn.ctx.bridge;
            if !self.pending.is_empty() && bridge.len() >= bridge.capacity() / 4 {
                return;
            }
            let Some(frame) = conn.next_frame() else { return };
            let p = match frame {
                Ok(value) => prepare(&conn.ctx, value, conn.peer(), self.dialect),
                Err(e) if e.is_fatal() => Pending::Ready(Step::End(End::ReplyThenClose(protocol::request_error(&e)))),
                Err(e) => Pending::Ready(Step::Reply(protocol::request_error(&e))),
            };
            self.last_taken = matches!(p, Pending::Ready(Step::End(_)));
            self.pending.push_back(p);
        }
    }

    /// The next answer if it is there already (answered at once, or the main thread is done).
    fn next_ready(&mut self) -> Option<Step> {
        match self.pending.pop_front()? {
            Pending::Ready(step) => Some(step),
            Pending::Waiting(mut job) => {
                let step = job.try_answer();
                if step.is_none() {
                    self.pending.push_front(Pending::Waiting(job));
                }
                step
            }
        }
    }
}

/// Serve one connection until it closes, the client leaves or the service stops. `dialect`:
/// `Some(BlenderMcp)` on the MCP add-on listener (every command goes to its dispatcher, whose
/// answer is the whole response), None on the BLD Remote service.
pub(super) async fn serve(mut conn: Connection, dialect: Option<Dialect>) {
    if conn.shutdown.is_signalled() {
        return;
    }
    let mut pipeline = Pipeline {
        dialect,
        ..Pipeline::default()
    };
    loop {
        pipeline.take_requests(&mut conn);
        let Some(front) = pipeline.pending.pop_front() else {
            if conn.at_eof() || pipeline.last_taken || !conn.read_more().await {
                return;
            }
            continue;
        };
        let mut step = match front {
            Pending::Ready(step) => step,
            Pending::Waiting(mut job) => job.finish(&mut conn).await,
        };
        // Answers already computed behind this one go out in the same write.
        let end = loop {
            match step {
                Step::Reply(v) => {
                    conn.encode(&v);
                    match pipeline.next_ready() {
                        Some(next) => step = next,
                        None => break None,
                    }
                }
                Step::End(end) => break Some(end),
            }
        };
        // A last answer (shutdown, or an error that ends the stream) goes in the same write.
        if let Some(End::ReplyThenShutdown(v) | End::ReplyThenClose(v)) = &end {
            conn.encode(v);
        }
        let written = conn.flush().await;
        match end {
            None if written => {}
            None | Some(End::Close) => return,
            Some(End::ReplyThenShutdown(_)) => {
                log::info!("server_shutdown received: stopping the service");
                conn.ctx.bridge.request_stop(StopReason::Shutdown);
                conn.shutdown.signal();
                return;
            }
            Some(End::ReplyThenClose(_)) => {
                if written {
                    conn.close_write().await;
                }
                return;
            }
        }
    }
}

/// Validate a request; answer it at once or queue it for the main thread.
fn prepare(ctx: &Ctx, value: Value, peer: std::net::SocketAddr, dialect: Option<Dialect>) -> Pending {
    ctx.metrics.requests.inc();
    if let Err(e) = authorize(ctx, &value) {
        return Pending::Ready(Step::Reply(e));
    }
    let request = match parse_request(value) {
        Ok(r) => r,
        Err(RequestError::UnknownCommand { name, .. }) => return Pending::Ready(unknown(ctx, name)),
        Err(e) => return Pending::Ready(Step::Reply(protocol::request_error(&e))),
    };
    if request.command == SERVER_SHUTDOWN {
        return Pending::Ready(Step::End(End::ReplyThenShutdown(protocol::success(
            json!({"message": "Server shutdown initiated"}),
        ))));
    }
    if request.command == protocol::CANCEL {
        return Pending::Ready(Step::Reply(cancel(ctx, &request)));
    }
    if dialect.is_none() && !request.is_legacy() && !ctx.commands.contains(&request.command) {
        return Pending::Ready(unknown(ctx, request.command));
    }
    // The status is the core's own data: answered here, so it never waits for a busy main thread.
    if let Some(status) = ctx.status.as_ref().filter(|_| request.command == protocol::GET_STATUS) {
        return Pending::Ready(Step::Reply(protocol::success((status.0)())));
    }
    let Request {
        command,
        params,
        timeout,
        id: request_id,
        progress,
    } = request;
    let (payload, shape) = match dialect {
        // blender-mcp's handler answers the whole response, as its add-on's execute_command does.
        Some(dialect) => (
            Payload::Addon {
                dialect,
                name: command.clone(),
                params,
            },
            Shape::Whole,
        ),
        None => (
            Payload::Command {
                name: command.clone(),
                params,
            },
            if command == protocol::LEGACY {
                Shape::Whole
            } else {
                Shape::Wrapped
            },
        ),
    };
    let wait = timeout.unwrap_or(ctx.default_timeout);
    match submit(ctx, payload, wait, peer, request_id.clone(), progress, shape) {
        Ok(job) => Pending::Waiting(job),
        Err(e) => Pending::Ready(Step::Reply(with_id(protocol::job_error(&e), &request_id))),
    }
}

/// With a token, a request must carry it: the `unauthorized` answer otherwise.
pub(super) fn authorize(ctx: &Ctx, request: &Value) -> Result<(), Value> {
    if let Some(token) = &ctx.token {
        let given = request.get("token").and_then(Value::as_str).unwrap_or("");
        if !crate::auth::constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Err(protocol::request_error(&RequestError::Unauthorized));
        }
    }
    Ok(())
}

/// Queue a main-thread job whose deadline is `wait` from now; `progress`: the client asked for
/// progress messages.
pub(super) fn submit(
    ctx: &Ctx,
    payload: Payload,
    wait: Duration,
    peer: std::net::SocketAddr,
    request_id: Option<Value>,
    progress: bool,
    shape: Shape,
) -> Result<Job, JobError> {
    let deadline = Instant::now() + wait;
    let command = payload.label();
    let progress = progress.then(|| Arc::new(Progress::default()));
    let origin = Origin {
        client: Some(peer.to_string()),
        key: request_id.as_ref().map(protocol::id_key),
        progress: progress.clone(),
    };
    let ticket = ctx.bridge.submit_job(payload, deadline, origin)?;
    Ok(Job {
        id: ticket.id,
        rx: ticket.rx,
        deadline,
        command,
        shape,
        wait,
        request_id,
        progress,
    })
}

/// `{"type": "cancel", "params": {"id": ...}}`: drop the queued jobs with that id and interrupt the
/// running one; answered at once. Naming a job that is not there (done already) is no error.
fn cancel(ctx: &Ctx, request: &Request) -> Value {
    let id = match request.params.get("id").cloned().map(protocol::check_id) {
        Some(Ok(id)) => id,
        Some(Err(e)) => return protocol::request_error(&e),
        None => {
            let e = RequestError::Invalid(
                "cancel needs the id of the job to cancel: {\"type\": \"cancel\", \"params\": {\"id\": \"render-1\"}} \
                 (the \"id\" the job's request was sent with)"
                    .into(),
            );
            return protocol::request_error(&e);
        }
    };
    let found = ctx.bridge.cancel(&protocol::id_key(&id));
    let result = json!({
        "id": id,
        "cancelled": found.queued > 0 || found.running,
        "queued": found.queued,
        "running": found.running,
    });
    with_id(protocol::success(result), &request.id)
}

/// An answer to a request that had an `id` carries it too.
fn with_id(mut answer: Value, id: &Option<Value>) -> Value {
    if let (Some(id), Some(obj)) = (id, answer.as_object_mut()) {
        obj.insert("id".into(), id.clone());
    }
    answer
}

fn unknown(ctx: &Ctx, name: String) -> Step {
    let e = RequestError::UnknownCommand {
        name,
        known: ctx.known.clone(),
    };
    Step::Reply(protocol::request_error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_leave_in_order_and_a_waiting_job_holds_back_the_rest() {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            id: 0,
            rx,
            deadline: Instant::now(),
            command: "echo".into(),
            shape: Shape::Wrapped,
            wait: Duration::ZERO,
            request_id: None,
            progress: None,
        };
        let mut p = Pipeline::default();
        p.pending.push_back(Pending::Waiting(job));
        p.pending.push_back(Pending::Ready(Step::Reply(json!(2))));
        assert!(p.next_ready().is_none(), "the job is not done");
        assert_eq!(p.pending.len(), 2, "a job not done stays at the front");
        tx.send(Ok(json!(1))).unwrap();
        assert!(matches!(p.next_ready(), Some(Step::Reply(v)) if v["result"] == 1));
        assert!(matches!(p.next_ready(), Some(Step::Reply(v)) if v == 2));
        assert!(p.next_ready().is_none());
    }
}
