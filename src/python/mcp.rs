//! `blendwire._core.run_mcp_stdio`: the MCP server of `blendwire mcp`, GIL released while it runs.

use super::seconds;
use crate::mcp::{run_stdio, McpConfig};
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_mcp_stdio, m)?)
}

/// Serve MCP on stdin/stdout for the Blender service at host:port until stdin closes.
#[pyfunction]
#[pyo3(signature = (host = "127.0.0.1".to_string(), port = 6688, timeout = 600.0, connect_timeout = 2.0, token = None))]
fn run_mcp_stdio(
    py: Python<'_>,
    host: String,
    port: i64,
    timeout: f64,
    connect_timeout: f64,
    token: Option<String>,
) -> PyResult<()> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| PyValueError::new_err(format!("port must be between 1 and 65535, got {port}")))?;
    let config = McpConfig {
        host,
        port,
        timeout: seconds("timeout", timeout)?,
        connect_timeout: seconds("connect_timeout", connect_timeout)?,
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
