//! Federations for measurements: the demo shape on free ports, ids prefixed so runs never share
//! queues, started as real processes through `topology::launch`.

use std::path::Path;

use anyhow::{Context, Result};
use topology::launch::{BrokerChoice, Federation, UpOptions};

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub struct Bench {
    pub fed: Federation,
    pub prefix: String,
}

impl Bench {
    pub fn id(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    pub fn url(&self, role: &str) -> String {
        self.fed
            .node(&self.id(role))
            .expect("node of the demo shape")
            .url()
    }

    pub fn pid(&self, role: &str) -> Option<u32> {
        self.fed.node(&self.id(role)).and_then(|n| n.pid())
    }
}

/// Starts the demo shape under `dir` with `node_args` for every node.
pub async fn start(dir: &Path, broker: BrokerChoice, node_args: &[&str]) -> Result<Bench> {
    let prefix = format!(
        "b{:06x}",
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos()
                >> 8)
    );
    let id = |r: &str| format!("{prefix}-{r}");
    let mut t = String::from("redundancy = 2\n");
    /// role, tier, region, parents, backup
    type Row<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a [&'a str],
        Option<&'a str>,
    );
    let nodes: [Row; 7] = [
        ("primary-a", "primary", None, &[], None),
        ("primary-b", "primary", None, &[], None),
        (
            "mid-1",
            "intermediate",
            None,
            &["primary-a", "primary-b"],
            None,
        ),
        (
            "mid-2",
            "intermediate",
            None,
            &["primary-a", "primary-b"],
            None,
        ),
        (
            "na",
            "regional",
            Some("na"),
            &["mid-1", "mid-2"],
            Some("eu"),
        ),
        (
            "eu",
            "regional",
            Some("eu"),
            &["mid-1", "mid-2"],
            Some("asia"),
        ),
        (
            "asia",
            "regional",
            Some("asia"),
            &["mid-1", "mid-2"],
            Some("na"),
        ),
    ];
    for (role, tier, region, parents, backup) in nodes {
        t.push_str(&format!(
            "\n[[node]]\nid = {:?}\ntier = {tier:?}\nhttp = \"127.0.0.1:{}\"\n",
            id(role),
            free_port()?
        ));
        if let Some(r) = region {
            t.push_str(&format!("region = {r:?}\n"));
        }
        if !parents.is_empty() {
            let ps: Vec<String> = parents.iter().map(|p| format!("{:?}", id(p))).collect();
            t.push_str(&format!("parents = [{}]\n", ps.join(", ")));
        }
        if let Some(b) = backup {
            t.push_str(&format!("backup = {:?}\n", id(b)));
        }
    }
    std::fs::create_dir_all(dir)?;
    let file = dir.join("topology.toml");
    std::fs::write(&file, t)?;
    let mut opts = UpOptions::new(&file, dir.join("run"));
    opts.broker = broker;
    opts.start_portal = false;
    opts.verbose = false;
    opts.node_args = node_args.iter().map(|s| s.to_string()).collect();
    let fed = Federation::up(opts)
        .await
        .context("starting the federation")?;
    Ok(Bench { fed, prefix })
}
