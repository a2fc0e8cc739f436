//! The pyo3 layer: converts arguments, releases the GIL around waits, maps errors. No logic.

mod bridge;
mod client;
mod errors;
mod instances;
mod json;
mod mcp;
mod router;
mod service;
mod settings;

use pyo3::prelude::*;
use std::time::Duration;

/// A duration argument from Python, checked by the one rule of `crate::settings::seconds`.
pub(crate) fn seconds(name: &'static str, value: f64) -> PyResult<Duration> {
    crate::settings::seconds(value).map_err(|rule| errors::setting(name, rule))
}

/// An optional duration argument: `None` is `default`.
pub(crate) fn seconds_or(name: &'static str, value: Option<f64>, default: Duration) -> PyResult<Duration> {
    value.map_or(Ok(default), |v| seconds(name, v))
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
    settings::register(m)?;
    instances::register(m)?;
    Ok(())
}
