//! Command line and the validated settings the portal runs with.
//!
//! The launcher (`docfed-topology up`) starts the portal as
//! `docfed-portal --topology FILE --http ADDR --data-dir DIR` with `DOCFED_TOKEN` (the primaries'
//! publish token) and `DOCFED_AMQP_URL` (unused: the portal speaks HTTP only) in the environment.
//! Without a topology, `--primary URL` (twice, for the failover pair) names the primaries and
//! `--region R` the regions offered as scopes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Parser, Subcommand};
use docfed_shared::scope::is_valid_region;
use docfed_shared::topology::Topology;

use crate::forwarded::{IpNet, TrustedProxies};

/// Default listen address: the one `docfed-topology up` asks for.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7180";

#[derive(Debug, Parser)]
#[command(
    name = "docfed-portal",
    version,
    about = "docfed: the authors' web portal (publish, versions, delete/reactivate, annotations, propagation status)"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Directory of the portal's database (authors, sessions, document ownership) and
    /// `ready.json`.
    #[arg(
        long,
        env = "DOCFED_PORTAL_DATA_DIR",
        global = true,
        default_value = "portal-data"
    )]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an author account. The password is read from standard input when it is not a
    /// terminal (one line), otherwise prompted for twice without echo.
    AddAuthor {
        /// Login name: 1-64 characters of letters, digits, `.`, `_`, `-`.
        name: String,
        /// Replace the password of an existing author instead of failing.
        #[arg(long)]
        reset: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Topology file: the primaries (failover pair) and the regions are taken from it.
    #[arg(long, env = "DOCFED_TOPOLOGY", conflicts_with = "primary")]
    pub topology: Option<PathBuf>,

    /// Base URL of a primary (repeat for the failover pair), instead of --topology.
    #[arg(long, value_name = "URL")]
    pub primary: Vec<String>,

    /// Region offered as a scope (repeatable; with --primary only, the topology lists them).
    #[arg(long, value_name = "NAME")]
    pub region: Vec<String>,

    /// Address to serve HTTP on; port 0 picks a free port (written to DATA_DIR/ready.json).
    #[arg(long, env = "DOCFED_PORTAL_HTTP", default_value = DEFAULT_HTTP)]
    pub http: SocketAddr,

    /// The federation CA (PEM) to trust when talking to the primaries over HTTPS; default: the
    /// topology's `[tls] ca`.
    #[arg(long, env = "DOCFED_CA")]
    pub ca: Option<PathBuf>,

    /// The federation's revocation list (PEM), reloaded when it changes: a primary whose
    /// certificate it lists is refused. Default: the topology's `[tls] crl`.
    #[arg(long, env = "DOCFED_CRL")]
    pub crl: Option<PathBuf>,

    /// Serve HTTPS with this certificate (PEM; `docfed-topology certs` writes portal.pem).
    #[arg(long, env = "DOCFED_PORTAL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "DOCFED_PORTAL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The primaries' publish token (bearer).
    #[arg(long, env = "DOCFED_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// File holding the publish token (first line), instead of --token.
    #[arg(long, env = "DOCFED_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// Largest file an author may upload, e.g. `64GiB`, `500MB`, `1048576` (read as the nodes
    /// read sizes: `KB`, `MB`… are powers of 1000, `KiB`, `MiB`… of 1024).
    #[arg(long, env = "DOCFED_PORTAL_MAX_UPLOAD_SIZE", default_value = "64GiB")]
    pub max_upload_size: ByteSize,

    /// How long a login lasts without being used.
    #[arg(long, default_value = "12h")]
    pub session_ttl: humantime::Duration,

    /// Mark cookies `Secure` (set this when the portal is served over HTTPS, e.g. behind a TLS
    /// proxy; browsers then never send the session over plain HTTP).
    #[arg(long)]
    pub cookie_secure: bool,

    /// How often each primary's health is probed.
    #[arg(long, default_value = "2s")]
    pub health_interval: humantime::Duration,

    /// Deadline of metadata requests to a primary (uploads have none: they take as long as the
    /// bytes take).
    #[arg(long, default_value = "10s")]
    pub request_timeout: humantime::Duration,

    /// How long in-flight requests get to finish after SIGINT/SIGTERM.
    #[arg(long, default_value = "10s")]
    pub shutdown_timeout: humantime::Duration,

    /// Connections served at once; more wait in the accept backlog until one closes.
    #[arg(long, env = "DOCFED_PORTAL_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,

    /// A client must send a request's header within this long, and may keep a connection idle
    /// between requests no longer.
    #[arg(long, env = "DOCFED_PORTAL_HEADER_READ_TIMEOUT", default_value = "30s")]
    pub header_read_timeout: humantime::Duration,

    /// Connections one IPv4 address or IPv6 /64 may hold at once; one more is closed at once.
    /// Not applied with --trusted-proxy: every client then comes from the proxy's address, and
    /// limiting connections per client is the proxy's job.
    #[arg(
        long,
        env = "DOCFED_PORTAL_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 64
    )]
    pub max_connections_per_address: usize,

    /// While the portal waits on a client (a request body such as a login form or an upload,
    /// room to write a page), the client must move --min-client-rate on average over each span
    /// this long of waiting, and never nothing for this long, or its connection is closed.
    #[arg(
        long,
        env = "DOCFED_PORTAL_CLIENT_STALL_TIMEOUT",
        default_value = "60s"
    )]
    pub client_stall_timeout: humantime::Duration,

    /// Bytes per second a client must move while the portal waits on it, e.g. `1KiB` (0: only
    /// something in each --client-stall-timeout).
    #[arg(long, env = "DOCFED_PORTAL_MIN_CLIENT_RATE", default_value = "1KiB")]
    pub min_client_rate: ByteSize,

    /// A reverse proxy in front of the portal (an address, `10.0.0.5`, or a block,
    /// `10.0.0.0/8`; repeatable, comma-separated in the environment). On connections from
    /// these addresses the client is taken from `X-Forwarded-For` (the rightmost entry that is
    /// not a trusted proxy) for the login rate limit, lockout and log. Default: none, the
    /// header is ignored and the client is the address that connects.
    #[arg(
        long = "trusted-proxy",
        value_name = "ADDR[/BITS]",
        env = "DOCFED_PORTAL_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// Password verifications (Argon2, ~19 MiB each) that may run at once. Logins beyond it
    /// wait up to 10 s for a slot, then get 503 "busy, retry".
    #[arg(
        long,
        env = "DOCFED_PORTAL_MAX_CONCURRENT_LOGINS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub max_concurrent_logins: u16,
}

/// One primary the portal may send requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimarySpec {
    /// Node id from the topology, or the URL when only a URL is known.
    pub name: String,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:7101`.
    pub url: String,
}

/// A node of the topology, as the federation page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub tier: String,
    pub region: Option<String>,
    pub url: String,
}

/// Validated settings, shared as `Arc<Config>`.
#[derive(Clone)]
pub struct Config {
    pub http: SocketAddr,
    /// The federation CA the primaries' certificates must chain to (HTTPS primaries).
    pub ca: Option<PathBuf>,
    /// The revocation list of that CA.
    pub crl: Option<PathBuf>,
    /// Certificate and key to serve HTTPS with; plain HTTP without.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub data_dir: PathBuf,
    pub primaries: Vec<PrimarySpec>,
    /// Regions an author may restrict a document to, sorted.
    pub regions: Vec<String>,
    /// Tier of each node id the topology names (for the propagation table).
    pub tiers: HashMap<String, String>,
    /// Every node of the topology, in file order (empty without `--topology`: the federation
    /// page then lists the primaries and what they see).
    pub nodes: Vec<NodeInfo>,
    pub token: String,
    pub max_upload_size: u64,
    pub session_ttl: Duration,
    pub cookie_secure: bool,
    pub health_interval: Duration,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Connection cap and header-read timeout of the HTTP server.
    pub http_limits: docfed_http::Limits,
    /// Whose `X-Forwarded-For` names the client (none: the peer is the client).
    pub trusted_proxies: TrustedProxies,
    /// Cap on password verifications running at once (at least 1).
    pub max_concurrent_logins: usize,
}

impl std::fmt::Debug for Config {
    // By hand, to keep the token out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("http", &self.http)
            .field("data_dir", &self.data_dir)
            .field("primaries", &self.primaries)
            .field("regions", &self.regions)
            .field("max_upload_size", &self.max_upload_size)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("max_concurrent_logins", &self.max_concurrent_logins)
            .finish_non_exhaustive()
    }
}

/// A setting that cannot work, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Topology(#[from] docfed_shared::topology::InvalidTopology),
    #[error("the topology {0} has no primary node")]
    NoPrimary(String),
    #[error("no primaries: pass --topology FILE or --primary URL (twice for the failover pair)")]
    NoPrimaries,
    #[error("--primary {0:?} is not an http:// or https:// URL")]
    BadPrimaryUrl(String),
    #[error("--region {0:?} is not a region name (1-64 of a-z, 0-9, `-`, `_`)")]
    BadRegion(String),
    #[error(
        "no publish token: set DOCFED_TOKEN, --token or --token-file (the primaries' bearer token)"
    )]
    NoToken,
    #[error("cannot read token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--max-upload-size: {0}")]
    BadSize(String),
}

impl Config {
    pub fn from_args(data_dir: PathBuf, a: ServeArgs) -> Result<Config, ConfigError> {
        let mut tiers = HashMap::new();
        let mut nodes = Vec::new();
        let mut regions: Vec<String> = Vec::new();
        let mut ca = a.ca.clone();
        let mut crl = a.crl.clone();
        let primaries: Vec<PrimarySpec> = match &a.topology {
            Some(path) => {
                let mut t = Topology::load_validated(path)?;
                if let Some(tls) = t.tls.as_mut() {
                    let base = std::path::absolute(path)
                        .ok()
                        .and_then(|p| p.parent().map(std::path::Path::to_owned))
                        .unwrap_or_default();
                    tls.resolve_paths(&base);
                    // The topology's list goes with the topology's CA, not with another one.
                    if ca.is_none() {
                        ca = Some(tls.ca.clone());
                        crl = crl.or_else(|| tls.crl.clone());
                    }
                }
                for n in &t.nodes {
                    tiers.insert(n.id.clone(), n.tier.to_string());
                    nodes.push(NodeInfo {
                        id: n.id.clone(),
                        tier: n.tier.to_string(),
                        region: n.region.clone(),
                        url: t.url(n),
                    });
                }
                regions.extend(t.regionals().filter_map(|n| n.region.clone()));
                let p: Vec<PrimarySpec> = t
                    .primaries()
                    .map(|n| PrimarySpec {
                        name: n.id.clone(),
                        url: t.url(n),
                    })
                    .collect();
                if p.is_empty() {
                    return Err(ConfigError::NoPrimary(path.display().to_string()));
                }
                p
            }
            None => a
                .primary
                .iter()
                .map(|u| {
                    let url = u.trim_end_matches('/').to_owned();
                    let name = url
                        .strip_prefix("http://")
                        .or_else(|| url.strip_prefix("https://"))
                        .filter(|rest| !rest.is_empty())
                        .ok_or_else(|| ConfigError::BadPrimaryUrl(u.clone()))?
                        .to_owned();
                    Ok::<_, ConfigError>(PrimarySpec { name, url })
                })
                .collect::<Result<_, _>>()?,
        };
        if primaries.is_empty() {
            return Err(ConfigError::NoPrimaries);
        }
        for r in &a.region {
            if !is_valid_region(r) {
                return Err(ConfigError::BadRegion(r.clone()));
            }
            regions.push(r.clone());
        }
        regions.sort();
        regions.dedup();

        let token = match (&a.token, &a.token_file) {
            (Some(t), _) => t.trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::TokenFile {
                    path: path.clone(),
                    source,
                })?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
            (None, None) => String::new(),
        };
        if token.is_empty() {
            return Err(ConfigError::NoToken);
        }

        Ok(Config {
            http: a.http,
            ca,
            crl,
            tls: a.tls_cert.clone().zip(a.tls_key.clone()),
            data_dir,
            primaries,
            regions,
            tiers,
            nodes,
            token,
            max_upload_size: match a.max_upload_size.as_u64() {
                0 => return Err(ConfigError::BadSize("must be more than 0 bytes".into())),
                n => n,
            },
            session_ttl: a.session_ttl.into(),
            // A portal serving HTTPS keeps its session cookie off plain HTTP.
            cookie_secure: a.cookie_secure || a.tls_cert.is_some(),
            health_interval: a.health_interval.into(),
            request_timeout: a.request_timeout.into(),
            shutdown_timeout: a.shutdown_timeout.into(),
            http_limits: docfed_http::Limits {
                max_connections: a.max_connections.max(1),
                header_read_timeout: a.header_read_timeout.into(),
                max_connections_per_address: if a.trusted_proxies.is_empty() {
                    a.max_connections_per_address.max(1)
                } else {
                    a.max_connections.max(1)
                },
                // The portal asks no client for a certificate: no client is a node.
                reserved_peer_connections: 0,
                client_stall_timeout: a.client_stall_timeout.into(),
                min_client_rate: a.min_client_rate.as_u64(),
            },
            trusted_proxies: TrustedProxies(a.trusted_proxies),
            max_concurrent_logins: usize::from(a.max_concurrent_logins),
        })
    }
}

/// Human form of a byte count, for pages and messages.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(extra: &[&str]) -> ServeArgs {
        let argv = ["docfed-portal", "--primary", "http://127.0.0.1:9"]
            .iter()
            .chain(extra);
        Args::try_parse_from(argv).unwrap().serve
    }

    #[test]
    fn connection_limits() {
        let config = |extra: &[&str]| {
            Config::from_args(
                "d".into(),
                ServeArgs {
                    token: Some("t".into()),
                    ..serve_args(extra)
                },
            )
            .unwrap()
            .http_limits
        };
        let l = config(&[]);
        assert_eq!(l.max_connections_per_address, 64);
        assert_eq!(l.client_stall_timeout, Duration::from_secs(60));
        assert_eq!(l.min_client_rate, 1024);
        assert_eq!(l.reserved_peer_connections, 0);
        let l = config(&["--min-client-rate", "4KiB", "--client-stall-timeout", "20s"]);
        assert_eq!(
            (l.min_client_rate, l.client_stall_timeout.as_secs()),
            (4096, 20)
        );
        // Behind a proxy every client has the proxy's address: the proxy limits per client.
        let l = config(&["--trusted-proxy", "10.0.0.5"]);
        assert_eq!(l.max_connections_per_address, l.max_connections);
    }

    #[test]
    fn login_hardening_options() {
        let c = Config::from_args(
            "d".into(),
            ServeArgs {
                token: Some("t".into()),
                ..serve_args(&[])
            },
        )
        .unwrap();
        assert!(
            c.trusted_proxies.is_empty(),
            "no proxy is trusted by default"
        );
        assert_eq!(c.max_concurrent_logins, 2);

        let a = serve_args(&[
            "--trusted-proxy",
            "10.0.0.5",
            "--trusted-proxy",
            "192.0.2.0/24,2001:db8::/32",
            "--max-concurrent-logins",
            "4",
        ]);
        let shown: Vec<String> = a.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.5/32", "192.0.2.0/24", "2001:db8::/32"]);
        assert_eq!(a.max_concurrent_logins, 4);

        let bad = |args: &[&str]| {
            Args::try_parse_from(
                ["docfed-portal", "--primary", "http://127.0.0.1:9"]
                    .iter()
                    .chain(args),
            )
            .is_err()
        };
        assert!(bad(&["--trusted-proxy", "proxy.example"]));
        assert!(bad(&["--trusted-proxy", "10.0.0.0/40"]));
        assert!(bad(&["--max-concurrent-logins", "0"]));
    }

    #[test]
    fn sizes() {
        let size = |v: &str| {
            let a = serve_args(&["--max-upload-size", v]);
            Config::from_args(
                "d".into(),
                ServeArgs {
                    token: Some("t".into()),
                    ..a
                },
            )
            .map(|c| c.max_upload_size)
        };
        assert_eq!(size("1048576").unwrap(), 1 << 20);
        assert_eq!(size("64GiB").unwrap(), 64 << 30);
        assert_eq!(size("500 MB").unwrap(), 500_000_000);
        assert!(size("0").is_err());
        let bad = |v: &str| {
            Args::try_parse_from([
                "docfed-portal",
                "--primary",
                "http://127.0.0.1:9",
                "--max-upload-size",
                v,
            ])
            .is_err()
        };
        assert!(bad(""));
        assert!(bad("12 parsecs"));
        assert_eq!(human_size(10), "10 bytes");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
    }
}
