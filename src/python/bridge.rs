//! Main-thread side of the bridge: the process's `Core`, its Python dispatchers, `tick` (GUI
//! timers) and `pump` (-b, bpy).

use super::errors;
use crate::bridge::JobResult;
use crate::core::{Core, Dispatcher, Source};
use crate::defaults;
use crate::error::JobError;
use crate::logbuffer;
use crate::settings;
use crate::shutdown::StopReason;
use parking_lot::Mutex;
use pyo3::prelude::*;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

/// The process's one `Core`: module functions have no `self` to hold it.
static CORE: OnceLock<Core<PyDispatcher>> = OnceLock::new();

pub(super) fn core() -> &'static Core<PyDispatcher> {
    CORE.get_or_init(Core::new)
}

thread_local! {
    /// A KeyboardInterrupt/SystemExit raised inside a handler, re-raised once the job is answered.
    static PROCESS_EXIT: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    core(); // the status's uptime counts from the import
    m.add_function(wrap_pyfunction!(set_dispatcher, m)?)?;
    m.add_function(wrap_pyfunction!(set_router_dispatcher, m)?)?;
    m.add_function(wrap_pyfunction!(set_keeper, m)?)?;
    m.add_function(wrap_pyfunction!(state_dir, m)?)?;
    m.add_function(wrap_pyfunction!(tick, m)?)?;
    m.add_function(wrap_pyfunction!(pump, m)?)?;
    m.add_function(wrap_pyfunction!(stop_pump, m)?)?;
    m.add_function(wrap_pyfunction!(take_stop_request, m)?)?;
    m.add_function(wrap_pyfunction!(activity, m)?)?;
    m.add_function(wrap_pyfunction!(set_queue_capacity, m)?)?;
    m.add_function(wrap_pyfunction!(set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(flush_logs, m)?)?;
    m.add_function(wrap_pyfunction!(enable_interrupts, m)?)?;
    m.add_function(wrap_pyfunction!(interrupt_message, m)?)?;
    m.add_function(wrap_pyfunction!(interrupt_running, m)?)?;
    m.add_function(wrap_pyfunction!(report_progress, m)?)?;
    m.add_function(wrap_pyfunction!(job_streams, m)?)?;
    m.add_class::<JobOutput>()?;
    m.add("INTERRUPT_SIGNAL", crate::bridge::interrupter::INTERRUPT_SIGNAL)?;
    m.add("PENDING_KEY", crate::bridge::pending::PENDING_KEY)?;
    Ok(())
}

/// The main-thread handler of the command service (`dialect` None or "bld_remote"), or of one of
/// the MCP add-on listener's dialects ("blender_mcp", "blender_lab"): `fn(name, params)`.
#[pyfunction]
#[pyo3(signature = (fn_, dialect = None))]
fn set_dispatcher(fn_: Option<Py<PyAny>>, dialect: Option<&str>) -> PyResult<()> {
    let source = Source::dialect(dialect).map_err(|e| errors::invalid(e.to_string()))?;
    core().set_dispatcher(source, fn_.map(PyDispatcher));
    Ok(())
}

#[pyfunction]
fn set_router_dispatcher(fn_: Option<Py<PyAny>>) {
    core().set_dispatcher(Source::Router, fn_.map(PyDispatcher));
}

/// The main thread's keeper `fn(phase, info)`: called with "before" ahead of every job that may
/// change data (returns `{"checkpoint": ID}` or `{"checkpoint": None}`; raising is a failed
/// checkpoint, the job still runs) and with "after" once it ran (`info["ok"]`). None: no keeper.
#[pyfunction]
fn set_keeper(fn_: Option<Py<PyAny>>) {
    core().set_keeper(fn_.map(PyDispatcher));
}

/// The user's state directory (checkpoints and the audit log by default), made private (0700)
/// if missing; raises OSError if it is not a private folder of the user's.
#[pyfunction]
fn state_dir() -> PyResult<String> {
    let dir = crate::journal::state_dir();
    crate::journal::private_dir(&dir)?;
    Ok(dir.to_string_lossy().into_owned())
}

#[pyfunction]
#[pyo3(signature = (budget_ms = None))]
fn tick(py: Python<'_>, budget_ms: Option<f64>) -> PyResult<usize> {
    let budget_ms = budget_ms.unwrap_or(crate::defaults::DEFAULT_TICK_BUDGET_MS);
    let budget = Duration::from_secs_f64(if budget_ms.is_finite() {
        budget_ms.max(0.0) / 1000.0
    } else {
        0.0
    });
    let left = core().tick(py, budget, reraise_process_exit)?;
    emit_logs(py);
    Ok(left)
}

#[pyfunction]
fn pump(py: Python<'_>) -> PyResult<String> {
    let reason = core().pump(
        py,
        |next| py.detach(next),
        |ran| {
            if ran {
                reraise_process_exit()?;
            }
            emit_logs(py);
            py.check_signals()
        },
    )?;
    emit_logs(py);
    Ok(reason.as_str().to_string())
}

#[pyfunction]
#[pyo3(signature = (reason = None))]
fn stop_pump(reason: Option<&str>) {
    core()
        .bridge()
        .request_stop(reason.map_or(StopReason::Stopped, StopReason::parse));
}

/// A number that changes whenever a job is queued: lets a GUI timer stay on every main-loop turn
/// while clients are active and slow down when they are not, without a status() call.
#[pyfunction]
fn activity() -> u64 {
    core().bridge().metrics.submitted.get()
}

#[pyfunction]
fn take_stop_request() -> Option<String> {
    core().bridge().take_stop().map(|r| r.as_str().to_string())
}

#[pyfunction]
#[pyo3(signature = (capacity = None))]
fn set_queue_capacity(capacity: Option<i64>) -> PyResult<()> {
    let capacity = match capacity {
        Some(c) => settings::queue_capacity(c).map_err(|rule| errors::setting("queue_capacity", rule))?,
        None => defaults::DEFAULT_QUEUE_CAPACITY,
    };
    core().bridge().set_capacity(capacity);
    Ok(())
}

/// Level of the core's own log records: a `logging` level name or number. Returns the
/// canonical name ("DEBUG", "INFO", "WARNING" or "ERROR").
#[pyfunction]
fn set_log_level(level: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    let level = super::settings::log_level(level)?;
    log::set_max_level(level.filter());
    Ok(level.name())
}

/// The runtime has installed its handler for `INTERRUPT_SIGNAL` on the main thread (True), so
/// jobs past their deadline (or running at a stop) may be interrupted with it; False: never signal.
#[pyfunction]
fn enable_interrupts(on: bool) {
    let signal = if on {
        crate::bridge::interrupter::INTERRUPT_SIGNAL
    } else {
        0
    };
    core().bridge().main.set_signal(signal);
}

/// For the signal handler: the message to raise `Interrupted` with if the job running on this
/// thread is to be interrupted, else None.
#[pyfunction]
fn interrupt_message() -> Option<String> {
    core().bridge().main.pending_message()
}

/// Interrupt the running job (if any) for a stop with `reason`, even from the main thread (the
/// runtime's SIGINT/SIGTERM handler); repeated until it ends.
#[pyfunction]
fn interrupt_running(reason: &str) {
    core().bridge().main.interrupt(reason);
}

/// The running job reports progress (`blendwire.progress`, from any thread while it runs: renders
/// report from Blender's render thread). True if its client listens; False between jobs or when
/// the client did not ask for progress.
#[pyfunction]
#[pyo3(signature = (fraction = None, message = None))]
fn report_progress(fraction: Option<f64>, message: Option<String>) -> PyResult<bool> {
    let fraction = fraction
        .map(crate::bridge::progress::fraction)
        .transpose()
        .map_err(errors::invalid)?;
    let Some(progress) = core().bridge().main.progress() else {
        return Ok(false);
    };
    progress.report(fraction, message);
    Ok(true)
}

/// Whether the running job streams its progress and output to its client.
#[pyfunction]
fn job_streams() -> bool {
    core().bridge().main.progress().is_some()
}

/// A job's captured stdout that also streams each write to the job's client (`"progress": true`):
/// its `write` is native, so a job that prints a lot pays about what an `io.StringIO` costs.
#[pyclass(module = "blendwire._core", frozen)]
struct JobOutput {
    text: Mutex<String>,
    progress: Option<std::sync::Arc<crate::bridge::progress::Progress>>,
}

#[pymethods]
impl JobOutput {
    /// Bound to the running job's progress (a plain capture when its client did not ask).
    #[new]
    fn new() -> Self {
        JobOutput {
            text: Mutex::new(String::new()),
            progress: core().bridge().main.progress(),
        }
    }

    fn write(&self, s: &str) -> usize {
        self.text.lock().push_str(s);
        if let Some(p) = &self.progress {
            p.output(s);
        }
        s.chars().count()
    }

    fn getvalue(&self) -> String {
        self.text.lock().clone()
    }
}

/// Hand pending core log records to Python's `logging` now (tick and pump do this themselves).
#[pyfunction]
fn flush_logs(py: Python<'_>) {
    emit_logs(py);
}

/// A Python callable `fn(name, params)` as a dispatcher of the Core.
pub(super) struct PyDispatcher(Py<PyAny>);

impl Dispatcher for PyDispatcher {
    type MainThread<'py> = Python<'py>;

    fn call(&self, py: Python<'_>, name: &str, params: &Map<String, Value>) -> JobResult {
        let params = super::json::map_to_py(py, params).map_err(|e| JobError::Unserializable(e.to_string()))?;
        match self.0.call1(py, (name, params)) {
            Ok(result) => super::json::to_value(result.bind(py)).map_err(|e| {
                JobError::Unserializable(format!(
                    "{e}; handlers must return JSON data (dict with str keys, list, str, int, float, bool, None)"
                ))
            }),
            Err(err) if errors::is_interrupted(py, &err) => {
                let running = core().bridge().main.running();
                Err(errors::interrupted(py, &err, running.as_ref()))
            }
            Err(err) => {
                let job_error = errors::handler_error(py, &err);
                if errors::is_process_exit(py, &err) {
                    PROCESS_EXIT.with(|slot| *slot.borrow_mut() = Some(err));
                }
                Err(job_error)
            }
        }
    }
}

fn reraise_process_exit() -> PyResult<()> {
    match PROCESS_EXIT.with(|slot| slot.borrow_mut().take()) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

pub fn emit_logs(py: Python<'_>) {
    let records = logbuffer::install().drain();
    if records.is_empty() {
        return;
    }
    let Ok(logging) = py.import("logging") else { return };
    for r in records {
        let level = match r.level {
            log::Level::Error => 40,
            log::Level::Warn => 30,
            log::Level::Info => 20,
            log::Level::Debug | log::Level::Trace => 10,
        };
        let name = r.target.replace("::", ".");
        if let Ok(logger) = logging.call_method1("getLogger", (name,)) {
            let _ = logger.call_method1("log", (level, r.message));
        }
    }
}
