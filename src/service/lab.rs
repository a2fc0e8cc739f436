//! A Blender Lab connection: its one request (`{"type": "execute", "code": ..., "strict_json":
//! bool}`, NUL-terminated), run as a main-thread job of the `blender_lab` dispatcher with the
//! service's deadline, interrupt and cancel; a deferred answer (`check_is_finished` left in the
//! code's namespace) is asked for again with poll jobs until it is there, the client leaves or an
//! hour passes. One NUL-terminated answer, then the connection closes.

use super::connection::Connection;
use super::job::{self, Job, Shape};
use super::route;
use crate::bridge::pending::{self, Asked, Asker, Polled};
use crate::bridge::Payload;
use crate::defaults::{DEFAULT_POLL_INTERVAL, DEFAULT_POLL_LIMIT, LAB_MAX_REQUEST_BYTES};
use crate::error::RequestError;
use crate::wire::protocol::{self, Dialect};
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// Blender Lab's answer to a client that did not send its request whole in time.
pub const TIMED_OUT: &str = "Client timed out";

fn error(message: impl Into<String>) -> Value {
    json!({"status": "error", "message": message.into()})
}

/// Answer `request` (the JSON before the NUL), then close.
pub(super) async fn serve(mut conn: Connection, request: Result<Value, RequestError>) {
    conn.ctx.metrics.requests.inc();
    let answer = match request {
        Ok(v) => answer(&mut conn, v).await,
        Err(e) => Some(error(format!("Invalid request: {e}"))),
    };
    if let Some(answer) = answer {
        conn.encode_lab(&answer);
        if conn.flush().await {
            conn.close_write().await;
        }
    }
}

/// A client that sent part of a request and then nothing within the limit.
pub(super) async fn timed_out(mut conn: Connection) {
    conn.encode_lab(&error(TIMED_OUT));
    if conn.flush().await {
        conn.close_write().await;
    }
}

/// The answer, or None when the client left or the service stops (nothing is sent then).
async fn answer(conn: &mut Connection, request: Value) -> Option<Value> {
    let max = conn.ctx.limits.max_frame_bytes.min(LAB_MAX_REQUEST_BYTES);
    if conn.decoder().last_frame_len() > max {
        return Some(error(format!(
            "Request too large: {} bytes, the limit is {max} bytes",
            conn.decoder().last_frame_len()
        )));
    }
    let lab = Some(Dialect::BlenderLab);
    if let Err(e) = route::authorize(&conn.ctx, &request) {
        return Some(route::answered(&conn.ctx, conn.peer(), lab, &request, e, false));
    }
    // Only for the audit line of a request `check` refuses (it consumes the request).
    let refused = conn.ctx.audit.as_ref().map(|_| request.clone());
    let params = match check(request) {
        Ok(p) => p,
        Err(answer) => {
            return Some(match refused {
                Some(request) => route::answered(&conn.ctx, conn.peer(), lab, &request, answer, true),
                None => answer,
            })
        }
    };
    let request_id = params.get("id").cloned();
    let started = Instant::now();
    let job = match submit(conn, "execute", params, request_id.clone()).await {
        Ok(job) => job,
        Err(refused) => return Some(refused),
    };
    let answer = job.answer_or_orphan(conn, drop_pending(conn)).await?;
    // Deferred: the code left check_is_finished(); ask again each poll interval.
    let mut asker = LabAsker {
        conn,
        request_id,
        started,
    };
    match pending::poll(&mut asker, answer, DEFAULT_POLL_INTERVAL).await {
        Polled::Answer(answer) | Polled::Failed(answer) => Some(answer),
        Polled::Gone => None,
        Polled::GaveUp => Some(error(format!(
            "check_is_finished did not return a result within {} s",
            DEFAULT_POLL_LIMIT.as_secs()
        ))),
    }
}

/// A deferred answer, asked for on the client's connection (`bridge::pending`); a refused poll
/// job's answer (`busy`, ...) is the client's answer.
struct LabAsker<'a> {
    conn: &'a mut Connection,
    request_id: Option<Value>,
    started: Instant,
}

impl Asker for LabAsker<'_> {
    type Error = Value;

    async fn wait(&mut self, interval: Duration) -> bool {
        self.conn.idle_until(Instant::now() + interval).await
    }

    fn past_limit(&self) -> bool {
        self.started.elapsed() >= DEFAULT_POLL_LIMIT
    }

    async fn ask(&mut self, params: Map<String, Value>) -> Asked<Value> {
        match submit(self.conn, "poll", params, self.request_id.clone()).await {
            Ok(job) => match job.answer_or_orphan(self.conn, drop_pending(self.conn)).await {
                Some(answer) => Asked::Answer(answer),
                None => Asked::Gone,
            },
            Err(refused) => Asked::Failed(refused),
        }
    }

    /// The main thread drops the deferred code; nobody waits for that job's answer.
    async fn give_up(&mut self, params: Map<String, Value>) {
        if let Some(handle) = params.get("handle") {
            drop_pending(self.conn)(handle.clone()).await;
        }
    }
}

/// What drops a deferred answer whose client left while the job that made it pending ran (its
/// poll loop, which would drop it, never starts): a cancelling poll job, answered to nobody.
fn drop_pending(
    conn: &Connection,
) -> impl FnOnce(Value) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    let (ctx, peer) = (conn.ctx.clone(), conn.peer());
    move |handle| {
        Box::pin(async move {
            let payload = Payload::Addon {
                dialect: Dialect::BlenderLab,
                name: "poll".into(),
                params: pending::poll_params(&handle, true),
            };
            let wait = ctx.default_timeout;
            if let Ok(job) = job::submit(&ctx, payload, wait, peer, None, false, Shape::Whole).await {
                job.detach();
            }
        })
    }
}

/// Blender Lab's request rules: `type` must be `execute`, `code` a string, `strict_json` a bool;
/// other fields are ignored (but `id`, blendwire's name for the job, is kept for `cancel`).
fn check(request: Value) -> Result<Map<String, Value>, Value> {
    let Value::Object(mut obj) = request else {
        return Err(error("Invalid request: expected a JSON object"));
    };
    match obj.get("type") {
        Some(Value::String(t)) if t == "execute" => {}
        Some(Value::String(t)) => return Err(error(format!("Unknown request type: {t}"))),
        Some(other) => return Err(error(format!("Unknown request type: {other}"))),
        None => return Err(error("Missing request type")),
    }
    let code = match obj.remove("code") {
        Some(Value::String(code)) => code,
        _ => return Err(error("Missing or invalid 'code': it must be a string of Python code")),
    };
    let strict_json = match obj.get("strict_json") {
        Some(Value::Bool(b)) => *b,
        _ => {
            return Err(error(
                "'strict_json' must be true or false; the tool that sent this request is buggy",
            ))
        }
    };
    let mut params = Map::new();
    params.insert("code".into(), Value::String(code));
    params.insert("strict_json".into(), Value::Bool(strict_json));
    match obj.remove("id").map(protocol::check_id) {
        Some(Ok(id)) => {
            params.insert("id".into(), id);
        }
        Some(Err(e)) => return Err(error(e.to_string())),
        None => {}
    }
    Ok(params)
}

/// Queue one main-thread job of this request; a refusal (`busy`, ...) is answered at once.
async fn submit(
    conn: &Connection,
    op: &str,
    params: Map<String, Value>,
    request_id: Option<Value>,
) -> Result<Job, Value> {
    let payload = Payload::Addon {
        dialect: Dialect::BlenderLab,
        name: op.into(),
        params,
    };
    let wait: Duration = conn.ctx.default_timeout;
    job::submit(&conn.ctx, payload, wait, conn.peer(), request_id, false, Shape::Whole)
        .await
        .map_err(|e| protocol::job_error(&e))
}
