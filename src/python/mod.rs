//! The pyo3 layer: converts arguments, releases the GIL around waits, maps errors. No logic.

mod bridge;
mod client;
mod errors;
mod mcp;
mod router;
mod service;

use pyo3::prelude::*;

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
