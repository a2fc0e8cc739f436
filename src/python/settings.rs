//! The settings' defaults and rules for Python (CLI help, add-on preferences): converts only;
//! every default and rule is in `crate::settings`.

use super::errors;
use crate::settings::{self, LogLevel, Problem, RouterSettings, ServiceSettings};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pythonize::{depythonize, pythonize};
use serde_json::Value;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(defaults, m)?)?;
    m.add_function(wrap_pyfunction!(check_service_settings, m)?)?;
    m.add_function(wrap_pyfunction!(check_router_settings, m)?)?;
    m.add_function(wrap_pyfunction!(check_engine_url, m)?)?;
    m.add_function(wrap_pyfunction!(check_ca_file, m)?)?;
    m.add_function(wrap_pyfunction!(is_loopback, m)?)?;
    m.add_function(wrap_pyfunction!(log_level_name, m)?)?;
    m.add_function(wrap_pyfunction!(mcp_addon_port_from_env, m)?)?;
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

/// The service settings of a `start_service` / `check_service_settings` call: its keyword
/// arguments are converted here, the one list of their Python names (None: the default).
/// `with_queue`: `queue_capacity` is one of them (the check also covers the queue).
pub fn service_settings(
    func: &str,
    host: Option<String>,
    port: Option<i64>,
    commands: Vec<String>,
    kwargs: Option<&Bound<'_, PyDict>>,
    with_queue: bool,
) -> PyResult<ServiceSettings> {
    let mut s = ServiceSettings {
        host,
        port,
        commands,
        ..ServiceSettings::default()
    };
    for (key, value) in given(kwargs)? {
        match key.as_str() {
            "mcp_addon_port" => s.mcp_addon_port = Some(arg(&key, &value)?),
            "default_timeout" => s.default_timeout = Some(arg(&key, &value)?),
            "max_request_bytes" => s.max_request_bytes = Some(arg(&key, &value)?),
            "max_connections" => s.max_connections = Some(arg(&key, &value)?),
            "read_timeout" => s.read_timeout = Some(arg(&key, &value)?),
            "write_timeout" => s.write_timeout = Some(arg(&key, &value)?),
            "token" => s.token = Some(arg(&key, &value)?),
            "queue_capacity" if with_queue => s.queue_capacity = Some(arg(&key, &value)?),
            _ => return Err(errors::unexpected_argument(func, &key)),
        }
    }
    Ok(s)
}

/// The router settings of a `start_router` / `check_router_settings` call, as
/// [`service_settings`] does it for the service.
pub fn router_settings(func: &str, url: String, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<RouterSettings> {
    let mut s = RouterSettings {
        url,
        ..RouterSettings::default()
    };
    for (key, value) in given(kwargs)? {
        match key.as_str() {
            "socketio_path" => s.socketio_path = Some(arg(&key, &value)?),
            "namespace" => s.namespace = Some(arg(&key, &value)?),
            "fallback_auth" => s.fallback_auth = fallback_auth(Some(&value))?,
            "watchdog_seconds" => s.watchdog_seconds = Some(arg(&key, &value)?),
            "watchdog_after_failures" => s.watchdog_after_failures = Some(arg(&key, &value)?),
            "backoff_initial" => s.backoff_initial = Some(arg(&key, &value)?),
            "backoff_max" => s.backoff_max = Some(arg(&key, &value)?),
            "backoff_jitter" => s.backoff_jitter = Some(arg(&key, &value)?),
            "handshake_timeout" => s.handshake_timeout = Some(arg(&key, &value)?),
            "command_timeout" => s.command_timeout = Some(arg(&key, &value)?),
            "poll_limit" => s.poll_limit = Some(arg(&key, &value)?),
            "outbox_max_count" => s.outbox_max_count = Some(arg(&key, &value)?),
            "outbox_max_bytes" => s.outbox_max_bytes = Some(arg(&key, &value)?),
            "ca_file" => s.ca_file = Some(arg(&key, &value)?),
            _ => return Err(errors::unexpected_argument(func, &key)),
        }
    }
    Ok(s)
}

/// The keyword arguments that are not None (None means the default).
fn given<'py>(kwargs: Option<&Bound<'py, PyDict>>) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    let mut out = Vec::new();
    for (key, value) in kwargs.into_iter().flat_map(|k| k.iter()) {
        if !value.is_none() {
            out.push((key.extract()?, value));
        }
    }
    Ok(out)
}

fn arg<'a, 'py, T>(name: &str, value: &'a Bound<'py, PyAny>) -> PyResult<T>
where
    T: FromPyObject<'a, 'py>,
    T::Error: Into<PyErr>,
{
    value
        .extract::<T>()
        .map_err(|e| errors::wrong_type(value.py(), name, e.into()))
}

#[pyfunction]
#[pyo3(signature = (host = None, port = None, commands = Vec::new(), **settings))]
fn check_service_settings(
    host: Option<String>,
    port: Option<i64>,
    commands: Vec<String>,
    settings: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<(String, String)>> {
    let given = service_settings("check_service_settings", host, port, commands, settings, true)?;
    Ok(pairs(given.resolve(true)))
}

#[pyfunction]
#[pyo3(signature = (url, **settings))]
fn check_router_settings(url: String, settings: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    Ok(pairs(
        router_settings("check_router_settings", url, settings)?.resolve(),
    ))
}

#[pyfunction]
fn check_engine_url(url: &str) -> Option<String> {
    crate::router::url::engine_url(url).err()
}

/// The CA-file rule's text for `path` (None: fine, or empty), as `check_engine_url` for the URL.
#[pyfunction]
fn check_ca_file(path: &str) -> Option<String> {
    settings::ca_file(path).err()
}

#[pyfunction]
fn is_loopback(host: &str) -> bool {
    crate::addr::is_loopback(host)
}

#[pyfunction]
fn log_level_name(value: &Bound<'_, PyAny>) -> PyResult<&'static str> {
    Ok(log_level(value)?.name())
}

/// The MCP add-on port from `$BLENDWIRE_MCP_ADDON_PORT` (None: unset); ValueError
/// "mcp_addon_port (from $BLENDWIRE_MCP_ADDON_PORT) must ..." when it is not a number. The port's
/// own rules are checked with the other settings.
#[pyfunction]
fn mcp_addon_port_from_env() -> PyResult<Option<i64>> {
    settings::mcp_addon_port_from_env().map_err(|rule| errors::setting("mcp_addon_port", rule))
}
