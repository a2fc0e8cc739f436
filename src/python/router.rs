//! Start/stop of the cr8_engine router client.

use super::bridge::emit_logs;
use super::seconds;
use crate::backoff::BackoffPolicy;
use crate::queue;
use crate::router::{Router, RouterConfig, Shared};
use crate::watchdog::WatchdogPolicy;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pythonize::depythonize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// One router per process; the lock also serialises overlapping start/stop calls.
static ROUTER: Mutex<Option<Router>> = Mutex::new(None);

pyo3::import_exception!(blendwire.errors, ServiceError);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(start_router, m)?)?;
    m.add_function(wrap_pyfunction!(stop_router, m)?)?;
    m.add_function(wrap_pyfunction!(router_running, m)?)?;
    Ok(())
}

pub fn shared() -> Option<Arc<Shared>> {
    ROUTER.lock().as_ref().map(|r| r.shared.clone())
}

fn count(name: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| PyValueError::new_err(format!("{name} must be at least 1, got {v}")))
}

/// Start the router. `fallback_auth` is sent when the main thread does not answer the auth
/// request in time (the router dispatcher's "auth" op is asked first, on every attempt).
#[pyfunction]
#[pyo3(signature = (url, *, socketio_path = "/ws/socket.io/".to_string(), namespace = "/blender".to_string(),
                    fallback_auth = None, watchdog_seconds = 300.0, watchdog_after_failures = 5,
                    backoff_initial = 2.0, backoff_max = 10.0, backoff_jitter = 0.5,
                    handshake_timeout = 10.0, command_timeout = 1200.0, poll_limit = 3600.0,
                    outbox_max_count = 1000, outbox_max_bytes = 64 * 1024 * 1024))]
#[allow(clippy::too_many_arguments)]
fn start_router(
    py: Python<'_>,
    url: String,
    socketio_path: String,
    namespace: String,
    fallback_auth: Option<&Bound<'_, PyAny>>,
    watchdog_seconds: f64,
    watchdog_after_failures: i64,
    backoff_initial: f64,
    backoff_max: f64,
    backoff_jitter: f64,
    handshake_timeout: f64,
    command_timeout: f64,
    poll_limit: f64,
    outbox_max_count: i64,
    outbox_max_bytes: i64,
) -> PyResult<()> {
    if !(0.0..=1.0).contains(&backoff_jitter) {
        return Err(PyValueError::new_err(format!(
            "backoff_jitter must be between 0 and 1, got {backoff_jitter}"
        )));
    }
    if !namespace.starts_with('/') {
        return Err(PyValueError::new_err(format!(
            "namespace must start with '/', got {namespace:?}"
        )));
    }
    let fallback_auth: Value = match fallback_auth {
        Some(a) if !a.is_none() => depythonize(a).map_err(|e| PyValueError::new_err(format!("fallback_auth: {e}")))?,
        _ => Value::Object(Default::default()),
    };
    // 0 disables the watchdog.
    let watchdog = if watchdog_seconds == 0.0 {
        Duration::ZERO
    } else {
        seconds("watchdog_seconds", watchdog_seconds)?
    };
    let config = RouterConfig {
        url,
        socketio_path,
        namespace,
        backoff: BackoffPolicy {
            initial: seconds("backoff_initial", backoff_initial)?,
            max: seconds("backoff_max", backoff_max)?,
            factor: 2.0,
            jitter: backoff_jitter,
        },
        watchdog: WatchdogPolicy {
            arm_after_failures: u32::try_from(count("watchdog_after_failures", watchdog_after_failures)?)
                .unwrap_or(u32::MAX),
            duration: (!watchdog.is_zero()).then_some(watchdog),
        },
        handshake_timeout: seconds("handshake_timeout", handshake_timeout)?,
        command_timeout: seconds("command_timeout", command_timeout)?,
        poll_limit: seconds("poll_limit", poll_limit)?,
        outbox_max_count: count("outbox_max_count", outbox_max_count)?,
        outbox_max_bytes: count("outbox_max_bytes", outbox_max_bytes)?,
        fallback_auth,
        ..RouterConfig::default()
    };
    let result = py.detach(|| {
        let mut slot = ROUTER.lock();
        if slot.is_some() {
            return Err(ServiceError::new_err(
                "the router is already running; stop_router() first",
            ));
        }
        let router =
            Router::start(config, queue::global().clone()).map_err(|e| PyValueError::new_err(e.to_string()))?;
        *slot = Some(router);
        Ok(())
    });
    emit_logs(py);
    result
}

/// Stop the router (closing its connection); true if it was running.
#[pyfunction]
#[pyo3(signature = (timeout = 2.0))]
pub fn stop_router(py: Python<'_>, timeout: f64) -> PyResult<bool> {
    let timeout = seconds("timeout", timeout)?;
    let stopped = py.detach(|| {
        // Hold the lock until the connection is closed, so an overlapping start cannot open a
        // second one meanwhile.
        let mut slot = ROUTER.lock();
        slot.take().map(|r| r.stop(timeout)).is_some()
    });
    emit_logs(py);
    Ok(stopped)
}

#[pyfunction]
fn router_running() -> bool {
    ROUTER.lock().is_some()
}
