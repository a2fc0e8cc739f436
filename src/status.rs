//! The snapshot behind `blendwire.status()` and the panel.

use crate::bridge::Bridge;
use crate::router::Shared as RouterShared;
use crate::service::ServiceInfo;
use serde_json::{json, Value};

pub fn snapshot(bridge: &Bridge, service: Option<&ServiceInfo>, router: Option<&RouterShared>, uptime_s: f64) -> Value {
    let m = &bridge.metrics;
    let service = match service {
        Some(s) => {
            let sm = &s.metrics;
            json!({
                "running": s.is_serving(),
                "host": s.addr().ip().to_string(),
                "port": s.addr().port(),
                "uptime_s": s.uptime().as_secs_f64(),
                "connections_open": sm.connections_open.get(),
                "connections_total": sm.connections_total.get(),
                "requests": sm.requests.get(),
                "errors": sm.errors.snapshot(),
                // The second listener (blender-mcp and Blender Lab), or null when off.
                "mcp_addon": s.mcp_addon.as_ref().map(|a| a.snapshot()),
            })
        }
        None => json!({"running": false}),
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": uptime_s,
        "service": service,
        "router": router.map_or_else(|| json!({"state": "stopped"}), RouterShared::snapshot),
        "main_thread": bridge.main.snapshot(),
        "bridge": {
            "queue_depth": bridge.len(),
            "capacity": bridge.capacity(),
            "submitted": m.submitted.get(),
            "completed": m.completed.get(),
            "failed": m.failed.get(),
            "expired": m.expired.get(),
            "cancelled": m.cancelled.get(),
            "busy_rejections": m.busy_rejections.get(),
            "results_dropped": m.results_dropped.get(),
            "log_records_dropped": crate::logbuffer::dropped(),
            "last_latency_ms": m.last_run_us.get() as f64 / 1000.0,
            "max_job_ms": m.max_run_us.get() as f64 / 1000.0,
            // GUI: the longest timer tick; stays within the tick budget plus one job.
            "max_tick_ms": m.max_tick_us.get() as f64 / 1000.0,
            // Queue wait + run on the main thread; bucket upper bounds (powers of two µs).
            "latency_ms": {
                "count": m.latency.count(),
                "p50": m.latency.quantile_ms(0.5),
                "p90": m.latency.quantile_ms(0.9),
                "p99": m.latency.quantile_ms(0.99),
            },
        },
    })
}
