//! What a program driving docfed processes from outside needs, whether it is the benchmark and
//! endurance harness (`docfed-endurance`) or a test suite (through `docfed-test-kit`, which
//! re-exports it): awaiting a started process's `ready.json` ([`process`]), its memory from
//! `/proc` ([`procfs`]), and deterministic content that never needs to be kept in memory
//! ([`content`]).
//!
//! Apart from `docfed-test-kit` so that the harness's binary links no test helpers.

pub mod content;
pub mod process;
pub mod procfs;

/// What [`process::await_ready`] fails with: the log of the process that did not start.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
