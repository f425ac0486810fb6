//! Node configuration: built-in defaults, overlaid by an optional TOML file, overlaid by
//! environment variables and command-line flags (clap merges those two). Validated once and then
//! passed down as `Arc<NodeConfig>`.
//!
//! Over 600 lines with its tests (about 120): every setting's flag, file key, default and
//! validation in one place, so an operator-facing option is added in one file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use docfed_shared::topology::Tier;
use serde::Deserialize;

/// Command-line flags. Every flag also reads a `DOCFED_*` environment variable.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "docfed-node",
    version,
    about = "The docfed node daemon (every tier of the federation runs this program)",
    after_help = "Examples:\n  \
        docfed-node --data-dir /var/lib/docfed --http 127.0.0.1:7100 --token s3cret\n  \
        docfed-node --config /etc/docfed/node.toml\n\n\
        Precedence: flags > environment > config file > defaults."
)]
pub struct Args {
    /// Topology file of the federation this node belongs to (with --id).
    #[arg(long, env = "DOCFED_TOPOLOGY", requires = "id")]
    pub topology: Option<PathBuf>,
    /// This node's id in the topology file.
    #[arg(long, env = "DOCFED_ID", requires = "topology")]
    pub id: Option<String>,
    /// One broker for every node, overriding the topology's AMQP URLs.
    #[arg(long, env = "DOCFED_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// Pull only after the upstream node holds the whole document (disables stream-through;
    /// for measurements).
    #[arg(long, env = "DOCFED_NO_STREAM_THROUGH")]
    pub no_stream_through: bool,
    /// Most queued messages for one node sent as one broker message (default 64, at most
    /// 256). 1 sends each alone, as nodes before batching expect: keep it at 1 until every node
    /// of the federation runs a release that reads batches (README, `docfed-node`).
    #[arg(long, env = "DOCFED_MESSAGE_BATCH", default_value_t = 64,
        value_parser = clap::value_parser!(u16).range(1..=256))]
    pub message_batch: u16,
    /// Cap on the bytes per second of each pull from another node, e.g. `20MB` (keeps WAN
    /// links usable for others; also emulates slow links in measurements).
    #[arg(long, env = "DOCFED_PULL_RATE_LIMIT")]
    pub pull_rate_limit: Option<ByteSize>,
    /// Reach peer ID at ADDR instead of its topology address (NAT, tunnels, relays); repeatable
    /// or comma-separated: `--peer-http mid-1=10.0.0.5:7111`.
    #[arg(
        long,
        env = "DOCFED_PEER_HTTP",
        value_delimiter = ',',
        value_name = "ID=ADDR"
    )]
    pub peer_http: Vec<String>,
    /// Reach peer ID's inbox broker at URL instead of the topology's; repeatable or
    /// comma-separated: `--peer-amqp mid-1=amqp://user:pass@10.0.0.5:5672/%2f`.
    #[arg(
        long,
        env = "DOCFED_PEER_AMQP",
        value_delimiter = ',',
        value_name = "ID=URL",
        hide_env_values = true
    )]
    pub peer_amqp: Vec<String>,
    /// Deliberately break this node so the endurance harness can show that it notices (see
    /// `docfed-endurance run --plant-bug`). Only in builds with the `plant-bug` feature: a
    /// release binary has no such switch.
    #[cfg(feature = "plant-bug")]
    #[arg(long, env = "DOCFED_PLANT_BUG", hide = true, value_enum)]
    pub plant_bug: Option<crate::federation::PlantedBug>,
    /// This node's private key, when the topology lists public keys (default:
    /// DATA_DIR/node.key).
    #[arg(long, env = "DOCFED_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Do not advertise or browse over mDNS (presence then relies on health probes).
    #[arg(long, env = "DOCFED_NO_MDNS")]
    pub no_mdns: bool,
    /// TOML configuration file (see node/node.example.toml).
    #[arg(long, env = "DOCFED_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the database, the content store and temporary files.
    #[arg(long, env = "DOCFED_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to serve HTTP on; port 0 picks a free port (written to DATA_DIR/ready.json).
    #[arg(long, env = "DOCFED_HTTP")]
    pub http: Option<SocketAddr>,
    /// Bearer token required by write endpoints. Without one (here, in the file or in
    /// --token-file) the node generates one and keeps it in DATA_DIR/token.
    #[arg(long, env = "DOCFED_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token (first line).
    #[arg(long, env = "DOCFED_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Id of this node, as it appears in health, change feeds and version origins.
    #[arg(long, env = "DOCFED_NODE_ID")]
    pub node_id: Option<String>,
    /// Largest accepted upload, e.g. `64GiB`.
    #[arg(long, env = "DOCFED_MAX_UPLOAD_SIZE")]
    pub max_upload_size: Option<ByteSize>,
    /// Free space kept in reserve on the data volume, e.g. `64MiB`.
    #[arg(long, env = "DOCFED_RESERVED_SPACE")]
    pub reserved_space: Option<ByteSize>,
    /// Abandon an upload that sends nothing for this long, e.g. `60s`.
    #[arg(long, env = "DOCFED_UPLOAD_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub upload_idle_timeout: Option<Duration>,
    /// Abandon a pull attempt whose source sends less than 64 KiB in this long, and try the
    /// next source, e.g. `30s`.
    #[arg(long, env = "DOCFED_PULL_STALL_TIMEOUT", value_parser = humantime::parse_duration)]
    pub pull_stall_timeout: Option<Duration>,
    /// How long shutdown waits for in-flight requests, e.g. `10s`.
    #[arg(long, env = "DOCFED_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Connections served at once; more wait in the accept backlog.
    #[arg(long, env = "DOCFED_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Cross-region transfers (content out of this node's scope that a reader asked for) at
    /// once; a request beyond gets 503 and retries.
    #[arg(long, env = "DOCFED_MAX_ONDEMAND_PULLS")]
    pub max_ondemand_pulls: Option<usize>,
    /// Devices' event streams (`GET /v1/events`) open at once; one more gets 503.
    #[arg(long, env = "DOCFED_MAX_EVENT_STREAMS")]
    pub max_event_streams: Option<usize>,
    /// A client must send a request's header within this long, and may keep a connection idle
    /// between requests no longer, e.g. `30s`.
    #[arg(long, env = "DOCFED_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// Let anyone register a device (`POST /v1/devices`) without the node's token, up to
    /// --max-devices. Off by default: the operator enrols devices.
    #[arg(long, env = "DOCFED_OPEN_ENROLLMENT")]
    pub open_enrollment: bool,
    /// Most active (not revoked) devices this node registers; a registration beyond gets 429.
    #[arg(long, env = "DOCFED_MAX_DEVICES")]
    pub max_devices: Option<u64>,
    /// Most documents one device may flag on this node; a flag beyond gets 429.
    #[arg(long, env = "DOCFED_MAX_FLAGS_PER_DEVICE")]
    pub max_flags_per_device: Option<u64>,
    /// Most content one device may have kept here by its flags (the sum of the current
    /// versions' sizes of the documents it flagged), e.g. `10GiB`; a flag beyond gets 429.
    #[arg(long, env = "DOCFED_MAX_FLAGGED_BYTES_PER_DEVICE")]
    pub max_flagged_bytes_per_device: Option<ByteSize>,
    /// Superseded versions whose content is kept per document: a number or `all` (default: all
    /// on primaries and standalone nodes, 1 elsewhere).
    #[arg(long, env = "DOCFED_KEEP_VERSIONS", value_name = "N|all")]
    pub keep_versions: Option<String>,
    /// How long a superseded version's content is kept after it was replaced, or `forever`
    /// (default: forever on primaries and standalone nodes, 1d elsewhere).
    #[arg(long, env = "DOCFED_VERSION_GRACE", value_name = "DURATION|forever")]
    pub version_grace: Option<String>,
    /// How long a deleted document's content is kept after the deletion, or `forever`
    /// (default: forever on primaries and standalone nodes, 1d elsewhere).
    #[arg(long, env = "DOCFED_TOMBSTONE_GRACE", value_name = "DURATION|forever")]
    pub tombstone_grace: Option<String>,
    /// Age past which the change feed keeps only each document's latest change, or `forever`
    /// (default 30d).
    #[arg(long, env = "DOCFED_FEED_HORIZON", value_name = "DURATION|forever")]
    pub feed_horizon: Option<String>,
    /// How long completed-pull and collection log rows are kept (default 7d).
    #[arg(long, env = "DOCFED_LOG_RETENTION", value_parser = humantime::parse_duration)]
    pub log_retention: Option<Duration>,
    /// How long a dead-lettered message stays in the dead-letter queue (default 14d).
    #[arg(long, env = "DOCFED_DEAD_LETTER_RETENTION", value_parser = humantime::parse_duration)]
    pub dead_letter_retention: Option<Duration>,
    /// Time between collections of content and old rows, or `off` (default 10m; `POST
    /// /v1/admin/gc` runs one at any time).
    #[arg(long, env = "DOCFED_GC_INTERVAL", value_name = "DURATION|off")]
    pub gc_interval: Option<String>,
    /// This node's TLS certificate (PEM); default for a federated node: the topology's
    /// `[tls] certs` folder's ID.pem. A standalone node serves HTTPS with it.
    #[arg(long, env = "DOCFED_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// This node's TLS private key (PEM); default: the `[tls] certs` folder's ID.key.
    #[arg(long, env = "DOCFED_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seal content at rest with this key (a file of 64 hex digits, e.g. `openssl rand -hex 32`;
    /// keep it outside the data directory). `DOCFED_CONTENT_KEY` may hold the digits instead.
    #[arg(long, env = "DOCFED_CONTENT_KEY_FILE")]
    pub content_key_file: Option<PathBuf>,
    /// A previous content key (repeatable): content sealed with it stays readable and is sealed
    /// again with the current key in the background.
    #[arg(long, requires = "content_key_file")]
    pub old_content_key_file: Vec<PathBuf>,
    /// Serve and pull in clear: needed for a federation whose topology has no `[tls]`, and for
    /// a standalone node on an address other than loopback without --tls-cert.
    #[arg(long, env = "DOCFED_INSECURE")]
    pub insecure: bool,
    /// A step of switching a running federation to TLS node by node (README "Switching to
    /// TLS"): `accept` serves HTTPS and plain HTTP on the same port and still reaches peers in
    /// clear; `prefer` serves both and reaches peers over TLS. Without it, TLS only.
    #[arg(long, value_enum, env = "DOCFED_TLS_MIGRATION")]
    pub tls_migration: Option<crate::federation::TlsMigration>,
}

/// The optional configuration file. Every field may be left out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory for the database, the content store and temporary files.
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address.
    pub http: Option<SocketAddr>,
    /// Bearer token for write endpoints (prefer `token_file` for secrets).
    pub token: Option<String>,
    /// File holding the bearer token.
    pub token_file: Option<PathBuf>,
    /// Id of this node.
    pub node_id: Option<String>,
    /// Largest accepted upload, e.g. "64GiB".
    pub max_upload_size: Option<ByteSize>,
    /// Free space kept in reserve on the data volume: uploads that would eat into it are
    /// refused with 507 before a byte is written.
    pub reserved_space: Option<ByteSize>,
    /// An upload that sends nothing for this long is abandoned, e.g. "60s".
    #[serde(default, with = "humantime_serde")]
    pub upload_idle_timeout: Option<Duration>,
    /// A pull attempt whose source sends less than 64 KiB in this long is abandoned for the
    /// next source, e.g. "30s".
    #[serde(default, with = "humantime_serde")]
    pub pull_stall_timeout: Option<Duration>,
    /// How long shutdown waits for in-flight requests before cutting them off, e.g. "10s".
    #[serde(default, with = "humantime_serde")]
    pub shutdown_timeout: Option<Duration>,
    /// Connections served at once; more wait in the accept backlog (default 1024).
    pub max_connections: Option<usize>,
    /// Cross-region transfers for readers at once (default 8); a request beyond gets 503.
    pub max_ondemand_pulls: Option<usize>,
    /// Devices' event streams open at once (default 1000); one more gets 503.
    pub max_event_streams: Option<usize>,
    /// A client must send a request's header within this long, and may keep a connection idle
    /// between requests no longer, e.g. "30s".
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    /// Anyone may register a device without the node's token (default false).
    pub open_enrollment: Option<bool>,
    /// Most active devices registered here (default 10000).
    pub max_devices: Option<u64>,
    /// Most documents one device may flag here (default 1000).
    pub max_flags_per_device: Option<u64>,
    /// Most content one device may have kept here by its flags, e.g. "10GiB" (the default).
    pub max_flagged_bytes_per_device: Option<ByteSize>,
    /// What history this node keeps (ARCHITECTURE.md §4.4); defaults depend on the tier.
    pub retention: Option<RetentionFile>,
}

/// `[retention]` of the configuration file: the same settings as the flags, as strings
/// (`keep_versions` may also be a number).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    pub keep_versions: Option<toml::Value>,
    pub version_grace: Option<String>,
    pub tombstone_grace: Option<String>,
    pub feed_horizon: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub log_retention: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub dead_letter_retention: Option<Duration>,
    pub gc_interval: Option<String>,
}

/// Validated configuration of a running node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    /// `None`: a standalone node, outside any federation.
    pub tier: Option<Tier>,
    pub region: Option<String>,
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub token: String,
    pub max_upload_size: u64,
    pub reserved_space: u64,
    pub upload_idle_timeout: Duration,
    /// A pull attempt that receives less than [`crate::federation::pull::MIN_PROGRESS`] bytes
    /// in this long moves on to the next source.
    pub pull_stall_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Connection cap and header-read timeout of the HTTP server.
    pub http_limits: docfed_http::Limits,
    /// Cross-region transfers for readers at once.
    pub max_ondemand_pulls: usize,
    /// Devices' event streams open at once.
    pub max_event_streams: usize,
    /// Advertise and browse peers over mDNS.
    pub mdns: bool,
    /// Bytes per second per pull, if limited.
    pub pull_rate_limit: Option<u64>,
    /// Who may register devices, how many, and how much each may flag.
    pub devices: DeviceLimits,
    /// How much history the node keeps, and how often it collects.
    pub retention: crate::retention::Policy,
    /// Present when the node is a member of a federation.
    pub federation: Option<crate::federation::Federation>,
    /// Content keys: content at rest is sealed when present (`atrest`).
    pub content_keys: Option<crate::atrest::Keys>,
    /// HTTPS: what the node presents and trusts. `None`: plain HTTP (explicitly insecure, or a
    /// standalone node on loopback).
    pub tls: Option<NodeTls>,
}

/// A node's TLS set-up.
#[derive(Debug, Clone)]
pub struct NodeTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The federation CA and CRL; `None` for a standalone node (no peers, no client
    /// certificates).
    pub trust: Option<std::sync::Arc<docfed_http::tls::Trust>>,
}

/// Device enrolment and flag quotas (README "Devices").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Registration without the node's token.
    pub open_enrollment: bool,
    /// Most active (not revoked) devices.
    pub max_devices: u64,
    /// Most documents flagged per device.
    pub max_flags: u64,
    /// Most bytes (current versions of the flagged documents) per device.
    pub max_flagged_bytes: u64,
}

impl Default for DeviceLimits {
    fn default() -> Self {
        DeviceLimits {
            open_enrollment: false,
            max_devices: DEFAULT_MAX_DEVICES,
            max_flags: DEFAULT_MAX_FLAGS_PER_DEVICE,
            max_flagged_bytes: DEFAULT_MAX_FLAGGED_BYTES_PER_DEVICE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    ParseFile {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{0}")]
    Topology(String),
    #[error("{0}")]
    Route(String),
    #[error("broker URL {url}: {reason}")]
    BrokerUrl { url: String, reason: String },
    #[error("{0} (the topology lists public keys, so this node needs its private key: `docfed-topology keys` makes them)")]
    Key(String),
    #[error("node {id:?} is not in topology {path}")]
    UnknownNode { id: String, path: PathBuf },
    #[error("--data-dir is required (flag, DOCFED_DATA_DIR or `data_dir` in the config file)")]
    MissingDataDir,
    #[error("cannot read token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token must be 16 to 256 printable ASCII characters without spaces")]
    BadToken,
    #[error("node id must be 1-64 characters of a-z, 0-9, `-`, `_`; got {0:?}")]
    BadNodeId(String),
    #[error("retention: {0}")]
    Retention(String),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    ContentKey(String),
    #[error("cannot prepare data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub const DEFAULT_HTTP: &str = "127.0.0.1:7100";
pub const DEFAULT_MAX_UPLOAD: u64 = 64 * 1024 * 1024 * 1024;
pub const DEFAULT_RESERVED_SPACE: u64 = 64 * 1024 * 1024;
pub const DEFAULT_PULL_STALL_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_ONDEMAND_PULLS: usize = 8;
/// Default of `max_event_streams`.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 1000;
pub const DEFAULT_MAX_DEVICES: u64 = 10_000;
pub const DEFAULT_MAX_FLAGS_PER_DEVICE: u64 = 1000;
pub const DEFAULT_MAX_FLAGGED_BYTES_PER_DEVICE: u64 = 10 * 1024 * 1024 * 1024;

impl NodeConfig {
    /// Merges flags/env over the file over defaults. Generates and persists a token when none
    /// was given, so a node is never writable without one.
    pub fn load(args: Args) -> Result<Self, ConfigError> {
        let args_retention = RetentionFile {
            keep_versions: args.keep_versions.clone().map(toml::Value::String),
            version_grace: args.version_grace.clone(),
            tombstone_grace: args.tombstone_grace.clone(),
            feed_horizon: args.feed_horizon.clone(),
            log_retention: args.log_retention,
            dead_letter_retention: args.dead_letter_retention,
            gc_interval: args.gc_interval.clone(),
        };
        let file = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::ParseFile {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let mut federation = match (&args.topology, &args.id) {
            (Some(path), Some(id)) => {
                let mut topo = docfed_shared::Topology::load_validated(path)
                    .map_err(|e| ConfigError::Topology(e.to_string()))?;
                let base = std::path::absolute(path)
                    .ok()
                    .and_then(|p| p.parent().map(std::path::Path::to_owned))
                    .unwrap_or_default();
                for source in &mut topo.sources {
                    source.resolve_path(&base);
                }
                if let Some(tls) = topo.tls.as_mut() {
                    tls.resolve_paths(&base);
                }
                let me = topo
                    .node(id)
                    .cloned()
                    .ok_or_else(|| ConfigError::UnknownNode {
                        id: id.clone(),
                        path: path.clone(),
                    })?;
                let http_routes = parse_routes(&args.peer_http, "--peer-http", &topo, |a| {
                    a.parse::<SocketAddr>()
                        .map(|_| ())
                        .map_err(|e| format!("not HOST:PORT: {e}"))
                })?
                .into_iter()
                .map(|(id, addr)| {
                    let advertised = topo.url(topo.node(&id).expect("validated"));
                    let scheme = if topo.tls.is_some() { "https" } else { "http" };
                    (advertised, format!("{scheme}://{addr}"))
                })
                .collect();
                let amqp_routes = parse_routes(&args.peer_amqp, "--peer-amqp", &topo, |u| {
                    if u.starts_with("amqp://") || u.starts_with("amqps://") {
                        Ok(())
                    } else {
                        Err("not an amqp:// URL".to_owned())
                    }
                })?;
                Some(crate::federation::Federation {
                    topology: std::sync::Arc::new(topo),
                    me,
                    amqp_override: args.amqp_url.clone(),
                    stream_through: !args.no_stream_through,
                    message_batch: usize::from(args.message_batch),
                    http_routes,
                    amqp_routes,
                    #[cfg(feature = "plant-bug")]
                    planted_bug: args.plant_bug,
                    #[cfg(not(feature = "plant-bug"))]
                    planted_bug: None,
                    key: None,
                    broker_tls: None,
                    tls_migration: args.tls_migration,
                })
            }
            _ => None,
        };
        // Every broker this node may connect to is parsed now, so a bad URL stops the start with
        // a clear error instead of a relay retrying for ever.
        if let Some(f) = &federation {
            for n in &f.topology.nodes {
                let url = f.amqp_url_of(&n.id);
                crate::federation::amqp::broker_uri(&url).map_err(|reason| {
                    ConfigError::BrokerUrl {
                        url: docfed_shared::secrets::redact_url(&url),
                        reason,
                    }
                })?;
            }
        }
        let data_dir = match (args.data_dir.or(file.data_dir), &federation) {
            (Some(d), _) => d,
            (None, Some(f)) => PathBuf::from("docfed-data").join(f.id()),
            (None, None) => return Err(ConfigError::MissingDataDir),
        };
        std::fs::create_dir_all(&data_dir).map_err(|source| ConfigError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        if let Some(fed) = federation.as_mut().filter(|f| f.topology.is_signed()) {
            let path = args
                .key_file
                .clone()
                .unwrap_or_else(|| data_dir.join(docfed_shared::keys::KEY_FILE));
            let key = docfed_shared::keys::NodeKey::load(&path)
                .map_err(|e| ConfigError::Key(e.to_string()))?;
            if fed.topology.public_key(fed.id()) != Some(key.public()) {
                return Err(ConfigError::Key(format!(
                    "the key in {} is not the one the topology lists for `{}` (public key {})",
                    path.display(),
                    fed.id(),
                    key.public().to_hex()
                )));
            }
            fed.key = Some(std::sync::Arc::new(key));
        }
        let node_id = match &federation {
            Some(f) => f.id().to_owned(),
            None => args
                .node_id
                .or(file.node_id)
                .unwrap_or_else(|| "standalone".to_owned()),
        };
        if !docfed_shared::scope::is_valid_region(&node_id) {
            return Err(ConfigError::BadNodeId(node_id));
        }
        let token = match (
            args.token.or(file.token),
            args.token_file.or(file.token_file),
        ) {
            (Some(t), _) => t,
            (None, Some(path)) => read_token_file(&path)?,
            (None, None) => load_or_generate_token(&data_dir)?,
        };
        if !(16..=256).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::BadToken);
        }
        let http = args
            .http
            .or(federation.as_ref().map(|f| f.me.http))
            .or(file.http)
            .unwrap_or_else(|| DEFAULT_HTTP.parse().expect("valid default"));
        if let (Some(_), Some(f)) = (args.tls_migration, &federation) {
            if f.topology.tls.is_none() {
                return Err(ConfigError::Tls(
                    "--tls-migration needs the topology with [tls] (`docfed-topology certs`): it \
                     is a step from clear to TLS"
                        .to_owned(),
                ));
            }
        }
        let tls = node_tls(
            federation.as_ref(),
            args.tls_cert.zip(args.tls_key),
            args.insecure,
            http,
        )?;
        if let (Some(fed), Some(tls)) = (federation.as_mut(), &tls) {
            let spec = fed
                .topology
                .tls
                .as_ref()
                .expect("node_tls needs [tls] in a federation");
            fed.broker_tls = Some(
                crate::federation::amqp::BrokerTls::load(&tls.cert, &tls.key, &spec.ca)
                    .map_err(ConfigError::Tls)?,
            );
        }
        let content_keys =
            content_keys(args.content_key_file.as_deref(), &args.old_content_key_file)?;
        let tier = federation.as_ref().map(|f| f.me.tier);
        let retention =
            retention_policy(tier, &args_retention, file.retention.unwrap_or_default())?;
        Ok(NodeConfig {
            node_id,
            tier,
            region: federation.as_ref().and_then(|f| f.me.region.clone()),
            data_dir,
            http,
            token,
            max_upload_size: args
                .max_upload_size
                .or(file.max_upload_size)
                .map_or(DEFAULT_MAX_UPLOAD, |b| b.as_u64()),
            reserved_space: args
                .reserved_space
                .or(file.reserved_space)
                .map_or(DEFAULT_RESERVED_SPACE, |b| b.as_u64()),
            upload_idle_timeout: args
                .upload_idle_timeout
                .or(file.upload_idle_timeout)
                .unwrap_or(Duration::from_secs(60)),
            pull_stall_timeout: args
                .pull_stall_timeout
                .or(file.pull_stall_timeout)
                .unwrap_or(DEFAULT_PULL_STALL_TIMEOUT),
            shutdown_timeout: args
                .shutdown_timeout
                .or(file.shutdown_timeout)
                .unwrap_or(Duration::from_secs(10)),
            max_ondemand_pulls: args
                .max_ondemand_pulls
                .or(file.max_ondemand_pulls)
                .unwrap_or(DEFAULT_MAX_ONDEMAND_PULLS)
                .max(1),
            max_event_streams: args
                .max_event_streams
                .or(file.max_event_streams)
                .unwrap_or(DEFAULT_MAX_EVENT_STREAMS),
            http_limits: docfed_http::Limits {
                max_connections: args
                    .max_connections
                    .or(file.max_connections)
                    .unwrap_or(docfed_http::Limits::default().max_connections),
                header_read_timeout: args
                    .header_read_timeout
                    .or(file.header_read_timeout)
                    .unwrap_or(docfed_http::Limits::default().header_read_timeout),
            },
            mdns: !args.no_mdns,
            pull_rate_limit: args.pull_rate_limit.map(|b| b.as_u64()).filter(|&b| b > 0),
            devices: DeviceLimits {
                open_enrollment: args.open_enrollment || file.open_enrollment.unwrap_or(false),
                max_devices: args
                    .max_devices
                    .or(file.max_devices)
                    .unwrap_or(DEFAULT_MAX_DEVICES),
                max_flags: args
                    .max_flags_per_device
                    .or(file.max_flags_per_device)
                    .unwrap_or(DEFAULT_MAX_FLAGS_PER_DEVICE),
                max_flagged_bytes: args
                    .max_flagged_bytes_per_device
                    .or(file.max_flagged_bytes_per_device)
                    .map_or(DEFAULT_MAX_FLAGGED_BYTES_PER_DEVICE, |b| b.as_u64()),
            },
            retention,
            federation,
            tls,
            content_keys,
        })
    }
}

/// The content keys from `--content-key-file` or `DOCFED_CONTENT_KEY`, and old ones.
fn content_keys(
    file: Option<&std::path::Path>,
    old: &[PathBuf],
) -> Result<Option<crate::atrest::Keys>, ConfigError> {
    use crate::atrest::ContentKey;
    let current = match (file, std::env::var("DOCFED_CONTENT_KEY").ok()) {
        (Some(path), _) => ContentKey::load(path),
        (None, Some(hex)) => {
            ContentKey::from_hex(&hex).map_err(|e| format!("DOCFED_CONTENT_KEY: {e}"))
        }
        (None, None) => return Ok(None),
    }
    .map_err(ConfigError::ContentKey)?;
    let old = old
        .iter()
        .map(|p| ContentKey::load(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ConfigError::ContentKey)?;
    Ok(Some(crate::atrest::Keys { current, old }))
}

/// Secure by default (ARCHITECTURE.md §2.10): a federated node uses its topology's `[tls]`, or
/// runs in clear only when the topology or `--insecure` says so; a standalone node serves HTTPS
/// with `--tls-cert`, and plain HTTP on loopback or with `--insecure`. Never a silent fallback.
fn node_tls(
    federation: Option<&crate::federation::Federation>,
    files: Option<(PathBuf, PathBuf)>,
    insecure: bool,
    http: SocketAddr,
) -> Result<Option<NodeTls>, ConfigError> {
    let Some(fed) = federation else {
        return match files {
            Some((cert, key)) => Ok(Some(NodeTls {
                cert,
                key,
                trust: None,
            })),
            None if insecure || http.ip().is_loopback() => Ok(None),
            None => Err(ConfigError::Tls(format!(
                "{http} is not a loopback address: serve HTTPS with --tls-cert and --tls-key, \
                 or pass --insecure to serve plain HTTP there"
            ))),
        };
    };
    let Some(spec) = &fed.topology.tls else {
        if fed.topology.insecure || insecure {
            return Ok(None);
        }
        return Err(ConfigError::Tls(
            "the topology has no [tls] table, so links would be in clear: run `docfed-topology \
             certs FILE --out DIR` and use the topology it writes, or say `insecure = true` in \
             the topology (or --insecure) to run without TLS"
                .to_owned(),
        ));
    };
    if insecure {
        return Err(ConfigError::Tls(
            "--insecure contradicts the topology's [tls] table: every peer speaks HTTPS to this \
             node"
                .to_owned(),
        ));
    }
    let (cert, key) = files.unwrap_or_else(|| spec.node_files(fed.id()));
    let trust = docfed_http::tls::Trust::load(&spec.ca, spec.crl.as_deref())
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    // Fails now, with the file named, rather than at the first handshake.
    trust
        .server_config(&cert, &key, true)
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    let der = &docfed_http::tls::load_certs(&cert, "certificate")
        .map_err(|e| ConfigError::Tls(e.to_string()))?[0];
    match docfed_http::tls::node_id_of(der) {
        Some(id) if id == fed.id() => {}
        other => {
            return Err(ConfigError::Tls(format!(
                "{} names node {:?}, not `{}`: peers would refuse it",
                cert.display(),
                other.unwrap_or_default(),
                fed.id()
            )))
        }
    }
    Ok(Some(NodeTls {
        cert,
        key,
        trust: Some(trust),
    }))
}

/// The tier's retention defaults, overlaid by the file's `[retention]`, overlaid by flags.
fn retention_policy(
    tier: Option<Tier>,
    flags: &RetentionFile,
    file: RetentionFile,
) -> Result<crate::retention::Policy, ConfigError> {
    use crate::retention::{parse_count_or_all, parse_duration_or_forever, parse_interval};
    let bad = |what: &str, e: String| ConfigError::Retention(format!("{what}: {e}"));
    let mut p = crate::retention::Policy::for_tier(tier);
    let keep = flags.keep_versions.clone().or(file.keep_versions);
    if let Some(v) = keep {
        let text = match &v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            other => other.to_string(),
        };
        p.keep_versions = parse_count_or_all(&text).map_err(|e| bad("keep_versions", e))?;
    }
    let graces = [
        (
            "version_grace",
            &flags.version_grace,
            &file.version_grace,
            &mut p.version_grace,
        ),
        (
            "tombstone_grace",
            &flags.tombstone_grace,
            &file.tombstone_grace,
            &mut p.tombstone_grace,
        ),
        (
            "feed_horizon",
            &flags.feed_horizon,
            &file.feed_horizon,
            &mut p.feed_horizon,
        ),
    ];
    for (what, flag, from_file, slot) in graces {
        if let Some(text) = flag.as_ref().or(from_file.as_ref()) {
            *slot = parse_duration_or_forever(text).map_err(|e| bad(what, e))?;
        }
    }
    if let Some(d) = flags.log_retention.or(file.log_retention) {
        p.log_retention = d;
    }
    if let Some(d) = flags.dead_letter_retention.or(file.dead_letter_retention) {
        p.dead_letter_retention = d;
    }
    if let Some(text) = flags.gc_interval.as_ref().or(file.gc_interval.as_ref()) {
        p.interval = parse_interval(text).map_err(|e| bad("gc_interval", e))?;
    }
    Ok(p)
}

/// Parses `ID=VALUE` overrides of how peers are reached; every ID must be a peer in the topology.
fn parse_routes(
    items: &[String],
    flag: &str,
    topo: &docfed_shared::Topology,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<std::collections::HashMap<String, String>, ConfigError> {
    let mut out = std::collections::HashMap::new();
    for item in items.iter().filter(|i| !i.trim().is_empty()) {
        let bad = |why: String| ConfigError::Route(format!("{flag} {item:?}: {why}"));
        let (id, value) = item
            .split_once('=')
            .ok_or_else(|| bad("expected ID=VALUE".to_owned()))?;
        let (id, value) = (id.trim(), value.trim());
        if topo.node(id).is_none() {
            return Err(bad(format!("no node {id:?} in the topology")));
        }
        check(value).map_err(bad)?;
        out.insert(id.to_owned(), value.to_owned());
    }
    Ok(out)
}

fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

fn load_or_generate_token(data_dir: &Path) -> Result<String, ConfigError> {
    let path = data_dir.join("token");
    if path.exists() {
        return read_token_file(&path);
    }
    use rand::distr::{Alphanumeric, SampleString};
    let token = Alphanumeric.sample_string(&mut rand::rng(), 40);
    write_private(&path, &token).map_err(|source| ConfigError::TokenFile {
        path: path.clone(),
        source,
    })?;
    tracing::warn!(path = %path.display(), "no token configured; generated one");
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{text}")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../node.example.toml");
        let file: FileConfig = toml::from_str(text).unwrap();
        assert_eq!(
            file.max_upload_size.unwrap().as_u64(),
            64 * 1024 * 1024 * 1024
        );
        assert_eq!(file.upload_idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(file.open_enrollment, Some(false));
        assert_eq!(
            file.max_flagged_bytes_per_device.unwrap().as_u64(),
            DEFAULT_MAX_FLAGGED_BYTES_PER_DEVICE
        );
    }

    #[test]
    fn retention_follows_the_tier_then_the_file_then_the_flags() {
        let file: RetentionFile = toml::from_str(
            "keep_versions = 3\ntombstone_grace = \"forever\"\ngc_interval = \"off\"",
        )
        .unwrap();
        let flags = RetentionFile {
            tombstone_grace: Some("2h".into()),
            ..RetentionFile::default()
        };
        let p = retention_policy(Some(Tier::Regional), &flags, file).unwrap();
        assert_eq!(p.keep_versions, Some(3));
        assert_eq!(p.tombstone_grace, Some(Duration::from_secs(7200)));
        assert_eq!(p.version_grace, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(p.interval, None);
        let p = retention_policy(
            Some(Tier::Primary),
            &RetentionFile::default(),
            RetentionFile::default(),
        )
        .unwrap();
        assert_eq!((p.keep_versions, p.tombstone_grace), (None, None));
        let bad = RetentionFile {
            keep_versions: Some(toml::Value::String("lots".into())),
            ..RetentionFile::default()
        };
        let e = retention_policy(Some(Tier::Regional), &bad, RetentionFile::default()).unwrap_err();
        assert!(e.to_string().contains("keep_versions"), "{e}");
        assert!(toml::from_str::<FileConfig>("[retention]\nkeep = 1").is_err());
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let err = toml::from_str::<FileConfig>("data_dri = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("data_dri"), "{err}");
    }

    #[test]
    fn peer_routes_name_known_peers_and_valid_addresses() {
        let topo = docfed_shared::Topology::parse(include_str!("../../topology/demo.toml"))
            .expect("demo topology");
        let ok = |v: &str| -> Result<(), String> {
            v.parse::<SocketAddr>()
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let routes = parse_routes(
            &[
                "mid-1=127.0.0.1:9001".into(),
                " eu = 127.0.0.1:9002 ".into(),
                String::new(),
            ],
            "--peer-http",
            &topo,
            ok,
        )
        .unwrap();
        assert_eq!(routes["mid-1"], "127.0.0.1:9001");
        assert_eq!(routes["eu"], "127.0.0.1:9002");
        for (bad, why) in [
            ("nobody=127.0.0.1:1", "no node"),
            ("mid-1", "expected ID=VALUE"),
            ("mid-1=not-an-address", "mid-1=not-an-address"),
        ] {
            let e = parse_routes(&[bad.into()], "--peer-http", &topo, ok)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--peer-http") && e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_broker_url_that_does_not_parse_stops_the_start_without_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let args = Args {
            topology: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology/demo.toml")),
            id: Some("na".into()),
            data_dir: Some(dir.path().join("data")),
            amqp_url: Some("amqp://guest:hunter2@broker:notaport/%2f".into()),
            ..Args::default()
        };
        let e = NodeConfig::load(args).unwrap_err();
        assert!(matches!(e, ConfigError::BrokerUrl { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("broker URL") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn flags_override_file_and_token_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("node.toml");
        std::fs::write(
            &cfg_path,
            format!(
                "data_dir = {:?}\nhttp = \"127.0.0.1:9999\"\nmax_upload_size = \"1MiB\"\n",
                dir.path().join("data")
            ),
        )
        .unwrap();
        let args = Args {
            config: Some(cfg_path),
            http: Some("127.0.0.1:1234".parse().unwrap()),
            ..Args::default()
        };
        let a = NodeConfig::load(args.clone()).unwrap();
        assert_eq!(a.http.port(), 1234);
        assert_eq!(a.max_upload_size, 1024 * 1024);
        let b = NodeConfig::load(args).unwrap();
        assert_eq!(a.token, b.token, "generated token must persist");
    }
}
