//! Federations for measurements: the demo shape (or the four-tier one) on free ports, ids
//! prefixed so runs never share queues, started as real processes through `topology::launch`.

use std::path::Path;

use anyhow::{Context, Result};
use topology::launch::{BrokerChoice, Federation, UpOptions};

pub struct Bench {
    pub fed: Federation,
    pub prefix: String,
}

impl Bench {
    pub fn id(&self, role: &str) -> String {
        topology::demo::node_id(&self.prefix, role)
    }

    pub fn url(&self, role: &str) -> String {
        self.fed
            .node(&self.id(role))
            .expect("node of the demo shape")
            .url()
    }

    /// The federation CA, and an HTTP client that trusts it (a federation started with TLS).
    pub fn tls_client(&self) -> Result<(std::path::PathBuf, reqwest::Client)> {
        let ca = self
            .fed
            .manifest()
            .ca
            .clone()
            .context("a TLS federation names its CA")?;
        let http = docfed_http::tls::reqwest_trusting(Some(&ca))?.build()?;
        Ok((ca, http))
    }

    pub fn pid(&self, role: &str) -> Option<u32> {
        self.fed.node(&self.id(role)).and_then(|n| n.pid())
    }
}

/// Starts the demo shape under `dir` with `node_args` for every node.
pub async fn start(dir: &Path, broker: BrokerChoice, node_args: &[&str]) -> Result<Bench> {
    start_shape(dir, broker, node_args, &topology::demo::SHAPE).await
}

/// Starts `shape` (`topology::demo::SHAPE` or `four_tier()`) under `dir` with `node_args` for
/// every node.
pub async fn start_shape(
    dir: &Path,
    broker: BrokerChoice,
    node_args: &[&str],
    shape: &[topology::demo::Row],
) -> Result<Bench> {
    start_shape_as(dir, broker, node_args, shape, false).await
}

/// [`start_shape`], with TLS on every link when `tls` (certificates and the federation's own
/// broker from `up`; clients trust `fed.manifest().ca`), in clear otherwise.
pub async fn start_shape_as(
    dir: &Path,
    broker: BrokerChoice,
    node_args: &[&str],
    shape: &[topology::demo::Row],
    tls: bool,
) -> Result<Bench> {
    let prefix = format!(
        "b{:06x}",
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos()
                >> 8)
    );
    let ports = topology::demo::free_port_list(shape.len())?;
    let t = topology::demo::shape_toml(shape, &prefix, &ports, None, |_| None);
    std::fs::create_dir_all(dir)?;
    let file = dir.join("topology.toml");
    std::fs::write(&file, t)?;
    let mut opts = UpOptions::new(&file, dir.join("run"));
    // In clear unless measuring TLS itself (`bench --only secure`).
    opts.insecure = !tls;
    opts.broker = broker;
    opts.start_portal = false;
    opts.verbose = false;
    opts.node_args = node_args.iter().map(|s| s.to_string()).collect();
    let fed = Federation::up(opts)
        .await
        .context("starting the federation")?;
    Ok(Bench { fed, prefix })
}
