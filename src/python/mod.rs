//! The pyo3 layer: converts arguments, releases the GIL around waits, maps errors. No logic.

mod bridge;
mod client;
mod errors;
mod json;
mod mcp;
mod router;
mod service;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::time::Duration;

/// A duration argument from Python, checked the same way by every binding: more than 0 and at
/// most 30 days.
pub(crate) fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    if value.is_finite() && value > 0.0 && value <= 30.0 * 86_400.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(PyValueError::new_err(format!(
            "{name} must be a number of seconds above 0 (at most 30 days), got {value}"
        )))
    }
}

#[pymodule(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    crate::logbuffer::install();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    bridge::register(m)?;
    service::register(m)?;
    client::register(m)?;
    router::register(m)?;
    mcp::register(m)?;
    Ok(())
}
