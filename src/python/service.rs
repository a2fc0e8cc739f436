//! Start/stop of the command service, and `status()`.

use super::seconds;
use super::{bridge::emit_logs, errors};
use crate::framing::Limits;
use crate::queue;
use crate::service::{Service, ServiceConfig};
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pythonize::pythonize;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static SERVICE: Mutex<Option<Service>> = Mutex::new(None);

fn loaded_at() -> Instant {
    static AT: OnceLock<Instant> = OnceLock::new();
    *AT.get_or_init(Instant::now)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    loaded_at();
    m.add_function(wrap_pyfunction!(start_service, m)?)?;
    m.add_function(wrap_pyfunction!(stop_service, m)?)?;
    m.add_function(wrap_pyfunction!(service_address, m)?)?;
    m.add_function(wrap_pyfunction!(stop_when_process_exits, m)?)?;
    m.add_function(wrap_pyfunction!(status, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    Ok(())
}

#[pyfunction]
#[pyo3(signature = (host = "127.0.0.1".to_string(), port = 6688, commands = Vec::new(), *,
                    default_timeout = 30.0, max_request_bytes = 64 * 1024 * 1024, max_connections = 256,
                    read_timeout = 30.0, write_timeout = 30.0, token = None))]
#[allow(clippy::too_many_arguments)]
fn start_service(
    py: Python<'_>,
    host: String,
    port: i64,
    commands: Vec<String>,
    default_timeout: f64,
    max_request_bytes: i64,
    max_connections: i64,
    read_timeout: f64,
    write_timeout: f64,
    token: Option<String>,
) -> PyResult<(String, u16)> {
    let port = u16::try_from(port).map_err(|_| {
        PyValueError::new_err(format!(
            "port must be between 0 and 65535 (0 picks a free port), got {port}"
        ))
    })?;
    if max_request_bytes < 1024 {
        return Err(PyValueError::new_err(format!(
            "max_request_bytes must be at least 1024, got {max_request_bytes}"
        )));
    }
    if max_connections < 1 {
        return Err(PyValueError::new_err(format!(
            "max_connections must be at least 1, got {max_connections}"
        )));
    }
    let config = ServiceConfig {
        host,
        port,
        commands,
        default_timeout: seconds("default_timeout", default_timeout)?,
        limits: Limits {
            max_frame_bytes: max_request_bytes as usize,
            ..Limits::default()
        },
        max_connections: max_connections as usize,
        read_timeout: seconds("read_timeout", read_timeout)?,
        write_timeout: seconds("write_timeout", write_timeout)?,
        token,
    };
    let result = py.detach(|| {
        let mut slot = SERVICE.lock();
        if let Some(running) = slot.as_ref().filter(|s| s.is_serving()) {
            return Err(crate::error::ServiceError::AlreadyRunning(running.addr()));
        }
        // A service that shut itself down (server_shutdown) is finished off first.
        if let Some(old) = slot.take() {
            old.stop(Duration::from_secs(2));
        }
        queue::global().clear_stop();
        let service = Service::start(config, queue::global().clone())?;
        let addr = service.addr();
        *slot = Some(service);
        Ok(addr)
    });
    emit_logs(py);
    let addr = result.map_err(errors::service_error)?;
    Ok((addr.ip().to_string(), addr.port()))
}

#[pyfunction]
#[pyo3(signature = (timeout = 2.0))]
fn stop_service(py: Python<'_>, timeout: f64) -> PyResult<bool> {
    let timeout = seconds("timeout", timeout)?;
    let was_serving = py.detach(|| {
        // Hold the lock until the listener is closed: a start that overlaps this stop must not
        // open a second listener while the first is still shutting down.
        let mut slot = SERVICE.lock();
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
fn stop_when_process_exits(pid: u32) -> PyResult<()> {
    let slot = SERVICE.lock();
    let service = slot.as_ref().filter(|s| s.is_serving()).ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("the service is not running: start it before watching a process")
    })?;
    service
        .stop_when_process_exits(pid)
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("cannot watch process {pid}: {e}")))
}

#[pyfunction]
fn service_address() -> Option<(String, u16)> {
    let slot = SERVICE.lock();
    slot.as_ref()
        .filter(|s| s.is_serving())
        .map(|s| (s.addr().ip().to_string(), s.addr().port()))
}

#[pyfunction]
fn status(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let router = super::router::shared();
    let snapshot = {
        let slot = SERVICE.lock();
        crate::status::snapshot(
            queue::global(),
            slot.as_ref(),
            router.as_deref(),
            loaded_at().elapsed().as_secs_f64(),
        )
    };
    Ok(pythonize(py, &snapshot)
        .map_err(|e| PyValueError::new_err(e.to_string()))?
        .unbind())
}

/// Everything down: the service, its thread, and any queued job (their callers get `cancelled`).
#[pyfunction]
#[pyo3(signature = (timeout = 2.0))]
fn shutdown(py: Python<'_>, timeout: f64) -> PyResult<()> {
    stop_service(py, timeout)?;
    super::router::stop_router(py, timeout)?;
    queue::global().cancel_all();
    emit_logs(py);
    Ok(())
}
