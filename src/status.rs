//! The snapshot behind `blendwire.status()`, `get_status` and the panel: the documented shape
//! (docs/protocols.md) as types, serialised in declaration order.

use crate::bridge::running::MainThreadStatus;
use crate::bridge::Bridge;
use crate::router::Shared as RouterShared;
use crate::service::ServiceInfo;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_s: f64,
    pub service: ServiceStatus,
    /// The router's own snapshot, or `{"state": "stopped"}`.
    pub router: Value,
    pub main_thread: MainThreadStatus,
    pub bridge: BridgeStatus,
}

/// `{"running": false}` when no service was started.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ServiceStatus {
    Started(Box<StartedService>),
    NotStarted { running: bool },
}

#[derive(Debug, Serialize)]
pub struct StartedService {
    pub running: bool,
    pub host: String,
    pub port: u16,
    pub uptime_s: f64,
    pub connections_open: i64,
    pub connections_total: u64,
    pub requests: u64,
    pub errors: Value,
    /// The second listener (blender-mcp and Blender Lab), or null when off.
    pub mcp_addon: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct BridgeStatus {
    pub queue_depth: usize,
    pub capacity: usize,
    pub submitted: u64,
    pub completed: u64,
    pub failed: u64,
    pub expired: u64,
    pub cancelled: u64,
    pub busy_rejections: u64,
    pub results_dropped: u64,
    pub log_records_dropped: u64,
    pub last_latency_ms: f64,
    pub max_job_ms: f64,
    /// GUI: the longest timer tick; stays within the tick budget plus one job.
    pub max_tick_ms: f64,
    /// Queue wait + run on the main thread; bucket upper bounds (powers of two µs).
    pub latency_ms: Latency,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

pub fn status(bridge: &Bridge, service: Option<&ServiceInfo>, router: Option<&RouterShared>, uptime_s: f64) -> Status {
    let m = &bridge.metrics;
    let service = match service {
        Some(s) => {
            let sm = &s.metrics;
            ServiceStatus::Started(Box::new(StartedService {
                running: s.is_serving(),
                host: s.addr().ip().to_string(),
                port: s.addr().port(),
                uptime_s: s.uptime().as_secs_f64(),
                connections_open: sm.connections_open.get(),
                connections_total: sm.connections_total.get(),
                requests: sm.requests.get(),
                errors: sm.errors.snapshot(),
                mcp_addon: s.mcp_addon.as_ref().map(|a| a.snapshot()),
            }))
        }
        None => ServiceStatus::NotStarted { running: false },
    };
    Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_s,
        service,
        router: router.map_or_else(|| json!({"state": "stopped"}), RouterShared::snapshot),
        main_thread: bridge.main.snapshot(),
        bridge: BridgeStatus {
            queue_depth: bridge.len(),
            capacity: bridge.capacity(),
            submitted: m.submitted.get(),
            completed: m.completed.get(),
            failed: m.failed.get(),
            expired: m.expired.get(),
            cancelled: m.cancelled.get(),
            busy_rejections: m.busy_rejections.get(),
            results_dropped: m.results_dropped.get(),
            log_records_dropped: crate::logbuffer::dropped(),
            last_latency_ms: m.last_run_us.get() as f64 / 1000.0,
            max_job_ms: m.max_run_us.get() as f64 / 1000.0,
            max_tick_ms: m.max_tick_us.get() as f64 / 1000.0,
            latency_ms: Latency {
                count: m.latency.count(),
                p50: m.latency.quantile_ms(0.5),
                p90: m.latency.quantile_ms(0.9),
                p99: m.latency.quantile_ms(0.99),
            },
        },
    }
}

/// [`status`] as JSON, as `get_status` and `blendwire.status()` send it.
pub fn snapshot(bridge: &Bridge, service: Option<&ServiceInfo>, router: Option<&RouterShared>, uptime_s: f64) -> Value {
    // Plain data with string keys: serialising it cannot fail.
    serde_json::to_value(status(bridge, service, router, uptime_s)).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn the_documented_shape_in_its_order() {
        let bridge = Bridge::new(8);
        let v = snapshot(&bridge, None, None, 1.5);
        assert_eq!(
            keys(&v),
            ["version", "uptime_s", "service", "router", "main_thread", "bridge"]
        );
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["uptime_s"], 1.5);
        assert_eq!(v["service"], json!({"running": false}));
        assert_eq!(v["router"], json!({"state": "stopped"}));
        assert_eq!(v["main_thread"], json!({"state": "idle"}));
        assert_eq!(
            keys(&v["bridge"]),
            [
                "queue_depth",
                "capacity",
                "submitted",
                "completed",
                "failed",
                "expired",
                "cancelled",
                "busy_rejections",
                "results_dropped",
                "log_records_dropped",
                "last_latency_ms",
                "max_job_ms",
                "max_tick_ms",
                "latency_ms"
            ]
        );
        assert_eq!(v["bridge"]["capacity"], 8);
        assert_eq!(keys(&v["bridge"]["latency_ms"]), ["count", "p50", "p90", "p99"]);
    }
}
