//! A cr8_engine command as a main-thread job: run, asked for again while its answer is pending
//! (`bridge::pending`), counted and answered (`command_completed` / `command_failed`).

use super::commands::Command;
use super::reply::Reply;
use super::Shared;
use crate::bridge::pending::{self, pending_handle, Asked, Asker, Polled};
use crate::bridge::{JobResult, RouterOp};
use crate::error::JobError;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub(super) async fn run_command(shared: Arc<Shared>, mut cmd: Command) {
    log::debug!(
        "command {}.{} (message_id {})",
        cmd.addon_id,
        cmd.command,
        cmd.message_id
    );
    let params = cmd.take_job_params();
    let mut result = shared
        .main_thread(RouterOp::Command, params, shared.config.command_timeout)
        .await;
    // A handler that returned an object with check_is_finished(): poll it, never blocking.
    if let Some(answer) = result.as_ref().ok().filter(|v| pending_handle(v).is_some()) {
        result = poll(&shared, answer.clone()).await;
    }
    let reply = match result {
        Ok(data) => {
            shared.metrics.commands_completed.inc();
            Reply::completed(&cmd.message_id, &cmd.route, data)
        }
        Err(e) => {
            shared.metrics.commands_failed.inc();
            let code = match &e {
                JobError::Handler { code, .. } => code.as_str(),
                JobError::NoDispatcher => "NO_HANDLERS",
                JobError::Unserializable(_) => "UNSERIALIZABLE_RESULT",
                JobError::Busy { .. } => "BUSY",
                // The engine knows TIMEOUT; the message says it was interrupted.
                JobError::Timeout { .. }
                | JobError::Expired
                | JobError::Interrupted { .. }
                | JobError::StillRunning { .. } => "TIMEOUT",
                JobError::Cancelled | JobError::CancelledQueued { .. } | JobError::CancelledRunning { .. } => {
                    "CANCELLED"
                }
            };
            if e.never_ran() {
                // Nothing ran: the engine's repeat of this message_id may run it.
                shared.recent.lock().forget(&cmd.key());
            }
            Reply::failed(&cmd.message_id, &cmd.route, code, &e.to_string())
        }
    };
    shared.recent.lock().answered(&cmd.key(), &reply);
    shared.queue_reply(reply);
}

/// A command's pending answer, asked for on the router's task (`bridge::pending`).
struct RouterAsker<'a> {
    shared: &'a Shared,
    give_up_at: Instant,
}

impl Asker for RouterAsker<'_> {
    type Error = JobError;

    async fn wait(&mut self, interval: Duration) -> bool {
        tokio::time::sleep(interval).await;
        true
    }

    fn past_limit(&self) -> bool {
        Instant::now() >= self.give_up_at
    }

    async fn ask(&mut self, params: Map<String, Value>) -> Asked<JobError> {
        match self
            .shared
            .main_thread(RouterOp::Poll, params, self.shared.config.command_timeout)
            .await
        {
            Ok(v) => Asked::Answer(v),
            Err(e) => Asked::Failed(e),
        }
    }

    async fn give_up(&mut self, params: Map<String, Value>) {
        let _ = self
            .shared
            .main_thread(RouterOp::Poll, params, self.shared.config.auth_timeout)
            .await;
    }
}

async fn poll(shared: &Shared, answer: Value) -> JobResult {
    let mut asker = RouterAsker {
        shared,
        give_up_at: Instant::now() + shared.config.poll_limit,
    };
    match pending::poll(&mut asker, answer, shared.config.poll_interval).await {
        Polled::Answer(v) => Ok(v),
        Polled::Failed(e) => Err(e),
        // Its task never leaves while polling.
        Polled::Gone | Polled::GaveUp => Err(JobError::Handler {
            code: "TIMEOUT".into(),
            message: format!(
                "the command did not finish within {} s",
                shared.config.poll_limit.as_secs()
            ),
        }),
    }
}
