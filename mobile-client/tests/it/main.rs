//! Integration tests of the `docfed` command line against real nodes.

mod cli;
mod common;
mod daemon;
mod publish;
mod resilience;
mod rogue;
mod server_certificates;
mod sync;
