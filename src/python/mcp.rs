//! `blendwire._core.McpServer` (the MCP server of `blendwire mcp` and `blendwire serve --mcp-http`)
//! and `check_mcp_http` (the `--http` rules, before anything starts).

use super::{errors, seconds_or};
use crate::defaults;
use crate::mcp::{http, Blenders, HttpConfig, McpConfig, McpServer, Transports};
use crate::settings;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::time::Duration;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyMcpServer>()?;
    m.add_function(wrap_pyfunction!(check_mcp_http, m)?)
}

/// The problem of `--http SPEC` ([HOST:]PORT; off loopback only with a token) and of each allowed
/// origin, as a rule text, or None.
#[pyfunction]
#[pyo3(signature = (spec, token = None, allow_origins = Vec::new()))]
fn check_mcp_http(spec: &str, token: Option<&str>, allow_origins: Vec<String>) -> Option<String> {
    if let Err(rule) = http::check(spec, token) {
        return Some(rule);
    }
    allow_origins
        .iter()
        .find_map(|o| http::check_origin(o).err())
        .map(|rule| format!("--allow-origin {rule}"))
}

/// A running MCP server for the Blender service at host:port (neither: every announced
/// `blendwire serve`, chosen per call), on its own thread.
#[pyclass(name = "McpServer", module = "blendwire._core", frozen)]
struct PyMcpServer {
    inner: McpServer,
}

#[pymethods]
impl PyMcpServer {
    #[new]
    #[pyo3(signature = (host = None, port = None, *, timeout = None, connect_timeout = None, token = None,
                        stdio = true, http = None, allow_origins = Vec::new(), allow_hosts = Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: Option<String>,
        port: Option<i64>,
        timeout: Option<f64>,
        connect_timeout: Option<f64>,
        token: Option<String>,
        stdio: bool,
        http: Option<String>,
        allow_origins: Vec<String>,
        allow_hosts: Vec<String>,
    ) -> PyResult<Self> {
        let token = token.filter(|t| !t.is_empty());
        let port = port
            .map(|p| settings::client_port(p).map_err(|rule| errors::setting("port", rule)))
            .transpose()?;
        // Neither host nor port: every announced `blendwire serve` (chosen per call).
        let blenders = match (host, port) {
            (None, None) => Blenders::Announced,
            (host, port) => Blenders::One {
                host: host.unwrap_or_else(|| defaults::DEFAULT_HOST.to_string()),
                port: port.unwrap_or(defaults::DEFAULT_PORT),
            },
        };
        let config = McpConfig {
            blenders,
            timeout: seconds_or("timeout", timeout, defaults::DEFAULT_MCP_TIMEOUT)?,
            connect_timeout: seconds_or(
                "connect_timeout",
                connect_timeout,
                defaults::DEFAULT_MCP_CONNECT_TIMEOUT,
            )?,
            token: token.clone(),
            // The process's audit log (`_core.set_audit`): `blendwire mcp`'s, or the Blender's
            // that serves `--mcp-http`.
            audit: super::bridge::core().audit(),
        };
        let http = match http {
            Some(spec) => {
                let (http_host, http_port) =
                    http::check(&spec, token.as_deref()).map_err(|rule| errors::setting("http", rule))?;
                for o in &allow_origins {
                    http::check_origin(o).map_err(|rule| errors::setting("allow_origin", rule))?;
                }
                Some(HttpConfig {
                    host: http_host,
                    port: http_port,
                    token: token.clone(),
                    allowed_origins: allow_origins,
                    allowed_hosts: allow_hosts,
                })
            }
            None => None,
        };
        let transports = match (stdio, http) {
            (true, None) => Transports::Stdio,
            (false, Some(h)) => Transports::Http(h),
            (true, Some(h)) => Transports::StdioAndHttp(h),
            (false, None) => {
                return Err(errors::invalid(
                    "serve stdio, http or both: give http or stdio=True".into(),
                ))
            }
        };
        // Binding may resolve a name: not with the GIL held.
        let inner = py
            .detach(|| McpServer::start(config, transports))
            .map_err(PyRuntimeError::new_err)?;
        Ok(PyMcpServer { inner })
    }

    /// (host, port) of the HTTP listener as bound, or None without HTTP.
    #[getter]
    fn http_address(&self) -> Option<(String, u16)> {
        self.inner.http_addr().map(|a| (a.ip().to_string(), a.port()))
    }

    /// Wait up to `timeout` seconds (GIL released) for it to end: True once it has (RuntimeError
    /// if it failed), False while it runs.
    fn wait(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX);
        match py.detach(|| self.inner.wait(timeout)) {
            None => Ok(false),
            Some(Ok(())) => Ok(true),
            Some(Err(message)) => Err(PyRuntimeError::new_err(message)),
        }
    }

    /// Stop serving (HTTP sessions are ended); returns at once, `wait` tells when it has stopped.
    fn stop(&self) {
        self.inner.stop();
    }
}
