//! `blendwire._core.Client`: the blocking client, GIL released during I/O.

use super::{errors, seconds_or};
use crate::client::{self, Client, Event, Flow, ResponseError};
use crate::defaults;
use crate::settings;
use parking_lot::Mutex;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};
use serde_json::{Map, Value};
use std::time::Instant;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyClient>()
}

#[pyclass(name = "Client", module = "blendwire._core", frozen)]
struct PyClient {
    inner: Client,
    /// The ids of this client's calls waiting for their answer (what `cancel()` cancels).
    in_flight: Mutex<Vec<Value>>,
}

fn to_json(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    super::json::to_value(obj).map_err(|e| PyTypeError::new_err(format!("{what} must be JSON data: {e}")))
}

fn to_py(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    Ok(super::json::to_py(py, v)?.unbind())
}

/// `{"type": type, "params": params}`.
fn command(r#type: &str, params: Option<&Bound<'_, PyAny>>) -> PyResult<Value> {
    let params = match params {
        Some(p) if !p.is_none() => to_json(p, "params")?,
        _ => Value::Object(Map::new()),
    };
    if !params.is_object() {
        return Err(PyTypeError::new_err("params must be a dict"));
    }
    Ok(client::command_request(r#type, params))
}

/// `{"type": type, "params": params}` as bytes, with the client's token.
fn command_bytes(client: &Client, r#type: &str, params: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
    Ok(client.encode(command(r#type, params)?))
}

/// A request id given by the caller, under the service's rule for ids.
fn request_id(id: &Bound<'_, PyAny>) -> PyResult<Value> {
    crate::wire::protocol::check_id(to_json(id, "job_id")?).map_err(|e| errors::invalid(e.to_string()))
}

/// Removes a call's id from the in-flight list when the call ends, however it ends.
struct InFlight<'a>(&'a PyClient, Value);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut ids = self.0.in_flight.lock();
        if let Some(i) = ids.iter().position(|v| *v == self.1) {
            ids.swap_remove(i);
        }
    }
}

impl PyClient {
    fn send(&self, py: Python<'_>, bytes: &[u8]) -> PyResult<Value> {
        py.detach(|| self.inner.request_bytes(bytes))
            .map_err(errors::client_error)
    }

    /// One call that can be cancelled: `request` gets `id` (and `"progress": true` with a
    /// callback). While it waits, the calling thread's signals are checked (Ctrl-C) and progress
    /// messages go to `on_progress`; a KeyboardInterrupt, or an exception out of the callback,
    /// cancels the job, waits a moment for its answer, and is raised.
    fn send_cancellable(
        &self,
        py: Python<'_>,
        mut request: Value,
        id: Value,
        on_progress: Option<Py<PyAny>>,
    ) -> PyResult<Value> {
        request["id"] = id.clone();
        if on_progress.is_some() {
            request["progress"] = Value::Bool(true);
        }
        let wait = self.inner.wait_for(&request);
        let bytes = self.inner.encode(request);
        self.in_flight.lock().push(id.clone());
        let _in_flight = InFlight(self, id.clone());
        let mut raised: Option<PyErr> = None;
        let outcome = py.detach(|| {
            self.inner.request_streaming(&bytes, wait, &mut |event| {
                if raised.is_some() {
                    return Flow::Continue;
                }
                raised = Python::attach(|py| {
                    if let (Event::Progress(msg), Some(cb)) = (event, on_progress.as_ref()) {
                        if let Err(e) = to_py(py, &msg).and_then(|m| cb.call1(py, (m,))) {
                            return Some(e);
                        }
                    }
                    py.check_signals().err()
                });
                if raised.is_none() {
                    return Flow::Continue;
                }
                // Cancelled here: the job's own answer (`cancelled`) normally follows at once; a
                // job in a long C call is left to the service and this connection dropped.
                let _ = self.inner.cancel(&id);
                Flow::GiveUpAt(Instant::now() + crate::defaults::INTERRUPT_GRACE)
            })
        });
        if let Some(e) = raised {
            return Err(e);
        }
        outcome.map_err(errors::client_error)
    }
}

#[pymethods]
impl PyClient {
    #[new]
    #[pyo3(signature = (host = None, port = None, timeout = None, connect_timeout = None, token = None))]
    fn new(
        host: Option<String>,
        port: Option<i64>,
        timeout: Option<f64>,
        connect_timeout: Option<f64>,
        token: Option<String>,
    ) -> PyResult<Self> {
        let host = host.unwrap_or_else(|| defaults::DEFAULT_HOST.to_string());
        let port = port.map_or(Ok(defaults::DEFAULT_PORT), |p| {
            settings::client_port(p).map_err(|rule| errors::setting("port", rule))
        })?;
        let timeout = seconds_or("timeout", timeout, defaults::DEFAULT_CLIENT_TIMEOUT)?;
        let connect_timeout = seconds_or(
            "connect_timeout",
            connect_timeout,
            defaults::DEFAULT_CLIENT_CONNECT_TIMEOUT,
        )?;
        Ok(PyClient {
            inner: Client::new(&host, port, timeout, connect_timeout).with_token(token),
            in_flight: Mutex::new(Vec::new()),
        })
    }

    /// Send `{"type": type, "params": params}`; return `result`, or raise CommandError.
    /// `progress`: called with each progress message of the job (a dict) before the answer.
    /// `job_id`: the request's id (default: a fresh one), which `cancel(job_id)` names.
    #[pyo3(signature = (r#type, params = None, progress = None, job_id = None))]
    fn call(
        &self,
        py: Python<'_>,
        r#type: &str,
        params: Option<&Bound<'_, PyAny>>,
        progress: Option<Py<PyAny>>,
        job_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let request = command(r#type, params)?;
        let id = match job_id {
            Some(id) if !id.is_none() => request_id(id)?,
            _ => self.inner.next_id(),
        };
        let progress = progress.filter(|cb| !cb.is_none(py));
        result_of(py, self.send_cancellable(py, request, id, progress)?)
    }

    /// Cancel the job with request id `job_id` (queued: dropped; running: interrupted), or with
    /// None every call of this client still waiting. Returns whether a job was found to cancel.
    #[pyo3(signature = (job_id = None))]
    fn cancel(&self, py: Python<'_>, job_id: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let ids = match job_id {
            Some(id) if !id.is_none() => vec![request_id(id)?],
            _ => self.in_flight.lock().clone(),
        };
        let mut found = false;
        for id in ids {
            let response = py.detach(|| self.inner.cancel(&id)).map_err(errors::client_error)?;
            let result = result_of(py, response)?;
            found |= result.bind(py).get_item("cancelled")?.is_truthy()?;
        }
        Ok(found)
    }

    /// Pipelined calls: `calls` is a sequence of `(type, params)` (or `type` alone); returns the
    /// results in order. A failed call raises its CommandError after every answer has been read,
    /// or with `return_errors` stands in the list as the CommandError instance.
    #[pyo3(signature = (calls, return_errors = false))]
    fn call_many(&self, py: Python<'_>, calls: &Bound<'_, PyAny>, return_errors: bool) -> PyResult<Py<PyList>> {
        let mut requests = Vec::new();
        for (i, call) in calls.try_iter()?.enumerate() {
            let call = call?;
            let (r#type, params) = if let Ok(t) = call.cast::<PyString>() {
                (t.to_str()?.to_string(), None)
            } else {
                let parts: Vec<Bound<'_, PyAny>> = call.extract().map_err(|_| bad_call(i))?;
                match parts.as_slice() {
                    [t] => (t.extract::<String>().map_err(|_| bad_call(i))?, None),
                    [t, p] => (t.extract::<String>().map_err(|_| bad_call(i))?, Some(p.clone())),
                    _ => return Err(bad_call(i)),
                }
            };
            requests.push(command_bytes(&self.inner, &r#type, params.as_ref())?);
        }
        let responses = py
            .detach(|| self.inner.request_many(&requests))
            .map_err(errors::client_error)?;
        let out = PyList::empty(py);
        let mut first_error = None;
        for response in responses {
            match result_of(py, response) {
                Ok(v) => out.append(v)?,
                Err(e) if return_errors => out.append(e.into_value(py))?,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out.unbind()),
        }
    }

    /// Send any JSON object; return the whole response.
    fn request(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let message = to_json(message, "message")?;
        if !message.is_object() {
            return Err(PyTypeError::new_err("message must be a dict"));
        }
        let response = self.send(py, &self.inner.encode(message))?;
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
        format!(
            "Client(host={:?}, port={}, timeout={})",
            self.inner.host(),
            self.inner.port(),
            self.inner.timeout().as_secs_f64()
        )
    }
}

/// A response's `result`, or the CommandError / ProtocolError it stands for.
fn result_of(py: Python<'_>, response: Value) -> PyResult<Py<PyAny>> {
    match client::outcome(response) {
        Ok(result) => to_py(py, &result),
        Err(ResponseError::Command {
            message,
            code,
            response,
        }) => Err(errors::command_error(
            message,
            code.unwrap_or_else(|| "command_error".to_string()),
            to_py(py, &response)?,
        )),
        Err(e @ ResponseError::NoStatus { .. }) => Err(errors::ProtocolError::new_err(e.to_string())),
    }
}

fn bad_call(index: usize) -> PyErr {
    PyTypeError::new_err(format!(
        "call_many: item {index} must be a command type or a (type, params) pair, e.g. (\"get_object_info\", {{\"name\": \"Cube\"}})"
    ))
}
