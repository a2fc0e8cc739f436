//! The settings' defaults and rules for Python (CLI help, add-on preferences): converts only;
//! every default and rule is in `crate::settings`.

use super::errors;
use crate::settings::{self, LogLevel, Problem, RouterSettings, ServiceSettings};
use pyo3::prelude::*;
use pythonize::{depythonize, pythonize};
use serde_json::Value;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(defaults, m)?)?;
    m.add_function(wrap_pyfunction!(check_service_settings, m)?)?;
    m.add_function(wrap_pyfunction!(check_router_settings, m)?)?;
    m.add_function(wrap_pyfunction!(check_engine_url, m)?)?;
    m.add_function(wrap_pyfunction!(is_loopback, m)?)?;
    m.add_function(wrap_pyfunction!(log_level_name, m)?)?;
    Ok(())
}

/// `fallback_auth` as JSON (None → the default).
pub fn fallback_auth(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Value>> {
    match value {
        Some(v) if !v.is_none() => depythonize(v)
            .map(Some)
            .map_err(|e| errors::bad_argument("fallback_auth", e)),
        _ => Ok(None),
    }
}

/// A `logging` level name or number.
pub fn log_level(value: &Bound<'_, PyAny>) -> PyResult<LogLevel> {
    if let Ok(n) = value.extract::<i64>() {
        return Ok(LogLevel::from_number(n));
    }
    let name: String = value.extract()?;
    LogLevel::from_name(&name).map_err(errors::invalid)
}

fn pairs(result: Result<impl Sized, Vec<Problem>>) -> Vec<(String, String)> {
    match result {
        Ok(_) => Vec::new(),
        Err(problems) => problems.into_iter().map(|p| (p.setting.to_string(), p.rule)).collect(),
    }
}

#[pyfunction]
fn defaults(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(pythonize(py, &settings::defaults())
        .map_err(|e| errors::bad_argument("defaults", e))?
        .unbind())
}

#[pyfunction]
#[pyo3(signature = (host = None, port = None, commands = Vec::new(), *, default_timeout = None,
                    max_request_bytes = None, max_connections = None, read_timeout = None,
                    write_timeout = None, token = None, queue_capacity = None))]
#[allow(clippy::too_many_arguments)]
fn check_service_settings(
    host: Option<String>,
    port: Option<i64>,
    commands: Vec<String>,
    default_timeout: Option<f64>,
    max_request_bytes: Option<i64>,
    max_connections: Option<i64>,
    read_timeout: Option<f64>,
    write_timeout: Option<f64>,
    token: Option<String>,
    queue_capacity: Option<i64>,
) -> Vec<(String, String)> {
    pairs(
        ServiceSettings {
            host,
            port,
            commands,
            default_timeout,
            max_request_bytes,
            max_connections,
            read_timeout,
            write_timeout,
            token,
            queue_capacity,
        }
        .resolve(true),
    )
}

#[pyfunction]
#[pyo3(signature = (url, *, socketio_path = None, namespace = None, fallback_auth = None,
                    watchdog_seconds = None, watchdog_after_failures = None, backoff_initial = None,
                    backoff_max = None, backoff_jitter = None, handshake_timeout = None,
                    command_timeout = None, poll_limit = None, outbox_max_count = None,
                    outbox_max_bytes = None))]
#[allow(clippy::too_many_arguments)]
fn check_router_settings(
    url: String,
    socketio_path: Option<String>,
    namespace: Option<String>,
    fallback_auth: Option<&Bound<'_, PyAny>>,
    watchdog_seconds: Option<f64>,
    watchdog_after_failures: Option<i64>,
    backoff_initial: Option<f64>,
    backoff_max: Option<f64>,
    backoff_jitter: Option<f64>,
    handshake_timeout: Option<f64>,
    command_timeout: Option<f64>,
    poll_limit: Option<f64>,
    outbox_max_count: Option<i64>,
    outbox_max_bytes: Option<i64>,
) -> PyResult<Vec<(String, String)>> {
    Ok(pairs(
        RouterSettings {
            url,
            socketio_path,
            namespace,
            fallback_auth: self::fallback_auth(fallback_auth)?,
            watchdog_seconds,
            watchdog_after_failures,
            backoff_initial,
            backoff_max,
            backoff_jitter,
            handshake_timeout,
            command_timeout,
            poll_limit,
            outbox_max_count,
            outbox_max_bytes,
        }
        .resolve(),
    ))
}

#[pyfunction]
fn check_engine_url(url: &str) -> Option<String> {
    settings::engine_url(url).err()
}

#[pyfunction]
fn is_loopback(host: &str) -> bool {
    settings::is_loopback(host)
}

#[pyfunction]
fn log_level_name(value: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    Ok(log_level(value)?.name())
}
