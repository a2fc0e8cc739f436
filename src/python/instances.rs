//! The instance files of `crate::instances`: announce this process's service, list and choose
//! the running ones. The announcement lives until the service stops (`stop_service` withdraws it).

use super::bridge::core;
use super::errors;
use crate::instances::{self, Announce, Instance, Runtime};
use pyo3::prelude::*;
use pythonize::pythonize;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(instances_dir, m)?)?;
    m.add_function(wrap_pyfunction!(announce_instance, m)?)?;
    m.add_function(wrap_pyfunction!(update_instance, m)?)?;
    m.add_function(wrap_pyfunction!(withdraw_instance, m)?)?;
    m.add_function(wrap_pyfunction!(discover_instances, m)?)?;
    m.add_function(wrap_pyfunction!(choose_instance, m)?)?;
    Ok(())
}

fn to_py(py: Python<'_>, instance: &Instance) -> PyResult<Py<PyAny>> {
    Ok(pythonize(py, &instance.record())
        .map_err(|e| errors::bad_argument("instance", e))?
        .unbind())
}

#[pyfunction]
fn instances_dir() -> String {
    instances::dir().to_string_lossy().into_owned()
}

/// Announce the running service; returns the instance file's path.
#[pyfunction]
#[pyo3(signature = (runtime, blender_version, blend_file = None))]
fn announce_instance(
    py: Python<'_>,
    runtime: &str,
    blender_version: String,
    blend_file: Option<String>,
) -> PyResult<String> {
    let runtime: Runtime = runtime.parse().map_err(errors::invalid)?;
    let service = core().serving().ok_or_else(errors::nothing_to_announce)?;
    let announce = Announce {
        host: service.addr().ip().to_string(),
        port: service.addr().port(),
        mcp_addon_port: service.mcp_addon_addr().map(|a| a.port()),
        token_required: service.token_required,
        blend_file,
        blender_version,
        runtime,
    };
    let path = py
        .detach(|| core().announce(announce))
        .map_err(errors::instance_error)?;
    Ok(path.to_string_lossy().into_owned())
}

/// The open .blend file changed; False when nothing is announced or the path is unchanged.
#[pyfunction]
fn update_instance(py: Python<'_>, blend_file: Option<String>) -> PyResult<bool> {
    py.detach(|| core().update_announcement(blend_file))
        .map_err(errors::instance_error)
}

#[pyfunction]
fn withdraw_instance(py: Python<'_>) -> bool {
    py.detach(|| core().withdraw())
}

#[pyfunction]
fn discover_instances(py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
    let found = py.detach(instances::discover);
    found.iter().map(|i| to_py(py, i)).collect()
}

#[pyfunction]
#[pyo3(signature = (selector = None))]
fn choose_instance(py: Python<'_>, selector: Option<String>) -> PyResult<Py<PyAny>> {
    let chosen = py.detach(|| instances::choose(selector.as_deref()));
    to_py(py, &chosen.map_err(errors::choose_error)?)
}
