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
//! Over 600 lines with its tests (about 520): the parser and every validation rule of the topology
//! file, each with a test.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::scope::is_valid_region;

/// Broker every node uses when neither the node nor the file names one: the local RabbitMQ with
/// its stock guest account, which is what a developer machine has.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Environment variable through which launchers and tests point programs at a broker. Only named
/// here so every program spells it the same way; this crate never reads the environment.
pub const AMQP_URL_ENV: &str = "DOCFED_AMQP_URL";

/// Number of distinct intermediates that carry each notification when the file does not say.
pub const DEFAULT_REDUNDANCY: usize = 2;

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

/// One problem found while reading or validating a topology. Every variant names the nodes
/// involved so that the message alone tells the operator what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read topology file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}{}: {message}", path_prefix(.path), location(*.line, *.column))]
    Parse {
        /// File the text came from, when it came from a file.
        path: Option<PathBuf>,
        /// 1-based line of the problem, when the parser could tell.
        line: Option<usize>,
        /// 1-based column (in characters) of the problem, when the parser could tell.
        column: Option<usize>,
        message: String,
    },
    #[error("the topology has no nodes (add [[node]] tables)")]
    NoNodes,
    #[error("source `{name}`: {problem}")]
    Source { name: String, problem: String },
    #[error("source name `{name}` is used by more than one [[source]]")]
    DuplicateSource { name: String },
    #[error("the topology has sources but no primary to run them")]
    SourcesWithoutPrimary,
    #[error(
        "some nodes have a public_key and these do not: {}; all or none (`docfed-topology keys` makes them)",
        missing.join(", ")
    )]
    PartialKeys { missing: Vec<String> },
    #[error("node `{node}` has public_key {key:?}, which is not 64 hex digits of an ed25519 key")]
    BadPublicKey { node: String, key: String },
    #[error("redundancy must be at least 1 (each notification needs at least one path)")]
    ZeroRedundancy,
    #[error("`insecure = true` and a `[tls]` table contradict each other: keep one")]
    TlsAndInsecure,
    #[error("node id {id:?} is invalid: ids are 1-64 characters of a-z, 0-9, `-`, `_`")]
    InvalidId { id: String },
    #[error("node id `{id}` is used by more than one node")]
    DuplicateId { id: String },
    #[error("node `{node}` has HTTP port 0: peers need a fixed address to reach it")]
    ZeroPort { node: String },
    #[error("nodes `{first}` and `{second}` both use HTTP address {addr}")]
    DuplicateHttp {
        first: String,
        second: String,
        addr: SocketAddr,
    },
    #[error("{}: AMQP URL {url:?} must start with amqp:// or amqps://", amqp_owner(.node))]
    InvalidAmqpUrl { node: Option<String>, url: String },
    #[error("node `{node}` has unknown parent `{parent}`")]
    UnknownParent { node: String, parent: String },
    #[error("node `{node}` lists parent `{parent}` more than once")]
    DuplicateParent { node: String, parent: String },
    #[error("primary node `{node}` has parents; primaries are the top of the graph")]
    PrimaryWithParents { node: String },
    #[error("{tier} node `{node}` has no parents; only primaries may have none")]
    MissingParents { node: String, tier: Tier },
    #[error("regional node `{node}` has no region")]
    MissingRegion { node: String },
    #[error(
        "node `{node}` has invalid region {region:?}: regions are 1-64 characters of a-z, 0-9, `-`, `_`"
    )]
    InvalidRegion { node: String, region: String },
    #[error("{tier} node `{node}` has region {region:?}; only regional nodes serve a region")]
    RegionOnNonRegional {
        node: String,
        tier: Tier,
        region: String,
    },
    #[error("regional nodes `{first}` and `{second}` both serve region {region:?}")]
    DuplicateRegion {
        region: String,
        first: String,
        second: String,
    },
    #[error("regional node `{node}` has no backup (set `backup` to another regional node's id)")]
    MissingBackup { node: String },
    #[error("node `{node}` has unknown backup `{backup}`")]
    UnknownBackup { node: String, backup: String },
    #[error(
        "node `{node}` has backup `{backup}`, which is a {backup_tier} node, not a regional one"
    )]
    BackupNotRegional {
        node: String,
        backup: String,
        backup_tier: Tier,
    },
    #[error("regional node `{node}` is its own backup; a backup must be another regional node")]
    BackupIsSelf { node: String },
    #[error("{tier} node `{node}` has a backup; only regional nodes have one")]
    BackupOnNonRegional { node: String, tier: Tier },
    #[error(
        "regional node `{node}` has {intermediates} intermediate parent(s) but redundancy k = {redundancy} needs at least {redundancy}"
    )]
    InsufficientRedundancy {
        node: String,
        intermediates: usize,
        redundancy: usize,
    },
    #[error(
        "cycle in the parent graph: {} (each node lists the next one as a parent)",
        cycle_path(.nodes)
    )]
    Cycle {
        /// The nodes on the cycle, first node repeated at the end.
        nodes: Vec<String>,
    },
}

fn path_prefix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("invalid TOML at line {l}, column {c}"),
        (Some(l), None) => format!("invalid TOML at line {l}"),
        _ => "invalid TOML".to_owned(),
    }
}

fn amqp_owner(node: &Option<String>) -> String {
    match node {
        Some(n) => format!("node `{n}`"),
        None => "top-level amqp_url".to_owned(),
    }
}

fn cycle_path(nodes: &[String]) -> String {
    nodes
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// A topology file that failed validation, with every problem found. Convenient for programs
/// that only need to refuse to start (`docfed-node --topology`); `docfed-topology check` prints
/// the individual errors instead.
#[derive(Debug)]
pub struct InvalidTopology {
    pub path: PathBuf,
    pub errors: Vec<TopologyError>,
}

impl fmt::Display for InvalidTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Read and parse errors already name the file.
        if let [e @ (TopologyError::Read { .. } | TopologyError::Parse { .. })] =
            self.errors.as_slice()
        {
            return e.fmt(f);
        }
        write!(f, "invalid topology file {}:", self.path.display())?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidTopology {}

impl Topology {
    /// Parses the TOML text of a topology file. Only the shape is checked here; call
    /// [`Topology::validate`] for the graph.
    pub fn parse(text: &str) -> Result<Self, TopologyError> {
        toml::from_str(text).map_err(|e| parse_error(None, text, &e))
    }

    /// Reads and parses a topology file; errors name the file.
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| parse_error(Some(path), &text, &e))
    }

    /// [`Topology::load`] followed by [`Topology::validate`], for programs that refuse to start
    /// on any problem.
    pub fn load_validated(path: &Path) -> Result<Self, InvalidTopology> {
        let invalid = |errors| InvalidTopology {
            path: path.to_owned(),
            errors,
        };
        let topology = Self::load(path).map_err(|e| invalid(vec![e]))?;
        topology.validate().map_err(invalid)?;
        Ok(topology)
    }

    /// The topology as TOML, e.g. for a harness that generates topologies (fresh ports, more
    /// regions) and hands them to `docfed-topology up`.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Checks the whole topology and returns every problem found, in a stable order (file
    /// order within each kind of check).
    pub fn validate(&self) -> Result<(), Vec<TopologyError>> {
        use TopologyError as E;
        let mut errors = Vec::new();

        if self.nodes.is_empty() {
            errors.push(E::NoNodes);
        }
        if self.redundancy == 0 {
            errors.push(E::ZeroRedundancy);
        }
        if self.insecure && self.tls.is_some() {
            errors.push(E::TlsAndInsecure);
        }
        if let Some(url) = &self.amqp_url {
            if !is_amqp_url(url) {
                errors.push(E::InvalidAmqpUrl {
                    node: None,
                    url: url.clone(),
                });
            }
        }

        // Ids first: every later check looks nodes up by id, through the first node of each id.
        let mut by_id: HashMap<&str, &NodeSpec> = HashMap::new();
        let mut reported_dups: HashSet<&str> = HashSet::new();
        for n in &self.nodes {
            if !is_valid_node_id(&n.id) {
                errors.push(E::InvalidId { id: n.id.clone() });
            }
            if by_id.contains_key(n.id.as_str()) {
                if reported_dups.insert(&n.id) {
                    errors.push(E::DuplicateId { id: n.id.clone() });
                }
            } else {
                by_id.insert(&n.id, n);
            }
        }

        for (i, n) in self.nodes.iter().enumerate() {
            if n.http.port() == 0 {
                errors.push(E::ZeroPort { node: n.id.clone() });
                continue;
            }
            if let Some(other) = self.nodes[..i]
                .iter()
                .find(|o| o.http.port() != 0 && addresses_collide(o.http, n.http))
            {
                errors.push(E::DuplicateHttp {
                    first: other.id.clone(),
                    second: n.id.clone(),
                    addr: n.http,
                });
            }
        }

        for n in &self.nodes {
            self.validate_node(n, &by_id, &mut errors);
        }

        let mut region_owner: HashMap<&str, &str> = HashMap::new();
        for n in self.regionals() {
            if let Some(region) = n.region.as_deref() {
                match region_owner.get(region) {
                    Some(first) => errors.push(E::DuplicateRegion {
                        region: region.to_owned(),
                        first: (*first).to_owned(),
                        second: n.id.clone(),
                    }),
                    None => {
                        region_owner.insert(region, &n.id);
                    }
                }
            }
        }

        errors.extend(self.find_cycles());

        let mut source_names = HashSet::new();
        for src in &self.sources {
            if !source_names.insert(src.name.as_str()) {
                errors.push(E::DuplicateSource {
                    name: src.name.clone(),
                });
            }
            errors.extend(src.problems().into_iter().map(|problem| E::Source {
                name: src.name.clone(),
                problem,
            }));
        }
        if !self.sources.is_empty() && self.primaries().next().is_none() {
            errors.push(E::SourcesWithoutPrimary);
        }

        let keyed = self.nodes.iter().filter(|n| n.public_key.is_some()).count();
        if keyed > 0 && keyed < self.nodes.len() {
            errors.push(E::PartialKeys {
                missing: self
                    .nodes
                    .iter()
                    .filter(|n| n.public_key.is_none())
                    .map(|n| n.id.clone())
                    .collect(),
            });
        }
        for n in &self.nodes {
            if let Some(k) = &n.public_key {
                if crate::keys::PublicKey::from_hex(k).is_err() {
                    errors.push(E::BadPublicKey {
                        node: n.id.clone(),
                        key: k.clone(),
                    });
                }
            }
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn validate_node(
        &self,
        n: &NodeSpec,
        by_id: &HashMap<&str, &NodeSpec>,
        errors: &mut Vec<TopologyError>,
    ) {
        use TopologyError as E;
        let id = || n.id.clone();

        if let Some(url) = &n.amqp_url {
            if !is_amqp_url(url) {
                errors.push(E::InvalidAmqpUrl {
                    node: Some(id()),
                    url: url.clone(),
                });
            }
        }

        match (n.tier, n.parents.is_empty()) {
            (Tier::Primary, false) => errors.push(E::PrimaryWithParents { node: id() }),
            (Tier::Intermediate | Tier::Regional, true) => errors.push(E::MissingParents {
                node: id(),
                tier: n.tier,
            }),
            _ => {}
        }
        let mut seen = HashSet::new();
        for p in &n.parents {
            if !seen.insert(p.as_str()) {
                errors.push(E::DuplicateParent {
                    node: id(),
                    parent: p.clone(),
                });
            } else if !by_id.contains_key(p.as_str()) {
                errors.push(E::UnknownParent {
                    node: id(),
                    parent: p.clone(),
                });
            }
        }

        match (n.tier, &n.region) {
            (Tier::Regional, None) => errors.push(E::MissingRegion { node: id() }),
            (Tier::Regional, Some(r)) if !is_valid_region(r) => errors.push(E::InvalidRegion {
                node: id(),
                region: r.clone(),
            }),
            (Tier::Primary | Tier::Intermediate, Some(r)) => errors.push(E::RegionOnNonRegional {
                node: id(),
                tier: n.tier,
                region: r.clone(),
            }),
            _ => {}
        }

        match (n.tier, &n.backup) {
            (Tier::Regional, None) => errors.push(E::MissingBackup { node: id() }),
            (Tier::Regional, Some(b)) if *b == n.id => errors.push(E::BackupIsSelf { node: id() }),
            (Tier::Regional, Some(b)) => match by_id.get(b.as_str()) {
                None => errors.push(E::UnknownBackup {
                    node: id(),
                    backup: b.clone(),
                }),
                Some(backup) if backup.tier != Tier::Regional => {
                    errors.push(E::BackupNotRegional {
                        node: id(),
                        backup: b.clone(),
                        backup_tier: backup.tier,
                    })
                }
                Some(_) => {}
            },
            (Tier::Primary | Tier::Intermediate, Some(_)) => errors.push(E::BackupOnNonRegional {
                node: id(),
                tier: n.tier,
            }),
            _ => {}
        }

        // The primary routes each notification for a regional node through k distinct
        // intermediates among that node's parents; fewer than k parents makes that impossible.
        if n.tier == Tier::Regional {
            let intermediates = n
                .parents
                .iter()
                .map(String::as_str)
                .collect::<HashSet<_>>()
                .into_iter()
                .filter(|p| by_id.get(p).is_some_and(|p| p.tier == Tier::Intermediate))
                .count();
            if intermediates > 0 && intermediates < self.redundancy {
                errors.push(E::InsufficientRedundancy {
                    node: id(),
                    intermediates,
                    redundancy: self.redundancy,
                });
            }
        }
    }

    /// Depth-first search over parent edges; each back edge found is one cycle. Iterative so that
    /// a pathological file cannot overflow the stack.
    fn find_cycles(&self) -> Vec<TopologyError> {
        let index: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .rev() // so the first node of a duplicated id wins
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let edges: Vec<Vec<usize>> = self
            .nodes
            .iter()
            .map(|n| {
                let mut e: Vec<usize> = n
                    .parents
                    .iter()
                    .filter_map(|p| index.get(p.as_str()).copied())
                    .collect();
                let mut seen = HashSet::new();
                e.retain(|i| seen.insert(*i));
                e
            })
            .collect();

        #[derive(Clone, Copy, PartialEq)]
        enum State {
            New,
            OnPath,
            Done,
        }
        let mut state = vec![State::New; self.nodes.len()];
        let mut cycles = Vec::new();
        for start in 0..self.nodes.len() {
            if state[start] != State::New {
                continue;
            }
            state[start] = State::OnPath;
            // (node, index of the next parent edge to follow)
            let mut path: Vec<(usize, usize)> = vec![(start, 0)];
            while let Some(&(v, next)) = path.last() {
                let Some(&p) = edges[v].get(next) else {
                    state[v] = State::Done;
                    path.pop();
                    continue;
                };
                if let Some(top) = path.last_mut() {
                    top.1 += 1;
                }
                match state[p] {
                    State::New => {
                        state[p] = State::OnPath;
                        path.push((p, 0));
                    }
                    State::OnPath => {
                        if let Some(pos) = path.iter().position(|&(u, _)| u == p) {
                            let mut nodes: Vec<String> = path[pos..]
                                .iter()
                                .map(|&(u, _)| self.nodes[u].id.clone())
                                .collect();
                            nodes.push(self.nodes[p].id.clone());
                            cycles.push(TopologyError::Cycle { nodes });
                        }
                    }
                    State::Done => {}
                }
            }
        }
        cycles
    }

    /// Whether the nodes have keys, so that messages between them are signed.
    pub fn is_signed(&self) -> bool {
        self.nodes.iter().any(|n| n.public_key.is_some())
    }

    /// The public key of node `id`, if the topology lists a valid one.
    pub fn public_key(&self, id: &str) -> Option<crate::keys::PublicKey> {
        self.node(id)?
            .public_key
            .as_deref()
            .and_then(|k| crate::keys::PublicKey::from_hex(k).ok())
    }

    /// The node with this id (the first one, should the file repeat an id).
    /// Base URL of node `node` in this federation (`https` with `[tls]`).
    pub fn url(&self, node: &NodeSpec) -> String {
        node.base_url(self.tls.is_some())
    }

    pub fn node(&self, id: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Nodes of one tier, in file order.
    pub fn nodes_of_tier(&self, tier: Tier) -> impl Iterator<Item = &NodeSpec> + '_ {
        self.nodes.iter().filter(move |n| n.tier == tier)
    }

    /// Primary nodes, in file order.
    pub fn primaries(&self) -> impl Iterator<Item = &NodeSpec> + '_ {
        self.nodes_of_tier(Tier::Primary)
    }

    /// Intermediate nodes, in file order.
    pub fn intermediates(&self) -> impl Iterator<Item = &NodeSpec> + '_ {
        self.nodes_of_tier(Tier::Intermediate)
    }

    /// Regional nodes, in file order.
    pub fn regionals(&self) -> impl Iterator<Item = &NodeSpec> + '_ {
        self.nodes_of_tier(Tier::Regional)
    }

    /// The nodes that list `id` as a parent (its downstreams), in file order.
    pub fn children<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a NodeSpec> + 'a {
        self.nodes
            .iter()
            .filter(move |n| n.parents.iter().any(|p| p == id))
    }

    /// The parents of `id` (its upstreams) that exist, in the order the node lists them.
    pub fn parents<'a>(&'a self, id: &str) -> impl Iterator<Item = &'a NodeSpec> + 'a {
        self.node(id)
            .map(|n| n.parents.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| self.node(p))
    }

    /// The regional node serving `region`.
    pub fn regional_for_region(&self, region: &str) -> Option<&NodeSpec> {
        self.regionals()
            .find(|n| n.region.as_deref() == Some(region))
    }

    /// The backup node of regional node `id`.
    pub fn backup_of(&self, id: &str) -> Option<&NodeSpec> {
        self.node(id)?.backup.as_deref().and_then(|b| self.node(b))
    }

    /// The regions whose regional content node `id` must hold: its own region, then (in file
    /// order) the regions it backs up.
    pub fn regions_held_by(&self, id: &str) -> Vec<&str> {
        let mut regions: Vec<&str> = self
            .node(id)
            .and_then(|n| n.region.as_deref())
            .into_iter()
            .collect();
        for n in self.regionals() {
            if n.backup.as_deref() == Some(id) {
                if let Some(r) = n.region.as_deref() {
                    if !regions.contains(&r) {
                        regions.push(r);
                    }
                }
            }
        }
        regions
    }

    /// The nodes that hold content of scope `region:R`: R's regional node, then its backup.
    pub fn holders_of_region(&self, region: &str) -> Vec<&NodeSpec> {
        let mut holders = Vec::with_capacity(2);
        if let Some(node) = self.regional_for_region(region) {
            holders.push(node);
            if let Some(backup) = self.backup_of(&node.id) {
                if backup.id != node.id {
                    holders.push(backup);
                }
            }
        }
        holders
    }

    /// AMQP URL of the broker holding node `id`'s inbox: the node's own `amqp_url`, else the
    /// file's, else [`DEFAULT_AMQP_URL`].
    pub fn amqp_url_for(&self, id: &str) -> String {
        self.node(id)
            .and_then(|n| n.amqp_url.as_deref())
            .or(self.amqp_url.as_deref())
            .unwrap_or(DEFAULT_AMQP_URL)
            .to_owned()
    }
}

fn is_amqp_url(url: &str) -> bool {
    ["amqp://", "amqps://"]
        .iter()
        .any(|scheme| url.len() > scheme.len() && url.starts_with(scheme))
}

/// Two listen addresses collide when they use the same port and either the same IP or a
/// wildcard IP on either side (the wildcard also binds the other address).
fn addresses_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn parse_error(path: Option<&Path>, text: &str, e: &toml::de::Error) -> TopologyError {
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = line_column(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    TopologyError::Parse {
        path: path.map(Path::to_owned),
        line,
        column,
        message: e.message().trim_end().to_owned(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../../topology/demo.toml");

    #[test]
    fn tiers_parse_their_spelling_and_order_from_the_top() {
        for t in [Tier::Primary, Tier::Intermediate, Tier::Regional] {
            assert_eq!(t.as_str().parse::<Tier>(), Ok(t));
        }
        assert!("standalone".parse::<Tier>().is_err());
        assert!(Tier::Primary < Tier::Intermediate && Tier::Intermediate < Tier::Regional);
    }

    /// A valid three-tier topology with k = 2, which each test breaks in one place.
    const BASE: &str = r#"
redundancy = 2

[[node]]
id = "p1"
tier = "primary"
http = "127.0.0.1:9001"

[[node]]
id = "m1"
tier = "intermediate"
http = "127.0.0.1:9011"
parents = ["p1"]

[[node]]
id = "m2"
tier = "intermediate"
http = "127.0.0.1:9012"
parents = ["p1"]

[[node]]
id = "ra"
tier = "regional"
region = "a"
http = "127.0.0.1:9021"
parents = ["m1", "m2"]
backup = "rb"

[[node]]
id = "rb"
tier = "regional"
region = "b"
http = "127.0.0.1:9022"
parents = ["m1", "m2"]
backup = "ra"
"#;

    fn errors_of(text: &str) -> Vec<TopologyError> {
        let topology = Topology::parse(text).expect("test topology parses");
        match topology.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e,
        }
    }

    /// Validates `text`, asserts exactly one error matching `pred`, and that its message
    /// mentions every string of `names`.
    fn assert_single(text: &str, pred: impl Fn(&TopologyError) -> bool, names: &[&str]) {
        let errors = errors_of(text);
        assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
        assert!(pred(&errors[0]), "unexpected error {:?}", errors[0]);
        let msg = errors[0].to_string();
        for name in names {
            assert!(msg.contains(name), "{msg:?} does not mention {name:?}");
        }
    }

    proptest::proptest! {
        /// A topology file damaged anywhere (a line dropped, duplicated or replaced with any
        /// text) parses or fails with an error, and what parses validates or fails with
        /// errors: never a panic, whatever the file says.
        #[test]
        fn damaged_topology_files_never_panic(
            edits in proptest::collection::vec((0usize..200, 0u8..3, ".{0,40}"), 1..6),
        ) {
            let mut lines: Vec<String> = DEMO.lines().map(str::to_owned).collect();
            for (at, how, text) in edits {
                let i = at % lines.len().max(1);
                match how {
                    0 if !lines.is_empty() => { lines.remove(i); }
                    1 if !lines.is_empty() => { let l = lines[i].clone(); lines.insert(i, l); }
                    _ => lines.insert(i.min(lines.len()), text),
                }
            }
            if let Ok(t) = Topology::parse(&lines.join("\n")) {
                let _ = t.validate();
            }
        }
    }

    #[test]
    fn base_is_valid() {
        assert!(errors_of(BASE).is_empty());
    }

    #[test]
    fn demo_parses_and_validates() {
        let t = Topology::parse(DEMO).unwrap();
        t.validate().unwrap();
        assert_eq!(t.redundancy, 2);
        let ids = |it: &mut dyn Iterator<Item = &NodeSpec>| -> Vec<String> {
            it.map(|n| n.id.clone()).collect()
        };
        assert_eq!(ids(&mut t.primaries()), ["primary-a", "primary-b"]);
        assert_eq!(ids(&mut t.intermediates()), ["mid-1", "mid-2"]);
        assert_eq!(ids(&mut t.regionals()), ["na", "eu", "asia"]);
        assert_eq!(ids(&mut t.children("mid-1")), ["na", "eu", "asia"]);
        assert_eq!(ids(&mut t.children("primary-b")), ["mid-1", "mid-2"]);
        assert_eq!(ids(&mut t.parents("eu")), ["mid-1", "mid-2"]);
        assert_eq!(t.backup_of("na").unwrap().id, "eu");
        assert_eq!(t.backup_of("eu").unwrap().id, "asia");
        assert_eq!(t.backup_of("asia").unwrap().id, "na");
        assert!(t.backup_of("mid-1").is_none());
        assert_eq!(t.regional_for_region("asia").unwrap().id, "asia");
        assert!(t.regional_for_region("moon").is_none());
        let holders: Vec<&str> = t
            .holders_of_region("eu")
            .iter()
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(holders, ["eu", "asia"]);
        assert!(t.holders_of_region("moon").is_empty());
        assert_eq!(t.regions_held_by("eu"), ["eu", "na"]);
        assert!(t.regions_held_by("mid-1").is_empty());
        let ports: Vec<u16> = t.nodes.iter().map(|n| n.http.port()).collect();
        assert_eq!(ports, [7101, 7102, 7111, 7112, 7121, 7122, 7123]);
        assert_eq!(
            t.node("na").unwrap().base_url(false),
            "http://127.0.0.1:7121"
        );
    }

    #[test]
    fn amqp_url_precedence() {
        let text = BASE.replacen(
            "redundancy = 2",
            "redundancy = 2\namqp_url = \"amqp://top:5672/%2f\"",
            1,
        );
        let text = text.replacen(
            "id = \"m1\"",
            "id = \"m1\"\namqp_url = \"amqp://own:5672/%2f\"",
            1,
        );
        let t = Topology::parse(&text).unwrap();
        t.validate().unwrap();
        assert_eq!(t.amqp_url_for("m1"), "amqp://own:5672/%2f");
        assert_eq!(t.amqp_url_for("m2"), "amqp://top:5672/%2f");
        let bare = Topology::parse(BASE).unwrap();
        assert_eq!(bare.amqp_url_for("m2"), DEFAULT_AMQP_URL);
    }

    #[test]
    fn toml_round_trip() {
        let t = Topology::parse(DEMO).unwrap();
        let again = Topology::parse(&t.to_toml().unwrap()).unwrap();
        assert_eq!(t, again);
    }

    #[test]
    fn queue_names() {
        assert_eq!(inbox_queue("na"), "docfed.na.inbox");
        assert_eq!(dead_letter_queue("mid-1"), "docfed.mid-1.dead");
    }

    #[test]
    fn default_redundancy_is_two() {
        let t = Topology::parse(&BASE.replacen("redundancy = 2", "", 1)).unwrap();
        assert_eq!(t.redundancy, 2);
    }

    #[test]
    fn tier_display() {
        assert_eq!(Tier::Primary.to_string(), "primary");
        assert_eq!(Tier::Intermediate.to_string(), "intermediate");
        assert_eq!(Tier::Regional.to_string(), "regional");
    }

    #[test]
    fn parse_error_has_line() {
        let text = "redundancy = 2\n\n[[node]]\nid = \"p1\"\ntier = \"primary\"\nhttp = \"127.0.0.1:9001\"\nbogus = 1\n";
        let e = Topology::parse(text).unwrap_err();
        let TopologyError::Parse { line, .. } = &e else {
            panic!("not a parse error: {e:?}");
        };
        assert_eq!(*line, Some(7), "{e}");
        assert!(e.to_string().contains("line 7"), "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn parse_error_bad_tier_and_address() {
        let e = Topology::parse(&BASE.replacen("\"primary\"", "\"boss\"", 1)).unwrap_err();
        assert!(
            matches!(e, TopologyError::Parse { line: Some(6), .. }),
            "{e}"
        );
        let e = Topology::parse(&BASE.replacen("127.0.0.1:9001", "localhost", 1)).unwrap_err();
        assert!(
            matches!(e, TopologyError::Parse { line: Some(7), .. }),
            "{e}"
        );
        let e = Topology::parse("redundancy = [").unwrap_err();
        assert!(
            matches!(e, TopologyError::Parse { line: Some(1), .. }),
            "{e}"
        );
    }

    #[test]
    fn load_names_the_path() {
        let missing = Path::new("/nonexistent/docfed/topology.toml");
        let e = Topology::load(missing).unwrap_err();
        assert!(matches!(e, TopologyError::Read { .. }));
        assert!(
            e.to_string().contains("/nonexistent/docfed/topology.toml"),
            "{e}"
        );

        let dir = std::env::temp_dir().join(format!("docfed-topology-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("broken.toml");
        std::fs::write(&file, "redundancy = \"two\"\n").unwrap();
        let e = Topology::load(&file).unwrap_err();
        let msg = e.to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            msg.contains("broken.toml") && msg.contains("line 1"),
            "{msg}"
        );

        let e = Topology::load_validated(missing).unwrap_err();
        assert_eq!(
            e.to_string(),
            Topology::load(missing).unwrap_err().to_string(),
            "a read error is reported as is"
        );
    }

    #[test]
    fn duplicate_id() {
        let text = BASE.replacen("id = \"m2\"", "id = \"m1\"", 1);
        let errors = errors_of(&text);
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, TopologyError::DuplicateId { id } if id == "m1")),
            "{errors:#?}"
        );
        assert!(errors.iter().any(|e| e.to_string().contains("`m1`")));
    }

    #[test]
    fn duplicate_http() {
        assert_single(
            &BASE.replacen("127.0.0.1:9012", "127.0.0.1:9011", 1),
            |e| matches!(e, TopologyError::DuplicateHttp { .. }),
            &["`m1`", "`m2`", "127.0.0.1:9011"],
        );
        // A wildcard address also takes the port on 127.0.0.1.
        assert_single(
            &BASE.replacen("127.0.0.1:9012", "0.0.0.0:9011", 1),
            |e| matches!(e, TopologyError::DuplicateHttp { .. }),
            &["`m1`", "`m2`"],
        );
        // Same port on distinct addresses is fine.
        assert!(errors_of(&BASE.replacen("127.0.0.1:9012", "127.0.0.2:9011", 1)).is_empty());
    }

    #[test]
    fn zero_port() {
        assert_single(
            &BASE.replacen("127.0.0.1:9012", "127.0.0.1:0", 1),
            |e| matches!(e, TopologyError::ZeroPort { node } if node == "m2"),
            &["`m2`"],
        );
    }

    #[test]
    fn unknown_parent() {
        assert_single(
            &BASE.replacen("parents = [\"p1\"]", "parents = [\"p9\"]", 1),
            |e| matches!(e, TopologyError::UnknownParent { node, parent } if node == "m1" && parent == "p9"),
            &["`m1`", "`p9`"],
        );
    }

    #[test]
    fn duplicate_parent() {
        assert_single(
            &BASE.replacen("parents = [\"p1\"]", "parents = [\"p1\", \"p1\"]", 1),
            |e| matches!(e, TopologyError::DuplicateParent { .. }),
            &["`m1`", "`p1`"],
        );
    }

    #[test]
    fn unknown_backup() {
        assert_single(
            &BASE.replacen("backup = \"rb\"", "backup = \"rz\"", 1),
            |e| matches!(e, TopologyError::UnknownBackup { node, backup } if node == "ra" && backup == "rz"),
            &["`ra`", "`rz`"],
        );
    }

    #[test]
    fn backup_not_regional() {
        assert_single(
            &BASE.replacen("backup = \"rb\"", "backup = \"m1\"", 1),
            |e| {
                matches!(
                    e,
                    TopologyError::BackupNotRegional {
                        backup_tier: Tier::Intermediate,
                        ..
                    }
                )
            },
            &["`ra`", "`m1`", "intermediate"],
        );
    }

    #[test]
    fn backup_is_self() {
        assert_single(
            &BASE.replacen("backup = \"rb\"", "backup = \"ra\"", 1),
            |e| matches!(e, TopologyError::BackupIsSelf { node } if node == "ra"),
            &["`ra`"],
        );
    }

    #[test]
    fn regional_without_region() {
        assert_single(
            &BASE.replacen("region = \"a\"\n", "", 1),
            |e| matches!(e, TopologyError::MissingRegion { node } if node == "ra"),
            &["`ra`"],
        );
    }

    #[test]
    fn regional_without_backup() {
        assert_single(
            &BASE.replacen("backup = \"rb\"\n", "", 1),
            |e| matches!(e, TopologyError::MissingBackup { node } if node == "ra"),
            &["`ra`"],
        );
    }

    #[test]
    fn backup_on_non_regional() {
        assert_single(
            &BASE.replacen(
                "parents = [\"p1\"]",
                "parents = [\"p1\"]\nbackup = \"ra\"",
                1,
            ),
            |e| matches!(e, TopologyError::BackupOnNonRegional { node, .. } if node == "m1"),
            &["`m1`"],
        );
    }

    #[test]
    fn region_on_non_regional() {
        assert_single(
            &BASE.replacen(
                "tier = \"primary\"",
                "tier = \"primary\"\nregion = \"a\"",
                1,
            ),
            |e| matches!(e, TopologyError::RegionOnNonRegional { node, tier: Tier::Primary, .. } if node == "p1"),
            &["`p1`", "primary"],
        );
    }

    #[test]
    fn duplicate_region() {
        assert_single(
            &BASE.replacen("region = \"b\"", "region = \"a\"", 1),
            |e| matches!(e, TopologyError::DuplicateRegion { region, first, second } if region == "a" && first == "ra" && second == "rb"),
            &["`ra`", "`rb`", "\"a\""],
        );
    }

    #[test]
    fn primary_with_parents() {
        assert_single(
            &format!(
                "{BASE}\n[[node]]\nid = \"p2\"\ntier = \"primary\"\nhttp = \"127.0.0.1:9002\"\nparents = [\"p1\"]\n"
            ),
            |e| matches!(e, TopologyError::PrimaryWithParents { node } if node == "p2"),
            &["`p2`"],
        );
    }

    #[test]
    fn non_primary_without_parents() {
        assert_single(
            &BASE.replacen("parents = [\"p1\"]\n", "", 1),
            |e| matches!(e, TopologyError::MissingParents { node, tier: Tier::Intermediate } if node == "m1"),
            &["`m1`", "intermediate"],
        );
    }

    #[test]
    fn cycle_names_its_nodes() {
        // m1 -> m2 -> m1 (m1 also keeps p1, so nobody is without parents).
        let text = BASE
            .replacen("parents = [\"p1\"]", "parents = [\"p1\", \"m2\"]", 1)
            .replacen("parents = [\"p1\"]", "parents = [\"m1\"]", 1);
        assert_single(
            &text,
            |e| matches!(e, TopologyError::Cycle { nodes } if nodes == &["m1", "m2", "m1"]),
            &["`m1` -> `m2` -> `m1`"],
        );
        // A node that is its own parent.
        assert_single(
            &BASE.replacen("parents = [\"p1\"]", "parents = [\"p1\", \"m1\"]", 1),
            |e| matches!(e, TopologyError::Cycle { nodes } if nodes == &["m1", "m1"]),
            &["`m1`"],
        );
    }

    #[test]
    fn zero_redundancy() {
        assert_single(
            &BASE.replacen("redundancy = 2", "redundancy = 0", 1),
            |e| matches!(e, TopologyError::ZeroRedundancy),
            &["redundancy"],
        );
    }

    #[test]
    fn redundancy_larger_than_intermediates() {
        let errors = errors_of(&BASE.replacen("redundancy = 2", "redundancy = 3", 1));
        assert_eq!(errors.len(), 2, "{errors:#?}");
        for (e, node) in errors.iter().zip(["ra", "rb"]) {
            assert!(
                matches!(e, TopologyError::InsufficientRedundancy { node: n, intermediates: 2, redundancy: 3 } if n == node),
                "{e:?}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("`{node}`")) && msg.contains('2') && msg.contains("k = 3"),
                "{msg}"
            );
        }
        // A regional node fed directly by primaries is not bound by k.
        let direct = BASE
            .replacen("redundancy = 2", "redundancy = 3", 1)
            .replace("parents = [\"m1\", \"m2\"]", "parents = [\"p1\"]");
        assert!(errors_of(&direct).is_empty());
    }

    #[test]
    fn invalid_id_and_region() {
        let text =
            BASE.replace("\"p1\"", "\"P1\"")
                .replacen("region = \"a\"", "region = \"A/B\"", 1);
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(matches!(&errors[0], TopologyError::InvalidId { id } if id == "P1"));
        assert!(
            matches!(&errors[1], TopologyError::InvalidRegion { node, region } if node == "ra" && region == "A/B")
        );
        let long = "x".repeat(65);
        assert!(errors_of(&BASE.replace("\"p1\"", &format!("\"{long}\"")))
            .iter()
            .any(|e| matches!(e, TopologyError::InvalidId { .. })));
    }

    #[test]
    fn invalid_amqp_url() {
        assert_single(
            &BASE.replacen(
                "redundancy = 2",
                "redundancy = 2\namqp_url = \"http://x\"",
                1,
            ),
            |e| matches!(e, TopologyError::InvalidAmqpUrl { node: None, .. }),
            &["http://x"],
        );
        assert_single(
            &BASE.replacen("id = \"m2\"", "id = \"m2\"\namqp_url = \"amqp:/\"", 1),
            |e| matches!(e, TopologyError::InvalidAmqpUrl { node: Some(n), .. } if n == "m2"),
            &["`m2`"],
        );
    }

    #[test]
    fn no_nodes() {
        assert_single(
            "redundancy = 2\n",
            |e| matches!(e, TopologyError::NoNodes),
            &["no nodes"],
        );
    }

    #[test]
    fn all_errors_are_reported_together() {
        let text = BASE
            .replacen("redundancy = 2", "redundancy = 0", 1)
            .replacen("backup = \"rb\"", "backup = \"nope\"", 1)
            .replacen("parents = [\"p1\"]", "parents = [\"ghost\"]", 1);
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 3, "{errors:#?}");
        let invalid = InvalidTopology {
            path: PathBuf::from("t.toml"),
            errors,
        };
        let msg = invalid.to_string();
        assert!(msg.starts_with("invalid topology file t.toml:"), "{msg}");
        assert_eq!(msg.lines().count(), 4, "{msg}");
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé\nx", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé\nx", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé\nx", 8), (3, 1));
        // Offsets past the end or inside a character do not panic.
        assert_eq!(line_column("é", 1), (1, 1));
        assert_eq!(line_column("a", 99), (1, 2));
    }
}
