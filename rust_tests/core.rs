//! The process's `Core` driven without Python: a Rust dispatcher answers on a test thread that
//! runs the pump (or ticks, as a GUI timer does), as Blender's main thread does in the binding.

use blendwire::bridge::{JobResult, Payload, RouterOp};
use blendwire::core::{Core, Dispatcher, RouterStartError, Source, WatchError};
use blendwire::error::{JobError, ServiceError};
use blendwire::instances::{self, Announce, Runtime};
use blendwire::router::RouterConfig;
use blendwire::service::ServiceConfig;
use blendwire::shutdown::StopReason;
use blendwire::wire::framing::{Decoder, Limits};
use blendwire::wire::protocol::Dialect;
use serde_json::{json, Map, Value};
use std::cell::Cell;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);
const STOP: Duration = Duration::from_secs(2);

/// Answers `{by, name, params, nth}`: which dispatcher, what it was asked, and how many jobs the
/// main thread had run when it was (counted in the main thread's own context, which the Core
/// hands to every call). `fail` is a handler error.
struct Echo(&'static str);

impl Dispatcher for Echo {
    type MainThread<'a> = &'a Cell<u64>;

    fn call(&self, ran: &Cell<u64>, name: &str, params: &Map<String, Value>) -> JobResult {
        ran.set(ran.get() + 1);
        if name == "fail" {
            return Err(JobError::Handler {
                code: "invalid_params".into(),
                message: "say what".into(),
            });
        }
        Ok(json!({"by": self.0, "name": name, "params": params, "nth": ran.get()}))
    }
}

/// This binary's instance files go to a temp dir of its own. Every test calls this first (through
/// `new_core`), so the variable is set before any test thread does anything else.
fn runtime_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("blendwire-core-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
        dir
    })
}

fn new_core() -> Arc<Core<Echo>> {
    runtime_dir();
    Arc::new(Core::new())
}

fn config(tweak: impl FnOnce(&mut ServiceConfig)) -> ServiceConfig {
    let mut config = ServiceConfig {
        host: "127.0.0.1".into(),
        port: 0,
        commands: vec!["echo".into(), "fail".into(), "get_status".into()],
        ..ServiceConfig::default()
    };
    tweak(&mut config);
    config
}

/// A "main thread" running the Core's pump until a stop; joins to (why it stopped, jobs run).
fn pump<D>(core: &Arc<Core<D>>) -> thread::JoinHandle<(StopReason, u64)>
where
    D: for<'a> Dispatcher<MainThread<'a> = &'a Cell<u64>>,
{
    let core = core.clone();
    thread::spawn(move || {
        let ran = Cell::new(0);
        let reason = core
            .pump(&ran, |next| next(), |_| Ok::<(), Infallible>(()))
            .unwrap_or_else(|never| match never {});
        (reason, ran.get())
    })
}

/// One request on a fresh connection, and its answer.
fn call(addr: SocketAddr, request: Value) -> Value {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.to_string().as_bytes()).unwrap();
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = [0u8; 65536];
    loop {
        if let Some(v) = decoder.next_frame() {
            return v.expect("valid JSON from the service");
        }
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "the service closed without answering {request}");
        decoder.extend(&buf[..n]);
    }
}

fn later() -> Instant {
    Instant::now() + WAIT
}

#[test]
fn a_service_is_answered_by_the_dispatcher_on_the_pumping_thread_and_stops() {
    let core = new_core();
    core.set_dispatcher(Source::Service, Some(Echo("service")));
    let addr = core.start_service(config(|_| {})).expect("service starts");
    assert_eq!(core.serving().map(|s| s.addr()), Some(addr));
    let main = pump(&core);

    let answer = call(addr, json!({"type": "echo", "params": {"i": 1}}));
    assert_eq!(answer["status"], "success", "{answer}");
    assert_eq!(
        answer["result"],
        json!({"by": "service", "name": "echo", "params": {"i": 1}, "nth": 1})
    );
    let failed = call(addr, json!({"type": "fail", "params": {}}));
    assert_eq!(failed["error_code"], "invalid_params", "{failed}");

    // The status while it runs, read here and answered by the service from the same Core.
    let status = core.status();
    assert_eq!(status["service"]["running"], true);
    assert_eq!(status["service"]["port"], addr.port());
    assert_eq!(status["bridge"]["completed"], 1);
    assert_eq!(status["bridge"]["failed"], 1);
    assert_eq!(status["router"], json!({"state": "stopped"}));
    let remote = call(addr, json!({"type": "get_status", "params": {}}));
    assert_eq!(remote["result"]["service"]["port"], addr.port(), "{remote}");
    assert_eq!(
        remote["result"]["bridge"]["completed"], 1,
        "get_status is no job: {remote}"
    );

    core.bridge().request_stop(StopReason::Stopped);
    assert_eq!(main.join().unwrap(), (StopReason::Stopped, 2));
    assert!(core.stop_service(STOP), "it was serving");
    assert!(core.serving().is_none());
    assert_eq!(core.status()["service"], json!({"running": false}));
    assert!(!core.stop_service(STOP), "nothing left to stop");
}

#[test]
fn each_source_has_its_own_dispatcher_and_a_missing_one_is_an_error() {
    let core = new_core();
    core.set_dispatcher(Source::Service, Some(Echo("service")));
    core.set_dispatcher(Source::Addon(Dialect::BlenderMcp), Some(Echo("blender_mcp")));
    core.set_dispatcher(Source::Router, Some(Echo("router")));
    let addr = core
        .start_service(config(|c| c.mcp_addon_port = Some(0)))
        .expect("starts");
    let addon = core
        .serving()
        .and_then(|s| s.mcp_addon_addr())
        .expect("an add-on listener");
    let main = pump(&core);

    // blender-mcp's answer is the handler's result itself.
    let answer = call(addon, json!({"type": "get_scene_info", "params": {}}));
    assert_eq!(answer["by"], "blender_mcp", "{answer}");
    assert_eq!(answer["name"], "get_scene_info", "{answer}");
    let answer = call(addr, json!({"type": "echo", "params": {}}));
    assert_eq!(answer["result"]["by"], "service", "{answer}");

    // The router's jobs (here without a router: straight into the bridge) go to its dispatcher.
    let router_job = Payload::Router {
        op: RouterOp::Auth,
        params: Map::new(),
    };
    let rx = core.bridge().submit(router_job, later()).expect("queued");
    let got = rx.blocking_recv().expect("answered").expect("a result");
    assert_eq!(
        (got["by"].as_str(), got["name"].as_str()),
        (Some("router"), Some("auth"))
    );

    // Cleared: the job is answered `NoDispatcher`, and the pump goes on.
    core.set_dispatcher(Source::Router, None);
    let router_job = Payload::Router {
        op: RouterOp::Auth,
        params: Map::new(),
    };
    let rx = core.bridge().submit(router_job, later()).expect("queued");
    assert!(matches!(
        rx.blocking_recv().expect("answered"),
        Err(JobError::NoDispatcher)
    ));
    let answer = call(addr, json!({"type": "echo", "params": {}}));
    assert_eq!(answer["result"]["nth"], 4, "{answer}");

    core.bridge().request_stop(StopReason::Sigterm);
    assert_eq!(main.join().unwrap(), (StopReason::Sigterm, 4));
    core.shutdown(STOP);
    assert!(core.serving().is_none());
}

#[test]
fn dialect_names_choose_a_source() {
    assert_eq!(Source::dialect(None).unwrap(), Source::Service);
    assert_eq!(Source::dialect(Some("bld_remote")).unwrap(), Source::Service);
    assert_eq!(
        Source::dialect(Some("blender_lab")).unwrap(),
        Source::Addon(Dialect::BlenderLab)
    );
    let err = Source::dialect(Some("bld")).unwrap_err().to_string();
    assert!(err.contains("\"bld\"") && err.contains("blender_mcp"), "{err}");
}

#[test]
fn a_tick_runs_what_is_queued_within_its_budget_and_stops_at_an_error() {
    let core = new_core();
    core.set_dispatcher(Source::Service, Some(Echo("service")));
    let ran = Cell::new(0);
    let ok = || Ok::<(), Infallible>(());
    assert_eq!(core.tick(&ran, Duration::ZERO, ok), Ok(0), "nothing queued");

    let queue = |n: usize| -> Vec<_> {
        (0..n)
            .map(|i| {
                let job = Payload::Command {
                    name: "echo".into(),
                    params: Map::from_iter([("i".to_string(), json!(i))]),
                };
                core.bridge().submit(job, later()).expect("queued")
            })
            .collect()
    };
    // A budget of zero still runs one job; a long one runs them all.
    let answers = queue(3);
    assert_eq!(core.tick(&ran, Duration::ZERO, ok), Ok(2));
    assert_eq!(core.tick(&ran, WAIT, ok), Ok(0));
    for (i, rx) in answers.into_iter().enumerate() {
        assert_eq!(rx.blocking_recv().unwrap().unwrap()["params"]["i"], i);
    }
    // An error after a job (the binding: a SystemExit to re-raise) ends the tick at once.
    let _answers = queue(2);
    assert_eq!(core.tick(&ran, WAIT, || Err("exit")), Err("exit"));
    assert_eq!(core.bridge().len(), 1);
    assert_eq!(ran.get(), 4);
    assert!(core.status()["bridge"]["max_tick_ms"].as_f64().is_some());
}

#[test]
fn an_error_between_turns_ends_the_pump() {
    let core = new_core();
    core.set_dispatcher(Source::Service, Some(Echo("service")));
    let job = Payload::Command {
        name: "echo".into(),
        params: Map::new(),
    };
    let rx = core.bridge().submit(job, later()).expect("queued");
    let ran = Cell::new(0);
    let turns = Cell::new(Vec::new());
    let got = core.pump(
        &ran,
        |next| next(),
        |job_ran| {
            let mut seen = turns.take();
            seen.push(job_ran);
            turns.set(seen);
            Err("signal")
        },
    );
    assert_eq!(got, Err("signal"));
    assert_eq!(turns.take(), vec![true], "the turn after the job");
    assert!(rx.blocking_recv().unwrap().is_ok(), "answered before the turn");
}

#[test]
fn one_service_and_one_router_at_a_time() {
    let core = new_core();
    let addr = core.start_service(config(|_| {})).expect("starts");
    match core.start_service(config(|_| {})) {
        Err(ServiceError::AlreadyRunning(running)) => assert_eq!(running, addr),
        other => panic!("a second start: {other:?}"),
    }

    // Nothing listens on port 1: the router retries in the background.
    let router = || RouterConfig {
        url: "http://127.0.0.1:1".into(),
        ..RouterConfig::default()
    };
    assert!(!core.router_running());
    core.start_router(router()).expect("the router starts");
    assert!(core.router_running());
    assert_eq!(core.status()["router"]["url"], "http://127.0.0.1:1");
    assert!(matches!(
        core.start_router(router()),
        Err(RouterStartError::AlreadyRunning)
    ));
    assert!(core.stop_router(STOP));
    assert!(!core.router_running());
    assert_eq!(core.status()["router"], json!({"state": "stopped"}));
    assert!(!core.stop_router(STOP));

    core.shutdown(STOP);
    assert!(matches!(core.stop_when_process_exits(1), Err(WatchError::NotServing)));
}

#[test]
fn shutdown_cancels_queued_jobs() {
    let core = new_core();
    core.start_service(config(|_| {})).expect("starts");
    let job = Payload::Command {
        name: "echo".into(),
        params: Map::new(),
    };
    let rx = core.bridge().submit(job, later()).expect("queued");
    core.shutdown(STOP);
    assert!(core.bridge().is_empty());
    // Dropped unanswered: its waiter (the service's pipeline) answers `cancelled`.
    assert!(rx.blocking_recv().is_err());
    assert_eq!(core.status()["bridge"]["cancelled"], 1);
}

#[test]
fn the_pump_stops_when_a_watched_process_exits() {
    let core = new_core();
    core.start_service(config(|_| {})).expect("starts");
    let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
    core.stop_when_process_exits(child.id()).expect("watched");
    let main = pump(&core);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(main.join().unwrap(), (StopReason::ParentExited, 0));
    core.shutdown(STOP);
}

#[test]
fn the_announcement_lives_until_the_service_stops() {
    let core = new_core();
    assert!(!core.withdraw(), "nothing announced yet");
    assert!(!core.update_announcement(Some("/a.blend".into())).unwrap());
    let addr = core.start_service(config(|_| {})).expect("starts");
    let service = core.serving().expect("serving");
    let announce = Announce {
        host: service.addr().ip().to_string(),
        port: service.addr().port(),
        mcp_addon_port: None,
        token_required: service.token_required,
        blend_file: None,
        blender_version: "4.2.0".into(),
        runtime: Runtime::Background,
    };
    let path = core.announce(announce).expect("announced");
    assert!(path.starts_with(runtime_dir()), "{path:?} under XDG_RUNTIME_DIR");
    let ours = || {
        instances::discover()
            .into_iter()
            .find(|i| i.service.port == addr.port())
    };
    assert_eq!(ours().expect("discovered").service.blend_file, None);

    assert!(core.update_announcement(Some("/scenes/a.blend".into())).unwrap());
    assert!(
        !core.update_announcement(Some("/scenes/a.blend".into())).unwrap(),
        "unchanged"
    );
    assert_eq!(
        ours().expect("discovered").service.blend_file.as_deref(),
        Some("/scenes/a.blend")
    );

    assert!(core.stop_service(STOP));
    assert!(!path.exists(), "withdrawn with the service");
    assert!(ours().is_none());
    assert!(!core.withdraw());
    // No other test writes there.
    let _ = std::fs::remove_dir_all(runtime_dir());
}

/// A keeper that keeps checkpoint "cp-N" before each changing job (or fails when the job's
/// command is "echo_nodisk") and counts its calls in the main thread's context like `Echo`.
struct Keeper;

impl Dispatcher for Keeper {
    type MainThread<'a> = &'a Cell<u64>;

    fn call(&self, ran: &Cell<u64>, name: &str, params: &Map<String, Value>) -> JobResult {
        ran.set(ran.get() + 1);
        match name {
            "before" if params["job"]["command"] == "fail" => Err(JobError::Handler {
                code: "checkpoint_failed".into(),
                message: "No space left on device".into(),
            }),
            "before" => Ok(json!({"checkpoint": format!("cp-{}", ran.get())})),
            _ => Ok(Value::Null),
        }
    }
}

/// Echo and Keeper behind one type (a Core has one dispatcher type).
enum Either {
    Echo(Echo),
    Keeper(Keeper),
}

impl Dispatcher for Either {
    type MainThread<'a> = &'a Cell<u64>;

    fn call(&self, ran: &Cell<u64>, name: &str, params: &Map<String, Value>) -> JobResult {
        match self {
            Either::Echo(d) => d.call(ran, name, params),
            Either::Keeper(k) => k.call(ran, name, params),
        }
    }
}

#[test]
fn the_keeper_keeps_a_checkpoint_before_each_changing_job_and_the_answer_names_it() {
    runtime_dir();
    let core: Arc<Core<Either>> = Arc::new(Core::new());
    core.set_dispatcher(Source::Service, Some(Either::Echo(Echo("service"))));
    let addr = core
        .start_service(config(|c| c.commands.push("get_scene_info".into())))
        .expect("service starts");
    let main = pump(&core);

    // No keeper: a changing job runs and its answer names no checkpoint.
    let plain = call(addr, json!({"type": "echo", "params": {}}));
    assert_eq!(plain["status"], "success", "{plain}");
    assert!(plain.get("checkpoint").is_none(), "{plain}");

    core.set_keeper(Some(Either::Keeper(Keeper)));
    // "echo" may change data (it is not known to read): before (cp-2), the job (3), after (4).
    let changed = call(addr, json!({"type": "echo", "params": {}, "id": 9}));
    assert_eq!(changed["checkpoint"], "cp-2", "{changed}");
    assert_eq!(
        changed["result"]["nth"], 3,
        "the job runs after its checkpoint: {changed}"
    );
    // A read takes none.
    let read = call(addr, json!({"type": "get_scene_info", "params": {}}));
    assert_eq!(read["result"]["nth"], 5, "no keeper call for a read: {read}");
    assert!(read.get("checkpoint").is_none(), "{read}");
    // A failed checkpoint: the job still runs; the answer says so.
    let failed = call(addr, json!({"type": "fail", "params": {}}));
    assert_eq!(failed["error_code"], "invalid_params", "the job ran: {failed}");
    let why = failed["checkpoint_error"].as_str().unwrap_or_default();
    assert!(why.contains("No space left on device"), "{failed}");

    core.bridge().request_stop(StopReason::Stopped);
    // echo, echo (+2), get_scene_info, fail (+2)
    assert_eq!(main.join().unwrap(), (StopReason::Stopped, 8));
    core.stop_service(STOP);
}
