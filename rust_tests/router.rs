//! The router's connection state machine under tokio's paused clock: the real 300 s watchdog and
//! 2–10 s backoff run in virtual time against a scripted connector.

use blendwire::queue::Bridge;
use blendwire::router::{run_manager, ConnState, ConnectError, Connector, Link, LinkEnd, RouterConfig, Shared};
use blendwire::shutdown::{Controller, StopReason};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What the scripted engine does on each attempt.
#[derive(Clone, Copy)]
enum Attempt {
    Refuse,
    Reject,
    /// Accept, then drop the connection after this long (`None`: keep it).
    Accept(Option<Duration>),
}

#[derive(Default)]
struct Script {
    plan: Mutex<VecDeque<Attempt>>,
    /// What happens once the plan is used up.
    then: Mutex<Option<Attempt>>,
    attempts: Mutex<Vec<Instant>>,
}

#[derive(Clone)]
struct FakeEngine(Arc<Script>);

struct FakeLink(Option<Duration>);

impl Link for FakeLink {
    async fn run(self, _shared: Arc<Shared>) -> LinkEnd {
        match self.0 {
            Some(d) => {
                tokio::time::sleep(d).await;
                LinkEnd::Closed
            }
            None => std::future::pending().await,
        }
    }
}

impl Connector for FakeEngine {
    type Link = FakeLink;
    async fn connect(&self, _auth: Value) -> Result<FakeLink, ConnectError> {
        self.0.attempts.lock().push(Instant::now());
        let next = self
            .0
            .plan
            .lock()
            .pop_front()
            .or(*self.0.then.lock())
            .unwrap_or(Attempt::Refuse);
        match next {
            Attempt::Refuse => Err(ConnectError::Unreachable("connection refused".into())),
            Attempt::Reject => Err(ConnectError::Rejected("Not authorized".into())),
            Attempt::Accept(lives) => Ok(FakeLink(lives)),
        }
    }
}

struct Harness {
    script: Arc<Script>,
    shared: Arc<Shared>,
    bridge: Arc<Bridge>,
    stop: Controller,
    task: tokio::task::JoinHandle<()>,
}

fn start(plan: Vec<Attempt>, then: Attempt) -> Harness {
    let script = Arc::new(Script::default());
    *script.plan.lock() = plan.into();
    *script.then.lock() = Some(then);
    let bridge = Arc::new(Bridge::new(64));
    // No main thread here: the auth request times out at once and fallback_auth ({}) is sent.
    let config = RouterConfig {
        auth_timeout: Duration::from_millis(1),
        ..RouterConfig::default()
    };
    let shared = Shared::new(config, bridge.clone());
    let stop = Controller::new();
    let handle = stop.handle().expect("not stopped yet");
    let task = tokio::spawn(run_manager(FakeEngine(script.clone()), shared.clone(), handle));
    Harness {
        script,
        shared,
        bridge,
        stop,
        task,
    }
}

async fn advance(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

impl Harness {
    fn attempts(&self) -> Vec<Instant> {
        self.script.attempts.lock().clone()
    }

    /// Drain the auth jobs nobody ran (their waiters timed out) so the queue never fills.
    fn drain_jobs(&self) {
        while self.bridge.try_next().is_some() {}
    }
}

#[tokio::test(start_paused = true)]
async fn retries_with_growing_jittered_gaps_then_the_watchdog_saves_and_quits() {
    let h = start(vec![], Attempt::Refuse);
    // Six attempts take at most (2+4+8+10+10) s × 1.5 = 51 s, whatever the jitter draws.
    advance(52).await;
    h.drain_jobs();
    let at = h.attempts();
    assert!(at.len() >= 6, "attempts: {}", at.len());
    // Gaps: 2, 4, 8, 10, 10 s (±50% jitter) plus the 1 ms auth wait.
    let bases = [2.0, 4.0, 8.0, 10.0, 10.0];
    for (i, base) in bases.iter().enumerate() {
        let gap = (at[i + 1] - at[i]).as_secs_f64();
        assert!(
            gap >= base * 0.5 && gap <= base * 1.5 + 0.01,
            "gap {i} = {gap} s, base {base} s"
        );
    }
    // Armed at the 5th failure: 300 s from then it fires, not before.
    let armed_at = at[4];
    let left = h.shared.watchdog_left().expect("armed after 5 failures");
    assert!(left <= Duration::from_secs(300));
    let fires_at = armed_at + Duration::from_secs(300);
    tokio::time::sleep_until(fires_at - Duration::from_secs(1)).await;
    h.drain_jobs();
    assert!(matches!(
        h.shared.state(),
        ConnState::Backoff { .. } | ConnState::Connecting { .. }
    ));
    assert_eq!(h.bridge.take_stop(), None, "fired early");
    // Retries went on while armed: at least one per 15 s (10 s cap + 50% jitter) for 299 s.
    assert!(
        h.attempts().len() >= 5 + 19,
        "retries stopped while the watchdog was armed"
    );
    tokio::time::sleep_until(fires_at + Duration::from_millis(10)).await;
    assert_eq!(h.bridge.take_stop(), Some(StopReason::Watchdog));
    assert_eq!(StopReason::Watchdog.as_str(), "watchdog");
    assert_eq!(h.shared.state(), ConnState::GaveUp);
    assert!(h.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_disarms_the_watchdog() {
    let refusals = vec![Attempt::Refuse; 7];
    let h = start([refusals, vec![Attempt::Accept(None)]].concat(), Attempt::Refuse);
    // 7 refusals take at most 2+4+8+10+10+10+10 s × 1.5.
    advance(100).await;
    h.drain_jobs();
    assert!(
        matches!(h.shared.state(), ConnState::Connected { .. }),
        "{:?}",
        h.shared.state()
    );
    assert_eq!(h.shared.watchdog_left(), None, "connected but still armed");
    advance(1000).await;
    assert_eq!(h.bridge.take_stop(), None);
    assert_eq!(h.shared.metrics.connects.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn rejected_namespace_is_retried_like_any_failure() {
    let h = start(vec![Attempt::Reject, Attempt::Reject], Attempt::Accept(None));
    advance(30).await;
    h.drain_jobs();
    assert_eq!(h.attempts().len(), 3);
    assert!(matches!(h.shared.state(), ConnState::Connected { .. }));
    let snap = h.shared.snapshot();
    assert_eq!(snap["consecutive_failures"], 0);
    assert_eq!(snap["state"], "connected");
}

#[tokio::test(start_paused = true)]
async fn flapping_server_never_leads_to_a_quit() {
    // 20 restarts: each connection lives 30 s, then 6 refusals (enough to arm the watchdog)
    // before the server is back.
    let mut plan = vec![];
    for _ in 0..20 {
        plan.push(Attempt::Accept(Some(Duration::from_secs(30))));
        plan.extend([Attempt::Refuse; 6]);
    }
    let h = start(plan, Attempt::Accept(None));
    let mut seen_armed = 0;
    for _ in 0..1200 {
        advance(3).await;
        h.drain_jobs();
        seen_armed += h.shared.watchdog_left().is_some() as u32;
        assert_eq!(
            h.bridge.take_stop(),
            None,
            "watchdog fired while the server kept coming back"
        );
    }
    assert!(seen_armed > 0, "the scenario never armed the watchdog");
    assert_eq!(h.shared.metrics.connects.get(), 21);
    assert!(matches!(h.shared.state(), ConnState::Connected { .. }));
}

#[tokio::test(start_paused = true)]
async fn stop_ends_the_manager_from_any_state() {
    let mut h = start(vec![], Attempt::Refuse);
    advance(5).await;
    assert!(
        h.stop.stop(Duration::from_secs(1)).await,
        "manager stops promptly (its handle dropped)"
    );
    let task = h.task;
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("manager stops promptly")
        .unwrap();
    assert_eq!(h.shared.state(), ConnState::Stopped);
    assert_eq!(h.bridge.take_stop(), None);
}

#[tokio::test(start_paused = true)]
async fn disabled_watchdog_never_fires() {
    let script = Arc::new(Script::default());
    *script.then.lock() = Some(Attempt::Refuse);
    let bridge = Arc::new(Bridge::new(1024));
    let mut config = RouterConfig {
        auth_timeout: Duration::from_millis(1),
        ..RouterConfig::default()
    };
    config.watchdog.duration = None;
    let shared = Shared::new(config, bridge.clone());
    let stop = Controller::new();
    tokio::spawn(run_manager(FakeEngine(script), shared.clone(), stop.handle().unwrap()));
    for _ in 0..20 {
        advance(100).await;
        while bridge.try_next().is_some() {}
    }
    assert_eq!(bridge.take_stop(), None);
    assert_eq!(shared.watchdog_left(), None);
    let failures: Value = shared.snapshot()["consecutive_failures"].clone();
    assert!(failures.as_u64().unwrap() > 100);
}
