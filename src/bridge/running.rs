//! What Blender's main thread is doing: the running job, and the requests to interrupt it.
//!
//! `Bridge::run` marks a job running (`begin`) and done (`end`) on the main thread; any thread
//! reads it under a tiny lock (`snapshot`), so a status never waits for the main thread. A
//! deadline, a cancel or a stop sets the job's [`Cause`]; the interrupter
//! (`bridge::interrupter`, started with the first job) delivers it. The Python handler the
//! runtime installs asks [`MainThread::pending_message`] and raises `blendwire.errors.Interrupted`
//! in the job.

use super::progress::Progress;
use crate::error::fmt_secs;
use crate::journal::JobRecord;
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Why a running job is interrupted. A stop outranks a cancel, which outranks the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Its deadline passed.
    Deadline,
    /// Its client cancelled it (a `cancel` request naming its id).
    Cancel,
    /// A stop was requested (the reason's string).
    Stop(String),
}

impl Cause {
    fn rank(&self) -> u8 {
        match self {
            Cause::Deadline => 0,
            Cause::Cancel => 1,
            Cause::Stop(_) => 2,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Cause::Deadline => "deadline",
            Cause::Cancel => "cancel",
            Cause::Stop(_) => "stop",
        }
    }
}

/// Who sent a job and how it is followed: shown in the status, named by `cancel`, its progress.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The client's address, where there is one.
    pub client: Option<String>,
    /// The request's `id` as text: the client's name for the job, which `cancel` names.
    pub key: Option<String>,
    /// Where the job's progress goes, when its client asked for progress.
    pub progress: Option<Arc<Progress>>,
    /// The request's record (its audit line, its checkpoint), where the listener made one.
    pub record: Option<Arc<JobRecord>>,
}

/// The job the main thread runs now.
#[derive(Debug, Clone)]
pub struct Running {
    pub id: u64,
    /// `execute_code`, or `router:command addon.cmd` for router jobs.
    pub command: String,
    pub origin: Origin,
    /// When it was queued: its deadline is counted from there.
    pub submitted: Instant,
    pub started: Instant,
    pub deadline: Instant,
    /// Set once the first interrupt is sent.
    pub cause: Option<Cause>,
    pub interrupts_sent: u32,
    /// The thread running it (pthread_t), where the signal goes.
    pub(super) thread: libc::pthread_t,
}

impl Running {
    pub fn interrupt_pending(&self) -> bool {
        self.cause.is_some()
    }

    /// For the `interrupted` error: how long it ran, and why it was stopped.
    pub fn describe(&self) -> (Duration, String) {
        let why = match &self.cause {
            Some(Cause::Stop(reason)) => format!("the service is stopping ({reason})"),
            Some(Cause::Cancel) => "cancelled by its client".to_string(),
            Some(Cause::Deadline) | None => format!(
                "deadline {} s",
                fmt_secs(round_ms(self.deadline.saturating_duration_since(self.submitted)))
            ),
        };
        (round_ms(self.started.elapsed()), why)
    }
}

/// To the nearest millisecond: a deadline counted from the queueing shows as the wait asked for.
pub(super) fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(((d.as_micros() + 500) / 1000) as u64)
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) running: Option<Running>,
    /// When the interrupter looks again by itself (None: only when notified). A job that begins
    /// with a later deadline need not wake it, and an ending job never does: a wake-up per job
    /// was most of the machinery's cost on the normal path (benches/bench_interrupt.py).
    pub(super) sleeping_until: Option<Instant>,
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    pub(super) state: Mutex<State>,
    pub(super) changed: Condvar,
    /// 0: no handler is installed, so no signal is sent (its default action ends the process).
    pub(super) signal: AtomicI32,
    ids: AtomicU64,
}

/// What the main thread is doing; shared by the bridge, status readers and the interrupter.
#[derive(Debug, Default)]
pub struct MainThread {
    inner: Arc<Inner>,
    interrupter: OnceLock<()>,
}

impl MainThread {
    /// A fresh job id (also what `submit` hands the waiter, to ask whether its job runs).
    pub fn next_id(&self) -> u64 {
        self.inner.ids.fetch_add(1, Relaxed) + 1
    }

    /// Main thread: job `id` starts now.
    pub fn begin(&self, id: u64, command: String, origin: Origin, submitted: Instant, deadline: Instant) {
        self.interrupter
            .get_or_init(|| super::interrupter::spawn(self.inner.clone()));
        let mut st = self.inner.state.lock();
        let wake = st.sleeping_until.is_none_or(|t| deadline < t);
        st.running = Some(Running {
            id,
            command,
            origin,
            submitted,
            started: Instant::now(),
            deadline,
            cause: None,
            interrupts_sent: 0,
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
        });
        drop(st);
        if wake {
            self.inner.changed.notify_all();
        }
    }

    /// Main thread: the running job is done. The interrupter is not woken: when it looks again
    /// it finds no job (or the next one) and goes back to sleep.
    pub fn end(&self) {
        self.inner.state.lock().running = None;
    }

    pub fn running(&self) -> Option<Running> {
        self.inner.state.lock().running.clone()
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.inner.state.lock().running.as_ref().is_some_and(|r| r.id == id)
    }

    /// A stop was requested: interrupt the job running now (the pump returns after it), unless
    /// the request comes from the main thread itself (a job asking for the stop, e.g. `sys.exit()`
    /// in execute_code, must still be answered). Jobs are not interrupted between jobs: the stop
    /// itself ends the loop then.
    pub fn interrupt_for_stop(&self, reason: &str) {
        self.interrupt_if(Cause::Stop(reason.to_string()), |r| {
            // SAFETY: pthread_self has no preconditions; pthread_equal compares two handles.
            unsafe { libc::pthread_equal(r.thread, libc::pthread_self()) == 0 }
        });
    }

    /// Interrupt the running job for a stop, whichever thread asks (the runtime's SIGINT/SIGTERM
    /// handler runs on the main thread itself).
    pub fn interrupt(&self, reason: &str) {
        self.interrupt_if(Cause::Stop(reason.to_string()), |_| true);
    }

    /// Interrupt the running job if its request's id is `key` (its client cancels it). True if
    /// it runs now.
    pub fn cancel(&self, key: &str) -> bool {
        self.interrupt_if(Cause::Cancel, |r| r.origin.key.as_deref() == Some(key))
    }

    /// Interrupt the running job for `cause` if `allowed` says so (a weaker cause than one already
    /// pending is ignored). True if a job was found to interrupt.
    fn interrupt_if(&self, cause: Cause, allowed: impl FnOnce(&Running) -> bool) -> bool {
        let mut st = self.inner.state.lock();
        let Some(r) = st.running.as_mut().filter(|r| allowed(r)) else {
            return false;
        };
        if r.cause.as_ref().is_none_or(|c| c.rank() < cause.rank()) {
            r.cause = Some(cause);
        }
        drop(st);
        self.inner.changed.notify_all();
        true
    }

    /// Where the running job reports progress, if its client asked for progress (None between
    /// jobs and when nobody listens). Any thread: a render the job started reports from Blender's
    /// render thread.
    pub fn progress(&self) -> Option<Arc<Progress>> {
        self.inner.state.lock().running.as_ref()?.origin.progress.clone()
    }

    /// Deliver interrupts with `signal` (the runtime installed its handler); 0 turns them off.
    pub fn set_signal(&self, signal: i32) {
        self.inner.signal.store(signal, Relaxed);
    }

    /// On the main thread, in the signal handler: the message to raise `Interrupted` with if the
    /// job running on this thread is to be interrupted, else None (a late signal, another job).
    pub fn pending_message(&self) -> Option<String> {
        let st = self.inner.state.lock();
        let r = st.running.as_ref()?;
        // SAFETY: as above.
        if unsafe { libc::pthread_equal(r.thread, libc::pthread_self()) } == 0 {
            return None;
        }
        r.cause.as_ref()?;
        let (after, why) = r.describe();
        Some(format!(
            "interrupted after {} s ({why}) in {}",
            fmt_secs(after),
            r.command
        ))
    }

    /// The `main_thread` object of the status.
    pub fn snapshot(&self) -> MainThreadStatus {
        let Some(r) = self.running() else {
            return MainThreadStatus::Idle;
        };
        let now = Instant::now();
        let left = r
            .deadline
            .checked_duration_since(now)
            .map_or_else(|| -(now.duration_since(r.deadline).as_secs_f64()), |d| d.as_secs_f64());
        MainThreadStatus::Running(RunningStatus {
            job: r.id,
            running_s: r.started.elapsed().as_secs_f64(),
            deadline_in_s: left,
            interrupt_pending: r.interrupt_pending(),
            interrupts_sent: r.interrupts_sent,
            request_id: r.origin.key.clone(),
            interrupt_cause: r.cause.as_ref().map(Cause::name),
            progress: r.origin.progress.as_ref().map(|p| {
                let (fraction, message) = p.latest();
                ProgressStatus { fraction, message }
            }),
            command: r.command,
            client: r.origin.client,
        })
    }
}

/// The status's `main_thread` object (docs/protocols.md): `{"state": "idle"}`, or the running job.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum MainThreadStatus {
    Idle,
    Running(RunningStatus),
}

#[derive(Debug, Clone, Serialize)]
pub struct RunningStatus {
    pub job: u64,
    pub command: String,
    pub client: Option<String>,
    pub running_s: f64,
    /// Negative once the deadline has passed.
    pub deadline_in_s: f64,
    pub interrupt_pending: bool,
    pub interrupts_sent: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupt_cause: Option<&'static str>,
    /// Only when its client asked for progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProgressStatus {
    pub fraction: Option<f64>,
    pub message: Option<String>,
}

/// Marks the running job ended when dropped (`Bridge::run` holds it around the job).
pub struct EndOnDrop<'a>(pub &'a MainThread);

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The `main_thread` object as the status sends it.
    fn snapshot(m: &MainThread) -> Value {
        serde_json::to_value(m.snapshot()).unwrap()
    }

    fn wait(what: &str, mut cond: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn idle_then_running_then_idle() {
        let m = MainThread::default();
        assert_eq!(snapshot(&m)["state"], "idle");
        let id = m.next_id();
        let now = Instant::now();
        m.begin(
            id,
            "execute_code".into(),
            Origin {
                client: Some("127.0.0.1:5".into()),
                ..Origin::default()
            },
            now,
            now + Duration::from_secs(60),
        );
        let s = snapshot(&m);
        assert_eq!(
            (s["state"].as_str(), s["command"].as_str()),
            (Some("running"), Some("execute_code"))
        );
        assert_eq!(s["client"], "127.0.0.1:5");
        assert_eq!(s["interrupt_pending"], false);
        // The documented order; request_id, interrupt_cause and progress only when there is one.
        let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "state",
                "job",
                "command",
                "client",
                "running_s",
                "deadline_in_s",
                "interrupt_pending",
                "interrupts_sent"
            ]
        );
        assert!(m.is_running(id) && !m.is_running(id + 1));
        m.end();
        assert_eq!(snapshot(&m)["state"], "idle");
    }

    #[test]
    fn a_job_past_its_deadline_is_interrupted_again_and_again() {
        let m = MainThread::default();
        let now = Instant::now();
        m.begin(
            m.next_id(),
            "loop".into(),
            Origin::default(),
            now,
            now + Duration::from_millis(20),
        );
        wait("two interrupts", || m.running().is_some_and(|r| r.interrupts_sent >= 2));
        assert_eq!(m.running().and_then(|r| r.cause), Some(Cause::Deadline));
        let msg = m.pending_message().unwrap();
        assert!(msg.contains("(deadline 0.02 s) in loop"), "{msg}");
        m.end();
        assert_eq!(m.pending_message(), None);
    }

    #[test]
    fn a_stop_from_another_thread_interrupts_and_one_from_the_job_does_not() {
        let m = Arc::new(MainThread::default());
        let now = Instant::now();
        m.begin(
            m.next_id(),
            "exit".into(),
            Origin::default(),
            now,
            now + Duration::from_secs(60),
        );
        m.interrupt_for_stop("shutdown");
        assert!(m.pending_message().is_none(), "the job asked for the stop itself");
        let m2 = m.clone();
        std::thread::spawn(move || m2.interrupt_for_stop("SIGTERM"))
            .join()
            .unwrap();
        wait("an interrupt", || m.running().is_some_and(|r| r.interrupts_sent >= 1));
        assert!(m.pending_message().unwrap().contains("stopping (SIGTERM)"));
        m.end();
        // A stop between jobs leaves the next one alone.
        m.begin(
            m.next_id(),
            "next".into(),
            Origin::default(),
            now,
            now + Duration::from_secs(60),
        );
        assert!(!m.running().unwrap().interrupt_pending());
        m.end();
    }

    #[test]
    fn a_cancel_interrupts_only_the_job_it_names_and_a_stop_outranks_it() {
        let m = Arc::new(MainThread::default());
        let now = Instant::now();
        let origin = Origin {
            key: Some("job-7".into()),
            ..Origin::default()
        };
        m.begin(m.next_id(), "loop".into(), origin, now, now + Duration::from_secs(60));
        assert!(!m.cancel("job-8"));
        assert!(!m.running().unwrap().interrupt_pending());
        assert!(m.cancel("job-7"));
        assert_eq!(m.running().and_then(|r| r.cause), Some(Cause::Cancel));
        assert_eq!(snapshot(&m)["interrupt_cause"], "cancel");
        assert_eq!(snapshot(&m)["request_id"], "job-7");
        m.interrupt("SIGTERM");
        assert_eq!(m.running().and_then(|r| r.cause), Some(Cause::Stop("SIGTERM".into())));
        assert!(m.cancel("job-7"), "still running");
        assert_eq!(
            m.running().and_then(|r| r.cause),
            Some(Cause::Stop("SIGTERM".into())),
            "a cancel does not weaken a stop"
        );
        m.end();
        assert!(!m.cancel("job-7"));
    }
}
