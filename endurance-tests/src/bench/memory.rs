//! Scenario `memory`: each tier's resident memory, idle and while a very large document passes.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use docfed_bench_kit::procfs;

use super::amqp;
use super::client::{await_available, publish};
use crate::fedgen;

/// How long the memory scenario lets a started federation run before reading its idle RSS.
pub(super) const IDLE_SETTLE: Duration = Duration::from_secs(10);

/// Scenario 4: RSS of each tier when idle, and its peak while a very large document is
/// published and propagated.
pub(super) async fn memory(dir: &Path, quick: bool) -> Result<()> {
    let size: u64 = if quick { 1 << 30 } else { 4 << 30 };
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let b = fedgen::start(dir, amqp(), &[]).await?;
    let token = b.fed.token().to_owned();
    // Idle: every node connected, probed its peers and ran its first background rounds.
    tokio::time::sleep(IDLE_SETTLE).await;
    for role in ["primary-a", "mid-1", "na"] {
        let rss = b.pid(role).and_then(procfs::rss).unwrap_or(0);
        println!(
            "{role:>10}: idle RSS {:.1} MiB after {IDLE_SETTLE:?} (goal < 40 MiB)",
            rss as f64 / 1048576.0
        );
    }
    let p = publish(&http, &b.url("primary-a"), &token, "title=huge", size, 3).await?;
    let id = p["id"].as_str().context("id")?;
    for r in ["na", "eu", "asia"] {
        await_available(&http, &b.url(r), id, Duration::from_secs(7200)).await?;
    }
    for role in ["primary-a", "primary-b", "mid-1", "na"] {
        let peak = b.pid(role).and_then(procfs::peak_rss).unwrap_or(0);
        println!(
            "{role:>10}: peak RSS {:.1} MiB with a {} MiB document (goal < 40 MiB)",
            peak as f64 / 1048576.0,
            size >> 20
        );
    }
    let mut fed = b.fed;
    fed.shutdown().await?;
    // Benchmark federations on the shared broker leave no queues behind.
    fed.discard();
    Ok(())
}
