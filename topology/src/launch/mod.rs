//! Starting a whole federation on this machine: `docfed-topology up`, and the same as a library
//! for harnesses that need to stop, kill and restart nodes.
//!
//! One `docfed-node` process per node of the topology file, each with its data directory and log
//! under the run directory (`RUN_DIR/ID/`, `RUN_DIR/ID/node.log`), all on one broker: the one
//! answering at `DOCFED_AMQP_URL`, else a private `rabbitmq-server` started for the run. The
//! launcher waits until every node answers `GET /v1/health`, then writes `RUN_DIR/federation.json`
//! (ARCHITECTURE.md §6.3) — and removes it when the federation stops, so that a script waiting for
//! the file never reads a stale one.
//!
//! Children are put in their own process groups, so a terminal's Ctrl-C reaches only the
//! launcher, which then stops them in order (SIGTERM, grace period, SIGKILL). They also get
//! SIGTERM from the kernel should the launcher die without cleaning up (`PR_SET_PDEATHSIG`).
//! That signal follows the *thread* that spawned the child, so spawn from a long-lived thread
//! (the main thread, or a tokio worker, never a `spawn_blocking` thread).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use docfed_shared::topology::{Tier, DEFAULT_AMQP_URL};
use serde::{Deserialize, Serialize};
use tokio::time::sleep;

use crate::broker;
use crate::restart::RestartPolicy;

mod federation;
mod process;
mod start;
mod supervisor;

pub use federation::Federation;
pub use process::{find_program, NodeProcess, ProcessExit};
pub use supervisor::{Supervisor, SupervisorEvent};
// What the submodules share among themselves (each has `use super::*`).
use process::*;

/// Topology file `up` starts when none is given.
pub const DEFAULT_TOPOLOGY: &str = "topology/demo.toml";

/// The topology the nodes of a run read: the given one with every node's public key.
pub const SIGNED_TOPOLOGY_FILE: &str = "topology.toml";

/// Run directory `up` uses when none is given.
pub const DEFAULT_RUN_DIR: &str = "run/federation";

/// Where `up` asks the portal to listen.
pub const DEFAULT_PORTAL_HTTP: &str = "127.0.0.1:7180";

/// File name of the manifest written into the run directory.
pub const MANIFEST_FILE: &str = "federation.json";

const NODE_PROGRAM: &str = "docfed-node";

const NODE_PACKAGE: &str = "docfed-node";

const PORTAL_PROGRAM: &str = "docfed-portal";

const PORTAL_PACKAGE: &str = "publisher-portal";

/// How many log lines accompany a report about a failed process.
const TAIL_LINES: usize = 20;

/// Which broker the federation uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerChoice {
    /// The broker at this URL if one answers there, else a private one started for the run.
    Auto(String),
    /// This URL, without probing.
    External(String),
    /// Always a private broker (for harnesses that kill and restart it).
    Private,
    /// The brokers the topology file names, per node, as written (for harnesses that give
    /// each node or site a broker of its own).
    AsWritten,
}

/// Everything `up` needs to know. [`UpOptions::new`] gives the defaults of the command line.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The topology file; every node is started with it.
    pub topology_file: PathBuf,
    /// Holds each node's data directory and log, the private broker and `federation.json`.
    pub run_dir: PathBuf,
    /// The broker every node of this run uses (overriding the topology's URLs).
    pub broker: BrokerChoice,
    /// `docfed-node` binary; `None` looks next to the current executable, then on `PATH`.
    pub node_binary: Option<PathBuf>,
    /// Whether to try starting `docfed-portal`.
    pub start_portal: bool,
    /// `docfed-portal` binary; `None` looks next to the current executable, then on `PATH`.
    pub portal_binary: Option<PathBuf>,
    /// Address the portal is asked to listen on.
    pub portal_http: SocketAddr,
    /// How long every node has to answer its health check after starting.
    pub health_timeout: Duration,
    /// How long a node has to exit after SIGTERM before it gets SIGKILL.
    pub stop_timeout: Duration,
    /// Whether to print progress on stderr.
    pub verbose: bool,
    /// Extra command-line flags for every node (e.g. `--pull-rate-limit 50MB`).
    pub node_args: Vec<String>,
    /// Extra command-line flags for one node, by id (after `node_args`).
    pub node_args_by_id: std::collections::HashMap<String, Vec<String>>,
    /// How the [`Supervisor`] of `up` restarts nodes that exit on their own; `None` leaves
    /// them stopped (`--no-restart`).
    pub restart: Option<RestartPolicy>,
    /// Run a topology without `[tls]` in clear (`--insecure`); by default `up` makes
    /// certificates for it in `RUN_DIR/certs` and every link uses TLS.
    pub insecure: bool,
    /// Give every node a content key of its own (`RUN_DIR/content-keys/ID.key`, made once and
    /// kept) so its content is sealed at rest; unless a node's flags name a key already
    /// (`--content-key-file`). `--plaintext-at-rest` turns it off.
    pub content_keys: bool,
}

impl UpOptions {
    /// The defaults of `docfed-topology up FILE --run-dir DIR`.
    pub fn new(topology_file: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> Self {
        UpOptions {
            topology_file: topology_file.into(),
            run_dir: run_dir.into(),
            broker: BrokerChoice::Auto(DEFAULT_AMQP_URL.to_owned()),
            node_binary: None,
            node_args: Vec::new(),
            node_args_by_id: std::collections::HashMap::new(),
            start_portal: true,
            portal_binary: None,
            portal_http: DEFAULT_PORTAL_HTTP.parse().expect("valid default address"),
            health_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(15),
            verbose: true,
            restart: Some(RestartPolicy::default()),
            insecure: false,
            content_keys: true,
        }
    }
}

/// Contents of `RUN_DIR/federation.json` (ARCHITECTURE.md §6.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub nodes: Vec<ManifestNode>,
    /// Base URL of the portal, when it runs.
    pub portal: Option<String>,
    /// The publish token of this federation.
    pub token: String,
    /// The federation CA's certificate (PEM) when the links use TLS: what clients trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// One node in `federation.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestNode {
    pub id: String,
    pub tier: Tier,
    pub region: Option<String>,
    /// Base URL, `https://ADDR` (`http://` without TLS).
    pub http: String,
}

impl Manifest {
    /// Reads a `federation.json`.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }
}

/// A random 40-character alphanumeric publish token.
pub fn generate_token() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 40)
}

/// Stable short name for a run directory, so its private broker keeps the same Erlang node name
/// (and thus its data) across runs while two run directories never share one.
fn short_hash(path: &Path) -> String {
    // FNV-1a: tiny, and stable across Rust releases unlike `DefaultHasher`.
    let mut h: u32 = 0x811c_9dc5;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The table `up` prints once the federation is healthy.
pub fn summary_table(fed: &Federation) -> String {
    let header = ["ID", "TIER", "REGION", "URL", "LOG"];
    let rows: Vec<[String; 5]> = fed
        .nodes()
        .iter()
        .map(|n| {
            [
                n.id().to_owned(),
                n.spec().tier.to_string(),
                n.spec().region.clone().unwrap_or_else(|| "-".to_owned()),
                n.url(),
                n.log_path().display().to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s
    };
    let mut out = line(&header);
    for r in &rows {
        out.push('\n');
        out.push_str(&line(&r.each_ref().map(String::as_str)));
    }
    if let Some(ca) = fed.manifest().ca {
        out.push_str(&format!(
            "\nTLS: the nodes trust the federation CA {0}; clients too: `docfed --ca {0}`, \
             `curl --cacert {0}`",
            ca.display()
        ));
    }
    out
}

/// SIGINT and SIGTERM, as one stream.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// `docfed-topology up`: starts the federation, prints where everything is, supervises it until
/// SIGINT or SIGTERM (restarting nodes that exit on their own: [`Supervisor`]), then stops it.
/// Returns `Ok` after a requested stop, `Err` if the federation could not start (everything
/// started is stopped first) or every node died for good.
pub async fn run(opts: UpOptions) -> Result<()> {
    // Handlers first, so a Ctrl-C during the slow parts (private broker) is ours to handle.
    let mut signals = Signals::new()?;
    let mut fed = Federation::prepare(opts)?;
    let outcome = tokio::select! {
        r = fed.start() => r.map(|()| None),
        s = signals.recv() => Ok(Some(s)),
    };
    match outcome {
        Ok(None) => {}
        Ok(Some(signal)) => {
            eprintln!("docfed-topology: {signal} while starting; stopping what was started");
            return stop(&mut fed, &mut signals).await;
        }
        Err(e) => {
            eprintln!("docfed-topology: start failed; stopping what was started");
            if let Err(stop_err) = stop(&mut fed, &mut signals).await {
                eprintln!("docfed-topology: {stop_err:#}");
            }
            return Err(e);
        }
    }

    println!("{}", summary_table(&fed));
    match (fed.portal_url(), fed.portal_note()) {
        (Some(url), _) => println!("portal: {url}"),
        (None, Some(note)) => println!("{note}"),
        (None, None) => {}
    }
    if let Some(url) = fed.amqp_url() {
        println!("broker: {}", broker::redact_url(url));
    }
    for source in &fed.topology().sources {
        if let Some(folder) = &source.path {
            println!(
                "source `{}`: files dropped into {} are published everywhere",
                source.name,
                folder.display()
            );
        }
    }
    // The operator's own terminal: the token is what every write to a primary needs.
    println!("publish token: {}", fed.token());
    println!(
        "manifest (URLs and the token, mode 0600): {}",
        fed.manifest_path().display()
    );
    println!("Ctrl-C stops the federation.");

    let mut supervisor = fed.supervisor();
    let signal = loop {
        tokio::select! {
            s = signals.recv() => break s,
            _ = sleep(Duration::from_millis(500)) => {
                for event in supervisor.tick(&mut fed) {
                    eprintln!("docfed-topology: {event}");
                }
                if fed.running_nodes() == 0 && !supervisor.restart_pending() {
                    eprintln!("docfed-topology: every node has exited; stopping");
                    stop(&mut fed, &mut signals).await?;
                    bail!("every node of the federation exited");
                }
            }
        }
    };
    eprintln!("docfed-topology: {signal} received; stopping the federation");
    stop(&mut fed, &mut signals).await
}

/// Graceful shutdown; a second signal turns it into SIGKILL for everything.
async fn stop(fed: &mut Federation, signals: &mut Signals) -> Result<()> {
    tokio::select! {
        r = fed.shutdown() => {
            let forced = r?;
            if !forced.is_empty() {
                eprintln!(
                    "docfed-topology: killed after the stop timeout: {}",
                    forced.join(", ")
                );
            }
            eprintln!("docfed-topology: stopped");
            Ok(())
        }
        s = signals.recv() => {
            eprintln!("docfed-topology: {s} again; killing everything now");
            fed.kill_all().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_40_alphanumerics() {
        let t = generate_token();
        assert_eq!(t.len(), 40);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(t, generate_token());
    }

    #[test]
    fn short_hash_is_stable_and_distinct() {
        assert_eq!(short_hash(Path::new("/a/b")), short_hash(Path::new("/a/b")));
        assert_ne!(short_hash(Path::new("/a/b")), short_hash(Path::new("/a/c")));
        assert_eq!(short_hash(Path::new("/a/b")).len(), 8);
    }

    #[test]
    fn manifest_shape() {
        let m = Manifest {
            nodes: vec![
                ManifestNode {
                    id: "primary-a".into(),
                    tier: Tier::Primary,
                    region: None,
                    http: "http://127.0.0.1:7101".into(),
                },
                ManifestNode {
                    id: "na".into(),
                    tier: Tier::Regional,
                    region: Some("na".into()),
                    http: "http://127.0.0.1:7121".into(),
                },
            ],
            portal: None,
            token: "t".into(),
            ca: None,
        };
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "nodes": [
                    {"id": "primary-a", "tier": "primary", "region": null, "http": "http://127.0.0.1:7101"},
                    {"id": "na", "tier": "regional", "region": "na", "http": "http://127.0.0.1:7121"}
                ],
                "portal": null,
                "token": "t"
            })
        );
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-docfed").is_none());
    }
}
