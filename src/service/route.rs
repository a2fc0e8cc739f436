//! What a request is for: the ones the service answers itself (`server_shutdown`, `cancel`,
//! `get_status`, an unknown command, a missing token), and the rest made into main-thread jobs.

use super::job::{self, submit, with_id, End, Job, Shape, Step};
use super::Ctx;
use crate::bridge::Payload;
use crate::error::RequestError;
use crate::journal::{outcome_of, JobRecord};
use crate::wire::protocol::{self, parse_request, Dialect, Request, SERVER_SHUTDOWN};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Validate a request; its answer at once (`Err`), or its job queued for the main thread (a job
/// that may change data after its audit start line is written).
pub(super) async fn prepare(
    ctx: &Ctx,
    value: Value,
    peer: std::net::SocketAddr,
    dialect: Option<Dialect>,
) -> Result<Job, Step> {
    ctx.metrics.requests.inc();
    let at_once = AtOnce { ctx, peer, dialect };
    if let Err(e) = authorize(ctx, &value) {
        let (command, id, params) = at_once.fields_of(&value);
        return Err(at_once.line(Step::Reply(e), &command, id, params, false));
    }
    // Only for the audit line of a request that does not parse (the parse consumes it).
    let kind = ctx
        .audit
        .as_ref()
        .and_then(|_| value.get("type")?.as_str().map(str::to_string));
    let request = match parse_request(value) {
        Ok(r) => r,
        Err(RequestError::UnknownCommand { name, .. }) => {
            let command = name.clone();
            return Err(at_once.line(unknown(ctx, name), &command, None, None, true));
        }
        Err(e) => {
            let step = Step::Reply(protocol::request_error(&e));
            return Err(at_once.line(step, kind.as_deref().unwrap_or(""), None, None, true));
        }
    };
    let answered = |step: Step| at_once.line(step, &request.command, request.id.as_ref(), Some(&request.params), true);
    if request.command == SERVER_SHUTDOWN {
        return Err(answered(Step::End(End::ReplyThenShutdown(protocol::success(
            json!({"message": "Server shutdown initiated"}),
        )))));
    }
    if request.command == protocol::CANCEL {
        return Err(answered(Step::Reply(cancel(ctx, &request))));
    }
    if dialect.is_none() && !request.is_legacy() && !ctx.commands.contains(&request.command) {
        let step = unknown(ctx, request.command.clone());
        return Err(answered(step));
    }
    // The status is the core's own data: answered here, so it never waits for a busy main thread.
    if let Some(status) = ctx.status.as_ref().filter(|_| request.command == protocol::GET_STATUS) {
        return Err(answered(Step::Reply(protocol::success((status.0)()))));
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
    match submit(ctx, payload, wait, peer, request_id.clone(), progress, shape).await {
        Ok(job) => Ok(job),
        Err(e) => Err(Step::Reply(with_id(protocol::job_error(&e), &request_id))),
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

fn unknown(ctx: &Ctx, name: String) -> Step {
    let e = RequestError::UnknownCommand {
        name,
        known: ctx.known.clone(),
    };
    Step::Reply(protocol::request_error(&e))
}

/// The audit line of `request`, answered `answer` without a job (Blender Lab's refusals).
pub(super) fn answered(
    ctx: &Ctx,
    peer: std::net::SocketAddr,
    dialect: Option<Dialect>,
    request: &Value,
    answer: Value,
    authorized: bool,
) -> Value {
    let at_once = AtOnce { ctx, peer, dialect };
    let (command, id, params) = at_once.fields_of(request);
    match at_once.line(Step::Reply(answer), &command, id, params, authorized) {
        Step::Reply(v) => v,
        Step::End(_) => Value::Null,
    }
}

/// The audit line of a request answered here, without a job (one `end` line, not waited for).
struct AtOnce<'a> {
    ctx: &'a Ctx,
    peer: std::net::SocketAddr,
    dialect: Option<Dialect>,
}

impl AtOnce<'_> {
    /// The command, id and params of a request not parsed yet (an unauthorized one); Blender
    /// Lab's request carries its code at the top.
    fn fields_of<'v>(&self, value: &'v Value) -> (String, Option<&'v Value>, Option<&'v Map<String, Value>>) {
        let command = value.get("type").and_then(Value::as_str).unwrap_or("").to_string();
        let params = match self.dialect {
            Some(Dialect::BlenderLab) => value.as_object(),
            _ => value.get("params").and_then(Value::as_object),
        };
        (command, value.get("id"), params)
    }

    /// Write the line of `step` (when the log is on); `authorized`: the request carried the
    /// service's token (then its label is on the line), or there is none.
    fn line(
        &self,
        step: Step,
        command: &str,
        id: Option<&Value>,
        params: Option<&Map<String, Value>>,
        authorized: bool,
    ) -> Step {
        let Some(audit) = &self.ctx.audit else { return step };
        let (listener, protocol) = job::kind(self.dialect);
        let mut record = JobRecord::new(listener, protocol, command)
            .peer(Some(self.peer.to_string()))
            .request_id(id.cloned());
        if authorized {
            record = record.token_label(job::token_label(self.ctx));
        }
        if let Some(params) = params {
            record = record.code_of(params);
        }
        let outcome = match &step {
            Step::Reply(v) | Step::End(End::ReplyThenShutdown(v) | End::ReplyThenClose(v)) => outcome_of(v),
            Step::End(End::Close) => "unanswered",
        };
        audit.answered(&Arc::new(record), outcome);
        step
    }
}
