//! One `docfed-node` of its own, outside any federation, for the scenarios that fill a single
//! node's directory.

use std::path::Path;

use anyhow::{Context, Result};
use docfed_bench_kit::process::await_ready;
use docfed_shared::ready::Ready;

pub(crate) struct Standalone {
    pub child: tokio::process::Child,
    pub url: String,
}

pub(crate) async fn standalone(dir: &Path, token: &str) -> Result<Standalone> {
    let bin = topology::launch::find_program("docfed-node")
        .context("docfed-node not found: cargo build --release -p docfed-node")?;
    std::fs::create_dir_all(dir)?;
    Ready::remove(dir);
    let log_path = dir.join("node.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = tokio::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--http",
            "127.0.0.1:0",
            "--token",
            token,
            "--reserved-space",
            "0",
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("docfed-node exited at once")?;
    let ready = await_ready(dir, pid, &log_path, || child.try_wait())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Standalone {
        child,
        url: ready.http,
    })
}
