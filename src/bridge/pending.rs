//! Answers that come later: a main-thread handler whose work goes on after it returned (an object
//! with `check_is_finished()`) answers [`PENDING_KEY`]; its caller asks again with poll jobs until
//! the answer is something else, the waiter leaves or the limit passes. The router's commands and
//! Blender Lab's deferred answers both go through [`poll`].

use serde_json::{Map, Value};
use std::time::Duration;

/// The marker a main-thread handler answers with when its work goes on after it returned (an
/// object with `check_is_finished()`): `{PENDING_KEY: handle}`. The I/O side then asks again
/// with a poll job (`{"handle": ..., "cancel": false}`) until the answer is something else; the
/// router's commands and Blender Lab's deferred answers work this way.
pub const PENDING_KEY: &str = "__blendwire_pending__";

/// The handle of a pending answer, if `v` is one.
pub fn pending_handle(v: &Value) -> Option<Value> {
    v.as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get(PENDING_KEY))
        .cloned()
}

/// The params of a poll job for `handle` (`cancel`: drop it, the waiter gives up).
pub fn poll_params(handle: &Value, cancel: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("handle".into(), handle.clone());
    m.insert("cancel".into(), Value::Bool(cancel));
    m
}

/// How one caller waits and asks: the router on its own task, Blender Lab on the client's
/// connection (which also notices the client leaving).
pub(crate) trait Asker {
    type Error;
    /// Wait `interval` before asking again; false: the waiter is gone.
    async fn wait(&mut self, interval: Duration) -> bool;
    /// The poll limit has passed.
    fn past_limit(&self) -> bool;
    /// Run a poll job with `params` and await its answer.
    async fn ask(&mut self, params: Map<String, Value>) -> Asked<Self::Error>;
    /// The waiter gives up: the main thread drops the pending work (`params` say cancel).
    async fn give_up(&mut self, params: Map<String, Value>);
}

/// What a poll job came to.
pub enum Asked<E> {
    Answer(Value),
    Failed(E),
    /// The waiter left (or the service stops) while it ran.
    Gone,
}

/// How asking for a pending answer ended.
pub enum Polled<E> {
    Answer(Value),
    Failed(E),
    Gone,
    /// The poll limit passed first.
    GaveUp,
}

/// Ask for `answer` again every `interval` while it is pending: the one loop of every caller.
pub(crate) async fn poll<A: Asker>(asker: &mut A, mut answer: Value, interval: Duration) -> Polled<A::Error> {
    while let Some(handle) = pending_handle(&answer) {
        let waited = asker.wait(interval).await;
        if asker.past_limit() || !waited {
            asker.give_up(poll_params(&handle, true)).await;
            return if asker.past_limit() {
                Polled::GaveUp
            } else {
                Polled::Gone
            };
        }
        answer = match asker.ask(poll_params(&handle, false)).await {
            Asked::Answer(v) => v,
            Asked::Failed(e) => return Polled::Failed(e),
            Asked::Gone => return Polled::Gone,
        };
    }
    Polled::Answer(answer)
}
