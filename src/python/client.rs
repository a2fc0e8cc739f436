//! `blendwire._core.Client`: the blocking client, GIL released during I/O.

use super::errors;
use crate::client::Client;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pythonize::{depythonize, pythonize};
use serde_json::{json, Value};
use std::time::Duration;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyClient>()
}

#[pyclass(name = "Client", module = "blendwire._core", frozen)]
struct PyClient {
    inner: Client,
    /// Sent as `"token"` with every request (services started with a token require it).
    token: Option<String>,
}

fn to_json(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    depythonize::<Value>(obj).map_err(|e| PyTypeError::new_err(format!("{what} must be JSON data: {e}")))
}

fn to_py(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(pythonize(py, v).map_err(|e| PyValueError::new_err(e.to_string()))?.unbind())
}

impl PyClient {
    fn send(&self, py: Python<'_>, request: &mut Value) -> PyResult<Value> {
        if let (Some(token), Some(obj)) = (&self.token, request.as_object_mut()) {
            obj.entry("token").or_insert_with(|| Value::String(token.clone()));
        }
        let bytes = serde_json::to_vec(request).map_err(|e| PyValueError::new_err(e.to_string()))?;
        py.detach(|| self.inner.request_bytes(&bytes)).map_err(errors::client_error)
    }
}

#[pymethods]
impl PyClient {
    #[new]
    #[pyo3(signature = (host = "127.0.0.1".to_string(), port = 6688, timeout = 30.0, connect_timeout = 5.0, token = None))]
    fn new(host: String, port: i64, timeout: f64, connect_timeout: f64, token: Option<String>) -> PyResult<Self> {
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| PyValueError::new_err(format!("port must be between 1 and 65535, got {port}")))?;
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(PyValueError::new_err(format!("timeout must be a positive number of seconds, got {timeout}")));
        }
        if !(connect_timeout.is_finite() && connect_timeout > 0.0) {
            return Err(PyValueError::new_err(format!(
                "connect_timeout must be a positive number of seconds, got {connect_timeout}"
            )));
        }
        Ok(PyClient {
            inner: Client::new(&host, port, Duration::from_secs_f64(timeout), Duration::from_secs_f64(connect_timeout)),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// Send `{"type": type, "params": params}`; return `result`, or raise CommandError.
    #[pyo3(signature = (r#type, params = None))]
    fn call(&self, py: Python<'_>, r#type: &str, params: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let params = match params {
            Some(p) if !p.is_none() => to_json(p, "params")?,
            _ => json!({}),
        };
        if !params.is_object() {
            return Err(PyTypeError::new_err("params must be a dict"));
        }
        let response = self.send(py, &mut json!({"type": r#type, "params": params}))?;
        match response.get("status").and_then(Value::as_str) {
            Some("success") => to_py(py, response.get("result").unwrap_or(&Value::Null)),
            Some("error") => {
                let message = response.get("message").and_then(Value::as_str).unwrap_or("command failed").to_string();
                let code = response.get("error_code").and_then(Value::as_str).unwrap_or("command_error").to_string();
                Err(errors::command_error(message, code, to_py(py, &response)?))
            }
            _ => Err(errors::ProtocolError::new_err(format!(
                "response has no \"status\": {}",
                truncate(&response.to_string(), 200)
            ))),
        }
    }

    /// Send any JSON object; return the whole response.
    fn request(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let mut message = to_json(message, "message")?;
        if !message.is_object() {
            return Err(PyTypeError::new_err("message must be a dict"));
        }
        let response = self.send(py, &mut message)?;
        to_py(py, &response)
    }

    fn close(&self) {
        self.inner.close();
    }

    #[getter]
    fn connected(&self) -> bool {
        self.inner.is_connected()
    }

    #[getter]
    fn host(&self) -> String {
        self.inner.host().to_string()
    }

    #[getter]
    fn port(&self) -> u16 {
        self.inner.port()
    }

    #[getter]
    fn timeout(&self) -> f64 {
        self.inner.timeout().as_secs_f64()
    }

    fn __repr__(&self) -> String {
        format!("Client(host={:?}, port={}, timeout={})", self.inner.host(), self.inner.port(), self.inner.timeout().as_secs_f64())
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
