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

/// The largest value seen.
#[derive(Debug, Default)]
pub struct Max(AtomicU64);

impl Max {
    pub fn observe(&self, v: u64) {
        self.0.fetch_max(v, Relaxed);
    }
    pub fn get(&self) -> u64 {
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
        Value::Object(
            self.0
                .lock()
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<Map<_, _>>(),
        )
    }
}

/// Log-scale histogram of durations (bucket i holds values below 2^i µs), lock-free.
#[derive(Debug)]
pub struct Histogram([AtomicU64; 28]);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Histogram {
    pub fn record(&self, d: std::time::Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let bucket = (64 - us.leading_zeros() as usize).min(self.0.len() - 1);
        self.0[bucket].fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Upper bound (ms) of the bucket holding the q-quantile; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.0.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some((1u64 << i) as f64 / 1000.0);
            }
        }
        None
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
    /// Longest run time of one job, in microseconds.
    pub max_run_us: Max,
    /// Longest GUI timer tick (all jobs it ran), in microseconds.
    pub max_tick_us: Max,
    /// Queue wait + run time of every job that ran.
    pub latency: Histogram,
}

impl BridgeMetrics {
    pub fn set_last_run_us(&self, us: u64) {
        self.last_run_us.0.store(us, Relaxed);
        self.max_run_us.observe(us);
    }
}

#[derive(Debug, Default)]
pub struct ServiceMetrics {
    pub connections_open: Gauge,
    pub connections_total: Counter,
    pub requests: Counter,
    pub errors: ErrorCounts,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_quantiles_are_bucket_bounds() {
        let h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for _ in 0..90 {
            h.record(Duration::from_micros(100)); // bucket < 128 µs
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(5)); // bucket < 8.192 ms
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_ms(0.5), Some(0.128));
        assert_eq!(h.quantile_ms(0.9), Some(0.128));
        assert_eq!(h.quantile_ms(0.99), Some(8.192));
    }
}
