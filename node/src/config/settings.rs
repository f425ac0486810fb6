//! Every setting of a node, declared once: its doc comment is the `--help` text, `#[arg]` names
//! its flag and `DOCFED_*` environment variable, its field name is its key in the configuration
//! file (`#[serde(skip)]`: flags and environment only), and the value after `=` is its built-in
//! default. The same struct holds each layer (flags and environment as clap merged them, the
//! file) and [`merge`] lays them over each other: flags > environment > file > defaults.
//!
//! A new setting is one more field here; the merge and the defaults layer follow from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::layer::Layer;
use super::{
    DEFAULT_MAX_DEVICES, DEFAULT_MAX_EVENT_STREAMS, DEFAULT_MAX_EVENT_STREAMS_PER_DEVICE,
    DEFAULT_MAX_FLAGGED_BYTES, DEFAULT_MAX_FLAGGED_BYTES_PER_DEVICE, DEFAULT_MAX_FLAGS_PER_DEVICE,
    DEFAULT_MAX_ONDEMAND_PULLS, DEFAULT_MAX_UPLOAD, DEFAULT_MESSAGE_BATCH,
    DEFAULT_PULL_STALL_TIMEOUT, DEFAULT_RESERVED_SPACE,
};

crate::settings! {
    /// The node's settings. Every flag also reads a `DOCFED_*` environment variable.
    #[derive(Debug, Clone, Default, clap::Parser, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[command(
        name = "docfed-node",
        version,
        about = "The docfed node daemon (every tier of the federation runs this program)",
        after_help = "Examples:\n  \
            docfed-node --data-dir /var/lib/docfed --http 127.0.0.1:7100 --token s3cret\n  \
            docfed-node --config /etc/docfed/node.toml\n\n\
            Precedence: flags > environment > config file > defaults."
    )]
    pub struct Settings {
        /// Topology file of the federation this node belongs to (with --id).
        #[arg(long, env = "DOCFED_TOPOLOGY", requires = "id")]
        #[serde(skip)]
        pub topology: Option<PathBuf> = None,
        /// This node's id in the topology file.
        #[arg(long, env = "DOCFED_ID", requires = "topology")]
        #[serde(skip)]
        pub id: Option<String> = None,
        /// One broker for every node, overriding the topology's AMQP URLs.
        #[arg(long, env = "DOCFED_AMQP_URL", hide_env_values = true)]
        #[serde(skip)]
        pub amqp_url: Option<String> = None,
        /// Pull only after the upstream node holds the whole document (disables stream-through;
        /// for measurements).
        #[arg(long, env = "DOCFED_NO_STREAM_THROUGH")]
        #[serde(skip)]
        pub no_stream_through: bool = false,
        /// Most queued messages for one node sent as one broker message (default 64, at most
        /// 256). 1 sends each alone, as nodes before batching expect: keep it at 1 until every node
        /// of the federation runs a release that reads batches (README, `docfed-node`).
        #[arg(long, env = "DOCFED_MESSAGE_BATCH", default_value = "64",
            value_parser = clap::value_parser!(u16).range(1..=256))]
        #[serde(skip)]
        pub message_batch: Option<u16> = Some(DEFAULT_MESSAGE_BATCH),
        /// Cap on the bytes per second of each pull from another node, e.g. `20MB` (keeps WAN
        /// links usable for others; also emulates slow links in measurements).
        #[arg(long, env = "DOCFED_PULL_RATE_LIMIT")]
        #[serde(skip)]
        pub pull_rate_limit: Option<ByteSize> = None,
        /// Reach peer ID at ADDR instead of its topology address (NAT, tunnels, relays); repeatable
        /// or comma-separated: `--peer-http mid-1=10.0.0.5:7111`.
        #[arg(
            long,
            env = "DOCFED_PEER_HTTP",
            value_delimiter = ',',
            value_name = "ID=ADDR"
        )]
        #[serde(skip)]
        pub peer_http: Vec<String> = Vec::new(),
        /// Reach peer ID's inbox broker at URL instead of the topology's; repeatable or
        /// comma-separated: `--peer-amqp mid-1=amqp://user:pass@10.0.0.5:5672/%2f`.
        #[arg(
            long,
            env = "DOCFED_PEER_AMQP",
            value_delimiter = ',',
            value_name = "ID=URL",
            hide_env_values = true
        )]
        #[serde(skip)]
        pub peer_amqp: Vec<String> = Vec::new(),
        /// Deliberately break this node so the endurance harness can show that it notices (see
        /// `docfed-endurance run --plant-bug`). Only in builds with the `plant-bug` feature: a
        /// release binary has no such switch.
        #[cfg_attr(
            feature = "plant-bug",
            arg(long, env = "DOCFED_PLANT_BUG", hide = true, value_enum)
        )]
        #[cfg_attr(not(feature = "plant-bug"), arg(skip))]
        #[serde(skip)]
        pub plant_bug: Option<crate::federation::PlantedBug> = None,
        /// This node's private key, when the topology lists public keys (default:
        /// DATA_DIR/node.key).
        #[arg(long, env = "DOCFED_KEY_FILE")]
        #[serde(skip)]
        pub key_file: Option<PathBuf> = None,
        /// Do not advertise or browse over mDNS (presence then relies on health probes).
        #[arg(long, env = "DOCFED_NO_MDNS")]
        #[serde(skip)]
        pub no_mdns: bool = false,
        /// TOML configuration file (see node/node.example.toml).
        #[arg(long, env = "DOCFED_CONFIG")]
        #[serde(skip)]
        pub config: Option<PathBuf> = None,
        /// Directory for the database, the content store and temporary files.
        #[arg(long, env = "DOCFED_DATA_DIR")]
        pub data_dir: Option<PathBuf> = None,
        /// Address to serve HTTP on; port 0 picks a free port (written to DATA_DIR/ready.json).
        #[arg(long, env = "DOCFED_HTTP")]
        pub http: Option<SocketAddr> = None,
        /// Bearer token required by write endpoints. Without one (here, in the file or in
        /// --token-file) the node generates one and keeps it in DATA_DIR/token.
        #[arg(long, env = "DOCFED_TOKEN", hide_env_values = true)]
        pub token: Option<String> = None,
        /// File holding the bearer token (first line).
        #[arg(long, env = "DOCFED_TOKEN_FILE")]
        pub token_file: Option<PathBuf> = None,
        /// Id of this node, as it appears in health, change feeds and version origins.
        #[arg(long, env = "DOCFED_NODE_ID")]
        pub node_id: Option<String> = None,
        /// Largest accepted upload, e.g. `64GiB`.
        #[arg(long, env = "DOCFED_MAX_UPLOAD_SIZE")]
        pub max_upload_size: Option<ByteSize> = Some(ByteSize::b(DEFAULT_MAX_UPLOAD)),
        /// Content at most this large is kept in the node's database, where one commit makes a
        /// whole batch durable, instead of as a file of its own (default: the topology's
        /// `inline_max`, 64 KiB for a standalone node; at most 256 KiB; 0 keeps every content
        /// as a file).
        #[arg(long, env = "DOCFED_SMALL_OBJECT_MAX")]
        pub small_object_max: Option<ByteSize> = None,
        /// Free space kept in reserve on the data volume, e.g. `64MiB`.
        #[arg(long, env = "DOCFED_RESERVED_SPACE")]
        pub reserved_space: Option<ByteSize> = Some(ByteSize::b(DEFAULT_RESERVED_SPACE)),
        /// Abandon an upload that sends nothing for this long, e.g. `60s`.
        #[arg(long, env = "DOCFED_UPLOAD_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_serde")]
        pub upload_idle_timeout: Option<Duration> = Some(Duration::from_secs(60)),
        /// Abandon a pull attempt whose source sends less than 64 KiB in this long, and try the
        /// next source, e.g. `30s`.
        #[arg(long, env = "DOCFED_PULL_STALL_TIMEOUT", value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_serde")]
        pub pull_stall_timeout: Option<Duration> = Some(DEFAULT_PULL_STALL_TIMEOUT),
        /// How long shutdown waits for in-flight requests, e.g. `10s`.
        #[arg(long, env = "DOCFED_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_serde")]
        pub shutdown_timeout: Option<Duration> = Some(Duration::from_secs(10)),
        /// Connections served at once; more wait in the accept backlog.
        #[arg(long, env = "DOCFED_MAX_CONNECTIONS")]
        pub max_connections: Option<usize> =
            Some(docfed_http::Limits::default().max_connections),
        /// Cross-region transfers (content out of this node's scope that a reader asked for) at
        /// once; a request beyond gets 503 and retries.
        #[arg(long, env = "DOCFED_MAX_ONDEMAND_PULLS")]
        pub max_ondemand_pulls: Option<usize> = Some(DEFAULT_MAX_ONDEMAND_PULLS),
        /// Devices' event streams (`GET /v1/events`) open at once; one more gets 503.
        #[arg(long, env = "DOCFED_MAX_EVENT_STREAMS")]
        pub max_event_streams: Option<usize> = Some(DEFAULT_MAX_EVENT_STREAMS),
        /// A client must send a request's header within this long, and may keep a connection idle
        /// between requests no longer, e.g. `30s`.
        #[arg(long, env = "DOCFED_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_serde")]
        pub header_read_timeout: Option<Duration> =
            Some(docfed_http::Limits::default().header_read_timeout),
        /// Connections one IPv4 address or IPv6 /64 may hold at once (the federation's nodes
        /// are not counted); one more is closed at once.
        #[arg(long, env = "DOCFED_MAX_CONNECTIONS_PER_ADDRESS")]
        pub max_connections_per_address: Option<usize> =
            Some(docfed_http::Limits::default().max_connections_per_address),
        /// Of --max-connections, how many only the federation's nodes may use (clients with a
        /// node's certificate over TLS).
        #[arg(long, env = "DOCFED_RESERVED_PEER_CONNECTIONS")]
        pub reserved_peer_connections: Option<usize> =
            Some(docfed_http::Limits::default().reserved_peer_connections),
        /// While the node waits on a client (a request body, room to write the response), the
        /// client must move --min-client-rate on average over each span this long of waiting, and
        /// never nothing for this long, or its connection is closed, e.g. `60s`.
        #[arg(long, env = "DOCFED_CLIENT_STALL_TIMEOUT", value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_serde")]
        pub client_stall_timeout: Option<Duration> =
            Some(docfed_http::Limits::default().client_stall_timeout),
        /// Bytes per second a client must move while the node waits on it, e.g. `1KiB` (0: only
        /// something in each --client-stall-timeout).
        #[arg(long, env = "DOCFED_MIN_CLIENT_RATE")]
        pub min_client_rate: Option<ByteSize> =
            Some(ByteSize::b(docfed_http::DEFAULT_MIN_CLIENT_RATE)),
        /// Let anyone register a device (`POST /v1/devices`) without the node's token, up to
        /// --max-devices. Off by default: the operator enrols devices.
        #[arg(long, env = "DOCFED_OPEN_ENROLLMENT")]
        #[serde(default)]
        pub open_enrollment: bool = false,
        /// Most active (not revoked) devices this node registers; a registration beyond gets 429.
        #[arg(long, env = "DOCFED_MAX_DEVICES")]
        pub max_devices: Option<u64> = Some(DEFAULT_MAX_DEVICES),
        /// Most documents one device may flag on this node; a flag beyond gets 429.
        #[arg(long, env = "DOCFED_MAX_FLAGS_PER_DEVICE")]
        pub max_flags_per_device: Option<u64> = Some(DEFAULT_MAX_FLAGS_PER_DEVICE),
        /// Most content one device may have kept here by its flags (the sum of the current
        /// versions' sizes of the documents it flagged), e.g. `10GiB`; a flag beyond gets 429.
        #[arg(long, env = "DOCFED_MAX_FLAGGED_BYTES_PER_DEVICE")]
        pub max_flagged_bytes_per_device: Option<ByteSize> =
            Some(ByteSize::b(DEFAULT_MAX_FLAGGED_BYTES_PER_DEVICE)),
        /// Most content this node keeps only because devices flagged it (documents outside
        /// what its routing keeps), all devices together, e.g. `100GiB`: open enrolment lets
        /// anyone register devices, and without a total their quotas would add up to every
        /// region's content. A flag beyond gets 429.
        #[arg(long, env = "DOCFED_MAX_FLAGGED_BYTES")]
        pub max_flagged_bytes: Option<ByteSize> = Some(ByteSize::b(DEFAULT_MAX_FLAGGED_BYTES)),
        /// Event streams (`GET /v1/events`) one device may hold open at once; one more gets 429.
        #[arg(long, env = "DOCFED_MAX_EVENT_STREAMS_PER_DEVICE")]
        pub max_event_streams_per_device: Option<usize> =
            Some(DEFAULT_MAX_EVENT_STREAMS_PER_DEVICE),
        /// A full-text search that runs longer is stopped and answered 400, e.g. `2s`.
        #[arg(long, env = "DOCFED_SEARCH_DEADLINE", value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_serde")]
        pub search_deadline: Option<Duration> = Some(crate::db::DEFAULT_SEARCH_DEADLINE),
        /// What history this node keeps (ARCHITECTURE.md §4.4): flat flags, the file's
        /// `[retention]` table; defaults depend on the tier.
        #[command(flatten)]
        #[serde(default)]
        pub retention: RetentionSettings = RetentionSettings::defaults(),
        /// This node's TLS certificate (PEM); default for a federated node: the topology's
        /// `[tls] certs` folder's ID.pem. A standalone node serves HTTPS with it.
        #[arg(long, env = "DOCFED_TLS_CERT", requires = "tls_key")]
        #[serde(skip)]
        pub tls_cert: Option<PathBuf> = None,
        /// This node's TLS private key (PEM); default: the `[tls] certs` folder's ID.key.
        #[arg(long, env = "DOCFED_TLS_KEY", requires = "tls_cert")]
        #[serde(skip)]
        pub tls_key: Option<PathBuf> = None,
        /// Seal content at rest with this key (a file of 64 hex digits, e.g. `openssl rand -hex 32`;
        /// keep it outside the data directory). `DOCFED_CONTENT_KEY` may hold the digits instead.
        #[arg(long, env = "DOCFED_CONTENT_KEY_FILE")]
        #[serde(skip)]
        pub content_key_file: Option<PathBuf> = None,
        /// A previous content key (repeatable): content sealed with it stays readable and is sealed
        /// again with the current key in the background.
        #[arg(long, requires = "content_key_file")]
        #[serde(skip)]
        pub old_content_key_file: Vec<PathBuf> = Vec::new(),
        /// Serve and pull in clear: needed for a federation whose topology has no `[tls]`, and for
        /// a standalone node on an address other than loopback without --tls-cert.
        #[arg(long, env = "DOCFED_INSECURE")]
        #[serde(skip)]
        pub insecure: bool = false,
        /// A step of switching a running federation to TLS node by node (README "Switching to
        /// TLS"): `accept` serves HTTPS and plain HTTP on the same port and still reaches peers in
        /// clear; `prefer` serves both and reaches peers over TLS. Without it, TLS only.
        #[arg(long, value_enum, env = "DOCFED_TLS_MIGRATION")]
        #[serde(skip)]
        pub tls_migration: Option<crate::federation::TlsMigration> = None,
    }
}

crate::settings! {
    /// What history the node keeps: flat flags (`--keep-versions`), the file's `[retention]`
    /// table. Durations that may also say `forever` or `off` stay text until validated
    /// (`retention::parse_*`); every default depends on the tier (`retention::Policy::for_tier`).
    #[derive(Debug, Clone, Default, clap::Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RetentionSettings {
        /// Superseded versions whose content is kept per document: a number or `all` (default: all
        /// on primaries and standalone nodes, 1 elsewhere).
        #[arg(long, env = "DOCFED_KEEP_VERSIONS", value_name = "N|all")]
        #[serde(default, deserialize_with = "number_or_text")]
        pub keep_versions: Option<String> = None,
        /// How long a superseded version's content is kept after it was replaced, or `forever`
        /// (default: forever on primaries and standalone nodes, 1d elsewhere).
        #[arg(long, env = "DOCFED_VERSION_GRACE", value_name = "DURATION|forever")]
        pub version_grace: Option<String> = None,
        /// How long a deleted document's content is kept after the deletion, or `forever`
        /// (default: forever on primaries and standalone nodes, 1d elsewhere).
        #[arg(long, env = "DOCFED_TOMBSTONE_GRACE", value_name = "DURATION|forever")]
        pub tombstone_grace: Option<String> = None,
        /// Age past which the change feed keeps only each document's latest change, or `forever`
        /// (default 30d).
        #[arg(long, env = "DOCFED_FEED_HORIZON", value_name = "DURATION|forever")]
        pub feed_horizon: Option<String> = None,
        /// How long completed-pull and collection log rows are kept (default 7d).
        #[arg(long, env = "DOCFED_LOG_RETENTION", value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_serde")]
        pub log_retention: Option<Duration> = None,
        /// How long a dead-lettered message stays in the dead-letter queue (default 14d).
        #[arg(long, env = "DOCFED_DEAD_LETTER_RETENTION", value_parser = humantime::parse_duration)]
        #[serde(default, with = "humantime_serde")]
        pub dead_letter_retention: Option<Duration> = None,
        /// Time between collections of content and old rows, or `off` (default 10m; `POST
        /// /v1/admin/gc` runs one at any time).
        #[arg(long, env = "DOCFED_GC_INTERVAL", value_name = "DURATION|off")]
        pub gc_interval: Option<String> = None,
    }
}

/// The file's `keep_versions` may be a number (`keep_versions = 3`) or text (`"all"`); any other
/// TOML value is kept as its text, for validation to name.
fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<toml::Value>::deserialize(d)?.map(|v| match v {
        toml::Value::String(s) => s,
        toml::Value::Integer(n) => n.to_string(),
        other => other.to_string(),
    }))
}

/// Lays the layers over each other: flags and environment (clap already put flags over the
/// environment) over the configuration file over the built-in defaults.
///
/// One exception, so that a federation's nodes are where its topology says: with `--topology`,
/// the address comes from the flags or the topology, never from the file.
pub fn merge(flags_and_env: Settings, mut file: Settings) -> Settings {
    if flags_and_env.topology.is_some() {
        file.http = None;
    }
    flags_and_env.over(file).over(Settings::defaults())
}

impl Settings {
    /// The configuration file's layer. Only the keys of the file are read; unknown keys are
    /// refused so a typo never silently becomes a default.
    pub fn from_toml(text: &str) -> Result<Settings, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Tests that parse flags read the process's environment, which one of them changes.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn flags(argv: &[&str]) -> Settings {
        Settings::try_parse_from(std::iter::once("docfed-node").chain(argv.iter().copied()))
            .unwrap()
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../node.example.toml");
        let file = Settings::from_toml(text).unwrap();
        assert_eq!(
            file.max_upload_size.unwrap().as_u64(),
            64 * 1024 * 1024 * 1024
        );
        assert_eq!(file.upload_idle_timeout, Some(Duration::from_secs(60)));
        assert!(!file.open_enrollment);
        assert_eq!(
            file.max_flagged_bytes_per_device.unwrap().as_u64(),
            DEFAULT_MAX_FLAGGED_BYTES_PER_DEVICE
        );
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let err = Settings::from_toml("data_dri = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("data_dri"), "{err}");
        assert!(Settings::from_toml("[retention]\nkeep = 1").is_err());
        // Flags without a file key stay flags: the file cannot name a topology.
        assert!(Settings::from_toml("topology = \"/t.toml\"").is_err());
    }

    #[test]
    fn with_nothing_set_every_setting_has_its_default() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let s = merge(flags(&[]), Settings::default());
        assert_eq!(s.max_upload_size, Some(ByteSize::b(DEFAULT_MAX_UPLOAD)));
        assert_eq!(s.reserved_space, Some(ByteSize::b(DEFAULT_RESERVED_SPACE)));
        assert_eq!(s.upload_idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(s.pull_stall_timeout, Some(DEFAULT_PULL_STALL_TIMEOUT));
        assert_eq!(s.shutdown_timeout, Some(Duration::from_secs(10)));
        assert_eq!(s.max_ondemand_pulls, Some(DEFAULT_MAX_ONDEMAND_PULLS));
        assert_eq!(s.max_event_streams, Some(DEFAULT_MAX_EVENT_STREAMS));
        assert_eq!(s.client_stall_timeout, Some(Duration::from_secs(60)));
        assert_eq!(s.min_client_rate, Some(ByteSize::kib(1)));
        assert_eq!(s.max_connections_per_address, Some(64));
        assert_eq!(s.reserved_peer_connections, Some(128));
        assert_eq!(s.max_devices, Some(DEFAULT_MAX_DEVICES));
        assert_eq!(s.message_batch, Some(DEFAULT_MESSAGE_BATCH));
        assert!(!s.open_enrollment && !s.insecure && !s.no_mdns);
        assert_eq!((s.http, s.data_dir, s.token), (None, None, None));
        assert_eq!(s.retention.keep_versions, None);
    }

    #[test]
    fn the_file_overrides_the_defaults() {
        let file = Settings::from_toml(
            "max_devices = 5\nopen_enrollment = true\n[retention]\ngc_interval = \"off\"",
        )
        .unwrap();
        let s = merge(Settings::default(), file);
        assert_eq!(s.max_devices, Some(5));
        assert!(s.open_enrollment);
        assert_eq!(s.retention.gc_interval.as_deref(), Some("off"));
        assert_eq!(s.max_flags_per_device, Some(DEFAULT_MAX_FLAGS_PER_DEVICE));
    }

    #[test]
    fn the_environment_overrides_the_file_and_flags_override_the_environment() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let file = Settings::from_toml(
            "max_devices = 5\nmax_flags_per_device = 6\nhttp = \"127.0.0.1:9999\"",
        )
        .unwrap();
        std::env::set_var("DOCFED_MAX_DEVICES", "7");
        std::env::set_var("DOCFED_MAX_FLAGS_PER_DEVICE", "8");
        std::env::set_var("DOCFED_KEEP_VERSIONS", "2");
        let from_env = flags(&["--max-flags-per-device", "9"]);
        std::env::remove_var("DOCFED_MAX_DEVICES");
        std::env::remove_var("DOCFED_MAX_FLAGS_PER_DEVICE");
        std::env::remove_var("DOCFED_KEEP_VERSIONS");
        let s = merge(from_env, file);
        assert_eq!(s.max_devices, Some(7), "environment over file");
        assert_eq!(s.max_flags_per_device, Some(9), "flag over environment");
        assert_eq!(
            s.http,
            Some("127.0.0.1:9999".parse().unwrap()),
            "file over default"
        );
        assert_eq!(s.retention.keep_versions.as_deref(), Some("2"));
    }

    #[test]
    fn flags_override_the_file_and_switches_turn_on_from_any_layer() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let file = Settings::from_toml(
            "http = \"127.0.0.1:9999\"\nmax_upload_size = \"1MiB\"\n[retention]\nkeep_versions = 3\ntombstone_grace = \"forever\"",
        )
        .unwrap();
        let s = merge(
            flags(&[
                "--http",
                "127.0.0.1:1234",
                "--open-enrollment",
                "--tombstone-grace",
                "2h",
            ]),
            file.clone(),
        );
        assert_eq!(s.http.unwrap().port(), 1234);
        assert_eq!(s.max_upload_size, Some(ByteSize::mib(1)));
        assert!(s.open_enrollment);
        assert_eq!(s.retention.keep_versions.as_deref(), Some("3"));
        assert_eq!(s.retention.tombstone_grace.as_deref(), Some("2h"));
        let s = merge(flags(&["--peer-http", "a=1.2.3.4:5,b=1.2.3.4:6"]), file);
        assert_eq!(s.peer_http, ["a=1.2.3.4:5", "b=1.2.3.4:6"]);
    }

    #[test]
    fn a_federated_node_never_takes_its_address_from_the_file() {
        let file = Settings::from_toml("http = \"127.0.0.1:9999\"").unwrap();
        let federated = Settings {
            topology: Some("t.toml".into()),
            id: Some("na".into()),
            ..Settings::default()
        };
        assert_eq!(merge(federated, file).http, None);
    }
}
