//! Start/stop of the cr8_engine router client.

use super::bridge::emit_logs;
use super::{errors, seconds_or};
use crate::bridge;
use crate::defaults::DEFAULT_STOP_TIMEOUT;
use crate::router::{Router, Shared};
use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

/// One router per process; the lock also serialises overlapping start/stop calls. A stop holds
/// it for up to 1.5x its timeout: only ever taken with the GIL released.
static ROUTER: Mutex<Option<Router>> = Mutex::new(None);

/// The running router's state for readers (status, router_running): start and stop swap it (a
/// moment's write lock), so readers that hold the GIL never wait for a stop.
static ROUTER_SHARED: RwLock<Option<Arc<Shared>>> = RwLock::new(None);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(start_router, m)?)?;
    m.add_function(wrap_pyfunction!(stop_router, m)?)?;
    m.add_function(wrap_pyfunction!(router_running, m)?)?;
    Ok(())
}

pub fn shared() -> Option<Arc<Shared>> {
    ROUTER_SHARED.read().clone()
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
    let result = py.detach(|| {
        let mut slot = ROUTER.lock();
        if slot.is_some() {
            return Err(errors::router_already_running());
        }
        let router = Router::start(config, bridge::global().clone()).map_err(errors::router_error)?;
        *ROUTER_SHARED.write() = Some(router.shared.clone());
        *slot = Some(router);
        Ok(())
    });
    emit_logs(py);
    result
}

/// Stop the router (closing its connection); true if it was running.
#[pyfunction]
#[pyo3(signature = (timeout = None))]
pub fn stop_router(py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
    let timeout = seconds_or("timeout", timeout, DEFAULT_STOP_TIMEOUT)?;
    let stopped = py.detach(|| {
        // Hold the lock until the connection is closed, so an overlapping start cannot open a
        // second one meanwhile.
        let mut slot = ROUTER.lock();
        // Readers see the router gone from here on, not after the stop.
        ROUTER_SHARED.write().take();
        slot.take().map(|r| r.stop(timeout)).is_some()
    });
    emit_logs(py);
    Ok(stopped)
}

#[pyfunction]
fn router_running() -> bool {
    ROUTER_SHARED.read().is_some()
}
