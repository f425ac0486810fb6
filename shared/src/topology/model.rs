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
