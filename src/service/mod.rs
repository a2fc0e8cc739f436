//! The BLD-Remote-compatible TCP command service, one module per step of a request:
//! `listener` accepts (and refuses beyond the connection limit), `connection` turns bytes into
//! frames and answers into bytes (with the size limit and both timeouts), `pipeline` keeps a
//! connection's requests in request order, `route` answers what the service answers itself and
//! makes the rest main-thread jobs, `job` waits for a job's answer.
//!
//! A second listener (`mcp_addon_port`) speaks the MCP add-ons' protocols with the same limits,
//! token, queue and deadlines: `dialect` tells a connection's protocol apart by its framing;
//! blender-mcp's goes through `pipeline` like BLD Remote's, Blender Lab's one request through `lab`.

mod connection;
mod dialect;
mod job;
mod lab;
mod listener;
mod pipeline;
mod route;

use crate::bridge::Bridge;
use crate::error::ServiceError;
use crate::journal::Audit;
use crate::metrics::ServiceMetrics;
use crate::shutdown::{Controller, StopFlag, StopReason};
use crate::wire::framing::Limits;
use crate::wire::protocol::{Dialect, CANCEL, SERVER_SHUTDOWN};
use serde::Serialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub host: String,
    pub port: u16,
    /// The MCP add-on listener (blender-mcp and Blender Lab), on the same host; None: off.
    pub mcp_addon_port: Option<u16>,
    /// Command types the main-thread dispatcher handles.
    pub commands: Vec<String>,
    /// Server-side wait for the main thread, unless `params._timeout_seconds` says otherwise.
    pub default_timeout: Duration,
    pub limits: Limits,
    pub max_connections: usize,
    /// A request must arrive whole within this time from its first byte (slow clients).
    pub read_timeout: Duration,
    /// A response must be accepted by the client within this time (clients that never read).
    pub write_timeout: Duration,
    /// When set, every request must carry `"token": <this>`; required off loopback.
    pub token: Option<String>,
    /// What `get_status` answers, on the I/O thread at once (never queued behind a running job);
    /// without it `get_status` is a main-thread command like any other.
    pub status: Option<StatusSource>,
    /// The process's audit log (`Core::set_audit`); None: off.
    pub audit: Option<Arc<Audit>>,
}

/// Builds the status snapshot (`crate::core`'s, which knows the router and the uptime).
#[derive(Clone)]
pub struct StatusSource(pub Arc<dyn Fn() -> serde_json::Value + Send + Sync>);

impl std::fmt::Debug for StatusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusSource")
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        use crate::defaults as s;
        ServiceConfig {
            host: s::DEFAULT_HOST.into(),
            port: s::DEFAULT_PORT,
            mcp_addon_port: None,
            commands: vec![],
            default_timeout: s::DEFAULT_TIMEOUT,
            limits: Limits {
                max_frame_bytes: s::DEFAULT_MAX_REQUEST_BYTES,
                ..Limits::default()
            },
            max_connections: s::DEFAULT_MAX_CONNECTIONS,
            read_timeout: s::DEFAULT_READ_TIMEOUT,
            write_timeout: s::DEFAULT_WRITE_TIMEOUT,
            token: None,
            status: None,
            audit: None,
        }
    }
}

/// A running service. Dropping it stops it.
pub struct Service {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Controller,
    pub metrics: Arc<ServiceMetrics>,
    info: Arc<ServiceInfo>,
    bridge: Arc<Bridge>,
}

/// What readers (status, the bound address) need of a service: shareable without the `Service`
/// itself, so a reader never waits for whoever holds the service (e.g. to stop it).
#[derive(Debug)]
pub struct ServiceInfo {
    addr: SocketAddr,
    started: Instant,
    stopped: StopFlag,
    pub metrics: Arc<ServiceMetrics>,
    /// The MCP add-on listener, when there is one.
    pub mcp_addon: Option<Arc<AddonListener>>,
    /// Every request must carry the token (the token itself stays in the service).
    pub token_required: bool,
}

/// The MCP add-on listener's address and its connections by dialect.
#[derive(Debug)]
pub struct AddonListener {
    pub addr: SocketAddr,
    pub blender_mcp_connections: AtomicU64,
    pub blender_lab_connections: AtomicU64,
}

impl AddonListener {
    /// Its part of the status.
    pub fn status(&self) -> AddonStatus {
        AddonStatus {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            dialects: [Dialect::BlenderMcp.name(), Dialect::BlenderLab.name()],
            connections: AddonConnections {
                blender_mcp: self.blender_mcp_connections.load(Relaxed),
                blender_lab: self.blender_lab_connections.load(Relaxed),
            },
        }
    }
}

/// The MCP add-on listener in the status (`service.mcp_addon`), serialised in declaration order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddonStatus {
    pub host: String,
    pub port: u16,
    /// The protocols it speaks.
    pub dialects: [&'static str; 2],
    pub connections: AddonConnections,
}

/// Connections accepted so far, by dialect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddonConnections {
    pub blender_mcp: u64,
    pub blender_lab: u64,
}

impl ServiceInfo {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MCP add-on listener's address, when there is one.
    pub fn mcp_addon_addr(&self) -> Option<SocketAddr> {
        self.mcp_addon.as_ref().map(|a| a.addr)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// False once stopped or after a `server_shutdown` command (the listener is closed then).
    pub fn is_serving(&self) -> bool {
        !self.stopped.get()
    }
}

/// What every task of one service shares.
struct Ctx {
    bridge: Arc<Bridge>,
    commands: HashSet<String>,
    /// Sorted, for `unknown_rpc_command` answers.
    known: Vec<String>,
    default_timeout: Duration,
    limits: Limits,
    max_connections: usize,
    read_timeout: Duration,
    write_timeout: Duration,
    token: Option<String>,
    status: Option<StatusSource>,
    metrics: Arc<ServiceMetrics>,
    addon: Option<Arc<AddonListener>>,
    audit: Option<Arc<Audit>>,
}

impl Ctx {
    /// Count a connection of the MCP add-on listener by its dialect.
    fn metrics_addon(&self, dialect: Dialect) {
        if let Some(a) = &self.addon {
            match dialect {
                Dialect::BlenderMcp => a.blender_mcp_connections.fetch_add(1, Relaxed),
                Dialect::BlenderLab => a.blender_lab_connections.fetch_add(1, Relaxed),
            };
        }
    }
}

/// Bind `host:port` for a listener of this service (the errors name the port).
fn bind(host: &str, port: u16) -> Result<std::net::TcpListener, ServiceError> {
    let addr = crate::addr::resolve(host, port).map_err(|detail| ServiceError::BadAddress {
        host: host.to_string(),
        detail,
    })?;
    let listener = std::net::TcpListener::bind(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => ServiceError::PortInUse {
            host: host.to_string(),
            port,
        },
        std::io::ErrorKind::AddrNotAvailable => ServiceError::BadAddress {
            host: host.to_string(),
            detail: e.to_string(),
        },
        _ => ServiceError::Io(e),
    })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

impl Service {
    pub fn start(config: ServiceConfig, bridge: Arc<Bridge>) -> Result<Service, ServiceError> {
        let addr = crate::addr::resolve(&config.host, config.port).map_err(|detail| ServiceError::BadAddress {
            host: config.host.clone(),
            detail,
        })?;
        // execute_code is arbitrary code execution: off loopback, only with a token. The rule is
        // `auth`'s, applied to the address as bound (a name may resolve to loopback).
        if crate::auth::check_bound(&config.host, addr.ip(), config.token.as_deref()).is_err() {
            return Err(ServiceError::InsecureHost {
                host: config.host.clone(),
            });
        }
        let listener = bind(&config.host, config.port)?;
        let addr = listener.local_addr()?;
        let addon_listener = match config.mcp_addon_port {
            Some(port) => Some(bind(&config.host, port)?),
            None => None,
        };
        // One I/O thread is plenty: the main thread is the bottleneck, and an idle Blender
        // should carry as few threads as possible.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("blendwire-io")
            .enable_io()
            .enable_time()
            .build()?;
        let (listener, addon_listener) = {
            let _guard = runtime.enter();
            let addon = match addon_listener {
                Some(l) => Some(TcpListener::from_std(l)?),
                None => None,
            };
            (TcpListener::from_std(listener)?, addon)
        };
        let addon = match &addon_listener {
            Some(l) => Some(Arc::new(AddonListener {
                addr: l.local_addr()?,
                blender_mcp_connections: AtomicU64::new(0),
                blender_lab_connections: AtomicU64::new(0),
            })),
            None => None,
        };
        let shutdown = Controller::new();
        let metrics = Arc::new(ServiceMetrics::default());
        let mut known: Vec<String> = config
            .commands
            .iter()
            .cloned()
            .chain([SERVER_SHUTDOWN.to_string(), CANCEL.to_string()])
            .collect();
        known.sort();
        known.dedup();
        let ctx = Arc::new(Ctx {
            bridge: bridge.clone(),
            commands: config.commands.iter().cloned().collect(),
            known,
            default_timeout: config.default_timeout,
            limits: config.limits,
            max_connections: config.max_connections.max(1),
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
            token: config.token.filter(|t| !t.is_empty()),
            status: config.status,
            metrics: metrics.clone(),
            addon: addon.clone(),
            audit: config.audit,
        });
        let token_required = ctx.token.is_some();
        if let Some(handle) = shutdown.handle() {
            runtime.spawn(listener::accept_loop(
                listener,
                ctx.clone(),
                handle,
                listener::Kind::BldRemote,
            ));
        }
        log::info!("command service listening on {addr}");
        if let (Some(l), Some(handle), Some(a)) = (addon_listener, shutdown.handle(), &addon) {
            runtime.spawn(listener::accept_loop(l, ctx, handle, listener::Kind::McpAddon));
            log::info!("MCP add-on listener (blender-mcp, Blender Lab) on {}", a.addr);
        }
        let info = Arc::new(ServiceInfo {
            addr,
            started: Instant::now(),
            stopped: shutdown.flag(),
            metrics: metrics.clone(),
            mcp_addon: addon,
            token_required,
        });
        Ok(Service {
            runtime: Some(runtime),
            shutdown,
            metrics,
            info,
            bridge,
        })
    }

    /// Ask the main thread to stop (reason "parent exited") when process `pid` exits. The wait
    /// runs on the service's I/O thread; it ends with the service.
    pub fn stop_when_process_exits(&self, pid: u32) -> std::io::Result<()> {
        let (Some(rt), Some(mut shutdown)) = (&self.runtime, self.shutdown.handle()) else {
            return Ok(());
        };
        let fd = crate::parentwatch::open(pid)?;
        let bridge = self.bridge.clone();
        let _guard = rt.enter(); // AsyncFd registers with this runtime's reactor
        rt.spawn(async move {
            tokio::select! {
                exited = crate::parentwatch::exited(fd) => match exited {
                    Ok(()) => {
                        log::info!("process {pid} exited: stopping");
                        bridge.request_stop(StopReason::ParentExited);
                    }
                    Err(e) => log::warn!("cannot watch process {pid}: {e}"),
                },
                _ = shutdown.signalled() => {}
            }
        });
        Ok(())
    }

    pub fn info(&self) -> Arc<ServiceInfo> {
        self.info.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.info.addr
    }

    pub fn uptime(&self) -> Duration {
        self.info.uptime()
    }

    /// False once stopped or after a `server_shutdown` command (the listener is closed then).
    pub fn is_serving(&self) -> bool {
        !self.shutdown.is_signalled()
    }

    /// Close the listener and every connection, and end the I/O thread (bounded wait).
    /// Must not be called from inside the service's own runtime.
    pub fn stop(mut self, timeout: Duration) {
        self.stop_inner(timeout);
    }

    fn stop_inner(&mut self, timeout: Duration) {
        let Some(rt) = self.runtime.take() else { return };
        // Connections end at once on the signal, after writing any answer already computed;
        // they get half the time to do so before their tasks are dropped.
        if !self.shutdown.stop_and_wait(&rt, timeout / 2) {
            log::warn!(
                "command service on {}: some connections did not close in time",
                self.addr()
            );
        }
        rt.shutdown_timeout(timeout);
        log::info!("command service on {} stopped", self.addr());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop_inner(crate::defaults::DEFAULT_STOP_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_addon_status_shape_in_its_order() {
        let listener = AddonListener {
            addr: "127.0.0.1:9876".parse().unwrap(),
            blender_mcp_connections: AtomicU64::new(2),
            blender_lab_connections: AtomicU64::new(1),
        };
        let v = serde_json::to_value(listener.status()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["host", "port", "dialects", "connections"]);
        assert_eq!(
            v,
            serde_json::json!({
                "host": "127.0.0.1",
                "port": 9876,
                "dialects": ["blender_mcp", "blender_lab"],
                "connections": {"blender_mcp": 2, "blender_lab": 1},
            })
        );
        let connections: Vec<&str> = v["connections"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(connections, ["blender_mcp", "blender_lab"]);
    }
}
