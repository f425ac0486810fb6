//! `docfed-node`: the node daemon that every tier of a docfed federation runs.
//!
//! # Layout
//! * [`config`] — flags, environment and file merged into one validated [`NodeConfig`].
//! * [`db`] — SQLite through sqlx: documents, versions, change feed and the federation's tables;
//!   one writer connection, a pool of readers.
//! * [`store`] — the content-addressed object store; uploads stream to disk while hashed.
//! * [`edits`] — local edits (publish, new version, tombstone, reactivate) as single
//!   transactions over database and store.
//! * [`api`] — the HTTP API of DESIGN section 8.
//!
//! [`run`] serves a bound listener until the cancellation token fires, then shuts down in order:
//! stop accepting, let in-flight requests finish (under a deadline), close the database.

pub mod api;
pub mod config;
pub mod db;
pub mod edits;
pub mod error;
pub mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::NodeConfig;
use db::Db;
use store::Store;

/// Everything a request handler needs.
pub struct Node {
    pub config: Arc<NodeConfig>,
    pub db: Db,
    pub store: Store,
}

/// Where a node that was asked for port 0 says which address it got, for launchers and tests.
pub const READY_FILE: &str = "ready.json";

/// Runs a node on an already bound listener until `cancel` fires.
pub async fn run(
    config: Arc<NodeConfig>,
    listener: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let db_path = config.data_dir.join("node.sqlite");
    let db = Db::open(&db_path)
        .await
        .with_context(|| format!("cannot open database {}", db_path.display()))?;
    let store = Store::open(&config.data_dir, config.reserved_space)
        .with_context(|| format!("cannot open content store in {}", config.data_dir.display()))?;
    let node = Arc::new(Node {
        config: config.clone(),
        db: db.clone(),
        store,
    });

    let addr = listener.local_addr()?;
    write_ready_file(&config.data_dir, &config.node_id, addr)?;
    tracing::info!(node = %config.node_id, http = %format!("http://{addr}"), data_dir = %config.data_dir.display(), "node ready");

    let server = axum::serve(listener, api::router(node))
        .with_graceful_shutdown(cancel.clone().cancelled_owned());
    let deadline = async {
        cancel.cancelled().await;
        tokio::time::sleep(config.shutdown_timeout).await;
    };
    tokio::select! {
        r = server => r.context("HTTP server failed")?,
        () = deadline => tracing::warn!(timeout = ?config.shutdown_timeout, "in-flight requests cut off at shutdown deadline"),
    }
    db.close().await;
    let _ = std::fs::remove_file(config.data_dir.join(READY_FILE));
    tracing::info!("node stopped");
    Ok(())
}

fn write_ready_file(dir: &Path, node: &str, addr: SocketAddr) -> std::io::Result<()> {
    let body = serde_json::json!({
        "node": node,
        "http": format!("http://{addr}"),
        "pid": std::process::id(),
    });
    let tmp = dir.join(format!("{READY_FILE}.tmp"));
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(tmp, dir.join(READY_FILE))
}
