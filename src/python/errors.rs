//! The one mapping of core errors to the Python exceptions of `blendwire.errors`.

use crate::error::{self, ClientError, JobError};
use crate::router::RouterError;
use crate::settings::Problem;
use pyo3::exceptions::{
    PyKeyboardInterrupt, PyLookupError, PyOSError, PyRuntimeError, PySystemExit, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyList;

pyo3::import_exception!(blendwire.errors, CommandError);
pyo3::import_exception!(blendwire.errors, ConnectionFailed);
pyo3::import_exception!(blendwire.errors, ConnectionLost);
pyo3::import_exception!(blendwire.errors, Timeout);
pyo3::import_exception!(blendwire.errors, ProtocolError);
pyo3::import_exception!(blendwire.errors, ServiceError);

pyo3::import_exception!(blendwire.errors, PortInUse);
pyo3::import_exception!(blendwire.errors, Interrupted);

/// How many of the innermost frames an `interrupted` error shows.
const INTERRUPTED_FRAMES: usize = 4;

/// Settings that break their rules: one ValueError naming each (`"{setting} {rule}"`).
pub fn settings_error(problems: Vec<Problem>) -> PyErr {
    let text: Vec<String> = problems.iter().map(Problem::to_string).collect();
    PyValueError::new_err(text.join("; "))
}

/// One setting or argument that breaks its rule (the rule text from `crate::settings`).
pub fn setting(name: &'static str, rule: String) -> PyErr {
    settings_error(vec![Problem { setting: name, rule }])
}

/// A value that is a sentence of its own (e.g. an unknown log level).
pub fn invalid(message: String) -> PyErr {
    PyValueError::new_err(message)
}

/// An argument that cannot be converted (to JSON, ...).
pub fn bad_argument(name: &str, e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{name}: {e}"))
}

/// A setting of the wrong type: a TypeError that names it.
pub fn wrong_type(py: Python<'_>, name: &str, e: PyErr) -> PyErr {
    PyTypeError::new_err(format!("{name}: {}", e.value(py)))
}

/// A keyword argument the function does not take (as Python words it).
pub fn unexpected_argument(func: &str, name: &str) -> PyErr {
    PyTypeError::new_err(format!("{func}() got an unexpected keyword argument '{name}'"))
}

pub fn router_error(e: RouterError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

pub fn router_already_running() -> PyErr {
    ServiceError::new_err("the router is already running; stop_router() first")
}

pub fn service_not_running() -> PyErr {
    PyRuntimeError::new_err("the service is not running: start it before watching a process")
}

pub fn cannot_watch(pid: u32, e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!("cannot watch process {pid}: {e}"))
}

pub fn nothing_to_announce() -> PyErr {
    PyRuntimeError::new_err("the service is not running: start it before announcing it")
}

/// The instance file could not be written: an OSError saying which and why.
pub fn instance_error(e: crate::instances::InstanceError) -> PyErr {
    PyOSError::new_err(e.to_string())
}

/// No single running instance: a LookupError that says how to start one or lists the candidates.
pub fn choose_error(e: crate::instances::ChooseError) -> PyErr {
    PyLookupError::new_err(e.to_string())
}

pub fn service_error(e: error::ServiceError) -> PyErr {
    match e {
        error::ServiceError::PortInUse { .. } => PortInUse::new_err(e.to_string()),
        _ => ServiceError::new_err(e.to_string()),
    }
}

pub fn client_error(e: ClientError) -> PyErr {
    let msg = e.to_string();
    match e {
        ClientError::ConnectFailed { .. } => ConnectionFailed::new_err(msg),
        ClientError::Timeout { .. } => Timeout::new_err(msg),
        ClientError::ConnectionLost { .. } => ConnectionLost::new_err(msg),
        ClientError::Protocol { .. } => ProtocolError::new_err(msg),
    }
}

/// A `status: error` response, raised by the client.
pub fn command_error(message: String, code: String, response: Py<PyAny>) -> PyErr {
    CommandError::new_err((message, code, response))
}

/// A handler's exception → the job's error. `CommandError` keeps its message and code; anything
/// else is `handler_exception` with the traceback, so the client sees where it failed.
pub fn handler_error(py: Python<'_>, err: &PyErr) -> JobError {
    let value = err.value(py);
    if err.is_instance_of::<CommandError>(py) {
        let code = value
            .getattr("error_code")
            .and_then(|c| c.extract::<String>())
            .unwrap_or_else(|_| "command_error".into());
        let message = value.str().map(|s| s.to_string()).unwrap_or_default();
        return JobError::Handler { code, message };
    }
    let message = format_exception(py, err).unwrap_or_else(|_| err.to_string());
    JobError::Handler {
        code: "handler_exception".into(),
        message,
    }
}

/// The runtime's interrupt (a job past its deadline, or a stop) came out of the handler.
pub fn is_interrupted(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<Interrupted>(py)
}

/// An `Interrupted` out of a handler → the job's `interrupted` error: what ran, for how long, why,
/// and the last frames of where it was.
pub fn interrupted(py: Python<'_>, err: &PyErr, running: Option<&crate::bridge::running::Running>) -> JobError {
    let frames = last_frames(py, err).unwrap_or_else(|_| "(unavailable)".into());
    let (command, (after, why)) = match running {
        Some(r) => (r.command.clone(), r.describe()),
        None => ("the job".into(), (std::time::Duration::ZERO, "interrupted".into())),
    };
    if running.is_some_and(|r| r.cause == Some(crate::bridge::running::Cause::Cancel)) {
        return JobError::CancelledRunning { command, after, frames };
    }
    JobError::Interrupted {
        command,
        after,
        why,
        frames,
    }
}

/// The innermost frames of the job's own code: blendwire's frames (the dispatcher around it, the
/// signal handler that raised) are left out unless there is nothing else.
fn last_frames(py: Python<'_>, err: &PyErr) -> PyResult<String> {
    let traceback = py.import("traceback")?;
    let package = py
        .import("blendwire")?
        .getattr("__path__")?
        .get_item(0)?
        .extract::<String>()?;
    let stack = traceback.call_method1("extract_tb", (err.traceback(py),))?;
    let stack = stack.cast::<PyList>()?;
    let own = PyList::empty(py);
    for frame in stack.iter() {
        let file = frame.getattr("filename")?.extract::<String>()?;
        if !file.starts_with(&package) {
            own.append(frame)?;
        }
    }
    let stack = if own.is_empty() { stack.clone() } else { own };
    let skip = stack.len().saturating_sub(INTERRUPTED_FRAMES);
    let tail = stack.get_slice(skip, stack.len());
    let lines = traceback.call_method1("format_list", (tail,))?;
    let mut text = String::new();
    for line in lines.cast::<PyList>()?.iter() {
        text.push_str(&line.extract::<String>()?);
    }
    Ok(text.trim_end().to_string())
}

/// KeyboardInterrupt and SystemExit inside a handler are meant for the process, not the client.
pub fn is_process_exit(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py)
}

fn format_exception(py: Python<'_>, err: &PyErr) -> PyResult<String> {
    // Pass the traceback explicitly: before Python 3.12 a fetched exception's value does not
    // carry it.
    let lines = py
        .import("traceback")?
        .call_method1("format_exception", (err.get_type(py), err.value(py), err.traceback(py)))?;
    let lines = lines.cast::<PyList>()?;
    let mut text = String::new();
    for line in lines.iter() {
        text.push_str(&line.extract::<String>()?);
    }
    Ok(text.trim_end().to_string())
}
