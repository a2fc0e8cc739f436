//! The process's state in one place: the main-thread bridge, the command service, the router,
//! this process's instance announcement, the main thread's dispatchers and the status they make.
//!
//! The pyo3 layer keeps one `Core` for the process and only converts arguments around it;
//! `cargo test` drives its own `Core`s with Rust dispatchers (rust_tests/core.rs).
//!
//! Locks: starting or stopping the service or the router holds that part's lock for as long as
//! it takes (a stop up to 1.5x its timeout), so a caller that holds the GIL releases it first.
//! Readers (`status`, `serving`, `router_running`) take a moment's read lock only: they never
//! wait for a stop.

use crate::bridge::{Bridge, Job, JobResult, Next, Payload};
use crate::defaults::DEFAULT_STOP_TIMEOUT;
use crate::error::{JobError, ServiceError};
use crate::instances::{self, Announce, Announcement, InstanceError};
use crate::journal::{Audit, Checkpoint, JobRecord};
use crate::router::{Router, RouterConfig, RouterError, Shared as RouterShared};
use crate::service::{Service, ServiceConfig, ServiceInfo, StatusSource};
use crate::shutdown::StopReason;
use crate::wire::protocol::Dialect;
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The keeper's answer before a changing job, as the record keeps it.
fn checkpoint_of(answer: JobResult) -> Checkpoint {
    match answer {
        Ok(v) => match v.get("checkpoint") {
            Some(Value::String(id)) => Checkpoint::Kept { id: id.clone() },
            _ => Checkpoint::Off,
        },
        Err(e) => Checkpoint::Failed { error: e.to_string() },
    }
}

/// How often a waiting `pump` gives its caller a turn (the binding: Python's signal handlers).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// The main thread's handler of one source of jobs: `call(name, params)`, only ever on the
/// thread that runs `tick` or `pump`.
pub trait Dispatcher: Send + Sync + 'static {
    /// What that thread holds while it runs jobs, handed to every call: the binding's is
    /// Python's token (a call then needs no attach of its own on the hot path); Rust's is `()`.
    type MainThread<'a>: Copy;

    fn call(&self, main: Self::MainThread<'_>, name: &str, params: &Map<String, Value>) -> JobResult;
}

/// Where jobs come from, each with its own dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The command service (BLD Remote's protocol).
    Service,
    /// The cr8_engine router's work.
    Router,
    /// The MCP add-on listener, per dialect.
    Addon(Dialect),
}

#[derive(Debug, thiserror::Error)]
#[error("unknown dialect {0:?}; use \"bld_remote\", \"blender_mcp\" or \"blender_lab\"")]
pub struct UnknownDialect(pub String);

impl Source {
    /// A listener's dialect by name: None or "bld_remote" is the command service's.
    pub fn dialect(name: Option<&str>) -> Result<Source, UnknownDialect> {
        match name {
            None | Some("bld_remote") => Ok(Source::Service),
            Some(name) => Dialect::from_name(name)
                .map(Source::Addon)
                .ok_or_else(|| UnknownDialect(name.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouterStartError {
    #[error("the router is already running")]
    AlreadyRunning,
    #[error(transparent)]
    Failed(#[from] RouterError),
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the service is not running")]
    NotServing,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What readers see, shared with the service's `get_status` (which answers on its I/O thread):
/// never the `Service` or `Router` themselves, whose locks a stop holds.
struct View {
    bridge: Arc<Bridge>,
    created: Instant,
    service: RwLock<Option<Arc<ServiceInfo>>>,
    router: RwLock<Option<Arc<RouterShared>>>,
}

impl View {
    fn status(&self) -> Value {
        crate::status::snapshot(
            &self.bridge,
            self.service.read().clone().as_deref(),
            self.router.read().clone().as_deref(),
            self.created.elapsed().as_secs_f64(),
        )
    }
}

/// One dispatcher slot. A job clones the dispatcher out of it: a handler may set a dispatcher
/// itself, and an old one is dropped after the lock is released (dropping a Python object can
/// run Python code).
type Slot<D> = Mutex<Option<Arc<D>>>;

/// The process's state; see the module's comment.
pub struct Core<D: Dispatcher> {
    view: Arc<View>,
    /// The running service; held by start and stop (see the module's comment on locks).
    service: Mutex<Option<Service>>,
    /// One router per process; the lock also serialises overlapping start/stop calls.
    router: Mutex<Option<Router>>,
    /// This process's instance file, while its service runs.
    announced: Mutex<Option<Announcement>>,
    service_dispatcher: Slot<D>,
    router_dispatcher: Slot<D>,
    blender_mcp_dispatcher: Slot<D>,
    blender_lab_dispatcher: Slot<D>,
    /// The main thread's keeper: called `before` a job that may change data (keep a checkpoint)
    /// and `after` it (the GUI's undo step); see [`Core::set_keeper`].
    keeper: Slot<D>,
    /// The process's audit log, handed to the service and the router when they start; see
    /// [`Core::set_audit`].
    audit: Mutex<Option<Arc<Audit>>>,
}

impl<D: Dispatcher> Default for Core<D> {
    fn default() -> Self {
        Core::new()
    }
}

impl<D: Dispatcher> Core<D> {
    /// Nothing running, no dispatchers, an empty bridge; the status's uptime counts from here.
    pub fn new() -> Self {
        Core {
            view: Arc::new(View {
                bridge: Arc::new(Bridge::default()),
                created: Instant::now(),
                service: RwLock::new(None),
                router: RwLock::new(None),
            }),
            service: Mutex::new(None),
            router: Mutex::new(None),
            announced: Mutex::new(None),
            service_dispatcher: Mutex::new(None),
            router_dispatcher: Mutex::new(None),
            blender_mcp_dispatcher: Mutex::new(None),
            blender_lab_dispatcher: Mutex::new(None),
            keeper: Mutex::new(None),
            audit: Mutex::new(None),
        }
    }

    /// The main-thread bridge: there is one main thread, so one queue for every source.
    pub fn bridge(&self) -> &Arc<Bridge> {
        &self.view.bridge
    }

    /// The snapshot behind `blendwire.status()`, also what the service answers `get_status` with.
    pub fn status(&self) -> Value {
        self.view.status()
    }

    // --- dispatchers and the main thread ---

    fn slot(&self, source: Source) -> &Slot<D> {
        match source {
            Source::Service => &self.service_dispatcher,
            Source::Router => &self.router_dispatcher,
            Source::Addon(Dialect::BlenderMcp) => &self.blender_mcp_dispatcher,
            Source::Addon(Dialect::BlenderLab) => &self.blender_lab_dispatcher,
        }
    }

    /// Set (or with None, clear) the dispatcher of `source`'s jobs.
    pub fn set_dispatcher(&self, source: Source, dispatcher: Option<D>) {
        let old = std::mem::replace(&mut *self.slot(source).lock(), dispatcher.map(Arc::new));
        drop(old);
    }

    /// Set (or with None, clear) the keeper. Before a job whose record may change data it is
    /// called `call(main, "before", record.for_keeper())` and answers `{"checkpoint": ID}`, or
    /// `{"checkpoint": null}` when checkpoints are off; an error is a failed checkpoint (the job
    /// still runs). After the job: `call(main, "after", {... "ok": bool})`, its answer ignored.
    pub fn set_keeper(&self, keeper: Option<D>) {
        let old = std::mem::replace(&mut *self.keeper.lock(), keeper.map(Arc::new));
        drop(old);
    }

    /// Set (or with None, turn off) the audit log of the listeners started from now on (a running
    /// service or router keeps the log it started with). The old log's lines are written first.
    pub fn set_audit(&self, audit: Option<Audit>) {
        let old = std::mem::replace(&mut *self.audit.lock(), audit.map(Arc::new));
        if let Some(old) = old {
            old.flush();
        }
    }

    /// The audit log the next listeners get, if it is on.
    pub fn audit(&self) -> Option<Arc<Audit>> {
        self.audit.lock().clone()
    }

    /// Wait until every audit line sent so far is written (a clean exit).
    pub fn flush_audit(&self) {
        if let Some(audit) = self.audit() {
            audit.flush();
        }
    }

    fn dispatch(&self, main: D::MainThread<'_>, payload: &Payload, record: Option<&JobRecord>) -> JobResult {
        let (source, name, params) = match payload {
            Payload::Command { name, params } => (Source::Service, name.as_str(), params),
            Payload::Router { op, params } => (Source::Router, op.name(), params),
            Payload::Addon { dialect, name, params } => (Source::Addon(*dialect), name.as_str(), params),
        };
        let dispatcher = self.slot(source).lock().clone().ok_or(JobError::NoDispatcher)?;
        let kept = record.filter(|r| r.changes()).map(|r| (r, self.keeper.lock().clone()));
        let Some((record, keeper)) = kept else {
            return dispatcher.call(main, name, params);
        };
        let Some(keeper) = keeper else {
            record.set_checkpoint(Checkpoint::Off);
            return dispatcher.call(main, name, params);
        };
        let mut info = record.for_keeper();
        record.set_checkpoint(checkpoint_of(keeper.call(main, "before", &info)));
        let result = dispatcher.call(main, name, params);
        info.insert("ok".into(), Value::Bool(result.is_ok()));
        if let Err(e) = keeper.call(main, "after", &info) {
            log::warn!("after {}: {e}", record.command);
        }
        result
    }

    /// Run `job` on this (the main) thread with its source's dispatcher, unless nobody waits for
    /// it any more or its deadline passed. Returns whether the dispatcher was called.
    pub fn run(&self, main: D::MainThread<'_>, job: Job) -> bool {
        let record = job.record();
        self.view
            .bridge
            .run(job, |payload| self.dispatch(main, payload, record.as_deref()))
    }

    /// A GUI timer's turn on the main thread: at least one queued job, then as many as start
    /// within `budget`; `after_job` runs after each (its error ends the tick). Returns how many
    /// jobs are left.
    pub fn tick<E>(
        &self,
        main: D::MainThread<'_>,
        budget: Duration,
        mut after_job: impl FnMut() -> Result<(), E>,
    ) -> Result<usize, E> {
        let bridge = &self.view.bridge;
        let started = Instant::now();
        while let Some(job) = bridge.try_next() {
            self.run(main, job);
            after_job()?;
            if started.elapsed() >= budget {
                break;
            }
        }
        bridge.metrics.max_tick_us.observe(started.elapsed().as_micros() as u64);
        Ok(bridge.len())
    }

    /// Run jobs on this (the main) thread as they come (`blender -b`, bpy) until a stop is asked
    /// for; returns its reason. Each wait for work goes through `wait` (the binding releases the
    /// GIL around it); `turn` follows every wait, told whether a job ran (its error ends the pump).
    pub fn pump<E>(
        &self,
        main: D::MainThread<'_>,
        mut wait: impl FnMut(&(dyn Fn() -> Next + Sync)) -> Next,
        mut turn: impl FnMut(bool) -> Result<(), E>,
    ) -> Result<StopReason, E> {
        let bridge = &self.view.bridge;
        // Spin only right after a job: an idle pump sleeps at once.
        let mut spin = Duration::ZERO;
        loop {
            let ran = match wait(&|| bridge.next_job(SIGNAL_CHECK, spin)) {
                Next::Job(job) => {
                    self.run(main, job);
                    spin = crate::bridge::SPIN;
                    true
                }
                Next::Stop(reason) => return Ok(reason),
                Next::Idle => {
                    spin = Duration::ZERO;
                    false
                }
            };
            turn(ran)?;
        }
    }

    // --- the command service ---

    /// Start the service (its `get_status` answered by this Core). A service that shut itself
    /// down (`server_shutdown`) is finished off first; a serving one is `AlreadyRunning`.
    pub fn start_service(&self, mut config: ServiceConfig) -> Result<SocketAddr, ServiceError> {
        let view = self.view.clone();
        config.status = Some(StatusSource(Arc::new(move || view.status())));
        config.audit = config.audit.or_else(|| self.audit());
        let mut slot = self.service.lock();
        if let Some(running) = slot.as_ref().filter(|s| s.is_serving()) {
            return Err(ServiceError::AlreadyRunning(running.addr()));
        }
        if let Some(old) = slot.take() {
            self.view.service.write().take();
            old.stop(DEFAULT_STOP_TIMEOUT);
        }
        self.view.bridge.clear_stop();
        let service = Service::start(config, self.view.bridge.clone())?;
        let addr = service.addr();
        *self.view.service.write() = Some(service.info());
        *slot = Some(service);
        Ok(addr)
    }

    /// Stop the service and withdraw its announcement; true if it was serving.
    pub fn stop_service(&self, timeout: Duration) -> bool {
        // Hold the lock until the listener is closed: a start that overlaps this stop must not
        // open a second listener while the first is still shutting down.
        let mut slot = self.service.lock();
        // Readers see the service gone from here on, not after the stop.
        self.view.service.write().take();
        self.withdraw();
        let was_serving = slot.take().is_some_and(|s| {
            let serving = s.is_serving();
            s.stop(timeout);
            serving
        });
        // The last requests' lines are on disk before the caller (maybe exiting) goes on.
        self.flush_audit();
        was_serving
    }

    /// The running service, while it serves (not after a `server_shutdown`).
    pub fn serving(&self) -> Option<Arc<ServiceInfo>> {
        self.view.service.read().clone().filter(|s| s.is_serving())
    }

    /// Stop the pump (reason "parent exited") when process `pid` exits; watched on the service's
    /// I/O thread.
    pub fn stop_when_process_exits(&self, pid: u32) -> Result<(), WatchError> {
        let slot = self.service.lock();
        let service = slot.as_ref().filter(|s| s.is_serving()).ok_or(WatchError::NotServing)?;
        Ok(service.stop_when_process_exits(pid)?)
    }

    // --- the router ---

    pub fn start_router(&self, mut config: RouterConfig) -> Result<(), RouterStartError> {
        config.audit = config.audit.or_else(|| self.audit());
        let mut slot = self.router.lock();
        if slot.is_some() {
            return Err(RouterStartError::AlreadyRunning);
        }
        let router = Router::start(config, self.view.bridge.clone())?;
        *self.view.router.write() = Some(router.shared.clone());
        *slot = Some(router);
        Ok(())
    }

    /// Stop the router (closing its connection); true if it was running.
    pub fn stop_router(&self, timeout: Duration) -> bool {
        // Hold the lock until the connection is closed, so an overlapping start cannot open a
        // second one meanwhile.
        let mut slot = self.router.lock();
        // Readers see the router gone from here on, not after the stop.
        self.view.router.write().take();
        slot.take().map(|r| r.stop(timeout)).is_some()
    }

    pub fn router_running(&self) -> bool {
        self.view.router.read().is_some()
    }

    // --- this process's instance file ---

    /// Announce `announce` (an earlier announcement's file goes first); returns the file's path.
    /// It lives until `withdraw` or the service's stop.
    pub fn announce(&self, announce: Announce) -> Result<PathBuf, InstanceError> {
        let mut slot = self.announced.lock();
        slot.take();
        let announcement = instances::announce(announce)?;
        let path = announcement.path().to_path_buf();
        *slot = Some(announcement);
        Ok(path)
    }

    /// The open .blend file changed; false when nothing is announced or the path is unchanged.
    pub fn update_announcement(&self, blend_file: Option<String>) -> Result<bool, InstanceError> {
        match self.announced.lock().as_mut() {
            Some(a) => a.set_blend_file(blend_file),
            None => Ok(false),
        }
    }

    /// Remove this process's instance file, if any; true if there was one.
    pub fn withdraw(&self) -> bool {
        self.announced.lock().take().is_some()
    }

    /// Everything down: the service, the router, and any queued job (their callers get
    /// `cancelled`).
    pub fn shutdown(&self, timeout: Duration) {
        self.stop_service(timeout);
        self.stop_router(timeout);
        self.view.bridge.cancel_all();
    }
}
