//! The MCP add-on listener's first step: which protocol a connection speaks, told apart by the
//! framing of its first request. A JSON value followed by a NUL byte is Blender Lab's (one request
//! per connection); a JSON value followed by anything else (or by nothing, unless it can only be
//! Blender Lab's) is blender-mcp's, served by the same pipeline as the BLD Remote service.

use super::connection::{Connection, Read};
use super::{lab, pipeline};
use crate::defaults::LAB_READ_TIMEOUT;
use crate::error::RequestError;
use crate::wire::protocol::Dialect;
use serde_json::Value;
use std::time::Instant;

/// What the first request's framing says.
enum Sniffed {
    BlenderMcp,
    /// Blender Lab's request: the JSON before the NUL (or why it is not JSON).
    BlenderLab(Result<Value, RequestError>),
    /// Blender Lab's client sent part of a request and then nothing for too long.
    TimedOut,
    Closed,
}

/// Serve one connection of the MCP add-on listener.
pub(super) async fn serve(mut conn: Connection) {
    if conn.shutdown.is_signalled() {
        return;
    }
    match sniff(&mut conn).await {
        Sniffed::BlenderMcp => {
            conn.ctx.metrics_addon(Dialect::BlenderMcp);
            pipeline::serve(conn, Some(Dialect::BlenderMcp)).await
        }
        Sniffed::BlenderLab(request) => {
            conn.ctx.metrics_addon(Dialect::BlenderLab);
            lab::serve(conn, request).await
        }
        Sniffed::TimedOut => lab::timed_out(conn).await,
        Sniffed::Closed => {}
    }
}

/// A request without a NUL after it that only Blender Lab sends (`"type": "execute"` with its
/// code and no params): wait for the NUL rather than answer it as blender-mcp's.
fn only_lab_sends(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    !o.contains_key("params")
        && (o.get("type").and_then(Value::as_str) == Some("execute")
            || o.contains_key("strict_json")
            || o.contains_key("code"))
}

async fn sniff(conn: &mut Connection) -> Sniffed {
    let mut first: Option<Result<Value, RequestError>> = None;
    // Blender Lab's limit on a request that has begun to arrive (a connection that sends nothing
    // may be a blender-mcp client that keeps its connection open between calls).
    let mut started: Option<Instant> = None;
    let limit = conn.ctx.read_timeout.min(LAB_READ_TIMEOUT);
    loop {
        if first.is_none() {
            first = conn.next_frame();
        }
        match first.take() {
            Some(Ok(v)) => match conn.decoder().next_byte() {
                Some(0) => return Sniffed::BlenderLab(Ok(v)),
                None if only_lab_sends(&v) && !conn.at_eof() => first = Some(Ok(v)),
                _ => {
                    conn.push_back(Ok(v));
                    return Sniffed::BlenderMcp;
                }
            },
            // Not JSON, and a NUL came: Blender Lab's (its add-on answers the parse error).
            Some(Err(e)) if !e.is_fatal() && conn.saw_nul() => return Sniffed::BlenderLab(Err(e)),
            Some(Err(e)) => {
                conn.push_back(Err(e));
                return Sniffed::BlenderMcp;
            }
            // A NUL inside a request that has not closed: Blender Lab cuts the request there.
            None if conn.saw_nul() => {
                return Sniffed::BlenderLab(Err(RequestError::InvalidJson(
                    "the request ends (NUL byte) before its JSON value does".into(),
                )))
            }
            None if conn.at_eof() => return Sniffed::BlenderMcp,
            None => {}
        }
        if !conn.decoder().unconsumed().is_empty() || first.is_some() {
            started.get_or_insert_with(Instant::now);
        }
        match conn.read_some(started.map(|t| t + limit)).await {
            Read::Data => {}
            Read::Closed => return Sniffed::Closed,
            Read::TimedOut => return Sniffed::TimedOut,
        }
    }
}
