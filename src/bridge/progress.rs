//! A job's progress, from the main thread (which only records it) to the I/O thread (which sends
//! it, coalesced).
//!
//! Code in a job reports with `blendwire.progress(fraction, message)`, and its stdout is appended
//! while it runs; each report overwrites the last one and wakes the connection, which sends what
//! changed at most every [`MIN_INTERVAL`]. So a job that reports a million times a second costs
//! the main thread a lock and a copy per report, and the client at most ~20 messages a second.

use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The shortest time between two progress messages of one job (about 20 a second).
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// Streamed stdout kept for the client between two messages; beyond it the oldest text is dropped
/// (down to half of it, and counted): the final answer still carries all of it.
pub const MAX_PENDING_OUTPUT: usize = 1 << 20;

#[derive(Debug, Default)]
struct State {
    fraction: Option<f64>,
    message: Option<String>,
    /// Reported since the last `take`.
    changed: bool,
    output: String,
    dropped_bytes: usize,
}

/// One job's progress: written by the main thread, read by the job's connection.
#[derive(Debug)]
pub struct Progress {
    state: Mutex<State>,
    wake: Notify,
    started: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            state: Mutex::default(),
            wake: Notify::new(),
            started: Instant::now(),
        }
    }
}

impl Progress {
    /// Main thread: the job reports where it is. `fraction` is already checked (0..=1).
    pub fn report(&self, fraction: Option<f64>, message: Option<String>) {
        let mut st = self.state.lock();
        if fraction.is_some() {
            st.fraction = fraction;
        }
        if message.is_some() {
            st.message = message;
        }
        st.changed = true;
        drop(st);
        self.wake.notify_one();
    }

    /// Main thread: the job printed `text`.
    pub fn output(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        st.output.push_str(text);
        if st.output.len() > MAX_PENDING_OUTPUT {
            // Down to half the bound, so that a job printing faster than it is sent moves the kept
            // text once per half MiB, not on every write.
            let mut cut = st.output.len() - MAX_PENDING_OUTPUT / 2;
            while !st.output.is_char_boundary(cut) {
                cut += 1;
            }
            st.output.drain(..cut);
            st.dropped_bytes += cut;
        }
        st.changed = true;
        drop(st);
        self.wake.notify_one();
    }

    /// The last fraction and message reported (for the status).
    pub fn latest(&self) -> (Option<f64>, Option<String>) {
        let st = self.state.lock();
        (st.fraction, st.message.clone())
    }

    /// I/O side: wait until something was reported (returns at once if it was since the last wait).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// I/O side: the progress message for what changed since the last take, if anything did.
    /// `id`: the request's `id`, echoed so that a client can tell its jobs apart.
    pub fn take(&self, id: Option<&Value>) -> Option<Value> {
        let mut st = self.state.lock();
        if !st.changed {
            return None;
        }
        st.changed = false;
        let mut msg = Map::with_capacity(6);
        msg.insert("status".into(), Value::String("progress".into()));
        if let Some(id) = id {
            msg.insert("id".into(), id.clone());
        }
        if let Some(f) = st.fraction {
            msg.insert("fraction".into(), Value::from(f));
        }
        if let Some(m) = &st.message {
            msg.insert("message".into(), Value::String(m.clone()));
        }
        if !st.output.is_empty() {
            msg.insert("output".into(), Value::String(std::mem::take(&mut st.output)));
        }
        if st.dropped_bytes > 0 {
            msg.insert(
                "output_dropped_bytes".into(),
                Value::from(std::mem::take(&mut st.dropped_bytes)),
            );
        }
        msg.insert("elapsed_s".into(), Value::from(self.started.elapsed().as_secs_f64()));
        Some(Value::Object(msg))
    }
}

/// The rule for a reported fraction: a number from 0 to 1.
pub fn fraction(value: f64) -> Result<f64, String> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "progress fraction must be a number from 0 to 1 (0.5 = half done), got {value}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_coalesce_into_one_message_with_the_latest_values_and_all_output() {
        let p = Progress::default();
        assert_eq!(p.take(None), None);
        p.report(Some(0.1), Some("a".into()));
        p.output("x\n");
        p.report(Some(0.2), None);
        p.output("y\n");
        let m = p.take(Some(&json!("job-1"))).unwrap();
        assert_eq!(
            (&m["status"], &m["id"], &m["fraction"], &m["message"], &m["output"]),
            (
                &json!("progress"),
                &json!("job-1"),
                &json!(0.2),
                &json!("a"),
                &json!("x\ny\n")
            )
        );
        assert_eq!(p.take(None), None, "nothing new");
        p.output("z");
        let m = p.take(None).unwrap();
        assert_eq!((&m["output"], &m["fraction"]), (&json!("z"), &json!(0.2)));
    }

    #[test]
    fn pending_output_is_bounded_and_says_what_it_dropped() {
        let p = Progress::default();
        p.output(&"é".repeat(MAX_PENDING_OUTPUT));
        let m = p.take(None).unwrap();
        assert!(m["output"].as_str().unwrap().len() <= MAX_PENDING_OUTPUT);
        assert!(m["output_dropped_bytes"].as_u64().unwrap() >= MAX_PENDING_OUTPUT as u64);
    }

    #[test]
    fn fraction_rule() {
        assert_eq!(fraction(0.5), Ok(0.5));
        assert!(fraction(1.5).unwrap_err().contains("from 0 to 1"));
        assert!(fraction(f64::NAN).is_err());
    }

    #[tokio::test]
    async fn a_report_before_the_wait_is_not_missed() {
        let p = Progress::default();
        p.report(None, Some("early".into()));
        tokio::time::timeout(Duration::from_secs(5), p.changed()).await.unwrap();
    }
}
