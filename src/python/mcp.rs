//! `blendwire._core.run_mcp_stdio`: the MCP server of `blendwire mcp`, GIL released while it runs.

use super::{errors, seconds_or};
use crate::mcp::{run_stdio, McpConfig};
use crate::settings;
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_mcp_stdio, m)?)
}

/// Serve MCP on stdin/stdout for the Blender service at host:port until stdin closes.
#[pyfunction]
#[pyo3(signature = (host = None, port = None, timeout = None, connect_timeout = None, token = None))]
fn run_mcp_stdio(
    py: Python<'_>,
    host: Option<String>,
    port: Option<i64>,
    timeout: Option<f64>,
    connect_timeout: Option<f64>,
    token: Option<String>,
) -> PyResult<()> {
    let config = McpConfig {
        host: host.unwrap_or_else(|| settings::DEFAULT_HOST.to_string()),
        port: port.map_or(Ok(settings::DEFAULT_PORT), |p| {
            settings::client_port(p).map_err(|rule| errors::setting("port", rule))
        })?,
        timeout: seconds_or("timeout", timeout, settings::DEFAULT_MCP_TIMEOUT)?,
        connect_timeout: seconds_or(
            "connect_timeout",
            connect_timeout,
            settings::DEFAULT_MCP_CONNECT_TIMEOUT,
        )?,
        token,
    };
    // The server runs on its own thread so this one can come back for Python's signal handlers
    // (Ctrl-C) between waits; a Mutex makes the receiver shareable with the GIL released.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("blendwire-mcp".into())
        .spawn(move || {
            let _ = tx.send(run_stdio(config));
        })
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the MCP server thread: {e}")))?;
    let rx = Mutex::new(rx);
    loop {
        match py.detach(|| rx.lock().recv_timeout(Duration::from_millis(200))) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(message)) => return Err(PyRuntimeError::new_err(message)),
            Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err(
                    "the MCP server thread ended without a result (a bug: it panicked)",
                ))
            }
        }
    }
}
