//! The federation under test: real `docfed-node` processes from a topology file, private
//! `rabbitmq-server` instances the harness may kill, a fault-injecting proxy on every directed
//! link between nodes, and optionally one node on a small tmpfs whose disk can be filled.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use docfed_shared::topology::{Tier, Topology};
use topology::broker::{self, PrivateBroker};
use topology::launch::{BrokerChoice, Federation, UpOptions};

use super::proxy::Link;

/// How nodes share brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerLayout {
    /// One broker per tier (a site's broker serves its nodes): 3 instances for the demo shape.
    Tier,
    /// One broker per node.
    Node,
}

pub struct Options {
    pub topology: Option<PathBuf>,
    pub dir: PathBuf,
    pub brokers: BrokerLayout,
    /// Size of the tmpfs holding the disk-fault node's data, if any.
    pub disk_size: Option<u64>,
    pub node_args: Vec<String>,
    /// Extra flags for the nodes of a tier (after `node_args`).
    pub tier_args: Vec<(Tier, Vec<String>)>,
}

pub struct BrokerSlot {
    pub name: String,
    pub broker: PrivateBroker,
    pub nodes: Vec<String>,
}

/// The node whose data directory is a tmpfs the harness can fill.
pub struct SmallDisk {
    pub node: String,
    pub dir: PathBuf,
    pub size: u64,
    /// Set by the disk-full fault from before it fills the disk until its ballast is freed
    /// (unlinking a large tmpfs file frees its pages after the name is gone): the disk watch
    /// does not count a full disk as out of disk meanwhile.
    pub fault_active: Arc<AtomicBool>,
}

pub struct Cluster {
    pub fed: Federation,
    pub topo: Topology,
    pub brokers: Vec<BrokerSlot>,
    /// `(from, to)` → the proxy `from` uses for `to`'s HTTP API.
    pub http_links: BTreeMap<(String, String), Link>,
    /// `(from, to)` → the proxy `from` uses for `to`'s inbox broker.
    pub amqp_links: BTreeMap<(String, String), Link>,
    pub disk: Option<SmallDisk>,
    /// Why there is no small disk, when there is none.
    pub disk_note: Option<String>,
    pub http: reqwest::Client,
    pub token: String,
    /// The key every node seals its content with (the checker reads objects through it).
    pub content_keys: Option<docfed_atrest::Keys>,
    /// The broker administrator's certificate: how the harness reads queues on brokers that
    /// admit certificates only.
    pub broker_admin: docfed_broker::BrokerTls,
}

impl Cluster {
    pub async fn start(opts: Options) -> Result<Cluster> {
        let mut topo = match &opts.topology {
            Some(path) => Topology::load_validated(path)?,
            None => {
                let prefix = format!("e{:05x}", std::process::id() & 0xfffff);
                Topology::parse(&topology::demo::toml(
                    &prefix,
                    &topology::demo::free_ports()?,
                    None,
                    |_| None,
                ))?
            }
        };
        let run_dir = std::path::absolute(&opts.dir)?;
        clean_previous_run(&run_dir)?;
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;

        // Secure by default, as operators run it: certificates for every node, the brokers and
        // their administrator (this harness); every link, HTTP and AMQP, is TLS.
        let certs = topology::certs::CertDir(run_dir.join("certs"));
        topology::certs::generate(&topo, &certs, &Default::default())
            .context("making the federation's certificates")?;
        topo.tls = Some(certs.spec());
        let broker_admin = {
            let (cert, key) = certs.admin();
            docfed_broker::BrokerTls::load(&cert, &key, &certs.ca(), Some(&certs.crl()))
                .map_err(anyhow::Error::msg)?
        };

        // Brokers, started together (each takes seconds): TLS only, a user per node.
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for n in &topo.nodes {
            let key = match opts.brokers {
                BrokerLayout::Tier => n.tier.to_string(),
                BrokerLayout::Node => n.id.clone(),
            };
            groups.entry(key).or_default().push(n.id.clone());
        }
        eprintln!(
            "endurance: starting {} private rabbitmq-server instances ({:?} layout)",
            groups.len(),
            opts.brokers
        );
        let broker_dir = run_dir.join("brokers");
        std::fs::create_dir_all(&broker_dir)?;
        let mut ports = Vec::new();
        for _ in &groups {
            let mut p = broker::free_broker_port()?;
            while ports.contains(&p) {
                p = broker::free_broker_port()?;
            }
            ports.push(p);
        }
        let tag = std::process::id();
        let starts = groups.keys().zip(&ports).map(|(g, &port)| {
            let dir = broker_dir.clone();
            let name = format!("docfed-e{tag}-{g}");
            let (certs, topo) = (&certs, &topo);
            async move { PrivateBroker::start_secure(&dir, &name, port, certs, topo).await }
        });
        let started = futures::future::join_all(starts).await;
        let mut brokers = Vec::new();
        let mut failure = None;
        for ((g, nodes), b) in groups.into_iter().zip(started) {
            match b {
                Ok(broker) => brokers.push(BrokerSlot {
                    name: g,
                    broker,
                    nodes,
                }),
                Err(e) => failure = Some(e.context(format!("broker for {g}"))),
            }
        }
        if let Some(e) = failure {
            for b in brokers {
                let _ = b.broker.remove().await;
            }
            return Err(e);
        }
        let broker_index: HashMap<String, usize> = brokers
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.nodes.iter().map(move |n| (n.clone(), i)))
            .collect();
        topo.amqp_url = None;
        for n in &mut topo.nodes {
            n.amqp_url = Some(brokers[broker_index[&n.id]].broker.url());
        }
        let topo_file = run_dir.join("topology.toml");
        std::fs::write(&topo_file, toml::to_string(&topo)?)?;
        Topology::load_validated(&topo_file).context("the rewritten topology")?;

        // A proxy for every directed pair, HTTP and AMQP.
        let mut http_links = BTreeMap::new();
        let mut amqp_links = BTreeMap::new();
        let mut args_by_id: HashMap<String, Vec<String>> = HashMap::new();
        for a in &topo.nodes {
            let mut http_routes = Vec::new();
            let mut amqp_routes = Vec::new();
            for b in topo.nodes.iter().filter(|b| b.id != a.id) {
                let h = Link::start(b.http).await?;
                http_routes.push(format!("{}={}", b.id, h.addr()));
                http_links.insert((a.id.clone(), b.id.clone()), h);
                let port = brokers[broker_index[&b.id]].broker.port();
                let q = Link::start(([127, 0, 0, 1], port).into()).await?;
                amqp_routes.push(format!(
                    "{}=amqps://localhost:{}/%2f?auth_mechanism=external",
                    b.id,
                    q.addr().port()
                ));
                amqp_links.insert((a.id.clone(), b.id.clone()), q);
            }
            let mut args = vec![
                "--peer-http".into(),
                http_routes.join(","),
                "--peer-amqp".into(),
                amqp_routes.join(","),
            ];
            for (tier, extra) in &opts.tier_args {
                if *tier == a.tier {
                    args.extend(extra.iter().cloned());
                }
            }
            args_by_id.insert(a.id.clone(), args);
        }

        // The small disk: the last regional node's data directory on a tmpfs.
        let fed_dir = run_dir.join("nodes");
        let (disk, disk_note) = match opts.disk_size {
            None => (None, Some("not requested".to_owned())),
            Some(size) => {
                let node = topo
                    .nodes
                    .iter()
                    .rev()
                    .find(|n| n.tier == Tier::Regional)
                    .map(|n| n.id.clone());
                match node {
                    None => (None, Some("no regional node".to_owned())),
                    Some(node) => {
                        let dir = fed_dir.join(&node);
                        match mount_tmpfs(&dir, size) {
                            Ok(()) => (
                                Some(SmallDisk {
                                    node,
                                    dir,
                                    size,
                                    fault_active: Arc::default(),
                                }),
                                None,
                            ),
                            Err(e) => (None, Some(format!("no tmpfs: {e:#}"))),
                        }
                    }
                }
            }
        };

        // The topology names the certificates made above; this harness trusts their CA.
        let mut up = UpOptions::new(&topo_file, &fed_dir);
        up.broker = BrokerChoice::AsWritten;
        up.start_portal = false;
        up.verbose = false;
        // Content sealed at rest, with a key kept beside (not inside) the nodes' data.
        let key_file = run_dir.join("content.key");
        std::fs::write(&key_file, hex_key())?;
        let content_keys = Some(docfed_atrest::Keys {
            current: docfed_atrest::ContentKey::load(&key_file).map_err(anyhow::Error::msg)?,
            old: Vec::new(),
        });
        up.node_args = opts.node_args.clone();
        up.node_args.extend([
            "--content-key-file".to_owned(),
            key_file.display().to_string(),
        ]);
        up.node_args_by_id = args_by_id;
        up.health_timeout = Duration::from_secs(60);
        up.stop_timeout = Duration::from_secs(10);
        let fed = match Federation::up(up).await {
            Ok(f) => f,
            Err(e) => {
                for b in brokers {
                    let _ = b.broker.remove().await;
                }
                if let Some(d) = &disk {
                    unmount(&d.dir);
                }
                return Err(e.context("starting the nodes"));
            }
        };
        let token = fed.token().to_owned();
        let http = docfed_http::tls::reqwest_trusting(fed.manifest().ca.as_deref())?
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(Cluster {
            fed,
            topo,
            brokers,
            http_links,
            amqp_links,
            disk,
            disk_note,
            http,
            token,
            content_keys,
            broker_admin,
        })
    }

    pub fn ids(&self, tier: Tier) -> Vec<String> {
        self.topo
            .nodes
            .iter()
            .filter(|n| n.tier == tier)
            .map(|n| n.id.clone())
            .collect()
    }

    pub fn all_ids(&self) -> Vec<String> {
        self.topo.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// Base URL of node `id`, reached directly (not through a proxy).
    pub fn url(&self, id: &str) -> String {
        // The launcher's URL: `https` when it gave the federation certificates.
        self.fed.node(id).map(|n| n.url()).unwrap_or_default()
    }

    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.fed
            .node(id)
            .map(|n| n.data_dir().to_owned())
            .unwrap_or_default()
    }

    /// The links between `a` and `b`, both directions, HTTP and AMQP.
    pub fn links_between(&self, a: &str, b: &str) -> Vec<&Link> {
        let mut out = Vec::new();
        for (x, y) in [(a, b), (b, a)] {
            let key = (x.to_owned(), y.to_owned());
            out.extend(self.http_links.get(&key));
            out.extend(self.amqp_links.get(&key));
        }
        out
    }

    /// Stops the nodes, the brokers and unmounts the small disk. Data stay for inspection.
    pub async fn shutdown(&mut self) {
        if let Err(e) = self.fed.shutdown().await {
            eprintln!("endurance: stopping the nodes: {e:#}");
        }
        for b in &mut self.brokers {
            if let Err(e) = b.broker.stop().await {
                eprintln!("endurance: stopping broker {}: {e:#}", b.name);
            }
        }
        if let Some(d) = &self.disk {
            // The tmpfs goes with the unmount: keep the log and database for inspection.
            let keep = d.dir.with_extension("saved");
            let _ = std::fs::create_dir_all(&keep);
            for f in [
                "node.log",
                "node.sqlite",
                "node.sqlite-wal",
                "node.sqlite-shm",
            ] {
                let _ = std::fs::copy(d.dir.join(f), keep.join(f));
            }
            unmount(&d.dir);
        }
    }
}

fn mount_tmpfs(dir: &Path, size: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    mount(
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ],
        dir,
    )
}

/// Changes the size of the tmpfs mounted at `dir` (it refuses a size below what it holds).
pub fn resize_tmpfs(dir: &Path, size: u64) -> Result<()> {
    mount(&["-o", &format!("remount,size={size}")], dir)
}

/// Runs `mount ARGS DIR`; its error output becomes the error.
fn mount(args: &[&str], dir: &Path) -> Result<()> {
    let out = std::process::Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .context("cannot run mount")?;
    if !out.status.success() {
        bail!(
            "mount {} {} failed: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn unmount(dir: &Path) {
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(dir)
        .status();
}

/// Removes what an earlier run left in `dir` (unmounting a leftover tmpfs first).
fn clean_previous_run(dir: &Path) -> Result<()> {
    let nodes = dir.join("nodes");
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        for line in mounts.lines() {
            if let Some(point) = line.split(' ').nth(1) {
                if Path::new(point).starts_with(&nodes) {
                    unmount(Path::new(point));
                }
            }
        }
    }
    for sub in ["nodes", "brokers", "topology.toml"] {
        let p = dir.join(sub);
        if p.is_dir() {
            std::fs::remove_dir_all(&p)
                .with_context(|| format!("cannot remove {}", p.display()))?;
        } else if p.exists() {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// A random content key, as 64 hex digits.
fn hex_key() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
