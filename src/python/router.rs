//! Start/stop of the cr8_engine router client.

use super::bridge::{core, emit_logs};
use super::{errors, seconds_or};
use crate::core::RouterStartError;
use crate::defaults::DEFAULT_STOP_TIMEOUT;
use pyo3::prelude::*;
use pyo3::types::PyDict;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(start_router, m)?)?;
    m.add_function(wrap_pyfunction!(stop_router, m)?)?;
    m.add_function(wrap_pyfunction!(router_running, m)?)?;
    Ok(())
}

/// Start the router. `fallback_auth` is sent when the main thread does not answer the auth
/// request in time (the router dispatcher's "auth" op is asked first, on every attempt); without
/// one such an attempt sends no CONNECT and counts as failed (retried with backoff). Every
/// setting left `None` takes its default from `crate::settings`.
#[pyfunction]
#[pyo3(signature = (url, **settings))]
fn start_router(py: Python<'_>, url: String, settings: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
    let config = super::settings::router_settings("start_router", url, settings)?
        .resolve()
        .map_err(errors::settings_error)?;
    // The Core's lock may be held by a stop: wait for it without the GIL.
    let result = py.detach(|| core().start_router(config));
    emit_logs(py);
    result.map_err(|e| match e {
        RouterStartError::AlreadyRunning => errors::router_already_running(),
        RouterStartError::Failed(e) => errors::router_error(e),
    })
}

/// Stop the router (closing its connection); true if it was running.
#[pyfunction]
#[pyo3(signature = (timeout = None))]
fn stop_router(py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
    let timeout = seconds_or("timeout", timeout, DEFAULT_STOP_TIMEOUT)?;
    let stopped = py.detach(|| core().stop_router(timeout));
    emit_logs(py);
    Ok(stopped)
}

#[pyfunction]
fn router_running() -> bool {
    core().router_running()
}
