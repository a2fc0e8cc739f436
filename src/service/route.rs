//! What a request is for: the ones the service answers itself (`server_shutdown`, `cancel`,
//! `get_status`, an unknown command, a missing token), and the rest made into main-thread jobs.

use super::job::{submit, with_id, End, Job, Shape, Step};
use super::Ctx;
use crate::bridge::Payload;
use crate::error::RequestError;
use crate::wire::protocol::{self, parse_request, Dialect, Request, SERVER_SHUTDOWN};
use serde_json::{json, Value};

/// Validate a request; its answer at once (`Err`), or its job queued for the main thread.
pub(super) fn prepare(
    ctx: &Ctx,
    value: Value,
    peer: std::net::SocketAddr,
    dialect: Option<Dialect>,
) -> Result<Job, Step> {
    ctx.metrics.requests.inc();
    if let Err(e) = authorize(ctx, &value) {
        return Err(Step::Reply(e));
    }
    let request = match parse_request(value) {
        Ok(r) => r,
        Err(RequestError::UnknownCommand { name, .. }) => return Err(unknown(ctx, name)),
        Err(e) => return Err(Step::Reply(protocol::request_error(&e))),
    };
    if request.command == SERVER_SHUTDOWN {
        return Err(Step::End(End::ReplyThenShutdown(protocol::success(
            json!({"message": "Server shutdown initiated"}),
        ))));
    }
    if request.command == protocol::CANCEL {
        return Err(Step::Reply(cancel(ctx, &request)));
    }
    if dialect.is_none() && !request.is_legacy() && !ctx.commands.contains(&request.command) {
        return Err(unknown(ctx, request.command));
    }
    // The status is the core's own data: answered here, so it never waits for a busy main thread.
    if let Some(status) = ctx.status.as_ref().filter(|_| request.command == protocol::GET_STATUS) {
        return Err(Step::Reply(protocol::success((status.0)())));
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
        Ok(job) => Ok(job),
        Err(e) => Err(Step::Reply(with_id(protocol::job_error(&e), &request_id))),
    }
}

/// With a token, a request must carry it: the `unauthorized` answer otherwise.
pub(super) fn authorize(ctx: &Ctx, request: &Value) -> Result<(), Value> {
    if let Some(token) = &ctx.token {
        let given = request.get("token").and_then(Value::as_str).unwrap_or("");
        if !crate::addr::constant_time_eq(given.as_bytes(), token.as_bytes()) {
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
