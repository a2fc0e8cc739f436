//! Forwarding one tool call to Blender: a request on a connection of the client (on tokio's
//! blocking pool), the agent's cancellation cancelling the Blender job, the job's progress as
//! `notifications/progress`, one retry for read-only commands, errors worded for the agent.

use super::{BlenderTools, Failure, Rq};
use crate::client::{self, Event, ResponseError, Verdict};
use crate::error::ClientError;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// May a command be sent again after the connection dropped mid-call?
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Retry {
    /// Read-only: the first attempt changed nothing, so once more is safe.
    Once,
    /// It may have run (and changed the scene or stored data): report, never resend.
    Never,
}

/// What a call has reported as MCP progress so far.
#[derive(Default)]
struct Reported {
    count: u64,
    percent: f64,
}

/// What an `execute_code` answer's code printed (its stdout; older services put it in `result`).
pub(super) fn printed(result: &Value) -> &str {
    result
        .get("output")
        .and_then(|o| o.get("stdout"))
        .or_else(|| result.get("result"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl BlenderTools {
    /// One request/response on a connection of the client, on the blocking pool. While it waits,
    /// the MCP request's cancellation cancels the Blender job (by the request's `id`), and the
    /// job's progress messages become `notifications/progress` when the agent gave a token.
    async fn exchange(&self, bytes: Arc<Vec<u8>>, id: &Value, rq: Rq<'_>) -> Result<Value, ClientError> {
        let client = Arc::clone(&self.client);
        // The tool's timeout_seconds is checked against this server's --timeout: no longer wait.
        let wait = self.timeout;
        let given_up = Arc::new(AtomicBool::new(false));
        let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
        let call = {
            let given_up = Arc::clone(&given_up);
            let id = id.clone();
            tokio::task::spawn_blocking(move || {
                client.request_cancellable(&bytes, &id, wait, &mut |event| {
                    if let Event::Progress(msg) = event {
                        let _ = progress_tx.send(msg);
                    }
                    match given_up.load(Ordering::Relaxed) {
                        true => Verdict::Cancel,
                        false => Verdict::Wait,
                    }
                })
            })
        };
        tokio::pin!(call);
        let token = rq.and_then(|rq| rq.meta.get_progress_token());
        let mut reported = Reported::default();
        let cancelled = async {
            match rq {
                Some(rq) => rq.ct.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(cancelled);
        let mut cancel_asked = false;
        let joined = loop {
            tokio::select! {
                joined = &mut call => break joined,
                Some(msg) = progress_rx.recv() => self.forward_progress(rq, token.as_ref(), &mut reported, &msg).await,
                _ = &mut cancelled, if !cancel_asked => {
                    cancel_asked = true;
                    given_up.store(true, Ordering::Relaxed);
                    // The call's thread cancels the job (by its id) at its next event, a tick at most.
                    eprintln!("blendwire mcp: the agent cancelled a call; cancelling its Blender job");
                }
            }
        };
        // Progress that came just before the answer still goes first.
        while let Ok(msg) = progress_rx.try_recv() {
            self.forward_progress(rq, token.as_ref(), &mut reported, &msg).await;
        }
        match joined {
            Ok(result) => result,
            // Only on a panic in the client, or runtime shutdown: the stream state is unknown.
            Err(e) => Err(ClientError::ConnectionLost {
                addr: self.addr.clone(),
                detail: e.to_string(),
            }),
        }
    }

    /// A job's progress message as `notifications/progress`: the fraction as a percentage when the
    /// job reports one (else a count of updates, so it always rises), its message and new output
    /// as the text.
    async fn forward_progress(&self, rq: Rq<'_>, token: Option<&ProgressToken>, reported: &mut Reported, msg: &Value) {
        let (Some(rq), Some(token)) = (rq, token) else { return };
        reported.count += 1;
        let mut note = match msg.get("fraction").and_then(Value::as_f64) {
            Some(f) => {
                reported.percent = reported.percent.max(f * 100.0);
                ProgressNotificationParam::new(token.clone(), reported.percent).with_total(100.0)
            }
            None if reported.percent > 0.0 => {
                ProgressNotificationParam::new(token.clone(), reported.percent).with_total(100.0)
            }
            None => ProgressNotificationParam::new(token.clone(), reported.count as f64),
        };
        let text: Vec<&str> = ["message", "output"]
            .iter()
            .filter_map(|k| msg.get(*k).and_then(Value::as_str))
            .map(|t| t.trim_end())
            .filter(|t| !t.is_empty())
            .collect();
        if !text.is_empty() {
            note = note.with_message(text.join("\n"));
        }
        let _ = rq.peer.notify_progress(note).await;
    }

    /// Send `{"type": command, "params": params}`; the `result` of a success response.
    pub(super) async fn command(
        &self,
        command: &str,
        params: Value,
        retry: Retry,
        rq: Rq<'_>,
    ) -> Result<Value, Failure> {
        self.command_coded(command, params, retry, rq).await.map_err(|(f, _)| f)
    }

    /// As [`Self::command`], with the service's `error_code` when it answered with an error.
    pub(super) async fn command_coded(
        &self,
        command: &str,
        params: Value,
        retry: Retry,
        rq: Rq<'_>,
    ) -> Result<Value, (Failure, Option<String>)> {
        let mut request = client::command_request(command, params);
        let id = self.client.next_id();
        request["id"] = id.clone();
        if rq.is_some_and(|rq| rq.meta.get_progress_token().is_some()) {
            request["progress"] = Value::Bool(true);
        }
        let bytes = Arc::new(self.client.encode(request));
        let mut outcome = self.exchange(Arc::clone(&bytes), &id, rq).await;
        let mut retried = false;
        if retry == Retry::Once && matches!(outcome, Err(ClientError::ConnectionLost { .. })) {
            // The Client reconnects (with backoff, up to the connect timeout) on the next request.
            eprintln!(
                "blendwire mcp: connection to {} lost during {command}; retrying once (read-only)",
                self.addr
            );
            retried = true;
            outcome = self.exchange(bytes, &id, rq).await;
        }
        self.note_reachability(&outcome);
        let response = outcome.map_err(|e| (Failure(self.explain(command, e, retry, retried)), None))?;
        client::outcome(response).map_err(|e| match e {
            ResponseError::NoStatus { response } => (
                Failure(format!(
                    "unexpected response from {} (no \"status\"): {}",
                    self.addr,
                    crate::wire::protocol::excerpt(&response, 300)
                )),
                None,
            ),
            ResponseError::Command { ref code, .. } => {
                let code = code.clone();
                (Failure(e.to_string()), code)
            }
        })
    }

    fn note_reachability(&self, outcome: &Result<Value, ClientError>) {
        let now = !matches!(outcome, Err(ClientError::ConnectFailed { .. }));
        if self.reachable.swap(now as u8, Ordering::Relaxed) != now as u8 {
            if now {
                eprintln!("blendwire mcp: connected to Blender at {}", self.addr);
            } else {
                eprintln!("blendwire mcp: Blender at {} is not reachable", self.addr);
            }
        }
    }

    fn explain(&self, command: &str, e: ClientError, retry: Retry, retried: bool) -> String {
        match e {
            ClientError::ConnectFailed { .. } => format!(
                "Blender is not reachable: {e}. This MCP server keeps running: call the tool again once Blender is up."
            ),
            ClientError::ConnectionLost { .. } if retry == Retry::Never => format!(
                "{e}. Blender may have restarted or crashed; {command} was NOT retried because it may have \
                 changed Blender's state: check it (e.g. get_scene_info) before running it again."
            ),
            ClientError::ConnectionLost { .. } if retried => format!("{e} (also after one retry)"),
            ClientError::Timeout { .. } => format!(
                "{e}; the connection was reset. Blender may be frozen, or the command takes longer: \
                 execute_code accepts timeout_seconds (this MCP server waits at most {} s per call, see --timeout).",
                self.timeout.as_secs()
            ),
            _ => e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::{Blenders, McpConfig};
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn connect_failure_names_the_address_and_how_to_start_blender() {
        let tools = BlenderTools::new(McpConfig {
            blenders: Blenders::One {
                host: "127.0.0.1".into(),
                port: 1,
            },
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(50),
            token: None,
            audit: None,
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let Err(Failure(message)) = rt.block_on(tools.command("get_scene_info", json!({}), Retry::Once, None)) else {
            panic!("port 1 answered");
        };
        assert!(
            message.contains("127.0.0.1:1") && message.contains("blendwire serve --port 1"),
            "{message}"
        );
    }
}
