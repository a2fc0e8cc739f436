//! Start/stop of the command service, and `status()`.

use super::bridge::{core, emit_logs};
use super::errors;
use super::seconds_or;
use crate::core::WatchError;
use crate::defaults::DEFAULT_STOP_TIMEOUT;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pythonize::pythonize;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(start_service, m)?)?;
    m.add_function(wrap_pyfunction!(stop_service, m)?)?;
    m.add_function(wrap_pyfunction!(service_address, m)?)?;
    m.add_function(wrap_pyfunction!(mcp_addon_address, m)?)?;
    m.add_function(wrap_pyfunction!(stop_when_process_exits, m)?)?;
    m.add_function(wrap_pyfunction!(status, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(set_audit, m)?)?;
    m.add_function(wrap_pyfunction!(audit_path, m)?)?;
    m.add_function(wrap_pyfunction!(flush_audit, m)?)?;
    Ok(())
}

/// Start the service; every setting left `None` takes its default from `crate::settings`.
#[pyfunction]
#[pyo3(signature = (host = None, port = None, commands = Vec::new(), **settings))]
fn start_service(
    py: Python<'_>,
    host: Option<String>,
    port: Option<i64>,
    commands: Vec<String>,
    settings: Option<&Bound<'_, PyDict>>,
) -> PyResult<(String, u16)> {
    // The host rule is left to Service::start, which applies it to the bound address and raises
    // ServiceError as before; every other rule is a ValueError here.
    let config = super::settings::service_settings("start_service", host, port, commands, settings, false)?
        .resolve(false)
        .map_err(errors::settings_error)?
        .config;
    // The Core's lock may be held by a stop: wait for it without the GIL.
    let result = py.detach(|| core().start_service(config));
    emit_logs(py);
    let addr = result.map_err(errors::service_error)?;
    Ok((addr.ip().to_string(), addr.port()))
}

#[pyfunction]
#[pyo3(signature = (timeout = None))]
fn stop_service(py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
    let timeout = seconds_or("timeout", timeout, DEFAULT_STOP_TIMEOUT)?;
    let was_serving = py.detach(|| core().stop_service(timeout));
    emit_logs(py);
    Ok(was_serving)
}

/// Stop the pump (reason "parent exited") when process `pid` exits; watched on the service's I/O
/// thread. OSError when the process is already gone or pidfds are unsupported.
#[pyfunction]
fn stop_when_process_exits(py: Python<'_>, pid: u32) -> PyResult<()> {
    match py.detach(|| core().stop_when_process_exits(pid)) {
        Ok(()) => Ok(()),
        Err(WatchError::NotServing) => Err(errors::service_not_running()),
        Err(WatchError::Io(e)) => Err(errors::cannot_watch(pid, e)),
    }
}

#[pyfunction]
fn service_address() -> Option<(String, u16)> {
    core().serving().map(|s| (s.addr().ip().to_string(), s.addr().port()))
}

/// (host, port) of the MCP add-on listener while the service runs with one, else None.
#[pyfunction]
fn mcp_addon_address() -> Option<(String, u16)> {
    core()
        .serving()
        .and_then(|s| s.mcp_addon_addr())
        .map(|a| (a.ip().to_string(), a.port()))
}

#[pyfunction]
fn status(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(pythonize(py, &core().status())
        .map_err(|e| errors::bad_argument("status", e))?
        .unbind())
}

/// Everything down: the service, the router, and any queued job (their callers get `cancelled`).
#[pyfunction]
#[pyo3(signature = (timeout = None))]
fn shutdown(py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
    let timeout = seconds_or("timeout", timeout, DEFAULT_STOP_TIMEOUT)?;
    py.detach(|| core().shutdown(timeout));
    emit_logs(py);
    Ok(())
}

// ---- the audit log ----

/// Open the process's audit log for the listeners started from now on (`audit_log=None`: the
/// state directory's; `"off"`: none); returns its path, or None when off. ValueError naming
/// `audit_log` when the file cannot be written.
#[pyfunction]
#[pyo3(signature = (**settings))]
fn set_audit(py: Python<'_>, settings: Option<&Bound<'_, PyDict>>) -> PyResult<Option<String>> {
    let given = super::settings::audit_settings("set_audit", settings)?;
    let audit = py.detach(|| given.open()).map_err(errors::settings_error)?;
    let path = audit.as_ref().map(|a| a.path().display().to_string());
    // Setting it writes the old log's last lines first: without the GIL.
    py.detach(|| core().set_audit(audit));
    Ok(path)
}

/// The audit log's file while it is on, else None.
#[pyfunction]
fn audit_path() -> Option<String> {
    core().audit().map(|a| a.path().display().to_string())
}

/// Wait until every audit line so far is written.
#[pyfunction]
fn flush_audit(py: Python<'_>) {
    py.detach(|| core().flush_audit());
}
