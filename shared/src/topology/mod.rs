//! The topology file (ARCHITECTURE.md §1): which nodes make up a federation, their tiers, regions,
//! HTTP addresses, inbox brokers, parents and backups, and the redundancy factor `k`.
//!
//! Parsing and validation are separate steps on purpose: [`Topology::parse`] only checks the
//! TOML shape (unknown keys are rejected so a typo never silently becomes a default), while
//! [`Topology::validate`] checks the graph and returns *every* problem at once, so an operator
//! fixes a broken file in one pass instead of one error per run. The query methods
//! ([`Topology::children`], [`Topology::holders_of_region`], ...) assume a validated topology;
//! on an invalid one they still never panic, they just answer from the first node of each id.
//!
//! ```toml
//! redundancy = 2
//! amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f"
//!
//! [[node]]
//! id = "na"
//! tier = "regional"
//! region = "na"
//! http = "127.0.0.1:7121"
//! parents = ["mid-1", "mid-2"]
//! backup = "eu"
//! ```
//!
//! Where each part lives: the file's types in `model.rs`, reading the TOML in
//! `parse.rs`, the graph rules in `validate.rs` (one function per group of rules, cycles in
//! `cycles.rs`), the questions the nodes ask of a valid topology (who are my parents, who holds
//! region R) in `query.rs`, and every error in `error.rs`.

mod cycles;
mod error;
mod model;
mod parse;
mod query;
#[cfg(test)]
mod tests;
mod validate;

pub use error::{InvalidTopology, TopologyError};
pub use model::{
    dead_letter_queue, inbox_queue, is_valid_node_id, NodeSpec, QueueArgument, QueueLimits, Tier,
    TlsSpec, Topology,
};

/// Broker every node uses when neither the node nor the file names one: the local RabbitMQ with
/// its stock guest account, which is what a developer machine has.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Environment variable through which launchers and tests point programs at a broker. Only named
/// here so every program spells it the same way; this crate never reads the environment.
pub const AMQP_URL_ENV: &str = "DOCFED_AMQP_URL";

/// Number of distinct intermediates that carry each notification when the file does not say.
pub const DEFAULT_REDUNDANCY: usize = 2;
