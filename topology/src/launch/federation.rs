//! [`Federation`]: the processes of one federation on this machine, and what a harness does with
//! them (start, stop, kill and restart one node, shut all down, write the manifest).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use docfed_shared::topology::Topology;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::time::Instant;

use crate::broker::{self, PrivateBroker};

use super::*;

/// A federation started (or being started) from one topology file.
///
/// Created by [`Federation::prepare`], brought up by [`Federation::start`], brought down by
/// [`Federation::shutdown`]. The processes live in this value as soon as they are spawned, so a
/// `start` interrupted half-way (its future dropped, e.g. by Ctrl-C in a `select!`) still leaves
/// everything for `shutdown` to stop. Dropping the value SIGKILLs whatever still runs.
pub struct Federation {
    pub(super) opts: UpOptions,
    pub(super) topology: Topology,
    pub(super) topology_file: PathBuf,
    pub(super) run_dir: PathBuf,
    pub(super) node_binary: PathBuf,
    pub(super) token: String,
    pub(super) amqp_url: Option<String>,
    pub(super) broker: Option<PrivateBroker>,
    pub(super) nodes: Vec<NodeProcess>,
    pub(super) portal: Option<PortalProcess>,
    pub(super) portal_note: Option<String>,
    pub(super) http: reqwest::Client,
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
        // Watched folders named relative to the file are made in the run directory, so the
        // demo's drop folder sits beside the nodes' data.
        let mut topology = topology;
        for source in &mut topology.sources {
            source.resolve_path(&run_dir);
            if let Some(folder) = &source.path {
                std::fs::create_dir_all(folder).with_context(|| {
                    format!(
                        "cannot create the folder of source `{}`: {}",
                        source.name,
                        folder.display()
                    )
                })?;
            }
        }
        // Secure by default: a topology without [tls] (and not `insecure`) runs with
        // certificates made for this run directory (kept across runs, like the keys).
        if let Some(tls) = topology.tls.as_mut() {
            let base = std::path::absolute(&opts.topology_file)?
                .parent()
                .map(Path::to_owned)
                .unwrap_or_default();
            tls.resolve_paths(&base);
        } else if opts.insecure {
            topology.insecure = true;
        } else if !topology.insecure {
            let dir = crate::certs::CertDir(run_dir.join("certs"));
            crate::certs::generate(&topology, &dir, &Default::default())
                .with_context(|| format!("cannot make certificates in {}", dir.0.display()))?;
            topology.tls = Some(dir.spec());
        }
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
        if opts.content_keys {
            for n in &topology.nodes {
                ensure_content_key(&content_key_file(&run_dir, &n.id))?;
            }
        }

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
                    url: topology.url(spec),
                    log: data_dir.join("node.log"),
                    data_dir,
                    child: None,
                    started: None,
                }
            })
            .collect();

        let http = match &topology.tls {
            Some(tls) => {
                docfed_http::tls::Trust::load(&tls.ca, tls.crl.as_deref())?.reqwest(None)?
            }
            None => docfed_http::tls::client_builder(),
        };
        let http = http
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
    /// The topology file the nodes read (the given one with keys and, with TLS, `[tls]`).
    pub fn topology_file(&self) -> &Path {
        &self.topology_file
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
            ca: self.topology.tls.as_ref().map(|t| t.ca.clone()),
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
        // A private broker went with kill_now, data and all; only a shared one keeps queues.
        if let Some(url) = self
            .amqp_url()
            .filter(|u| u.starts_with("amqp://"))
            .map(str::to_owned)
        {
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
}

/// Where `up` keeps node `id`'s content key: beside the data directories, never inside one,
/// so a copy of a node's data (a backup, a disk sent for repair) holds no key to it.
pub fn content_key_file(run_dir: &Path, id: &str) -> PathBuf {
    run_dir.join("content-keys").join(format!("{id}.key"))
}

/// Makes a content key (64 hex digits, readable by its owner only) at `path` unless one is
/// there: a key is made once and kept, since content sealed with it can be read with no other.
fn ensure_content_key(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key: [u8; 32] = rand::random();
    crate::certs::write_secret(path, &hex::encode(key))
}
