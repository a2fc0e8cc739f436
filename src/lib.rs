//! blendwire: networking for Blender with a main-thread bridge.
//!
//! The core is plain Rust (tested by `cargo test` without Python); `python/` is the thin pyo3
//! layer that `maturin` builds into `blendwire._core`.

// `settings::defaults()` is one `json!` object of every default: past 128 levels of its macro.
#![recursion_limit = "256"]

pub mod addr;
pub mod auth;
pub mod backoff;
pub mod bridge;
pub mod client;
pub mod core;
pub mod defaults;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod instances;
pub mod journal;
pub mod logbuffer;
pub mod mcp;
pub mod metrics;
pub mod parentwatch;
pub mod router;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod socketio;
pub mod status;
pub mod watchdog;
pub mod wire;

#[cfg(feature = "python")]
mod python;
