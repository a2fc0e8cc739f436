//! Counters shared by the threads, read by `status()`. Atomics only on hot paths.

use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Counts per error code (rare, so a lock is fine).
#[derive(Debug, Default)]
pub struct ErrorCounts(Mutex<BTreeMap<String, u64>>);

impl ErrorCounts {
    pub fn inc(&self, code: &str) {
        *self.0.lock().entry(code.to_string()).or_default() += 1;
    }
    pub fn snapshot(&self) -> Value {
        Value::Object(self.0.lock().iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>())
    }
}

#[derive(Debug, Default)]
pub struct BridgeMetrics {
    pub submitted: Counter,
    pub completed: Counter,
    pub failed: Counter,
    pub expired: Counter,
    pub cancelled: Counter,
    pub busy_rejections: Counter,
    pub results_dropped: Counter,
    /// Run time of the last job on the main thread, in microseconds.
    pub last_run_us: Counter,
}

impl BridgeMetrics {
    pub fn set_last_run_us(&self, us: u64) {
        self.last_run_us.0.store(us, Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct ServiceMetrics {
    pub connections_open: Gauge,
    pub connections_total: Counter,
    pub requests: Counter,
    pub errors: ErrorCounts,
}
