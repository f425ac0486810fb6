//! `docfed-endurance bench`: measurements of a real federation on this machine. Every figure
//! is printed next to a baseline measured in the same run (curl, MD5 speed, the other mode), so
//! ratios stay meaningful from one machine to the next.
//!
//! One module per scenario family, each with its baseline and printout: [`transfer`] (a large
//! document through the tiers: `large`, `deep`), [`secure`] (what encryption at rest and TLS
//! cost), [`fanout`], [`directory`], [`memory`], [`broker`] (restart recovery), [`device`] and
//! [`peers`] (docfed against Syncthing). What they share: [`client`] (publishing and awaiting
//! documents over HTTP), [`standalone`] (one node of its own) and [`docgen`] (realistic
//! directory metadata and the search mix over it).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use topology::launch::BrokerChoice;

mod broker;
mod client;
mod device;
mod directory;
mod docgen;
mod fanout;
mod memory;
mod peers;
mod secure;
mod standalone;
mod transfer;

pub struct Options {
    pub only: Option<String>,
    pub quick: bool,
    pub dir: PathBuf,
}

pub const SCENARIOS: [&str; 9] = [
    "large",
    "secure",
    "deep",
    "fanout",
    "directory",
    "memory",
    "broker",
    "device",
    "peers",
];

pub async fn run(opts: Options) -> Result<()> {
    if let Some(only) = &opts.only {
        if !SCENARIOS.contains(&only.as_str()) {
            bail!("unknown scenario {only:?}; one of {}", SCENARIOS.join(", "));
        }
    }
    std::fs::create_dir_all(&opts.dir)?;
    for name in SCENARIOS {
        if opts.only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        println!("\n=== {name} ===");
        let dir = opts.dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        match name {
            "large" => transfer::large(&dir, opts.quick).await?,
            "secure" => secure::secure(&dir, opts.quick).await?,
            "deep" => transfer::deep(&dir, opts.quick).await?,
            "fanout" => fanout::fanout(&dir, opts.quick).await?,
            "directory" => directory::directory(&dir, opts.quick).await?,
            "memory" => memory::memory(&dir, opts.quick).await?,
            "broker" => broker::broker(&dir, opts.quick).await?,
            "device" => device::device(&dir, opts.quick).await?,
            "peers" => peers::peers(&dir, opts.quick).await?,
            _ => unreachable!(),
        }
    }
    Ok(())
}

pub(crate) fn amqp() -> BrokerChoice {
    BrokerChoice::Auto(
        std::env::var("DOCFED_AMQP_URL")
            .unwrap_or_else(|_| docfed_shared::topology::DEFAULT_AMQP_URL.into()),
    )
}

/// The pace of the "paced" runs' links: `DOCFED_BENCH_LINK_RATE`, default `50MB` (per second).
pub(crate) fn link_rate() -> String {
    std::env::var("DOCFED_BENCH_LINK_RATE").unwrap_or_else(|_| "50MB".into())
}

/// Megabytes (10^6 bytes) per second.
fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}
