//! Stopping, as types: why the main thread is asked to stop ([`StopReason`]), and how a runtime's
//! tasks are told to stop and awaited ([`Controller`] and the [`Shutdown`] handle every task
//! holds), the way tokio's mini-redis does it: a "stop now" signal, and completion seen as a
//! channel closing once the last task has dropped its handle. Nothing is polled.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Why the pump returns (and what `take_stop_request` gives a GUI timer). Python compares the
/// strings of [`StopReason::as_str`], so they are part of the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A `server_shutdown` command (also how a SystemExit in sent code ends the service).
    Shutdown,
    /// `stop_pump()` with no reason.
    Stopped,
    Sigint,
    Sigterm,
    /// The process watched by `stop_when_process_exits` is gone.
    ParentExited,
    /// The router's watchdog fired: save and quit.
    Watchdog,
    /// Any other reason a Python caller gave; handed back as given.
    Requested(String),
}

impl StopReason {
    pub fn as_str(&self) -> &str {
        match self {
            StopReason::Shutdown => "shutdown",
            StopReason::Stopped => "stopped",
            StopReason::Sigint => "SIGINT",
            StopReason::Sigterm => "SIGTERM",
            StopReason::ParentExited => "parent exited",
            StopReason::Watchdog => "watchdog",
            StopReason::Requested(reason) => reason,
        }
    }

    /// The reason a string names; any string is a reason, so this never fails.
    pub fn parse(reason: &str) -> StopReason {
        match reason {
            "shutdown" => StopReason::Shutdown,
            "stopped" => StopReason::Stopped,
            "SIGINT" => StopReason::Sigint,
            "SIGTERM" => StopReason::Sigterm,
            "parent exited" => StopReason::ParentExited,
            "watchdog" => StopReason::Watchdog,
            other => StopReason::Requested(other.to_string()),
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Held by every task of a runtime: tells it to stop, and (by being dropped when the task ends)
/// tells the [`Controller`] it has.
#[derive(Debug, Clone)]
pub struct Shutdown {
    signal: Arc<watch::Sender<bool>>,
    stopped: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

impl Shutdown {
    pub fn is_signalled(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Resolves once the stop is signalled (at once if it already was).
    pub async fn signalled(&mut self) {
        // An error means the sender is gone, which only happens after the signal.
        let _ = self.stopped.wait_for(|stop| *stop).await;
    }

    /// Stop every task of this runtime (a `server_shutdown` command does this).
    pub fn signal(&self) {
        self.signal.send_replace(true);
    }
}

/// A read-only view of the stop signal, for readers outside the runtime (status).
#[derive(Debug, Clone)]
pub struct StopFlag(watch::Receiver<bool>);

impl StopFlag {
    pub fn get(&self) -> bool {
        *self.0.borrow()
    }
}

/// Held by the owner of a runtime (the service, the router): hands out [`Shutdown`] handles,
/// signals the stop and waits for the tasks.
#[derive(Debug)]
pub struct Controller {
    signal: Arc<watch::Sender<bool>>,
    /// Cloned into every handle; dropped at the stop, so the channel closes with the last task.
    done_tx: Option<mpsc::Sender<()>>,
    done_rx: mpsc::Receiver<()>,
}

impl Default for Controller {
    fn default() -> Self {
        Controller::new()
    }
}

impl Controller {
    pub fn new() -> Controller {
        let (done_tx, done_rx) = mpsc::channel(1);
        Controller {
            signal: Arc::new(watch::channel(false).0),
            done_tx: Some(done_tx),
            done_rx,
        }
    }

    /// A handle for one more task; `None` once the stop has begun (start no task then).
    pub fn handle(&self) -> Option<Shutdown> {
        Some(Shutdown {
            signal: self.signal.clone(),
            stopped: self.signal.subscribe(),
            _done: self.done_tx.clone()?,
        })
    }

    pub fn is_signalled(&self) -> bool {
        *self.signal.borrow()
    }

    /// A view of the signal that does not count as a task (it never delays the stop).
    pub fn flag(&self) -> StopFlag {
        StopFlag(self.signal.subscribe())
    }

    pub fn signal(&self) {
        self.signal.send_replace(true);
    }

    /// Signal the stop, then wait until every task has ended. True if they all did within
    /// `timeout`. Blocks this thread on `rt`, so it must not run on a tokio worker.
    pub fn stop_and_wait(&mut self, rt: &tokio::runtime::Runtime, timeout: Duration) -> bool {
        self.signal();
        self.done_tx = None;
        let done_rx = &mut self.done_rx;
        // recv() gives None once every sender (one per task) is dropped; nothing is ever sent.
        rt.block_on(async { tokio::time::timeout(timeout, done_rx.recv()).await.is_ok() })
    }

    /// Signal the stop and wait for the tasks from async code (tests drive tasks this way).
    pub async fn stop(&mut self, timeout: Duration) -> bool {
        self.signal();
        self.done_tx = None;
        tokio::time::timeout(timeout, self.done_rx.recv()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_keep_their_strings() {
        for s in [
            "shutdown",
            "stopped",
            "SIGINT",
            "SIGTERM",
            "parent exited",
            "watchdog",
            "storm over",
        ] {
            assert_eq!(StopReason::parse(s).as_str(), s);
        }
        assert_eq!(StopReason::parse("watchdog"), StopReason::Watchdog);
        assert_eq!(StopReason::parse("x"), StopReason::Requested("x".into()));
    }

    #[test]
    fn stop_waits_for_every_task_and_no_longer() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let mut c = Controller::new();
        for delay in [0, 50] {
            let mut s = c.handle().unwrap();
            rt.spawn(async move {
                s.signalled().await;
                tokio::time::sleep(Duration::from_millis(delay)).await;
            });
        }
        let started = std::time::Instant::now();
        assert!(c.stop_and_wait(&rt, Duration::from_secs(10)));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(c.handle().is_none(), "no new task after the stop");

        let mut c = Controller::new();
        let stuck = c.handle().unwrap();
        rt.spawn(async move {
            let _keep = stuck;
            std::future::pending::<()>().await
        });
        assert!(
            !c.stop_and_wait(&rt, Duration::from_millis(20)),
            "a stuck task is waited for in vain"
        );
    }
}
