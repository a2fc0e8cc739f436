//! The router's connection state machine under tokio's paused clock: the real 300 s watchdog and
//! 2–10 s backoff run in virtual time against a scripted connector. Then, on the real clock, what
//! happens when Blender's main thread does not answer the router in time: against the scripted
//! connector (auth) and against a websocket engine stand-in with the real session (registry_update).

use blendwire::backoff::BackoffPolicy;
use blendwire::bridge::{Bridge, Next, Payload, RouterOp};
use blendwire::router::manager::run_manager;
use blendwire::router::session::WsConnector;
use blendwire::router::{ConnState, ConnectError, Connector, Link, LinkEnd, RouterConfig, Shared};
use blendwire::shutdown::{Controller, StopReason};
use blendwire::socketio::{self, Packet};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

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
    /// The auth each attempt was given.
    auths: Mutex<Vec<Value>>,
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
    async fn connect(&self, auth: Value) -> Result<FakeLink, ConnectError> {
        self.0.attempts.lock().push(Instant::now());
        self.0.auths.lock().push(auth);
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
    // No main thread here: the auth request times out at once and fallback_auth is sent.
    let config = RouterConfig {
        auth_timeout: Duration::from_millis(1),
        fallback_auth: json!({"token": "fallback"}),
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
        fallback_auth: json!({"token": "fallback"}),
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

// ---- a main thread that does not answer in time (real clock) ------------------------------------

/// What the stand-in main thread does with one router job.
#[derive(Clone)]
enum Turn {
    Answer(Value),
    /// Busy with something else until the job's deadline has passed: the job is then not run.
    Busy,
}

/// Plays Blender's main thread on a std thread: the `n`th job of each router op gets `turn(op, n)`.
struct MainThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// (op, turn) of every job taken, in order.
    log: Arc<Mutex<Vec<(RouterOp, &'static str)>>>,
}

impl MainThread {
    fn start(bridge: Arc<Bridge>, turn: impl Fn(RouterOp, usize) -> Turn + Send + 'static) -> MainThread {
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<(RouterOp, &'static str)>>> = Arc::default();
        let (stop2, log2) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Next::Job(job) = bridge.next_job(Duration::from_millis(20), Duration::ZERO) else {
                    continue;
                };
                let Payload::Router { op, .. } = job.payload else {
                    panic!("not a router job: {:?}", job.payload)
                };
                let n = log2.lock().iter().filter(|(o, _)| *o == op).count();
                match turn(op, n) {
                    Turn::Busy => {
                        log2.lock().push((op, "busy"));
                        // Busy until the job's deadline (a known instant, not a wait for readiness).
                        let left = job.deadline.saturating_duration_since(std::time::Instant::now());
                        std::thread::sleep(left + Duration::from_millis(5));
                        assert!(!bridge.run(job, |_| unreachable!("run after its deadline")));
                    }
                    Turn::Answer(v) => {
                        log2.lock().push((op, "answered"));
                        bridge.run(job, move |_| Ok(v));
                    }
                }
            }
        });
        MainThread {
            stop,
            thread: Some(thread),
            log,
        }
    }

    fn log(&self) -> Vec<(RouterOp, &'static str)> {
        self.log.lock().clone()
    }
}

impl Drop for MainThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `cond` every 5 ms until it holds; panics naming `what` after 30 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Quick settings for the real-clock tests: a short main-thread wait, quick retries.
fn quick_config(url: String) -> RouterConfig {
    RouterConfig {
        url,
        auth_timeout: Duration::from_millis(200),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            factor: 2.0,
            jitter: 0.5,
        },
        ..RouterConfig::default()
    }
}

fn registry_payload() -> Value {
    json!({"type": "registry_updated", "total_addons": 1, "available_tools": [{"name": "t", "addon_id": "a"}]})
}

fn auth_payload() -> Value {
    json!({"token": "tok", "username": "tester", "blend_file_path": ""})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connect_without_auth_while_the_main_thread_does_not_answer() {
    let script = Arc::new(Script::default());
    *script.then.lock() = Some(Attempt::Accept(None));
    let bridge = Arc::new(Bridge::new(64));
    // No fallback_auth (the default): nothing to send while the main thread is busy.
    let shared = Shared::new(quick_config("http://127.0.0.1:9".into()), bridge.clone());
    let mut stop = Controller::new();
    let main = MainThread::start(bridge.clone(), |op, n| match op {
        RouterOp::Auth if n < 3 => Turn::Busy,
        RouterOp::Auth => Turn::Answer(auth_payload()),
        _ => Turn::Answer(registry_payload()),
    });
    tokio::spawn(run_manager(
        FakeEngine(script.clone()),
        shared.clone(),
        stop.handle().unwrap(),
    ));

    wait_until("connected", || matches!(shared.state(), ConnState::Connected { .. })).await;
    // Three attempts failed without a CONNECT, each a failure like any other; the fourth connected
    // with what the main thread answered.
    let auths: Vec<(RouterOp, &str)> = main.log().into_iter().filter(|(op, _)| *op == RouterOp::Auth).collect();
    assert_eq!(
        auths.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        ["busy", "busy", "busy", "answered"]
    );
    assert_eq!(
        *script.auths.lock(),
        vec![auth_payload()],
        "a CONNECT was sent without the main thread's auth"
    );
    assert_eq!(shared.metrics.attempts.get(), 4);
    let last_error = shared.snapshot()["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        last_error.contains("not connecting without credentials"),
        "{last_error}"
    );
    assert!(stop.stop(Duration::from_secs(2)).await);
}

/// A cr8_engine stand-in on a real websocket: accepts one Socket.IO client on `/blender` and
/// reports what it receives (`("connect", auth)`, then `(event, data)` per event).
async fn engine_stand_in(listener: tokio::net::TcpListener, seen: tokio::sync::mpsc::UnboundedSender<(String, Value)>) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let open = r#"0{"sid":"e1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
    ws.send(Message::Text(open.into())).await.unwrap();
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        match socketio::decode(text.as_str()) {
            Ok(Packet::Connect { ns, data }) => {
                assert_eq!(ns, "/blender");
                let _ = seen.send(("connect".into(), data.unwrap_or_default()));
                ws.send(Message::Text(r#"40/blender,{"sid":"n1"}"#.into()))
                    .await
                    .unwrap();
            }
            Ok(Packet::Event { name, mut args, .. }) => {
                let data = if args.is_empty() { Value::Null } else { args.remove(0) };
                let _ = seen.send((name, data));
            }
            _ => {}
        }
    }
}

/// What the engine stand-in heard next.
async fn heard(seen: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Value)>) -> (String, Value) {
    tokio::time::timeout(Duration::from_secs(30), seen.recv())
        .await
        .expect("the engine stand-in heard nothing in 30 s")
        .expect("the engine stand-in ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_update_is_sent_once_the_main_thread_answers_after_missing_its_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(engine_stand_in(listener, tx));

    let bridge = Arc::new(Bridge::new(64));
    let config = quick_config(url);
    let connector = WsConnector::new(&config).unwrap();
    let shared = Shared::new(config, bridge.clone());
    // Busy for the first two registry requests (a GUI still loading, a long job), then answers.
    let main = MainThread::start(bridge.clone(), |op, n| match op {
        RouterOp::Auth => Turn::Answer(auth_payload()),
        RouterOp::Registry if n < 2 => Turn::Busy,
        _ => Turn::Answer(registry_payload()),
    });
    let mut stop = Controller::new();
    tokio::spawn(run_manager(connector, shared.clone(), stop.handle().unwrap()));

    assert_eq!(heard(&mut seen).await, ("connect".to_string(), auth_payload()));
    assert_eq!(
        heard(&mut seen).await,
        ("registry_update".to_string(), registry_payload())
    );
    assert_eq!(heard(&mut seen).await.0, "connection_status");
    let registry: Vec<&str> = main
        .log()
        .iter()
        .filter(|(op, _)| *op == RouterOp::Registry)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(registry, ["busy", "busy", "answered"]);
    // Still the same session: one connect, nothing failed.
    assert_eq!(shared.metrics.connects.get(), 1);
    assert!(matches!(shared.state(), ConnState::Connected { .. }));
    assert!(stop.stop(Duration::from_secs(2)).await);
}

/// An `https://` URL whose port speaks plain HTTP: the attempt fails as a TLS error that says so
/// (and suggests http://), not as a hang or a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_url_to_a_plain_http_port_is_a_clear_tls_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    let connector = WsConnector::new(&quick_config(format!("https://127.0.0.1:{port}"))).unwrap();
    let err = match connector.connect(auth_payload()).await {
        Ok(_) => panic!("a plain HTTP port cannot complete a TLS handshake"),
        Err(e) => e,
    };
    match &err {
        ConnectError::Tls(why) => assert!(
            why.contains("\"127.0.0.1\" did not answer in TLS") && why.contains("use http://"),
            "{why}"
        ),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(err.to_string().starts_with("TLS: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_router_command_has_its_audit_start_line_before_it_runs_and_its_end_after() {
    use blendwire::journal::{Audit, AuditConfig};
    let dir = std::env::temp_dir().join(format!("bw-router-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("audit.jsonl");
    let audit = Arc::new(Audit::open(AuditConfig::at(path.clone())).expect("the log opens"));
    let bridge = Arc::new(Bridge::new(8));
    let config = RouterConfig {
        audit: Some(audit.clone()),
        ..RouterConfig::default()
    };
    let shared = Shared::new(config, bridge.clone());
    // The "main thread" finds the start line on disk when the job runs.
    let (b, p) = (bridge.clone(), path.clone());
    let main = std::thread::spawn(move || loop {
        if let Next::Job(job) = b.next_job(Duration::from_secs(10), Duration::ZERO) {
            let seen = std::fs::read_to_string(&p).unwrap_or_default();
            b.run(job, |_| Ok(json!({"done": true})));
            return seen;
        }
    });
    let params = json!({"addon_id": "scene", "command": "clear", "code": "ignored"});
    let result = shared
        .main_thread(
            RouterOp::Command,
            params.as_object().unwrap().clone(),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(result.unwrap(), json!({"done": true}));
    let seen_by_the_job = main.join().unwrap();
    assert!(seen_by_the_job.contains("\"event\":\"start\""), "{seen_by_the_job}");
    audit.flush();
    let lines: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, event) in lines.iter().zip(["start", "end"]) {
        assert_eq!(line["event"], event);
        assert_eq!(line["listener"], "router");
        assert_eq!(line["dialect"], "cr8");
        assert_eq!(line["command"], "router:command scene.clear");
    }
    assert_eq!(lines[1]["outcome"], "ok");
    std::fs::remove_dir_all(&dir).unwrap();
}
