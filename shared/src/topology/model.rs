//! The topology file's types: the federation, its `[tls]` table, tiers and `[[node]]` tables,
//! and the names derived from a node id.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DEFAULT_REDUNDANCY;
use crate::scope::is_valid_region;

fn default_redundancy() -> usize {
    DEFAULT_REDUNDANCY
}

/// A whole federation as described by a topology file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Redundancy factor `k`: how many distinct intermediates carry each notification, so that
    /// one intermediate being down never stops delivery. Default 2.
    #[serde(default = "default_redundancy")]
    pub redundancy: usize,
    /// AMQP URL of the inbox broker of every node that does not set its own `amqp_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp_url: Option<String>,
    /// The nodes, in file order (`[[node]]` tables).
    #[serde(rename = "node", default)]
    pub nodes: Vec<NodeSpec>,
    /// Reachback sources the primaries run (`[[source]]` tables, `sources.rs`).
    #[serde(rename = "source", default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<crate::sources::SourceSpec>,
    /// TLS on every link between the nodes (`[tls]`, made by `docfed-topology certs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Links in clear, said explicitly: a node refuses to start with neither `[tls]` nor this.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Bounds on every node's inbox and dead-letter queue (`[queues]`).
    #[serde(default, skip_serializing_if = "QueueLimits::is_default")]
    pub queues: QueueLimits,
    /// Content at most this large travels inside its notification on every path, and nobody
    /// pulls it (ARCHITECTURE.md §2a); `0` turns that off. Default 64 KiB, at most
    /// [`MAX_INLINE`](crate::messages::MAX_INLINE).
    #[serde(
        default = "default_inline_max",
        skip_serializing_if = "is_default_inline_max"
    )]
    pub inline_max: bytesize::ByteSize,
}

fn default_inline_max() -> bytesize::ByteSize {
    bytesize::ByteSize::b(crate::messages::DEFAULT_INLINE_MAX)
}

fn is_default_inline_max(v: &bytesize::ByteSize) -> bool {
    *v == default_inline_max()
}

/// The `[queues]` table: how much a node's inbox (and its dead-letter queue) may hold on the
/// broker. A broker without bounds lets one member that floods a neighbour's inbox, or a node
/// that stays down for months, fill the broker's disk and stop every other queue on it. At
/// the bound the broker refuses further publishes (`reject-publish`), so senders keep the
/// messages in their own outboxes and retry: nothing is dropped, the backlog moves to the
/// sender's disk. Every node declares the queues with these arguments, so all must agree:
/// they belong to the federation, not to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueLimits {
    /// Most messages in one queue (a message carries up to `--message-batch` envelopes).
    #[serde(default = "QueueLimits::default_max_messages")]
    pub max_messages: u64,
    /// Most bytes of message bodies in one queue, e.g. `"1GiB"`.
    #[serde(default = "QueueLimits::default_max_bytes")]
    pub max_bytes: bytesize::ByteSize,
}

impl QueueLimits {
    pub const DEFAULT_MAX_MESSAGES: u64 = 1_000_000;
    pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024 * 1024;

    fn default_max_messages() -> u64 {
        Self::DEFAULT_MAX_MESSAGES
    }

    fn default_max_bytes() -> bytesize::ByteSize {
        bytesize::ByteSize::b(Self::DEFAULT_MAX_BYTES)
    }

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The queue arguments that apply the bounds to an inbox (`dead_letters` false) or a
    /// dead-letter queue: `x-max-length`, `x-max-length-bytes`, and `x-overflow`. A full inbox
    /// refuses publishes (`reject-publish`: the sender keeps the message and retries); a full
    /// dead-letter queue drops its oldest (`drop-head`): its messages are kept for an operator
    /// to look at, and refusing new ones would leave each poison message in the inbox, blocking
    /// what comes after it.
    pub fn arguments(&self, dead_letters: bool) -> [(&'static str, QueueArgument); 3] {
        let overflow = if dead_letters {
            "drop-head"
        } else {
            "reject-publish"
        };
        [
            ("x-max-length", QueueArgument::Int(clamp(self.max_messages))),
            (
                "x-max-length-bytes",
                QueueArgument::Int(clamp(self.max_bytes.as_u64())),
            ),
            ("x-overflow", QueueArgument::Text(overflow)),
        ]
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A queue argument's value, for whichever AMQP or JSON library declares the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueArgument {
    Int(i64),
    Text(&'static str),
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_messages: Self::DEFAULT_MAX_MESSAGES,
            max_bytes: Self::default_max_bytes(),
        }
    }
}

/// The `[tls]` table: the federation CA and where each node finds its certificate. Relative
/// paths are relative to the topology file's folder ([`TlsSpec::resolve_paths`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// The federation CA's certificate (PEM) every node trusts.
    pub ca: PathBuf,
    /// The revocation list (PEM); nodes read it again whenever it changes. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
    /// The folder of the nodes' certificates and keys, `ID.pem` and `ID.key` (a node's
    /// `--tls-cert`/`--tls-key` override it). Default: `nodes` beside the CA's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certs: Option<PathBuf>,
}

impl TlsSpec {
    /// Makes relative paths relative to `base` (the topology file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.ca);
        if let Some(p) = self.crl.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.certs.as_mut() {
            resolve(p);
        }
    }

    /// Node `id`'s certificate and key files.
    pub fn node_files(&self, id: &str) -> (PathBuf, PathBuf) {
        let dir = self.certs.clone().unwrap_or_else(|| {
            self.ca
                .parent()
                .map_or_else(|| PathBuf::from("nodes"), |d| d.join("nodes"))
        });
        (dir.join(format!("{id}.pem")), dir.join(format!("{id}.key")))
    }
}

/// The role of a node. Every tier runs the same program; the tier only decides what a node does
/// with notifications and content. Ordered from the top of the tree down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Accepts publications from authors; the top of the parent graph.
    Primary,
    /// Relays notifications and caches content between primaries and regional nodes.
    Intermediate,
    /// Serves one region's mobile users and holds the complete directory.
    Regional,
}

impl Tier {
    /// The spelling used in topology files, health answers and `federation.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Primary => "primary",
            Tier::Intermediate => "intermediate",
            Tier::Regional => "regional",
        }
    }
}

impl std::str::FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Tier, String> {
        [Tier::Primary, Tier::Intermediate, Tier::Regional]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown tier {s:?} (primary, intermediate or regional)"))
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[node]]` table of a topology file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique node id: 1-64 characters of `a-z`, `0-9`, `-`, `_` (it appears in queue names).
    pub id: String,
    /// Role of the node.
    pub tier: Tier,
    /// Region served; required for regional nodes and refused on the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Address the node listens on and that its peers use to reach it, so it must be a fixed
    /// port (never 0).
    pub http: SocketAddr,
    /// AMQP URL of this node's inbox broker; defaults to the file's top-level `amqp_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp_url: Option<String>,
    /// Ids of the upstream nodes this node receives notifications and content from. Empty for
    /// primaries, non-empty for every other tier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<String>,
    /// Id of the regional node that also holds this region's regional content (regional nodes
    /// only; required for them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The node's ed25519 public key (64 hex digits; `docfed-topology keys` makes them). When
    /// the nodes have keys, every message between them is signed and checked; all nodes or
    /// none have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

impl NodeSpec {
    /// Base URL of the node's HTTP API, e.g. `https://127.0.0.1:7101`: `https` when the
    /// federation has TLS (`tls`), `http` otherwise.
    pub fn base_url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}", self.http)
    }
}

/// Name of the durable queue a node consumes its notifications from.
pub fn inbox_queue(node_id: &str) -> String {
    format!("docfed.{node_id}.inbox")
}

/// Name of the queue where a node parks messages it cannot parse or accept.
pub fn dead_letter_queue(node_id: &str) -> String {
    format!("docfed.{node_id}.dead")
}

/// Node ids share the conservative alphabet of region names: both end up in queue names, URLs
/// and directory names.
pub fn is_valid_node_id(id: &str) -> bool {
    is_valid_region(id)
}
