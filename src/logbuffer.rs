//! `log` records from any thread, held for the main thread to hand to Python's `logging`.
//!
//! Emitting into Python from a network thread would take the GIL and could block that thread
//! behind a long-running handler, so records wait here (bounded: the oldest are dropped and
//! counted) and the main thread drains them between jobs.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

const CAPACITY: usize = 1000;

#[derive(Debug, Clone)]
pub struct Record {
    pub level: log::Level,
    pub target: String,
    pub message: String,
}

#[derive(Default)]
pub struct LogBuffer {
    records: Mutex<VecDeque<Record>>,
    pending: AtomicBool,
    dropped: AtomicU64,
}

impl log::Log for LogBuffer {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level() && metadata.target().starts_with("blendwire")
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut records = self.records.lock();
        if records.len() >= CAPACITY {
            records.pop_front();
            self.dropped.fetch_add(1, Relaxed);
        }
        records.push_back(Record {
            level: record.level(),
            target: record.target().to_string(),
            message: record.args().to_string(),
        });
        self.pending.store(true, Relaxed);
    }

    fn flush(&self) {}
}

impl LogBuffer {
    /// Everything logged since the last call (cheap when nothing was).
    pub fn drain(&self) -> Vec<Record> {
        if !self.pending.swap(false, Relaxed) {
            return Vec::new();
        }
        self.records.lock().drain(..).collect()
    }

    /// Records lost because the buffer was full (the main thread did not drain it in time, e.g.
    /// while a long handler ran).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

static BUFFER: OnceLock<&'static LogBuffer> = OnceLock::new();

/// Records the installed buffer lost so far (0 before `install`), for the status snapshot: a gap
/// in Python's log should say so.
pub fn dropped() -> u64 {
    BUFFER.get().map_or(0, |b| b.dropped())
}

/// Install the buffer as the process's `log` logger (once; later calls return the same).
pub fn install() -> &'static LogBuffer {
    BUFFER.get_or_init(|| {
        let buffer: &'static LogBuffer = Box::leak(Box::default());
        if log::set_logger(buffer).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
        buffer
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_them() {
        let buffer = LogBuffer::default();
        log::set_max_level(log::LevelFilter::Info);
        for i in 0..CAPACITY + 3 {
            buffer.log(
                &log::Record::builder()
                    .level(log::Level::Warn)
                    .target("blendwire::test")
                    .args(format_args!("{i}"))
                    .build(),
            );
        }
        assert_eq!(buffer.dropped(), 3);
        let records = buffer.drain();
        assert_eq!((records.len(), records[0].message.as_str()), (CAPACITY, "3"));
    }
}
