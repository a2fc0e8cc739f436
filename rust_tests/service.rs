//! The command service over real TCP, with a Rust thread standing in for Blender's main thread
//! (the real main thread is Python's; these tests pin the Rust side's behaviour on its own).

use blendwire::bridge::{Bridge, Next, Payload};
use blendwire::client::Client;
use blendwire::error::ClientError;
use blendwire::service::{Service, ServiceConfig, StatusSource};
use blendwire::wire::framing::{Decoder, Limits};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// Keys of the `block` jobs the tests have released.
static RELEASED: parking_lot::Mutex<Vec<String>> = parking_lot::Mutex::new(Vec::new());

/// A "main thread" that runs echo-like jobs until dropped.
struct MainThread {
    stop: Arc<AtomicBool>,
    ran: Arc<AtomicUsize>,
    handle: Option<thread::JoinHandle<()>>,
}

impl MainThread {
    fn start(bridge: Arc<Bridge>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ran = Arc::new(AtomicUsize::new(0));
        let (s, r) = (stop.clone(), ran.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Next::Job(job) = bridge.next_job(Duration::from_millis(20), Duration::ZERO) {
                    bridge.run(job, |payload| {
                        let Payload::Command { name, params } = payload else {
                            return Ok(Value::Null);
                        };
                        r.fetch_add(1, Ordering::SeqCst);
                        match name.as_str() {
                            "fail" => Err(blendwire::error::JobError::Handler {
                                code: "invalid_params".into(),
                                message: "say what".into(),
                            }),
                            "_legacy" => Ok(json!({"response": "OK", "message": "Task received"})),
                            "sleep" => {
                                thread::sleep(Duration::from_millis(params["ms"].as_u64().unwrap_or(0)));
                                Ok(json!("slept"))
                            }
                            "block" => {
                                let key = params["key"].as_str().unwrap_or("").to_string();
                                wait_until("the test to release the job", || RELEASED.lock().contains(&key));
                                Ok(json!("released"))
                            }
                            _ => Ok(json!({"echo": name, "params": params})),
                        }
                    });
                }
            }
        });
        MainThread {
            stop,
            ran,
            handle: Some(handle),
        }
    }

    fn ran(&self) -> usize {
        self.ran.load(Ordering::SeqCst)
    }
}

impl Drop for MainThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn start(bridge: &Arc<Bridge>, tweak: impl FnOnce(&mut ServiceConfig)) -> Service {
    let mut config = ServiceConfig {
        port: 0,
        commands: vec!["echo".into(), "fail".into(), "sleep".into(), "mark".into()],
        ..ServiceConfig::default()
    };
    tweak(&mut config);
    Service::start(config, bridge.clone()).expect("service starts")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Read until `n` complete JSON values arrived.
fn read_values(s: &mut TcpStream, n: usize) -> Vec<Value> {
    let mut d = Decoder::new(Limits::default());
    let mut out = vec![];
    let mut buf = [0u8; 65536];
    while out.len() < n {
        while let Some(v) = d.next_frame() {
            out.push(v.expect("valid JSON from the service"));
        }
        if out.len() >= n {
            break;
        }
        let k = s.read(&mut buf).expect("read");
        assert!(k > 0, "service closed after {} of {n} responses", out.len());
        d.extend(&buf[..k]);
    }
    out
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

fn at_eof(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn pipelined_and_split_requests_answer_in_order() {
    let bridge = Arc::new(Bridge::new(64));
    let _main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |_| {});
    let mut s = connect(svc.addr());
    s.write_all(br#"{"type":"echo","params":{"i":1}}{"type":"echo","params":{"i":2}}"#)
        .unwrap();
    let req = r#"{"type":"echo","params":{"s":"é🦀"}}"#.as_bytes();
    for b in req {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    let got = read_values(&mut s, 3);
    assert_eq!(got[0]["result"]["params"]["i"], 1);
    assert_eq!(got[1]["result"]["params"]["i"], 2);
    assert_eq!(got[2]["result"]["params"]["s"], "é🦀");
    assert!(got.iter().all(|v| v["status"] == "success"));
}

fn echo_requests(range: std::ops::Range<usize>) -> Vec<u8> {
    range
        .flat_map(|i| format!(r#"{{"type":"echo","params":{{"i":{i}}}}}"#).into_bytes())
        .collect()
}

#[test]
fn pipelined_requests_wait_for_the_main_thread_together_and_answer_in_order() {
    let bridge = Arc::new(Bridge::new(1024));
    let svc = start(&bridge, |_| {});
    let mut s = connect(svc.addr());
    // 40 requests with a bad one and an unknown command in between, in one write.
    let mut batch = echo_requests(0..20);
    batch.extend_from_slice(br#"{"type":3}{"type":"nope"}"#);
    batch.extend(echo_requests(20..40));
    s.write_all(&batch).unwrap();
    // No main thread yet: the connection queues up to PIPELINE_DEPTH jobs at once, no more.
    let depth = blendwire::defaults::PIPELINE_DEPTH;
    wait_until("the pipeline to fill", || bridge.len() >= depth - 2);
    // 30 jobs and the two answered at once fill the 32 places; nothing more is taken.
    assert_eq!(bridge.len(), depth - 2);
    let main = MainThread::start(bridge.clone());
    let got = read_values(&mut s, 42);
    let mut echoed = vec![];
    for v in &got {
        match v["status"].as_str() {
            Some("success") => echoed.push(v["result"]["params"]["i"].as_u64().unwrap()),
            _ => echoed.push(u64::MAX),
        }
    }
    let mut expected: Vec<u64> = (0..20).collect();
    expected.extend([u64::MAX, u64::MAX]);
    expected.extend(20..40);
    assert_eq!(echoed, expected);
    assert_eq!(got[21]["error_code"], "unknown_rpc_command");
    assert_eq!(main.ran(), 40);
}

#[test]
fn pipelining_holds_back_instead_of_answering_busy() {
    // A small queue: one connection's pipeline must not fill it and earn itself `busy` answers.
    let bridge = Arc::new(Bridge::new(8));
    let svc = start(&bridge, |_| {});
    let mut s = connect(svc.addr());
    s.write_all(&echo_requests(0..30)).unwrap();
    wait_until("the first jobs to be queued", || bridge.len() >= 2);
    let _main = MainThread::start(bridge.clone());
    let got = read_values(&mut s, 30);
    assert!(
        got.iter().all(|v| v["status"] == "success"),
        "{:?}",
        got.iter().find(|v| v["status"] != "success")
    );
    assert_eq!(bridge.metrics.busy_rejections.get(), 0);
}

#[test]
fn bad_input_gets_errors_and_the_connection_keeps_serving() {
    let bridge = Arc::new(Bridge::new(64));
    let _main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |_| {});
    let mut s = connect(svc.addr());
    s.write_all(br#"{"type": } [1] {"type":"nope"} {"type":"fail"} {"foo":1} {"code":"print(1)"} {"type":"echo"}"#)
        .unwrap();
    let got = read_values(&mut s, 7);
    let codes: Vec<&str> = got.iter().map(|v| v["error_code"].as_str().unwrap_or("-")).collect();
    assert_eq!(
        codes,
        [
            "invalid_json",
            "invalid_request",
            "unknown_rpc_command",
            "invalid_params",
            "unknown_rpc_command",
            "-",
            "-"
        ]
    );
    assert_eq!(
        got[2]["available_commands"],
        json!(["cancel", "echo", "fail", "mark", "server_shutdown", "sleep"])
    );
    assert_eq!(got[3]["message"], "say what");
    assert_eq!(
        got[5],
        json!({"response": "OK", "message": "Task received"}),
        "legacy reply is sent whole"
    );
    assert_eq!(got[6]["status"], "success");
    assert_eq!(svc.metrics.errors.snapshot()["unknown_rpc_command"], 2);
}

#[test]
fn oversized_request_is_answered_then_closed() {
    let bridge = Arc::new(Bridge::new(64));
    let _main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |c| c.limits.max_frame_bytes = 4096);
    let mut s = connect(svc.addr());
    s.write_all(b"{\"type\":\"echo\",\"params\":{\"x\":\"").unwrap();
    // The server may close while we still write; that is the point.
    let _ = s.write_all(&[b'a'; 100_000]);
    let got = read_values(&mut s, 1);
    assert_eq!(got[0]["error_code"], "request_too_large");
    assert!(at_eof(&mut s));
    // The service itself keeps serving.
    let mut s2 = connect(svc.addr());
    s2.write_all(br#"{"type":"echo"}"#).unwrap();
    assert_eq!(read_values(&mut s2, 1)[0]["status"], "success");
}

#[test]
fn full_queue_answers_busy_at_once() {
    let bridge = Arc::new(Bridge::new(1));
    let svc = start(&bridge, |_| {}); // no main thread: nothing drains
    let mut first = connect(svc.addr());
    first.write_all(br#"{"type":"echo"}"#).unwrap();
    wait_until("the first job to be queued", || bridge.len() == 1);
    let mut second = connect(svc.addr());
    second.write_all(br#"{"type":"echo"}"#).unwrap();
    let got = read_values(&mut second, 1);
    assert_eq!(got[0]["error_code"], "busy");
    assert_eq!(bridge.metrics.busy_rejections.get(), 1);
    // Once the main thread runs, the queued one is answered.
    let _main = MainThread::start(bridge.clone());
    assert_eq!(read_values(&mut first, 1)[0]["status"], "success");
}

#[test]
fn timed_out_job_is_answered_and_never_run() {
    let bridge = Arc::new(Bridge::new(8));
    let svc = start(&bridge, |_| {});
    let mut s = connect(svc.addr());
    s.write_all(br#"{"type":"mark","params":{"_timeout_seconds":0.2}}"#)
        .unwrap();
    let got = read_values(&mut s, 1);
    assert_eq!(got[0]["error_code"], "timeout");
    assert!(got[0]["message"].as_str().unwrap().contains("_timeout_seconds"));
    let main = MainThread::start(bridge.clone());
    wait_until("the stale job to be dropped", || {
        bridge.is_empty() && bridge.metrics.expired.get() == 1
    });
    assert_eq!(main.ran(), 0);
}

#[test]
fn job_of_a_client_that_left_is_not_run() {
    let bridge = Arc::new(Bridge::new(8));
    let svc = start(&bridge, |_| {});
    let mut s = connect(svc.addr());
    s.write_all(br#"{"type":"mark"}"#).unwrap();
    wait_until("the job to be queued", || bridge.len() == 1);
    drop(s);
    wait_until("the service to notice", || svc.metrics.connections_open.get() == 0);
    let main = MainThread::start(bridge.clone());
    wait_until("the job to be skipped", || {
        bridge.is_empty() && bridge.metrics.cancelled.get() == 1
    });
    assert_eq!(main.ran(), 0);
}

#[test]
fn server_shutdown_answers_then_closes_listener_and_stops_the_pump() {
    let bridge = Arc::new(Bridge::new(8));
    let svc = start(&bridge, |_| {});
    let addr = svc.addr();
    let mut idle = connect(addr);
    let mut s = connect(addr);
    s.write_all(br#"{"type":"server_shutdown","params":{}}"#).unwrap();
    let got = read_values(&mut s, 1);
    assert_eq!(
        got[0],
        json!({"status": "success", "result": {"message": "Server shutdown initiated"}})
    );
    assert!(matches!(bridge.next_job(WAIT, Duration::ZERO), Next::Stop(r) if r.as_str() == "shutdown"));
    wait_until("the listener to close", || TcpListener::bind(addr).is_ok());
    assert!(at_eof(&mut idle), "other connections are closed");
    assert!(!svc.is_serving());
    assert!(
        !svc.info().is_serving(),
        "readers' view of the service follows the shutdown"
    );
}

#[test]
fn a_pipeline_ends_at_server_shutdown() {
    let bridge = Arc::new(Bridge::new(64));
    let main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |_| {});
    let mut s = connect(svc.addr());
    s.write_all(br#"{"type":"echo","params":{"i":1}}{"type":"server_shutdown"}{"type":"echo","params":{"i":2}}"#)
        .unwrap();
    let got = read_values(&mut s, 2);
    assert_eq!(got[0]["result"]["params"]["i"], 1);
    assert_eq!(got[1]["result"]["message"], "Server shutdown initiated");
    assert!(at_eof(&mut s), "nothing after the shutdown answer");
    assert_eq!(main.ran(), 1, "a request after server_shutdown was run");
    assert!(!svc.is_serving());
}

#[test]
fn stop_frees_the_port_and_closes_connections() {
    let bridge = Arc::new(Bridge::new(8));
    let main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |_| {});
    let addr = svc.addr();
    let mut s = connect(addr);
    s.write_all(br#"{"type":"echo"}"#).unwrap();
    assert_eq!(read_values(&mut s, 1)[0]["status"], "success");
    svc.stop(Duration::from_secs(2));
    assert!(TcpListener::bind(addr).is_ok(), "port still taken after stop returned");
    assert!(at_eof(&mut s));
    drop(main);
}

#[test]
fn connection_limit_answers_with_an_error() {
    let bridge = Arc::new(Bridge::new(8));
    let _main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |c| c.max_connections = 2);
    let _a = connect(svc.addr());
    let _b = connect(svc.addr());
    wait_until("two connections", || svc.metrics.connections_open.get() == 2);
    let mut c = connect(svc.addr());
    let got = read_values(&mut c, 1);
    assert_eq!(got[0]["error_code"], "too_many_connections");
    assert!(at_eof(&mut c));
}

#[test]
fn client_calls_reconnects_and_reports_failures() {
    let bridge = Arc::new(Bridge::new(64));
    let _main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |_| {});
    let port = svc.addr().port();
    let client = Client::new("127.0.0.1", port, Duration::from_secs(10), Duration::from_secs(2));
    for i in 0..100 {
        let v = client.request(&json!({"type": "echo", "params": {"i": i}})).unwrap();
        assert_eq!(v["result"]["params"]["i"], i);
    }
    // Restart the service on the same port: the idle connection is found closed and replaced.
    svc.stop(Duration::from_secs(2));
    let svc = start(&bridge, |c| c.port = port);
    let v = client.request(&json!({"type": "echo"})).unwrap();
    assert_eq!(v["status"], "success");
    // A call in flight when the server goes away is reported, not retried.
    let mut slow_done = false;
    thread::scope(|scope| {
        let t = scope.spawn(|| client.request(&json!({"type": "sleep", "params": {"ms": 300}})));
        wait_until("the slow call to start", || svc.metrics.requests.get() >= 2);
        // Stopping drops the connection while the job still runs.
        drop(svc);
        match t.join().unwrap() {
            Err(ClientError::ConnectionLost { .. }) => slow_done = true,
            other => panic!("expected ConnectionLost, got {other:?}"),
        }
    });
    assert!(slow_done);
    // Nothing listens now: ConnectFailed after the connect timeout, naming the address.
    let err = client.request(&json!({"type": "echo"})).unwrap_err();
    assert!(matches!(err, ClientError::ConnectFailed { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
}

#[test]
fn client_times_out_naming_the_wait() {
    let bridge = Arc::new(Bridge::new(8));
    let svc = start(&bridge, |_| {}); // nothing drains the queue
    let client = Client::new(
        "127.0.0.1",
        svc.addr().port(),
        Duration::from_millis(300),
        Duration::from_secs(1),
    );
    let err = client.request(&json!({"type": "echo"})).unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(
        !client.is_connected(),
        "a timed-out connection is out of step and must be dropped"
    );
}

#[test]
fn many_clients_at_once() {
    let bridge = Arc::new(Bridge::new(1024));
    let _main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |_| {});
    let port = svc.addr().port();
    let failures = AtomicUsize::new(0);
    thread::scope(|scope| {
        for t in 0..16 {
            let failures = &failures;
            scope.spawn(move || {
                let client = Client::new("127.0.0.1", port, Duration::from_secs(20), Duration::from_secs(5));
                for i in 0..200 {
                    match client.request(&json!({"type": "echo", "params": {"t": t, "i": i}})) {
                        Ok(v) if v["result"]["params"]["i"] == i && v["result"]["params"]["t"] == t => {}
                        _ => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert_eq!(svc.metrics.requests.get(), 16 * 200);
}

#[test]
fn a_request_that_stalls_half_way_is_cut_after_the_read_timeout() {
    let bridge = Arc::new(Bridge::new(8));
    let _main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |c| c.read_timeout = Duration::from_millis(200));
    let mut idle = connect(svc.addr());
    let mut s = connect(svc.addr());
    s.write_all(br#"{"type":"echo","par"#).unwrap();
    let got = read_values(&mut s, 1);
    assert_eq!(got[0]["error_code"], "incomplete_request");
    assert!(at_eof(&mut s));
    // An idle connection with nothing half-sent is not cut.
    idle.write_all(br#"{"type":"echo"}"#).unwrap();
    assert_eq!(read_values(&mut idle, 1)[0]["status"], "success");
}

#[test]
fn a_client_that_never_reads_is_cut_after_the_write_timeout() {
    let bridge = Arc::new(Bridge::new(1024));
    let _main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |c| c.write_timeout = Duration::from_millis(300));
    let s = connect(svc.addr());
    let big = "x".repeat(256 * 1024);
    let request = serde_json::to_vec(&json!({"type": "echo", "params": {"pad": big}})).unwrap();
    // Keep sending and never read: the socket buffers fill and the server gives up.
    let mut writer = s.try_clone().unwrap();
    writer.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let until = Instant::now() + WAIT;
    while svc.metrics.connections_open.get() > 0 {
        assert!(Instant::now() < until, "the server never cut the connection");
        // Fails (times out) once the buffers are full; the loop then just waits for the cut.
        let _ = writer.write_all(&request);
    }
    // Other clients are still served.
    let mut other = connect(svc.addr());
    other.write_all(br#"{"type":"echo"}"#).unwrap();
    assert_eq!(read_values(&mut other, 1)[0]["status"], "success");
}

#[test]
fn with_a_token_every_request_must_carry_it_and_nothing_runs_otherwise() {
    let bridge = Arc::new(Bridge::new(8));
    let main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |c| c.token = Some("s3cret".into()));
    let mut s = connect(svc.addr());
    s.write_all(
        br#"{"type":"echo"} {"type":"echo","token":"wrong"} {"code":"print(1)"} {"type":"echo","token":"s3cret"}"#,
    )
    .unwrap();
    let got = read_values(&mut s, 4);
    for v in &got[..3] {
        assert_eq!(v["error_code"], "unauthorized");
        assert!(
            !v["message"].as_str().unwrap().contains("s3cret"),
            "the token leaked into a reply"
        );
    }
    assert_eq!(got[3]["status"], "success");
    assert_eq!(main.ran(), 1);
}

#[test]
fn a_non_loopback_host_needs_a_token() {
    let bridge = Arc::new(Bridge::new(8));
    let config = ServiceConfig {
        host: "0.0.0.0".into(),
        port: 0,
        ..ServiceConfig::default()
    };
    let err = Service::start(config.clone(), bridge.clone())
        .err()
        .expect("refused without a token");
    assert!(err.to_string().contains("BLENDWIRE_TOKEN"), "{err}");
    let svc = Service::start(
        ServiceConfig {
            token: Some("t".into()),
            ..config
        },
        bridge,
    )
    .expect("allowed with a token");
    assert!(svc.addr().ip().is_unspecified());
}

/// One request on a fresh connection, and its answer.
fn call(addr: SocketAddr, request: Value) -> Value {
    let mut s = connect(addr);
    s.write_all(request.to_string().as_bytes()).unwrap();
    read_values(&mut s, 1).remove(0)
}

fn with_status(bridge: &Arc<Bridge>) -> impl FnOnce(&mut ServiceConfig) {
    let b = bridge.clone();
    move |c: &mut ServiceConfig| {
        c.commands.extend(["get_status".into(), "block".into()]);
        c.status = Some(StatusSource(Arc::new(move || {
            blendwire::status::snapshot(&b, None, None, 0.0)
        })));
    }
}

#[test]
fn status_is_answered_while_a_job_holds_the_main_thread_and_names_it() {
    let bridge = Arc::new(Bridge::new(8));
    let _main = MainThread::start(bridge.clone());
    let svc = start(&bridge, with_status(&bridge));
    let addr = svc.addr();
    let mut long = connect(addr);
    let request = json!({"type": "block", "params": {"key": "status", "_timeout_seconds": 0.2}});
    long.write_all(request.to_string().as_bytes()).unwrap();
    let status = || call(addr, json!({"type": "get_status", "params": {}}))["result"]["main_thread"].clone();
    wait_until("the job to run", || status()["state"] == "running");
    let mt = status();
    assert_eq!(mt["command"], "block");
    assert_eq!(mt["client"], long.local_addr().unwrap().to_string());
    // Nothing here installs a signal handler, so the interrupt cannot land: past the deadline it
    // is pending, and after the grace the caller is answered `timeout` while the job still runs.
    wait_until("the interrupt to be pending", || status()["interrupt_pending"] == true);
    let answer = read_values(&mut long, 1).remove(0);
    assert_eq!(answer["error_code"], "timeout", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("still running"),
        "{answer}"
    );
    assert_eq!(status()["state"], "running", "it still runs");
    RELEASED.lock().push("status".into());
    wait_until("the job to end", || status()["state"] == "idle");
}

#[test]
fn a_job_that_ends_within_the_grace_after_its_deadline_is_answered_with_its_result() {
    let bridge = Arc::new(Bridge::new(8));
    let _main = MainThread::start(bridge.clone());
    let svc = start(&bridge, with_status(&bridge));
    let addr = svc.addr();
    let mut s = connect(addr);
    let request = json!({"type": "block", "params": {"key": "grace", "_timeout_seconds": 0.1}});
    s.write_all(request.to_string().as_bytes()).unwrap();
    let status = || call(addr, json!({"type": "get_status", "params": {}}))["result"]["main_thread"].clone();
    wait_until("the interrupt to be pending", || status()["interrupt_pending"] == true);
    RELEASED.lock().push("grace".into());
    let answer = read_values(&mut s, 1).remove(0);
    assert_eq!(answer["result"], "released", "{answer}");
}

#[test]
fn the_audit_log_has_every_request_its_start_first_and_never_the_token() {
    use blendwire::journal::{Audit, AuditConfig};
    let dir = std::env::temp_dir().join(format!("bw-service-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("audit.jsonl");
    let audit = Arc::new(Audit::open(AuditConfig::at(path.clone())).expect("the log opens"));
    let bridge = Arc::new(Bridge::new(8));
    let _main = MainThread::start(bridge.clone());
    let svc = start(&bridge, |c| {
        c.token = Some("s3cret-token-1".into());
        c.audit = Some(audit.clone());
        c.commands.push("execute_code".into());
    });
    let ran = call(
        svc.addr(),
        json!({"type": "execute_code", "params": {"code": "x = 1"}, "token": "s3cret-token-1", "id": "job-1"}),
    );
    assert_eq!(ran["status"], "success", "{ran}");
    let refused = call(
        svc.addr(),
        json!({"type": "execute_code", "params": {"code": "y = 2"}, "token": "wrong-guess-2"}),
    );
    assert_eq!(refused["error_code"], "unauthorized");
    let unknown = call(svc.addr(), json!({"type": "nope", "token": "s3cret-token-1"}));
    assert_eq!(unknown["error_code"], "unknown_rpc_command");
    audit.flush();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("s3cret-token-1") && !text.contains("wrong-guess-2"),
        "{text}"
    );
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["event"].as_str().unwrap(),
                l["command"].as_str().unwrap(),
                l["outcome"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("start", "execute_code", "-"),
            ("end", "execute_code", "ok"),
            ("end", "execute_code", "unauthorized"),
            ("end", "nope", "unknown_rpc_command"),
        ]
    );
    assert_eq!(lines[0]["code"], "x = 1");
    assert_eq!(lines[0]["request_id"], "job-1");
    assert_eq!(lines[0]["token_label"], "token");
    assert_eq!(lines[1]["seq"], lines[0]["seq"]);
    assert_eq!(lines[2]["code"], "y = 2");
    assert_eq!(
        lines[2]["token_label"],
        Value::Null,
        "a request without the token has no label"
    );
    assert!(lines
        .iter()
        .all(|l| l["listener"] == "service" && l["dialect"] == "bld_remote"));
    std::fs::remove_dir_all(&dir).unwrap();
}
