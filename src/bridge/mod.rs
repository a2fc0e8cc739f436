//! The main-thread bridge: one bounded queue of jobs that only Blender's main thread runs.
//!
//! Network threads `submit` and await the reply; the main thread takes jobs with `next_job`
//! (blocking, for `blender -b`/bpy, called with the GIL released) or `try_next` (GUI timer) and
//! hands each to `run`, which skips jobs whose client has gone or whose deadline passed.
//!
//! Its parts: [`running`] (what the main thread runs now, and the requests to interrupt it),
//! [`interrupter`] (the thread that delivers them), [`progress`] (a job's reports to its client),
//! [`wait`] (waiting for an answer past the deadline: the grace, then "still running"),
//! [`pending`] (answers that come later, asked for again).

pub mod interrupter;
pub mod pending;
pub mod progress;
pub mod running;
pub mod wait;

use crate::error::JobError;
use crate::journal::JobRecord;
use crate::metrics::BridgeMetrics;
use crate::shutdown::StopReason;
use crate::wire::protocol::Dialect;
use parking_lot::{Condvar, Mutex};
use running::MainThread;
use running::Origin;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use crate::defaults::DEFAULT_QUEUE_CAPACITY;

/// How long a blocking `next_job` keeps polling (yielding its core to anything else runnable)
/// after the queue runs dry, before it sleeps on the condition variable. A client that sends its
/// next request right after reading an answer comes back within ~100 µs; catching it awake saves a
/// futex wake-up per request and keeps the interpreter's caches warm. Idle cost is unchanged: the
/// spin only follows a job.
pub const SPIN: Duration = Duration::from_micros(250);

pub type JobResult = Result<Value, JobError>;

/// What the main thread is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A command-service request, for the command dispatcher.
    Command { name: String, params: Map<String, Value> },
    /// Work for the router's dispatcher.
    Router { op: RouterOp, params: Map<String, Value> },
    /// A request of the MCP add-on listener, for its dialect's dispatcher (blender-mcp: the
    /// command type; Blender Lab: `execute` or `poll`).
    Addon {
        dialect: Dialect,
        name: String,
        params: Map<String, Value>,
    },
}

/// What the router asks of the main thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterOp {
    /// The CONNECT auth payload `{token, username, blend_file_path}`.
    Auth,
    /// The `registry_update` payload.
    Registry,
    /// Run a `command_received` command.
    Command,
    /// Ask a `check_is_finished` command again (or cancel it).
    Poll,
}

impl Payload {
    /// What the status calls the job: the command, or `router:<op>` (`router:command addon.cmd`).
    pub fn label(&self) -> String {
        match self {
            Payload::Command { name, .. } => name.clone(),
            Payload::Router { op, params } => Payload::router_label(*op, params),
            Payload::Addon {
                dialect: Dialect::BlenderLab,
                name,
                ..
            } => format!("blender_lab:{name}"),
            Payload::Addon { name, .. } => name.clone(),
        }
    }
}

impl Payload {
    /// The label of a router job: `router:<op>`, `router:command addon.cmd` for a command.
    pub fn router_label(op: RouterOp, params: &Map<String, Value>) -> String {
        match op {
            RouterOp::Command => {
                let text = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                format!("router:command {}.{}", text("addon_id"), text("command"))
            }
            op => format!("router:{}", op.name()),
        }
    }
}

impl RouterOp {
    pub fn name(&self) -> &'static str {
        match self {
            RouterOp::Auth => "auth",
            RouterOp::Registry => "registry",
            RouterOp::Command => "command",
            RouterOp::Poll => "poll",
        }
    }
}

#[derive(Debug)]
pub struct Job {
    pub payload: Payload,
    pub deadline: Instant,
    id: u64,
    origin: Origin,
    enqueued: Instant,
    reply: oneshot::Sender<JobResult>,
}

impl Job {
    /// The request's record, where its listener made one.
    pub fn record(&self) -> Option<Arc<JobRecord>> {
        self.origin.record.clone()
    }
}

/// A queued job, for its waiter: the reply, and the id to ask `main.is_running` about.
#[derive(Debug)]
pub struct Ticket {
    pub id: u64,
    pub rx: oneshot::Receiver<JobResult>,
}

/// What a `cancel` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled {
    /// Queued jobs dropped (answered `cancelled` at once).
    pub queued: usize,
    /// The running job was named: it is being interrupted.
    pub running: bool,
}

/// What the main thread finds when it asks for work.
#[derive(Debug)]
pub enum Next {
    Job(Job),
    /// Someone asked the pump to return, with this reason.
    Stop(StopReason),
    /// Nothing arrived within the wait.
    Idle,
}

#[derive(Debug, Default)]
struct State {
    jobs: VecDeque<Job>,
    stop: Option<StopReason>,
}

#[derive(Debug)]
pub struct Bridge {
    state: Mutex<State>,
    wake: Condvar,
    /// Bumped (under the lock) by every submit and stop request: what a spinning pump watches.
    generation: AtomicU64,
    capacity: AtomicUsize,
    pub metrics: BridgeMetrics,
    /// What the main thread runs now; readable from any thread without waiting for it.
    pub main: MainThread,
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge::new(DEFAULT_QUEUE_CAPACITY)
    }
}

impl Bridge {
    pub fn new(capacity: usize) -> Self {
        Bridge {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
            capacity: AtomicUsize::new(capacity.max(1)),
            metrics: BridgeMetrics::default(),
            main: MainThread::default(),
        }
    }

    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Relaxed);
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Relaxed)
    }

    pub fn len(&self) -> usize {
        self.state.lock().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue a job; never waits. A full queue is `Busy` at once.
    pub fn submit(&self, payload: Payload, deadline: Instant) -> Result<oneshot::Receiver<JobResult>, JobError> {
        self.submit_from(payload, deadline, None).map(|t| t.rx)
    }

    /// Queue a job of `client` (shown in the status while it runs); never waits.
    pub fn submit_from(&self, payload: Payload, deadline: Instant, client: Option<String>) -> Result<Ticket, JobError> {
        self.submit_job(
            payload,
            deadline,
            Origin {
                client,
                ..Origin::default()
            },
        )
    }

    /// Queue a job (its origin: for the status, `cancel` and progress); never waits.
    pub fn submit_job(&self, payload: Payload, deadline: Instant, origin: Origin) -> Result<Ticket, JobError> {
        let (reply, rx) = oneshot::channel();
        let id = self.main.next_id();
        {
            let mut st = self.state.lock();
            let capacity = self.capacity();
            if st.jobs.len() >= capacity {
                drop(st);
                self.metrics.busy_rejections.inc();
                return Err(JobError::Busy { capacity });
            }
            st.jobs.push_back(Job {
                payload,
                deadline,
                id,
                origin,
                enqueued: Instant::now(),
                reply,
            });
            self.generation.fetch_add(1, Release);
        }
        self.metrics.submitted.inc();
        self.wake.notify_one();
        Ok(Ticket { id, rx })
    }

    /// Main thread, blocking: the next job, a stop request, or `Idle` after `wait`.
    /// A stop request wins over queued jobs, so a shutdown is not delayed by a flood.
    /// `spin`: poll this long before sleeping (see [`SPIN`]); zero sleeps at once.
    pub fn next_job(&self, wait: Duration, spin: Duration) -> Next {
        let until = Instant::now() + wait;
        let mut st = self.state.lock();
        if st.stop.is_none() && st.jobs.is_empty() && !spin.is_zero() {
            let seen = self.generation.load(Relaxed);
            drop(st);
            let spin_until = Instant::now() + spin.min(wait);
            // Yield rather than pause: on 2 cores the client and the I/O thread need the time.
            while self.generation.load(Acquire) == seen && Instant::now() < spin_until {
                std::thread::yield_now();
            }
            st = self.state.lock();
        }
        loop {
            if let Some(reason) = st.stop.take() {
                return Next::Stop(reason);
            }
            if let Some(job) = st.jobs.pop_front() {
                return Next::Job(job);
            }
            if self.wake.wait_until(&mut st, until).timed_out() {
                return match st.stop.take() {
                    Some(reason) => Next::Stop(reason),
                    None => st.jobs.pop_front().map_or(Next::Idle, Next::Job),
                };
            }
        }
    }

    /// Main thread, non-blocking (GUI timer).
    pub fn try_next(&self) -> Option<Job> {
        self.state.lock().jobs.pop_front()
    }

    /// Ask the (current or next) pump to return `reason`; a job running now is interrupted first
    /// (unless it asked for the stop itself).
    pub fn request_stop(&self, reason: StopReason) {
        self.main.interrupt_for_stop(reason.as_str());
        self.state.lock().stop = Some(reason);
        self.generation.fetch_add(1, Release);
        self.wake.notify_all();
    }

    /// Take a pending stop request (GUI timers, which have no pump).
    pub fn take_stop(&self) -> Option<StopReason> {
        self.state.lock().stop.take()
    }

    /// Forget a stale stop request (before a new pump/service starts).
    pub fn clear_stop(&self) {
        self.state.lock().stop = None;
    }

    /// Drop every queued job: their waiters see the channel close and answer `cancelled`.
    pub fn cancel_all(&self) -> usize {
        let jobs = std::mem::take(&mut self.state.lock().jobs);
        let n = jobs.len();
        for _ in 0..n {
            self.metrics.cancelled.inc();
        }
        n
    }

    /// A client cancels its job(s) named `key`: queued ones are dropped and answered at once, a
    /// running one is interrupted (its own answer then says so).
    pub fn cancel(&self, key: &str) -> Cancelled {
        let removed: Vec<Job> = {
            let mut st = self.state.lock();
            let mut removed = Vec::new();
            for job in std::mem::take(&mut st.jobs) {
                if job.origin.key.as_deref() == Some(key) {
                    removed.push(job);
                } else {
                    st.jobs.push_back(job);
                }
            }
            removed
        };
        let queued = removed.len();
        for job in removed {
            self.metrics.cancelled.inc();
            let command = job.payload.label();
            log::info!("{command} (id {key}) cancelled by its client while queued");
            let _ = job.reply.send(Err(JobError::CancelledQueued { command }));
        }
        let running = self.main.cancel(key);
        if running {
            log::info!("the running job (id {key}) is cancelled by its client: interrupting it");
        }
        Cancelled { queued, running }
    }

    /// Run one job on the main thread with `exec`, unless nobody waits for it any more or its
    /// deadline passed. Returns whether `exec` was called.
    pub fn run(&self, job: Job, exec: impl FnOnce(&Payload) -> JobResult) -> bool {
        // Deadline first: a waiter that timed out has also closed its end.
        if Instant::now() >= job.deadline {
            self.metrics.expired.inc();
            let _ = job.reply.send(Err(JobError::Expired));
            return false;
        }
        if job.reply.is_closed() {
            self.metrics.cancelled.inc();
            return false;
        }
        let started = Instant::now();
        self.main
            .begin(job.id, job.payload.label(), job.origin, job.enqueued, job.deadline);
        // Marked ended when this returns, after the reply is sent (so a waiter never sees its job
        // not running and no answer yet), or if `exec` panics (the interrupter must never signal
        // a thread that is gone). No Python runs between the two, so a signal sent meanwhile
        // finds the job ended by the time its handler runs.
        let _running = running::EndOnDrop(&self.main);
        let result = exec(&job.payload);
        self.metrics.set_last_run_us(started.elapsed().as_micros() as u64);
        self.metrics.latency.record(job.enqueued.elapsed());
        if result.is_ok() {
            self.metrics.completed.inc();
        } else {
            self.metrics.failed.inc();
        }
        if job.reply.send(result).is_err() {
            // The waiter timed out or its client left while the job ran.
            self.metrics.results_dropped.inc();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn cmd(name: &str) -> Payload {
        Payload::Command {
            name: name.into(),
            params: Map::new(),
        }
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn full_queue_is_busy_at_once() {
        let b = Bridge::new(2);
        let _a = b.submit(cmd("a"), later()).unwrap();
        let _b = b.submit(cmd("b"), later()).unwrap();
        assert_eq!(b.submit(cmd("c"), later()).unwrap_err(), JobError::Busy { capacity: 2 });
        assert_eq!(b.metrics.busy_rejections.get(), 1);
    }

    #[test]
    fn jobs_run_in_order_and_reply() {
        let b = Bridge::new(8);
        let mut r1 = b.submit(cmd("a"), later()).unwrap();
        let mut r2 = b.submit(cmd("b"), later()).unwrap();
        while let Some(job) = b.try_next() {
            b.run(job, |p| match p {
                Payload::Command { name, .. } => Ok(json!(name)),
                _ => Ok(Value::Null),
            });
        }
        assert_eq!(r1.try_recv().unwrap(), Ok(json!("a")));
        assert_eq!(r2.try_recv().unwrap(), Ok(json!("b")));
        assert_eq!(b.metrics.completed.get(), 2);
    }

    #[test]
    fn abandoned_and_expired_jobs_are_not_run() {
        let b = Bridge::new(8);
        drop(b.submit(cmd("gone"), later()).unwrap());
        let mut late = b.submit(cmd("late"), Instant::now()).unwrap();
        let mut ran = 0;
        while let Some(job) = b.try_next() {
            b.run(job, |_| {
                ran += 1;
                Ok(Value::Null)
            });
        }
        assert_eq!(ran, 0);
        assert_eq!(b.metrics.cancelled.get(), 1);
        assert_eq!(b.metrics.expired.get(), 1);
        assert_eq!(late.try_recv().unwrap(), Err(JobError::Expired));
    }

    #[test]
    fn result_nobody_waits_for_is_dropped_and_counted() {
        let b = Bridge::new(8);
        let rx = b.submit(cmd("a"), later()).unwrap();
        let job = b.try_next().unwrap();
        assert!(b.run(job, |_| {
            drop(rx); // the waiter gives up while the job runs
            Ok(json!(1))
        }));
        assert_eq!(b.metrics.results_dropped.get(), 1);
    }

    #[test]
    fn a_cancel_drops_the_queued_jobs_it_names_and_answers_them() {
        let b = Bridge::new(8);
        let named = |key: &str| Origin {
            key: Some(key.into()),
            ..Origin::default()
        };
        let mut a = b.submit_job(cmd("a"), later(), named("x")).unwrap();
        let mut other = b.submit_job(cmd("b"), later(), named("y")).unwrap();
        assert_eq!(
            b.cancel("x"),
            Cancelled {
                queued: 1,
                running: false
            }
        );
        assert_eq!(
            a.rx.try_recv().unwrap(),
            Err(JobError::CancelledQueued { command: "a".into() })
        );
        assert_eq!(b.len(), 1);
        assert_eq!(
            b.cancel("x"),
            Cancelled {
                queued: 0,
                running: false
            }
        );
        assert!(other.rx.try_recv().is_err(), "the other job still waits");
    }

    #[test]
    fn blocking_wait_wakes_on_submit_and_on_stop() {
        let b = Arc::new(Bridge::new(8));
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            let first = b2.next_job(Duration::from_secs(30), SPIN);
            let second = b2.next_job(Duration::from_secs(30), SPIN);
            (
                matches!(first, Next::Job(_)),
                matches!(second, Next::Stop(StopReason::Requested(ref r)) if r == "done"),
            )
        });
        let _rx = b.submit(cmd("a"), later()).unwrap();
        // The pump may or may not have taken the job yet; either way a stop must end it.
        while !b.is_empty() {
            std::thread::yield_now();
        }
        b.request_stop(StopReason::parse("done"));
        assert_eq!(t.join().unwrap(), (true, true));
        assert!(matches!(b.next_job(Duration::from_millis(1), SPIN), Next::Idle));
    }
}
