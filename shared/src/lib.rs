//! Types every docfed program shares: identifiers, document scopes, the JSON bodies of the node
//! HTTP API, signatures and streaming hashes.
//!
//! This crate has no I/O framework dependencies (no axum, sqlx or lapin) so that the portal, the
//! command-line client and the test harnesses can speak the node's wire format without pulling
//! in the node itself.

pub mod hashing;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod messages;
pub mod presence;
pub mod ready;
pub mod scope;
pub mod search;
pub mod secrets;
pub mod sources;
pub mod topology;
pub mod wire;

pub use hashing::{ContentHasher, Digests, Md5Stream};
pub use ids::{DocId, Md5Hex, ParseIdError, Sha256Hex};
pub use scope::{ParseScopeError, Scope};
pub use topology::{NodeSpec, Tier, Topology, TopologyError};
