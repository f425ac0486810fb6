//! What can be wrong with a topology file, each error naming the nodes involved.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::Tier;

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
    #[error("[queues] max_messages and max_bytes must be above 0: a queue that holds nothing refuses every message")]
    ZeroQueueLimit,
    #[error("inline_max = {given} bytes is above the most a notification may carry ({} bytes); set it lower, or 0 to pull every document", crate::messages::MAX_INLINE)]
    InlineMaxTooLarge { given: u64 },
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
