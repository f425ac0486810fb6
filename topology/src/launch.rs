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

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use docfed_shared::topology::{NodeSpec, Tier, Topology, AMQP_URL_ENV, DEFAULT_AMQP_URL};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, timeout_at, Instant};

use crate::broker::{self, PrivateBroker};
use crate::restart::{fmt_delay, Backoff, Decision, RestartPolicy};

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
}

/// One node in `federation.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestNode {
    pub id: String,
    pub tier: Tier,
    pub region: Option<String>,
    /// Base URL, `http://ADDR`.
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

/// A supervised process (node or portal) that exited on its own.
#[derive(Debug)]
pub struct ProcessExit {
    /// `node `ID`` or `portal`.
    pub what: String,
    /// The node's id, when a node exited.
    pub node: Option<String>,
    pub status: ExitStatus,
    pub log: PathBuf,
    /// The last lines of its log.
    pub log_tail: String,
}

impl std::fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited with {}; last lines of {}:\n{}",
            self.what,
            self.status,
            self.log.display(),
            indent(&self.log_tail)
        )
    }
}

/// One node of a running federation.
#[derive(Debug)]
pub struct NodeProcess {
    spec: NodeSpec,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// When the current process was spawned.
    started: Option<Instant>,
}

impl NodeProcess {
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }
    pub fn id(&self) -> &str {
        &self.spec.id
    }
    /// Base URL, `http://ADDR`.
    pub fn url(&self) -> String {
        self.spec.base_url()
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    /// Process id while the node runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

#[derive(Debug)]
struct PortalProcess {
    url: String,
    log: PathBuf,
    child: Option<Child>,
}

/// A federation started (or being started) from one topology file.
///
/// Created by [`Federation::prepare`], brought up by [`Federation::start`], brought down by
/// [`Federation::shutdown`]. The processes live in this value as soon as they are spawned, so a
/// `start` interrupted half-way (its future dropped, e.g. by Ctrl-C in a `select!`) still leaves
/// everything for `shutdown` to stop. Dropping the value SIGKILLs whatever still runs.
pub struct Federation {
    opts: UpOptions,
    topology: Topology,
    topology_file: PathBuf,
    run_dir: PathBuf,
    node_binary: PathBuf,
    token: String,
    amqp_url: Option<String>,
    broker: Option<PrivateBroker>,
    nodes: Vec<NodeProcess>,
    portal: Option<PortalProcess>,
    portal_note: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Federation {
    // By hand, to keep the publish token out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("topology_file", &self.topology_file)
            .field("run_dir", &self.run_dir)
            .field(
                "amqp_url",
                &self.amqp_url.as_deref().map(broker::redact_url),
            )
            .field("broker", &self.broker)
            .field("nodes", &self.nodes)
            .field("portal", &self.portal)
            .finish_non_exhaustive()
    }
}

impl Federation {
    /// Loads and validates the topology, prepares the run directory, finds the `docfed-node`
    /// binary and checks that every node's HTTP address is free. Starts nothing.
    pub fn prepare(opts: UpOptions) -> Result<Federation> {
        if !opts.topology_file.exists() && opts.topology_file == Path::new(DEFAULT_TOPOLOGY) {
            bail!(
                "{DEFAULT_TOPOLOGY} not found: the default topology is relative to the workspace \
                 root; run from there or pass a topology file"
            );
        }
        let topology = Topology::load_validated(&opts.topology_file)?;
        let busy: Vec<String> = topology
            .nodes
            .iter()
            .filter_map(|n| {
                TcpListener::bind(n.http)
                    .err()
                    .map(|e| format!("node `{}`: cannot listen on {}: {e}", n.id, n.http))
            })
            .collect();
        if !busy.is_empty() {
            bail!(
                "HTTP addresses of {} are not available (is another federation running?):\n{}",
                opts.topology_file.display(),
                indent(&busy.join("\n"))
            );
        }

        let run_dir = std::path::absolute(&opts.run_dir)
            .with_context(|| format!("cannot resolve {}", opts.run_dir.display()))?;
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
        // A manifest left by an earlier run would announce a federation that is not up (yet).
        // Only removed once the ports are known free: a federation still running from this run
        // directory keeps its manifest.
        remove_if_exists(&run_dir.join(MANIFEST_FILE))?;

        // Every node signs what it sends: each gets a key in its data directory (kept across
        // runs from the same run directory), and the nodes read a copy of the topology that
        // lists the public keys.
        let topology = crate::keys::provision(&topology, |id| {
            run_dir.join(id).join(docfed_shared::keys::KEY_FILE)
        })
        .with_context(|| {
            format!(
                "cannot give the nodes of {} their keys",
                opts.topology_file.display()
            )
        })?;
        let topology_file = run_dir.join(SIGNED_TOPOLOGY_FILE);
        crate::keys::write_topology(&topology, &topology_file)?;

        let node_binary = match &opts.node_binary {
            Some(p) => p.clone(),
            None => find_program(NODE_PROGRAM).ok_or_else(|| {
                anyhow!(
                    "cannot find `{NODE_PROGRAM}` next to {} or on PATH; build it with `cargo build \
                     -p {NODE_PACKAGE}`",
                    exe_dir_display()
                )
            })?,
        };

        let nodes = topology
            .nodes
            .iter()
            .map(|spec| {
                let data_dir = run_dir.join(&spec.id);
                NodeProcess {
                    spec: spec.clone(),
                    log: data_dir.join("node.log"),
                    data_dir,
                    child: None,
                    started: None,
                }
            })
            .collect();

        let http = reqwest::Client::builder()
            // Health checks go to loopback; a proxy from the environment must not intercept them.
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .context("cannot build an HTTP client")?;

        Ok(Federation {
            opts,
            topology,
            topology_file,
            run_dir,
            node_binary,
            token: generate_token(),
            amqp_url: None,
            broker: None,
            nodes,
            portal: None,
            portal_note: None,
            http,
        })
    }

    /// Picks the broker, starts every node, waits until all are healthy, starts the portal if it
    /// can, and writes `federation.json`. On error, call [`Federation::shutdown`].
    pub async fn start(&mut self) -> Result<()> {
        self.choose_broker().await?;
        let started = Instant::now();
        self.note(format!(
            "starting {} nodes (logs in {}/ID/node.log)",
            self.nodes.len(),
            self.run_dir.display()
        ));
        for i in 0..self.nodes.len() {
            self.spawn_node(i)?;
        }
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.wait_healthy(&all).await?;
        self.note(format!(
            "all {} nodes healthy after {:.1} s",
            self.nodes.len(),
            started.elapsed().as_secs_f64()
        ));
        if self.opts.start_portal {
            self.start_portal().await;
        } else {
            self.portal_note = Some("portal: not started".to_owned());
        }
        self.write_manifest()
    }

    /// [`prepare`](Self::prepare) then [`start`](Self::start), stopping whatever started if
    /// anything fails.
    pub async fn up(opts: UpOptions) -> Result<Federation> {
        let mut fed = Federation::prepare(opts)?;
        if let Err(e) = fed.start().await {
            if let Err(stop) = fed.shutdown().await {
                return Err(e.context(format!("and stopping failed too: {stop:#}")));
            }
            return Err(e);
        }
        Ok(fed)
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
    /// The publish token every node of this run accepts.
    pub fn token(&self) -> &str {
        &self.token
    }
    /// The broker every node uses, once chosen.
    pub fn amqp_url(&self) -> Option<&str> {
        self.amqp_url.as_deref()
    }
    /// The private broker, if this run started one (to kill or restart it in a test).
    pub fn private_broker(&mut self) -> Option<&mut PrivateBroker> {
        self.broker.as_mut()
    }
    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }
    pub fn node(&self, id: &str) -> Option<&NodeProcess> {
        self.nodes.iter().find(|n| n.spec.id == id)
    }
    /// Base URL of the portal, if it runs.
    pub fn portal_url(&self) -> Option<&str> {
        self.portal.as_ref().map(|p| p.url.as_str())
    }
    /// Why the portal does not run, if it does not.
    pub fn portal_note(&self) -> Option<&str> {
        self.portal_note.as_deref()
    }
    pub fn manifest_path(&self) -> PathBuf {
        self.run_dir.join(MANIFEST_FILE)
    }

    /// What `federation.json` says.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            nodes: self
                .nodes
                .iter()
                .map(|n| ManifestNode {
                    id: n.spec.id.clone(),
                    tier: n.spec.tier,
                    region: n.spec.region.clone(),
                    http: n.url(),
                })
                .collect(),
            portal: self.portal_url().map(str::to_owned),
            token: self.token.clone(),
        }
    }

    /// Writes `federation.json` atomically (temp file, rename) and readable by the owner only,
    /// since it holds the publish token.
    pub fn write_manifest(&self) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.manifest_path();
        let tmp = self.run_dir.join(format!(".{MANIFEST_FILE}.tmp"));
        let json = serde_json::to_string_pretty(&self.manifest())?;
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(json.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }

    /// Supervised processes that exited since the last call (nodes, the portal, the private
    /// broker), with the end of their logs. They are not restarted here: a [`Supervisor`]
    /// does that.
    pub fn poll_exits(&mut self) -> Vec<ProcessExit> {
        let mut exits = Vec::new();
        for n in &mut self.nodes {
            if let Some(status) = reap(&mut n.child) {
                exits.push(ProcessExit {
                    what: format!("node `{}`", n.spec.id),
                    node: Some(n.spec.id.clone()),
                    status,
                    log: n.log.clone(),
                    log_tail: broker::log_tail(&n.log, TAIL_LINES),
                });
            }
        }
        if let Some(p) = &mut self.portal {
            if let Some(status) = reap(&mut p.child) {
                exits.push(ProcessExit {
                    what: "portal".to_owned(),
                    node: None,
                    status,
                    log: p.log.clone(),
                    log_tail: broker::log_tail(&p.log, TAIL_LINES),
                });
            }
        }
        if let Some(b) = &mut self.broker {
            if let Some(status) = b.try_exited() {
                let log = b.dir().join("stdout.log");
                exits.push(ProcessExit {
                    what: format!("private broker {}", b.node_name()),
                    node: None,
                    status,
                    log_tail: broker::log_tail(&log, TAIL_LINES),
                    log,
                });
            }
        }
        exits
    }

    /// A [`Supervisor`] with the restart policy of the options (none with `--no-restart`).
    pub fn supervisor(&self) -> Supervisor {
        Supervisor::new(self.opts.restart)
    }

    /// Number of nodes whose process is running (as of the last [`poll_exits`](Self::poll_exits)).
    pub fn running_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_running()).count()
    }

    /// Stops node `id` cleanly: SIGTERM, then SIGKILL after the stop timeout. Returns its exit
    /// status, or `None` if it was not running.
    pub async fn stop_node(&mut self, id: &str) -> Result<Option<ExitStatus>> {
        let i = self.index_of(id)?;
        let deadline = Instant::now() + self.opts.stop_timeout;
        let Some(child) = self.nodes[i].child.as_mut() else {
            return Ok(None);
        };
        terminate(child);
        let (status, _forced) = wait_or_kill(child, deadline).await?;
        self.nodes[i].child = None;
        Ok(Some(status))
    }

    /// Crashes node `id` (SIGKILL to its process group), as a power cut would.
    pub async fn kill_node(&mut self, id: &str) -> Result<Option<ExitStatus>> {
        let i = self.index_of(id)?;
        let Some(child) = self.nodes[i].child.as_mut() else {
            return Ok(None);
        };
        let (status, _) = wait_or_kill(child, Instant::now()).await?;
        self.nodes[i].child = None;
        Ok(Some(status))
    }

    /// Starts node `id` again (same data directory, token and broker) and waits until it is
    /// healthy. Fails if it is still running.
    pub async fn start_node(&mut self, id: &str) -> Result<()> {
        let i = self.index_of(id)?;
        if self.nodes[i].child.is_some() {
            bail!("node `{id}` is already running");
        }
        self.spawn_node(i)?;
        self.wait_healthy(&[i]).await
    }

    /// Stops everything: SIGTERM to the portal and every node at once, SIGKILL to those still
    /// running after the stop timeout, then the private broker (if this run started one);
    /// removes `federation.json`. Returns the ids of the processes that had to be killed.
    pub async fn shutdown(&mut self) -> Result<Vec<String>> {
        let deadline = Instant::now() + self.opts.stop_timeout;
        let mut children: Vec<(String, &mut Child)> = Vec::new();
        if let Some(c) = self.portal.as_mut().and_then(|p| p.child.as_mut()) {
            children.push(("portal".to_owned(), c));
        }
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                children.push((n.spec.id.clone(), c));
            }
        }
        for (_, c) in &mut children {
            terminate(c);
        }
        // All got SIGTERM at the same moment, so one shared deadline gives each the full grace
        // period.
        let mut forced = Vec::new();
        let mut errors = Vec::new();
        for (name, c) in children {
            match wait_or_kill(c, deadline).await {
                Ok((_, true)) => forced.push(name),
                Ok((_, false)) => {}
                Err(e) => errors.push(format!("{name}: {e:#}")),
            }
        }
        if let Some(p) = &mut self.portal {
            p.child = None;
        }
        for n in &mut self.nodes {
            n.child = None;
        }
        if let Some(mut b) = self.broker.take() {
            if let Err(e) = b.stop().await {
                errors.push(format!("private broker: {e:#}"));
            }
        }
        if let Err(e) = remove_if_exists(&self.manifest_path()) {
            errors.push(format!("{e:#}"));
        }
        if errors.is_empty() {
            Ok(forced)
        } else {
            bail!("stopping the federation: {}", errors.join("; "))
        }
    }

    /// SIGKILL to the portal and every node, without waiting: for `Drop` of a test kit, which
    /// cannot await (the processes are reaped by the runtime as usual).
    pub fn kill_now(&mut self) {
        let portal = self.portal.as_ref().and_then(|p| p.child.as_ref());
        for c in portal
            .into_iter()
            .chain(self.nodes.iter().filter_map(|n| n.child.as_ref()))
        {
            if let Some(pid) = c.id() {
                // Every child leads its own process group (see spawn_supervised).
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }

    /// For test kits, when a test federation is dropped: SIGKILL to every process and removal
    /// of its nodes' queues from the broker ([`crate::broker::delete_node_queues`]), so tests
    /// leave nothing behind in a shared broker.
    pub fn discard(&mut self) {
        self.kill_now();
        if let Some(url) = self.amqp_url().map(str::to_owned) {
            let ids: Vec<String> = self.nodes.iter().map(|n| n.spec.id.clone()).collect();
            crate::broker::delete_node_queues(&url, &ids);
        }
    }

    /// SIGKILL to everything at once (a second Ctrl-C during shutdown), broker included.
    pub async fn kill_all(&mut self) -> Result<()> {
        let now = Instant::now();
        if let Some(c) = self.portal.as_mut().and_then(|p| p.child.as_mut()) {
            wait_or_kill(c, now).await?;
        }
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                wait_or_kill(c, now).await?;
            }
            n.child = None;
        }
        if let Some(mut b) = self.broker.take() {
            b.kill().await?;
        }
        remove_if_exists(&self.manifest_path())
    }

    fn index_of(&self, id: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.spec.id == id)
            .ok_or_else(|| anyhow!("no node `{id}` in {}", self.topology_file.display()))
    }

    fn note(&self, msg: impl AsRef<str>) {
        if self.opts.verbose {
            eprintln!("docfed-topology: {}", msg.as_ref());
        }
    }

    async fn choose_broker(&mut self) -> Result<()> {
        let url = match self.opts.broker.clone() {
            BrokerChoice::AsWritten => {
                self.note("using the brokers named in the topology file");
                self.amqp_url = None;
                return Ok(());
            }
            BrokerChoice::External(url) => url,
            BrokerChoice::Auto(url) if broker::amqp_answers(&url, Duration::from_secs(2)).await => {
                self.note(format!("using the broker at {}", broker::redact_url(&url)));
                url
            }
            choice => {
                if let BrokerChoice::Auto(url) = &choice {
                    self.note(format!(
                        "no AMQP broker answers at {}; starting a private rabbitmq-server (≈ 10 s)",
                        broker::redact_url(url)
                    ));
                }
                let port = broker::free_broker_port()?;
                let name = format!("docfed-{}", short_hash(&self.run_dir));
                let b = PrivateBroker::start(&self.run_dir, &name, port)
                    .await
                    .context("cannot start a private broker")?;
                self.note(format!(
                    "private broker {} ready on port {port} (files in {})",
                    b.node_name(),
                    b.dir().display()
                ));
                let url = b.url();
                self.broker = Some(b);
                url
            }
        };
        self.amqp_url = Some(url);
        Ok(())
    }

    fn spawn_node(&mut self, i: usize) -> Result<()> {
        if self.amqp_url.is_none() && self.opts.broker != BrokerChoice::AsWritten {
            bail!("no broker chosen yet");
        }
        let amqp = self.amqp_url.clone();
        let n = &self.nodes[i];
        let id = n.spec.id.clone();
        std::fs::create_dir_all(&n.data_dir)
            .with_context(|| format!("cannot create {}", n.data_dir.display()))?;
        let (out, err) = open_log(&n.log, &format!("node {id}"))?;
        let mut cmd = Command::new(&self.node_binary);
        cmd.arg("--topology")
            .arg(&self.topology_file)
            .arg("--id")
            .arg(&id)
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(&self.opts.node_args)
            .args(self.opts.node_args_by_id.get(&id).into_iter().flatten())
            .stdout(out)
            .stderr(err);
        self.child_env(&mut cmd, amqp.as_deref());
        let child = spawn_supervised(&mut cmd).with_context(|| {
            format!(
                "cannot start {} for node `{id}`",
                self.node_binary.display()
            )
        })?;
        self.nodes[i].child = Some(child);
        self.nodes[i].started = Some(Instant::now());
        Ok(())
    }

    /// Settings shared by every child: a clean `DOCFED_*` environment (so a variable left in
    /// the operator's shell, such as `DOCFED_HTTP`, cannot override the topology) plus the
    /// broker and the token. The token goes in the environment rather than on the command line,
    /// where every user of the machine could read it in `ps`.
    fn child_env(&self, cmd: &mut Command, amqp: Option<&str>) {
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str() {
                if k.starts_with("DOCFED_") && k != "DOCFED_LOG" {
                    cmd.env_remove(k);
                }
            }
        }
        if let Some(amqp) = amqp {
            cmd.env(AMQP_URL_ENV, amqp);
        }
        cmd.env("DOCFED_TOKEN", &self.token);
    }

    /// Polls `GET /v1/health` of the given nodes until each answers 200 as itself. Fails at once
    /// when one of them exits, and at the deadline, with the end of each failing node's log.
    async fn wait_healthy(&mut self, which: &[usize]) -> Result<()> {
        let deadline = Instant::now() + self.opts.health_timeout;
        let mut pending: Vec<usize> = which.to_vec();
        let mut last_problem: Vec<Option<String>> = vec![None; self.nodes.len()];
        loop {
            for &i in &pending {
                if let Some(status) = reap(&mut self.nodes[i].child) {
                    let n = &self.nodes[i];
                    bail!(
                        "node `{}` exited with {status} before it was healthy; last lines of {}:\n{}",
                        n.spec.id,
                        n.log.display(),
                        indent(&broker::log_tail(&n.log, TAIL_LINES))
                    );
                }
            }
            let mut probes = JoinSet::new();
            for &i in &pending {
                let client = self.http.clone();
                let spec = self.nodes[i].spec.clone();
                probes.spawn(async move { (i, probe_health(&client, &spec).await) });
            }
            while let Some(joined) = probes.join_next().await {
                let (i, outcome) = joined.context("health probe task failed")?;
                match outcome {
                    Health::Healthy => pending.retain(|&p| p != i),
                    Health::NotYet(why) => last_problem[i] = Some(why),
                    Health::Impostor(why) => bail!("{why}"),
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let reports: Vec<String> = pending
                    .iter()
                    .map(|&i| {
                        let n = &self.nodes[i];
                        format!(
                            "node `{}` not healthy at {}/v1/health ({}); last lines of {}:\n{}",
                            n.spec.id,
                            n.url(),
                            last_problem[i].as_deref().unwrap_or("no answer"),
                            n.log.display(),
                            indent(&broker::log_tail(&n.log, TAIL_LINES))
                        )
                    })
                    .collect();
                bail!(
                    "not every node became healthy within {:?}:\n{}",
                    self.opts.health_timeout,
                    reports.join("\n")
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts `docfed-portal` if the binary exists and stays up; otherwise records why not. The
    /// portal is not needed for the federation to work, so nothing here is fatal.
    async fn start_portal(&mut self) {
        let binary = match &self.opts.portal_binary {
            Some(p) => p.clone(),
            None => match find_program(PORTAL_PROGRAM) {
                Some(p) => p,
                None => {
                    self.portal_note = Some(format!(
                        "portal: not available yet ({PORTAL_PROGRAM} not found next to {} or on PATH; \
                         `cargo build -p {PORTAL_PACKAGE}` builds it)",
                        exe_dir_display()
                    ));
                    return;
                }
            },
        };
        let addr = self.opts.portal_http;
        if let Err(e) = TcpListener::bind(addr) {
            self.portal_note = Some(format!(
                "portal: not started (cannot listen on {addr}: {e})"
            ));
            return;
        }
        match self.spawn_portal(&binary, addr).await {
            Ok(()) => {}
            Err(why) => self.portal_note = Some(format!("portal: {why}")),
        }
    }

    async fn spawn_portal(&mut self, binary: &Path, addr: SocketAddr) -> Result<(), String> {
        let data_dir = self.run_dir.join("portal");
        let log = data_dir.join("portal.log");
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| format!("not started (cannot create {}: {e})", data_dir.display()))?;
        let (out, err) = open_log(&log, "portal").map_err(|e| format!("not started ({e:#})"))?;
        let amqp = self.amqp_url.clone();
        let mut cmd = Command::new(binary);
        cmd.arg("--topology")
            .arg(&self.topology_file)
            .arg("--http")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(out)
            .stderr(err);
        self.child_env(&mut cmd, amqp.as_deref());
        let child = spawn_supervised(&mut cmd)
            .map_err(|e| format!("not started (cannot run {}: {e})", binary.display()))?;
        let mut portal = PortalProcess {
            url: format!("http://{addr}"),
            log,
            child: Some(child),
        };
        // A portal that cannot serve (today: the stub, which exits with status 2 at once) ends
        // quickly; one that works starts listening.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = reap(&mut portal.child) {
                return Err(format!(
                    "not available yet ({PORTAL_PROGRAM} exited with {status}; see {})",
                    portal.log.display()
                ));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                self.portal = Some(portal);
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(c) = portal.child.as_mut() {
                    let _ = wait_or_kill(c, Instant::now()).await;
                }
                return Err(format!(
                    "not available ({PORTAL_PROGRAM} did not listen on {addr} within 30 s; see {})",
                    portal.log.display()
                ));
            }
            sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What [`Supervisor::tick`] saw and did.
#[derive(Debug)]
pub enum SupervisorEvent {
    /// A process exited and is left stopped: the portal, the private broker, or a node when
    /// restarts are off.
    Exited(ProcessExit),
    /// A node exited on its own and will be started again after `delay`.
    Restarting {
        exit: ProcessExit,
        delay: Duration,
        attempt: u32,
    },
    /// A node was started again (not yet necessarily healthy).
    Restarted { id: String, attempt: u32 },
    /// A node could not even be spawned again; `then` is the next try, if any.
    RestartFailed {
        id: String,
        error: String,
        then: Option<(Duration, u32)>,
    },
    /// A node crashed quickly too many times in a row and is left stopped.
    GaveUp {
        exit: ProcessExit,
        quick_crashes: u32,
        quick_crash: Duration,
    },
}

impl std::fmt::Display for SupervisorEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SupervisorEvent::Exited(exit) => write!(f, "!!! {exit}"),
            SupervisorEvent::Restarting {
                exit,
                delay,
                attempt,
            } => write!(
                f,
                "{} exited with {}; restarting in {} (attempt {attempt}); log: {}",
                exit.what,
                exit.status,
                fmt_delay(*delay),
                exit.log.display()
            ),
            SupervisorEvent::Restarted { id, attempt } => {
                write!(f, "node `{id}` started again (attempt {attempt})")
            }
            SupervisorEvent::RestartFailed { id, error, then } => {
                write!(f, "!!! cannot start node `{id}` again: {error}")?;
                match then {
                    Some((delay, attempt)) => write!(
                        f,
                        "; trying again in {} (attempt {attempt})",
                        fmt_delay(*delay)
                    ),
                    None => write!(f, "; giving up on it"),
                }
            }
            SupervisorEvent::GaveUp {
                exit,
                quick_crashes,
                quick_crash,
            } => write!(
                f,
                "!!! giving up on {}: it exited with {} — {quick_crashes} crashes in a row, each \
                 within {} of its start; it stays stopped. Last lines of {}:\n{}",
                exit.what,
                exit.status,
                fmt_delay(*quick_crash),
                exit.log.display(),
                indent(&exit.log_tail)
            ),
        }
    }
}

/// Restart bookkeeping of one node.
#[derive(Debug)]
struct NodeRestart {
    backoff: Backoff,
    /// When the next start is due, while one is scheduled.
    due: Option<(Instant, u32)>,
    given_up: bool,
}

/// Restarts the nodes of a [`Federation`] that exit on their own, with the backoff of a
/// [`RestartPolicy`]; reports every other exit. Driven by calling [`tick`](Self::tick) now and
/// then (the `up` loop does it every 500 ms). Exits asked for through
/// [`Federation::stop_node`], [`Federation::kill_node`] or [`Federation::shutdown`] are not
/// seen, so they are never restarted; a node started again by hand while a restart is pending
/// simply cancels it.
///
/// "Stayed healthy for a minute" (which resets the backoff) is measured as a minute of uptime:
/// a node that runs is answering its health check in practice, and one that does not is not
/// crashing either.
#[derive(Debug)]
pub struct Supervisor {
    policy: Option<RestartPolicy>,
    nodes: std::collections::HashMap<String, NodeRestart>,
}

impl Supervisor {
    /// `None`: report exits, never restart.
    pub fn new(policy: Option<RestartPolicy>) -> Self {
        Supervisor {
            policy,
            nodes: std::collections::HashMap::new(),
        }
    }

    /// Reaps processes that exited, schedules or refuses their restarts, and starts the nodes
    /// whose delay is over. Never waits.
    pub fn tick(&mut self, fed: &mut Federation) -> Vec<SupervisorEvent> {
        let now = Instant::now();
        let mut events = Vec::new();
        for exit in fed.poll_exits() {
            let (Some(policy), Some(id)) = (self.policy, exit.node.clone()) else {
                events.push(SupervisorEvent::Exited(exit));
                continue;
            };
            let ran_for = fed
                .node(&id)
                .and_then(|n| n.started)
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
            let state = self.state(policy, &id);
            match state.backoff.on_exit(ran_for) {
                Decision::Restart { delay, attempt } => {
                    state.due = Some((now + delay, attempt));
                    events.push(SupervisorEvent::Restarting {
                        exit,
                        delay,
                        attempt,
                    });
                }
                Decision::GiveUp { quick_crashes } => {
                    state.given_up = true;
                    events.push(SupervisorEvent::GaveUp {
                        exit,
                        quick_crashes,
                        quick_crash: policy.quick_crash,
                    });
                }
            }
        }

        let Some(policy) = self.policy else {
            return events;
        };
        let due: Vec<(String, u32)> = self
            .nodes
            .iter()
            .filter_map(|(id, s)| match s.due {
                Some((at, attempt)) if at <= now => Some((id.clone(), attempt)),
                _ => None,
            })
            .collect();
        for (id, attempt) in due {
            let state = self.state(policy, &id);
            state.due = None;
            let Ok(i) = fed.index_of(&id) else { continue };
            if fed.nodes[i].child.is_some() {
                // Started again by someone else meanwhile.
                continue;
            }
            match fed.spawn_node(i) {
                Ok(()) => events.push(SupervisorEvent::Restarted { id, attempt }),
                Err(e) => {
                    let then = match state.backoff.on_exit(Duration::ZERO) {
                        Decision::Restart { delay, attempt } => {
                            state.due = Some((now + delay, attempt));
                            Some((delay, attempt))
                        }
                        Decision::GiveUp { .. } => {
                            state.given_up = true;
                            None
                        }
                    };
                    events.push(SupervisorEvent::RestartFailed {
                        id,
                        error: format!("{e:#}"),
                        then,
                    });
                }
            }
        }
        events
    }

    /// Whether a restart of some node is scheduled.
    pub fn restart_pending(&self) -> bool {
        self.nodes.values().any(|s| s.due.is_some())
    }

    /// Whether the supervisor gave up on node `id`.
    pub fn gave_up_on(&self, id: &str) -> bool {
        self.nodes.get(id).is_some_and(|s| s.given_up)
    }

    fn state(&mut self, policy: RestartPolicy, id: &str) -> &mut NodeRestart {
        self.nodes
            .entry(id.to_owned())
            .or_insert_with(|| NodeRestart {
                backoff: Backoff::new(policy),
                due: None,
                given_up: false,
            })
    }
}

/// What a health probe found.
enum Health {
    Healthy,
    NotYet(String),
    /// Something else answers at the node's address: waiting will not help.
    Impostor(String),
}

async fn probe_health(client: &reqwest::Client, spec: &NodeSpec) -> Health {
    let url = format!("{}/v1/health", spec.base_url());
    let resp = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return Health::NotYet(format!("{e}")),
    };
    let status = resp.status();
    if !status.is_success() {
        return Health::NotYet(format!("HTTP {status}"));
    }
    // A node left over from another run on the same address would answer 200 too.
    match resp.json::<serde_json::Value>().await {
        Ok(body) => match body.get("node").and_then(|v| v.as_str()) {
            Some(node) if node != spec.id => Health::Impostor(format!(
                "{url} answers as node `{node}`, not `{}`: another process owns that address",
                spec.id
            )),
            _ => Health::Healthy,
        },
        Err(e) => Health::NotYet(format!("unreadable health answer: {e}")),
    }
}

/// Spawns a child in its own process group, SIGTERMed by the kernel if the launcher dies.
fn spawn_supervised(cmd: &mut Command) -> std::io::Result<Child> {
    let launcher = nix::unistd::getpid();
    cmd.stdin(Stdio::null()).process_group(0).kill_on_drop(true);
    // SAFETY: the closure runs between fork and exec and only makes two system calls (prctl,
    // getppid) and builds an error without allocating: all async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            // The launcher may have died before prctl took effect; then nobody would stop us.
            if nix::unistd::getppid() != launcher {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Takes the exit status of a child that has exited, leaving `None` in its place.
fn reap(child: &mut Option<Child>) -> Option<ExitStatus> {
    let status = child.as_mut()?.try_wait().ok()??;
    *child = None;
    Some(status)
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
}

/// Waits for `child` until `deadline`, then SIGKILLs its process group and waits again.
/// Returns the exit status and whether SIGKILL was needed.
async fn wait_or_kill(child: &mut Child, deadline: Instant) -> Result<(ExitStatus, bool)> {
    if let Ok(status) = timeout_at(deadline, child.wait()).await {
        return Ok((status?, false));
    }
    if let Some(pid) = child.id() {
        // Every child leads its own process group (see spawn_supervised).
        match killpg(Pid::from_raw(pid as i32), Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => bail!("cannot kill process {pid}: {e}"),
        }
    }
    let status = timeout(Duration::from_secs(10), child.wait())
        .await
        .context("process did not exit after SIGKILL")??;
    Ok((status, true))
}

/// Opens a log for appending (earlier runs stay above a separator line) and returns two handles
/// for stdout and stderr.
fn open_log(path: &Path, what: &str) -> Result<(File, File)> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(
        f,
        "=== docfed-topology: starting {what} at {} ===",
        docfed_shared::wire::Timestamp::now()
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    let err = f.try_clone()?;
    Ok((f, err))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
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

/// Finds a program next to the current executable (also one level up from `deps/`, where test
/// binaries live), then on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(up) = dir.parent() {
                dirs.push(up.to_owned());
            }
        }
        dirs.insert(0, dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn exe_dir_display() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.display().to_string()))
        .unwrap_or_else(|| "the current executable".to_owned())
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
