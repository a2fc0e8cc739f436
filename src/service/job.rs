//! One request queued for Blender's main thread, and its answer: the job's deadline, the wait
//! past it (`bridge::wait`), progress, and how the handler's result becomes the answer.

use super::connection::{Connection, Waited};
use super::Ctx;
use crate::bridge::progress::Progress;
use crate::bridge::running::Origin;
use crate::bridge::wait::{AnswerWait, Next};
use crate::bridge::{JobResult, Payload};
use crate::defaults::INTERRUPT_GRACE;
use crate::error::JobError;
use crate::journal::{outcome_of, Audit, Checkpoint, JobRecord, Listener, Protocol};
use crate::wire::protocol;
use crate::wire::protocol::Dialect;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What to do after handling one request.
pub(super) enum Step {
    Reply(Value),
    /// Nothing after this one.
    End(End),
}

/// How a connection ends.
pub(super) enum End {
    /// `server_shutdown`: answer, then stop the service and the pump.
    ReplyThenShutdown(Value),
    /// Answer a request that leaves the stream unusable (too large, ...), then close.
    ReplyThenClose(Value),
    /// The client is gone or the service stops: just close.
    Close,
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
    /// The request's record (shared with the main thread, which adds the checkpoint).
    record: Arc<JobRecord>,
    /// Where the job's end line goes, until it is written (None: no audit log, or a job that is
    /// not a request of its own: Blender Lab's polls).
    audit: Option<Arc<Audit>>,
}

impl Drop for Job {
    /// A job dropped before its answer (the client left, the service stops) still ends its line.
    fn drop(&mut self) {
        self.audited("unanswered");
    }
}

impl Job {
    /// A job of no client waiting on `rx`, for the pipeline's tests.
    #[cfg(test)]
    pub(super) fn waiting_on(rx: oneshot::Receiver<JobResult>) -> Job {
        Job {
            id: 0,
            rx,
            deadline: Instant::now(),
            command: "echo".into(),
            shape: Shape::Wrapped,
            wait: Duration::ZERO,
            request_id: None,
            progress: None,
            record: Arc::new(JobRecord::new(Listener::Service, Protocol::BldRemote, "echo")),
            audit: None,
        }
    }

    /// The job's end line, once.
    fn audited(&mut self, outcome: &str) {
        if let Some(audit) = self.audit.take() {
            audit.end(&self.record, outcome);
        }
    }

    fn answer(&mut self, result: JobResult) -> Step {
        let mut answer = match result {
            Ok(result) if self.shape == Shape::Whole => result,
            Ok(result) => with_id(protocol::success(result), &self.request_id),
            Err(e) => with_id(protocol::job_error(&e), &self.request_id),
        };
        with_checkpoint(&mut answer, &self.record);
        self.audited(outcome_of(&answer));
        Step::Reply(answer)
    }

    /// The answer if the main thread is done with the job (or dropped it).
    pub(super) fn try_answer(&mut self) -> Option<Step> {
        let result = match self.rx.try_recv() {
            Ok(result) => result,
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Err(oneshot::error::TryRecvError::Closed) => Err(JobError::Cancelled),
        };
        Some(self.answer(result))
    }

    /// The answer, as the client gets it, for a job whose answer may be a pending handle
    /// (`bridge::pending`); None if the client left or the service stops. If the client leaves
    /// first, the answer is still awaited (up to the deadline, on a task of its own) and a pending
    /// handle in it is given to `orphaned`, so that the work it stands for is dropped rather than
    /// kept by the main thread for a client that is gone.
    pub(super) async fn answer_or_orphan<F>(
        mut self,
        conn: &mut Connection,
        orphaned: impl FnOnce(Value) -> F + Send + 'static,
    ) -> Option<Value>
    where
        F: std::future::Future<Output = ()> + Send,
    {
        match self.finish(conn).await {
            Step::Reply(v) => return Some(v),
            Step::End(_) => {}
        }
        let (_, closed) = oneshot::channel();
        let rx = std::mem::replace(&mut self.rx, closed);
        let until = self.deadline + INTERRUPT_GRACE;
        tokio::spawn(async move {
            if let Ok(Ok(Ok(answer))) = tokio::time::timeout_at(until.into(), rx).await {
                if let Some(handle) = crate::bridge::pending::pending_handle(&answer) {
                    orphaned(handle).await;
                }
            }
        });
        None
    }

    /// Give up on the job: it still runs if it was queued, its answer is dropped. A job whose
    /// waiter is gone is not run, so the answer is awaited (up to the job's deadline) on a task
    /// of its own.
    pub(super) fn detach(mut self) {
        let (_, closed) = oneshot::channel();
        let rx = std::mem::replace(&mut self.rx, closed);
        let until = self.deadline + INTERRUPT_GRACE;
        tokio::spawn(async move {
            let _ = tokio::time::timeout_at(until.into(), rx).await;
        });
    }

    /// Wait for the answer; past the deadline, by the rule of `bridge::wait`.
    pub(super) async fn finish(&mut self, conn: &mut Connection) -> Step {
        let progress = self.progress.as_deref().map(|p| (p, self.request_id.as_ref()));
        let mut wait = AnswerWait::new(self.id, self.deadline);
        loop {
            match conn.await_reply(&mut self.rx, wait.until(), progress).await {
                Waited::Done(result) => return self.answer(result),
                Waited::ClientGone | Waited::Shutdown => return Step::End(End::Close),
                Waited::TimedOut => match wait.timed_out(&conn.ctx.bridge.main, &mut self.rx) {
                    Next::Grace(_) => {}
                    Next::Answer(result) => return self.answer(result),
                    Next::Missed(missed) => {
                        let e = missed.error(self.command.clone(), self.wait);
                        self.audited(e.wire_code());
                        return Step::Reply(with_id(protocol::job_error(&e), &self.request_id));
                    }
                },
            }
        }
    }
}

/// Queue a main-thread job whose deadline is `wait` from now; `progress`: the client asked for
/// progress messages. A job that may change data has its audit start line written first (the
/// wait is for the writer thread, asynchronously): a job that crashes Blender is in the log.
pub(super) async fn submit(
    ctx: &Ctx,
    payload: Payload,
    wait: Duration,
    peer: std::net::SocketAddr,
    request_id: Option<Value>,
    progress: bool,
    shape: Shape,
) -> Result<Job, JobError> {
    let record = Arc::new(record_of(ctx, &payload, peer, &request_id));
    let audit = ctx.audit.clone().filter(|_| audited(&payload));
    if let Some(audit) = audit.as_ref().filter(|_| record.changes()) {
        // Not written (a full disk): the job still runs; the writer has said why in the log.
        let _ = audit.start(&record).await;
    }
    let deadline = Instant::now() + wait;
    let command = payload.label();
    let progress = progress.then(|| Arc::new(Progress::default()));
    let origin = Origin {
        client: Some(peer.to_string()),
        key: request_id.as_ref().map(protocol::id_key),
        progress: progress.clone(),
        record: Some(record.clone()),
    };
    let ticket = match ctx.bridge.submit_job(payload, deadline, origin) {
        Ok(ticket) => ticket,
        Err(e) => {
            if let Some(audit) = &audit {
                audit.end(&record, e.wire_code());
            }
            return Err(e);
        }
    };
    Ok(Job {
        id: ticket.id,
        rx: ticket.rx,
        deadline,
        command,
        shape,
        wait,
        request_id,
        progress,
        record,
        audit,
    })
}

/// Blender Lab's polls ask an earlier `execute` again (every 100 ms for a deferred answer): that
/// request's lines say it all.
fn audited(payload: &Payload) -> bool {
    !matches!(payload, Payload::Addon { dialect: Dialect::BlenderLab, name, .. } if name == "poll")
}

/// The listener and protocol of a request of this service: the command service's (None) or the
/// MCP add-on listener's dialect.
pub(super) fn kind(dialect: Option<Dialect>) -> (Listener, Protocol) {
    match dialect {
        None => (Listener::Service, Protocol::BldRemote),
        Some(Dialect::BlenderMcp) => (Listener::Addon, Protocol::BlenderMcp),
        Some(Dialect::BlenderLab) => (Listener::Addon, Protocol::BlenderLab),
    }
}

/// The label of an authorized request's token, when the service has one.
pub(super) fn token_label(ctx: &Ctx) -> Option<String> {
    ctx.token.as_ref().map(|_| TOKEN_LABEL.to_string())
}

/// The record of a request of this service's listeners (the command service, `--mcp-addon-port`).
fn record_of(ctx: &Ctx, payload: &Payload, peer: std::net::SocketAddr, request_id: &Option<Value>) -> JobRecord {
    let (listener, dialect, name, params) = match payload {
        Payload::Command { name, params } => (Listener::Service, Protocol::BldRemote, name, params),
        Payload::Addon {
            dialect: Dialect::BlenderMcp,
            name,
            params,
        } => (Listener::Addon, Protocol::BlenderMcp, name, params),
        Payload::Addon {
            dialect: Dialect::BlenderLab,
            name,
            params,
        } => (Listener::Addon, Protocol::BlenderLab, name, params),
        // The router does not queue through the service.
        Payload::Router { .. } => return JobRecord::new(Listener::Router, Protocol::Cr8, payload.label()),
    };
    JobRecord::new(listener, dialect, name.clone())
        .peer(Some(peer.to_string()))
        .token_label(token_label(ctx))
        .request_id(request_id.clone())
        .code_of(params)
}

/// The label of the service's one token in records (per-token labels come with roles).
const TOKEN_LABEL: &str = "token";

/// The answer to a job that may change data names the checkpoint kept before it
/// (`"checkpoint": ID`), or why none could be kept (`"checkpoint_error"`): an agent can take the
/// job back with `restore_checkpoint`. Other answers are unchanged.
fn with_checkpoint(answer: &mut Value, record: &JobRecord) {
    // A pending marker (Blender Lab's deferred answer) must stay exactly that, or it is not seen
    // as one; its poll jobs carry the final answer.
    if crate::bridge::pending::pending_handle(answer).is_some() {
        return;
    }
    let (Some(obj), Some(checkpoint)) = (answer.as_object_mut(), record.checkpoint()) else {
        return;
    };
    match checkpoint {
        Checkpoint::Kept { id } => {
            obj.insert("checkpoint".into(), Value::String(id.clone()));
        }
        Checkpoint::Failed { error } => {
            obj.insert(
                "checkpoint_error".into(),
                Value::String(format!("no checkpoint was kept before this job: {error}")),
            );
        }
        Checkpoint::Off => {}
    }
}

/// An answer to a request that had an `id` carries it too.
pub(super) fn with_id(mut answer: Value, id: &Option<Value>) -> Value {
    if let (Some(id), Some(obj)) = (id, answer.as_object_mut()) {
        obj.insert("id".into(), id.clone());
    }
    answer
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;
    use crate::bridge::pending::PENDING_KEY;
    use crate::journal::Checkpoint;
    use serde_json::json;

    #[test]
    fn a_changing_jobs_answer_names_its_checkpoint_but_a_pending_marker_stays_as_is() {
        let record = JobRecord::new(Listener::Addon, Protocol::BlenderLab, "execute");
        record.set_checkpoint(Checkpoint::Kept { id: "c1".into() });
        let mut answer = json!({"status": "ok"});
        with_checkpoint(&mut answer, &record);
        assert_eq!(answer, json!({"status": "ok", "checkpoint": "c1"}));
        let mut pending = json!({PENDING_KEY: 1});
        with_checkpoint(&mut pending, &record);
        assert_eq!(pending, json!({PENDING_KEY: 1}));
    }
}
