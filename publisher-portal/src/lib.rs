//! `docfed-portal`: the authors' web portal. Authors log in, publish documents (streamed
//! straight through to a primary, never buffered), publish new versions, delete and reactivate
//! them, watch them spread through the federation and vet the annotations readers send back.
//!
//! The portal is an ordinary HTTP client of the two primaries (ARCHITECTURE.md §6.2): it depends on
//! `docfed-shared` for the wire types and never on the node. Its own state (authors, sessions,
//! which author owns which document) lives in SQLite in its data directory.
//!
//! # Layout
//! ```text
//! config.rs     command line → validated Config
//! db.rs         SQLite: authors, sessions, login failures, owned documents (+ metadata cache)
//! auth.rs       Argon2 passwords (capped verifier), session ids, CSRF tokens, login rate
//!               limit, the `next=` check, cookies
//! forwarded.rs  the client address behind trusted reverse proxies (X-Forwarded-For)
//! primaries.rs  the failover pair: health, preference, retries, typed calls, presence cache
//! federation.rs every node's health, queues and last error, from what the primaries know
//! sources.rs    each reachback source: which primary runs it, each primary's record of its runs
//! upload/       multipart upload → bounded channel → streaming request to one primary;
//!               form.rs: the text fields checked against the node's limits
//! web/          router (mod.rs), session middleware (session.rs), login, documents,
//!               propagation, annotations handlers
//! views.rs      HTML (maud, escaped), assets/ (CSS, a little JS)
//! error.rs      PortalError → status + page
//! ```

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod federation;
pub mod forwarded;
pub mod primaries;
pub mod sources;
pub mod upload;
pub mod views;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use docfed_shared::ready::READY_FILE;

use crate::config::Config;
use crate::db::Db;
use crate::primaries::Primaries;

/// Serves the portal on an already bound `listener` until `cancel` fires, then lets in-flight
/// requests finish for up to `shutdown_timeout`.
pub async fn run(
    config: Arc<Config>,
    listener: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let db = Db::open(&config.data_dir).await?;
    let primaries = Arc::new(Primaries::new(&config).context("cannot build the HTTP client")?);
    // One round of health probes first, so the first page already knows which primary is up.
    let _ = tokio::time::timeout(Duration::from_secs(3), primaries.probe_all()).await;

    let tracker = TaskTracker::new();
    tracker.spawn(primaries.clone().run_prober(cancel.clone()));
    tracker.spawn(purge_loop(db.clone(), cancel.clone()));

    let addr = listener.local_addr()?;
    docfed_shared::ready::Ready::for_this_process(None, addr)
        .over_tls(config.tls.is_some())
        .write(&config.data_dir)
        .with_context(|| {
            format!(
                "cannot write {}",
                config.data_dir.join(READY_FILE).display()
            )
        })?;
    tracing::info!(
        http = %addr,
        primaries = ?config.primaries.iter().map(|p| &p.url).collect::<Vec<_>>(),
        regions = ?config.regions,
        trusted_proxies = %config.trusted_proxies,
        max_concurrent_logins = config.max_concurrent_logins,
        "portal listening"
    );

    let app = web::router(web::AppState {
        config: config.clone(),
        db: db.clone(),
        primaries,
        verifier: Arc::new(auth::Verifier::new(
            config.max_concurrent_logins,
            auth::VERIFY_QUEUE_WAIT,
        )),
    })
    // A bug must not show a stack trace or drop the connection: a plain page, details in the log
    // (the panic hook prints them).
    .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_page));
    // Every request carries the peer's address as `ConnectInfo<SocketAddr>`.
    let tls = match &config.tls {
        Some((cert, key)) => Some(docfed_http::TlsServer {
            config: docfed_http::tls::server_config_without_clients(cert, key)
                .context("TLS server")?,
            trust: None,
            also_plain: false,
        }),
        None => None,
    };
    let serve = docfed_http::serve(listener, app, config.http_limits, tls, cancel.clone());
    let mut server = tokio::spawn(serve);

    let result = tokio::select! {
        r = &mut server => {
            // The server stopped by itself: stop the rest too.
            cancel.cancel();
            r.context("HTTP server task failed")
        }
        _ = cancel.cancelled() => {
            match tokio::time::timeout(config.shutdown_timeout, &mut server).await {
                Ok(r) => r.context("HTTP server task failed"),
                Err(_) => {
                    tracing::warn!(timeout = ?config.shutdown_timeout, "requests still running at the shutdown deadline; dropping them");
                    server.abort();
                    Ok(())
                }
            }
        }
    };
    tracker.close();
    tracker.wait().await;
    db.close().await;
    tracing::info!("portal stopped");
    result
}

fn panic_page(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        axum::response::Html(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Internal \
             error · docfed portal</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head>\
             <body><main><h1>Internal error</h1><p>The portal hit a bug while handling this request. \
             Nothing more is shown here; the operator finds the details in the portal's log.</p>\
             <p><a href=\"/documents\">Back to my documents</a></p></main></body></html>",
        ),
    )
        .into_response()
}

/// Drops expired sessions and old login failures every ten minutes.
async fn purge_loop(db: Db, cancel: CancellationToken) {
    loop {
        if let Err(e) = db.purge(auth::FAILURE_WINDOW).await {
            tracing::warn!(error = %e, "cannot purge expired sessions");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    }
}
