//! A connection's requests, answered in request order. Up to `PIPELINE_DEPTH` of them are queued
//! for the main thread at once (a client that pipelines keeps the main thread busy instead of
//! waiting a round trip per call); answers that are ready together go out in one write. While a
//! request waits for the main thread the connection keeps reading, so a client that resets is
//! noticed (its queued jobs are then skipped) and further pipelined requests are buffered (up to
//! the size limit).

use super::connection::Connection;
use super::job::{End, Job, Step};
use super::route::prepare;
use crate::defaults::PIPELINE_DEPTH;
use crate::shutdown::StopReason;
use crate::wire::protocol::{self, Dialect};
use std::collections::VecDeque;

/// A request of this connection that has not been answered yet.
enum Pending {
    Ready(Step),
    /// Queued for the main thread.
    Waiting(Job),
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
    async fn take_requests(&mut self, conn: &mut Connection) {
        while !self.last_taken && self.pending.len() < PIPELINE_DEPTH {
            let bridge = &conn.ctx.bridge;
            if !self.pending.is_empty() && bridge.len() >= bridge.capacity() / 4 {
                return;
            }
            let Some(frame) = conn.next_frame() else { return };
            let p = match frame {
                Ok(value) => match prepare(&conn.ctx, value, conn.peer(), self.dialect).await {
                    Ok(job) => Pending::Waiting(job),
                    Err(step) => Pending::Ready(step),
                },
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
        pipeline.take_requests(&mut conn).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::sync::oneshot;

    #[test]
    fn answers_leave_in_order_and_a_waiting_job_holds_back_the_rest() {
        let (tx, rx) = oneshot::channel();
        let job = Job::waiting_on(rx);
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
