//! Node configuration: every setting declared once in [`Settings`] (`settings.rs`), read from
//! three layers (flags, environment variables, an optional TOML file) and merged over built-in
//! defaults by a pure function ([`settings::merge`]), then validated once into the
//! [`NodeConfig`] the node runs with, passed down as `Arc<NodeConfig>`.
//!
//! Loading has side effects, each done by the module that owns what it touches: the data
//! directory ([`crate::store::create_data_dir`]), the token ([`crate::token`]), the node's key
//! and the federation ([`crate::federation::setup`]); TLS files and content keys are read here
//! (`tls.rs`, `keys.rs`), the retention policy is validated in `retention.rs`.

mod keys;
pub mod layer;
mod retention;
pub mod settings;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use docfed_shared::topology::Tier;

pub use settings::{RetentionSettings, Settings};

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
    /// Content at most this large is kept in the database (`small_objects`), not as a file.
    pub small_object_max: u64,
    pub reserved_space: u64,
    pub upload_idle_timeout: Duration,
    /// A pull attempt that receives less than [`crate::federation::pull::MIN_PROGRESS`] bytes
    /// in this long moves on to the next source.
    pub pull_stall_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Connection caps and client timeouts of the HTTP server.
    pub http_limits: docfed_http::Limits,
    /// Cross-region transfers for readers at once.
    pub max_ondemand_pulls: usize,
    /// Devices' event streams open at once.
    pub max_event_streams: usize,
    /// Event streams one device may hold open at once.
    pub max_event_streams_per_device: usize,
    /// How long a full-text search may run.
    pub search_deadline: Duration,
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
    /// Every setting as merged from flags, environment, file and built-in defaults: a setting
    /// with a built-in default is `Some` here. A setting that needs no validation of its own is
    /// read here, so adding one touches [`Settings`] only.
    pub settings: Settings,
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
    /// Most bytes this node keeps only because devices flagged them (documents its routing
    /// would not keep), all devices together.
    pub max_flagged_bytes_total: u64,
}

impl Default for DeviceLimits {
    fn default() -> Self {
        DeviceLimits {
            open_enrollment: false,
            max_devices: DEFAULT_MAX_DEVICES,
            max_flags: DEFAULT_MAX_FLAGS_PER_DEVICE,
            max_flagged_bytes: DEFAULT_MAX_FLAGGED_BYTES_PER_DEVICE,
            max_flagged_bytes_total: DEFAULT_MAX_FLAGGED_BYTES,
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
    #[error(transparent)]
    TokenFile(#[from] crate::token::TokenFileError),
    #[error("the token must be 16 to 256 printable ASCII characters without spaces")]
    BadToken,
    #[error("node id must be 1-64 characters of a-z, 0-9, `-`, `_`; got {0:?}")]
    BadNodeId(String),
    #[error("retention: {0}")]
    Retention(String),
    #[error("{0}")]
    Invalid(String),
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
/// Default of `max_flagged_bytes`: ten devices' full quotas, not ten thousand.
pub const DEFAULT_MAX_FLAGGED_BYTES: u64 = 100 * 1024 * 1024 * 1024;
/// Default of `max_event_streams_per_device`: a daemon, a second client, a reconnect racing
/// the old stream's end.
pub const DEFAULT_MAX_EVENT_STREAMS_PER_DEVICE: usize = 4;
/// Default of `--message-batch`.
pub const DEFAULT_MESSAGE_BATCH: u16 = 64;

/// What `--small-object-max` gives, or the federation's `inline_max` (what arrives inline is
/// kept as it arrived), or the default of both.
fn small_object_max(
    given: Option<bytesize::ByteSize>,
    federation: Option<&crate::federation::Federation>,
) -> Result<u64, ConfigError> {
    use docfed_shared::messages::{DEFAULT_INLINE_MAX, MAX_INLINE};
    let n = match (given, federation) {
        (Some(n), _) => n.as_u64(),
        (None, Some(f)) => f.topology.inline_max.as_u64(),
        (None, None) => DEFAULT_INLINE_MAX,
    };
    if n > MAX_INLINE {
        return Err(ConfigError::Invalid(format!(
            "--small-object-max {n} is above {MAX_INLINE} bytes: larger content belongs in files"
        )));
    }
    Ok(n)
}

impl NodeConfig {
    /// Reads the configuration file the flags name, merges flags/env over the file over
    /// defaults, and validates the result. Generates and persists a token when none was
    /// given, so a node is never writable without one.
    pub fn load(flags_and_env: Settings) -> Result<Self, ConfigError> {
        let file = match &flags_and_env.config {
            Some(path) => read_file(path)?,
            None => Settings::default(),
        };
        Self::resolve(settings::merge(flags_and_env, file))
    }

    /// Validates merged settings into the node's configuration, in the order a problem is
    /// reported: the federation, the data directory, the node's key, its id, its token, TLS,
    /// content keys, retention.
    fn resolve(s: Settings) -> Result<Self, ConfigError> {
        let mut federation = crate::federation::Federation::from_settings(&s)?;
        let data_dir = match (&s.data_dir, &federation) {
            (Some(d), _) => d.clone(),
            (None, Some(f)) => PathBuf::from("docfed-data").join(f.id()),
            (None, None) => return Err(ConfigError::MissingDataDir),
        };
        crate::store::create_data_dir(&data_dir).map_err(|source| ConfigError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        if let Some(fed) = federation.as_mut().filter(|f| f.topology.is_signed()) {
            fed.load_key(s.key_file.as_deref(), &data_dir)?;
        }
        let node_id = match &federation {
            Some(f) => f.id().to_owned(),
            None => s.node_id.clone().unwrap_or_else(|| "standalone".to_owned()),
        };
        if !docfed_shared::scope::is_valid_region(&node_id) {
            return Err(ConfigError::BadNodeId(node_id));
        }
        let token = crate::token::resolve(s.token.clone(), s.token_file.as_deref(), &data_dir)?;
        if !crate::token::is_valid(&token) {
            return Err(ConfigError::BadToken);
        }
        let http = s
            .http
            .or(federation.as_ref().map(|f| f.me.http))
            .unwrap_or_else(|| DEFAULT_HTTP.parse().expect("valid default"));
        if let (Some(_), Some(f)) = (s.tls_migration, &federation) {
            if f.topology.tls.is_none() {
                return Err(ConfigError::Tls(
                    "--tls-migration needs the topology with [tls] (`docfed-topology certs`): it \
                     is a step from clear to TLS"
                        .to_owned(),
                ));
            }
        }
        let tls = tls::node_tls(
            federation.as_ref(),
            s.tls_cert.clone().zip(s.tls_key.clone()),
            s.insecure,
            http,
        )?;
        if let (Some(fed), Some(tls)) = (federation.as_mut(), &tls) {
            fed.attach_broker_tls(tls)?;
        }
        let content_keys =
            keys::content_keys(s.content_key_file.as_deref(), &s.old_content_key_file)?;
        if let Some(fed) = federation.as_mut() {
            fed.content_keys = content_keys.clone().map(std::sync::Arc::new);
        }
        let tier = federation.as_ref().map(|f| f.me.tier);
        let retention = retention::policy(tier, &s.retention)?;
        Ok(NodeConfig {
            node_id,
            tier,
            region: federation.as_ref().and_then(|f| f.me.region.clone()),
            data_dir,
            http,
            token,
            max_upload_size: defaulted(s.max_upload_size).as_u64(),
            small_object_max: small_object_max(s.small_object_max, federation.as_ref())?,
            reserved_space: defaulted(s.reserved_space).as_u64(),
            upload_idle_timeout: defaulted(s.upload_idle_timeout),
            pull_stall_timeout: defaulted(s.pull_stall_timeout),
            shutdown_timeout: defaulted(s.shutdown_timeout),
            max_ondemand_pulls: defaulted(s.max_ondemand_pulls).max(1),
            max_event_streams: defaulted(s.max_event_streams),
            max_event_streams_per_device: defaulted(s.max_event_streams_per_device).max(1),
            search_deadline: defaulted(s.search_deadline),
            http_limits: docfed_http::Limits {
                max_connections: defaulted(s.max_connections),
                header_read_timeout: defaulted(s.header_read_timeout),
                max_connections_per_address: defaulted(s.max_connections_per_address),
                reserved_peer_connections: defaulted(s.reserved_peer_connections),
                client_stall_timeout: defaulted(s.client_stall_timeout),
                min_client_rate: defaulted(s.min_client_rate).as_u64(),
            },
            mdns: !s.no_mdns,
            pull_rate_limit: s.pull_rate_limit.map(|b| b.as_u64()).filter(|&b| b > 0),
            devices: DeviceLimits {
                open_enrollment: s.open_enrollment,
                max_devices: defaulted(s.max_devices),
                max_flags: defaulted(s.max_flags_per_device),
                max_flagged_bytes: defaulted(s.max_flagged_bytes_per_device).as_u64(),
                max_flagged_bytes_total: defaulted(s.max_flagged_bytes).as_u64(),
            },
            retention,
            federation,
            tls,
            content_keys,
            settings: s,
        })
    }
}

/// The configuration file's layer.
fn read_file(path: &std::path::Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    Settings::from_toml(&text).map_err(|source| ConfigError::ParseFile {
        path: path.to_owned(),
        source,
    })
}

/// A setting [`Settings::defaults`] gives a value, so the merge leaves none of them unset.
fn defaulted<T>(value: Option<T>) -> T {
    value.expect("the defaults layer sets every setting read through `defaulted`")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_broker_url_that_does_not_parse_stops_the_start_without_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let args = Settings {
            topology: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology/demo.toml")),
            id: Some("na".into()),
            data_dir: Some(dir.path().join("data")),
            amqp_url: Some("amqp://guest:hunter2@broker:notaport/%2f".into()),
            ..Settings::default()
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
        let args = Settings {
            config: Some(cfg_path),
            http: Some("127.0.0.1:1234".parse().unwrap()),
            ..Settings::default()
        };
        let a = NodeConfig::load(args.clone()).unwrap();
        assert_eq!(a.http.port(), 1234);
        assert_eq!(a.max_upload_size, 1024 * 1024);
        let b = NodeConfig::load(args).unwrap();
        assert_eq!(a.token, b.token, "generated token must persist");
    }

    #[test]
    fn a_node_with_nothing_but_a_data_dir_runs_on_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = NodeConfig::load(Settings {
            data_dir: Some(dir.path().to_owned()),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(c.node_id, "standalone");
        assert_eq!(c.http, DEFAULT_HTTP.parse().unwrap());
        assert_eq!(c.max_upload_size, DEFAULT_MAX_UPLOAD);
        assert_eq!(c.reserved_space, DEFAULT_RESERVED_SPACE);
        assert_eq!(c.pull_stall_timeout, DEFAULT_PULL_STALL_TIMEOUT);
        assert_eq!(c.max_ondemand_pulls, DEFAULT_MAX_ONDEMAND_PULLS);
        assert_eq!(c.max_event_streams, DEFAULT_MAX_EVENT_STREAMS);
        assert_eq!(c.http_limits, docfed_http::Limits::default());
        assert_eq!(c.devices, DeviceLimits::default());
        assert!(c.mdns && c.tls.is_none() && c.federation.is_none());
        assert_eq!(c.token.len(), 40, "a generated token");
    }
}
