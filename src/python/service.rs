//! Start/stop of the command service, and `status()`.

use super::seconds_or;
use super::{bridge::emit_logs, errors};
use crate::bridge;
use crate::defaults::DEFAULT_STOP_TIMEOUT;
use crate::service::{Service, ServiceInfo, StatusSource};
use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pythonize::pythonize;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// The running service. Held by start and stop, a stop for up to 1.5x its timeout: only ever
/// taken with the GIL released.
static SERVICE: Mutex<Option<Service>> = Mutex::new(None);

/// What readers see of the running service. Start and stop swap it (a moment's write lock), so
/// readers that hold the GIL (status, service_address) never wait for a stop.
static SERVICE_INFO: RwLock<Option<Arc<ServiceInfo>>> = RwLock::new(None);

pub(super) fn info() -> Option<Arc<ServiceInfo>> {
    SERVICE_INFO.read().clone()
}

fn loaded_at() -> Instant {
    static AT: OnceLock<Instant> = OnceLock::new();
    *AT.get_or_init(Instant::now)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    loaded_at();
    m.add_function(wrap_pyfunction!(start_service, m)?)?;
    m.add_function(wrap_pyfunction!(stop_service, m)?)?;
    m.add_function(wrap_pyfunction!(service_address, m)?)?;
    m.add_function(wrap_pyfunction!(mcp_addon_address, m)?)?;
    m.add_function(wrap_pyfunction!(stop_when_process_exits, m)?)?;
    m.add_function(wrap_pyfunction!(status, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
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
    let mut config = super::settings::service_settings("start_service", host, port, commands, settings, false)?
        .resolve(false)
        .map_err(errors::settings_error)?
        .config;
    config.status = Some(StatusSource(Arc::new(snapshot)));
    let result = py.detach(|| {
        let mut slot = SERVICE.lock();
        if let Some(running) = slot.as_ref().filter(|s| s.is_serving()) {
            return Err(crate::error::ServiceError::AlreadyRunning(running.addr()));
        }
        // A service that shut itself down (server_shutdown) is finished off first.
        if let Some(old) = slot.take() {
            SERVICE_INFO.write().take();
            old.stop(DEFAULT_STOP_TIMEOUT);
        }
        bridge::global().clear_stop();
        let service = Service::start(config, bridge::global().clone())?;
        let addr = service.addr();
        *SERVICE_INFO.write() = Some(service.info());
        *slot = Some(service);
        Ok(addr)
    });
    emit_logs(py);
    let addr = result.map_err(errors::service_error)?;
    Ok((addr.ip().to_string(), addr.port()))
}

#[pyfunction]
#[pyo3(signature = (timeout = None))]
fn stop_service(py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
    let timeout = seconds_or("timeout", timeout, DEFAULT_STOP_TIMEOUT)?;
    let was_serving = py.detach(|| {
        // Hold the lock until the listener is closed: a start that overlaps this stop must not
        // open a second listener while the first is still shutting down.
        let mut slot = SERVICE.lock();
        // Readers see the service gone from here on, not after the stop.
        SERVICE_INFO.write().take();
        super::instances::withdraw();
        slot.take().map(|s| {
            let serving = s.is_serving();
            s.stop(timeout);
            serving
        })
    });
    emit_logs(py);
    Ok(was_serving.unwrap_or(false))
}

/// Stop the pump (reason "parent exited") when process `pid` exits; watched on the service's I/O
/// thread. OSError when the process is already gone or pidfds are unsupported.
#[pyfunction]
fn stop_when_process_exits(py: Python<'_>, pid: u32) -> PyResult<()> {
    // The service's lock may be held by a stop: wait for it without the GIL.
    let watched = py.detach(|| {
        let slot = SERVICE.lock();
        slot.as_ref()
            .filter(|s| s.is_serving())
            .map(|s| s.stop_when_process_exits(pid))
    });
    match watched {
        None => Err(errors::service_not_running()),
        Some(result) => result.map_err(|e| errors::cannot_watch(pid, e)),
    }
}

#[pyfunction]
fn service_address() -> Option<(String, u16)> {
    info()
        .filter(|s| s.is_serving())
        .map(|s| (s.addr().ip().to_string(), s.addr().port()))
}

/// (host, port) of the MCP add-on listener while the service runs with one, else None.
#[pyfunction]
fn mcp_addon_address() -> Option<(String, u16)> {
    info()
        .filter(|s| s.is_serving())
        .and_then(|s| s.mcp_addon_addr())
        .map(|a| (a.ip().to_string(), a.port()))
}

/// The status, without the GIL: also what the service answers `get_status` with on its thread.
fn snapshot() -> serde_json::Value {
    crate::status::snapshot(
        bridge::global(),
        info().as_deref(),
        super::router::shared().as_deref(),
        loaded_at().elapsed().as_secs_f64(),
    )
}

#[pyfunction]
fn status(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(pythonize(py, &snapshot())
        .map_err(|e| errors::bad_argument("status", e))?
        .unbind())
}

/// Everything down: the service, its thread, and any queued job (their callers get `cancelled`).
#[pyfunction]
#[pyo3(signature = (timeout = None))]
fn shutdown(py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
    stop_service(py, timeout)?;
    super::router::stop_router(py, timeout)?;
    bridge::global().cancel_all();
    emit_logs(py);
    Ok(())
}
