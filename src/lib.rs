//! blendwire: networking for Blender with a main-thread bridge.
//!
//! The core is plain Rust (tested by `cargo test` without Python); `python/` is the thin pyo3
//! layer that `maturin` builds into `blendwire._core`.

pub mod backoff;
pub mod client;
pub mod error;
pub mod framing;
pub mod logbuffer;
pub mod metrics;
pub mod protocol;
pub mod queue;
pub mod service;
pub mod status;

#[cfg(feature = "python")]
mod python;
