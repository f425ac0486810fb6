//! `docfed-node`: the node daemon that every tier of a docfed federation runs.
//!
//! # Layout
//! Every module, in the order a request or a message meets them:
//! * [`config`] — every setting declared once (`config::Settings`: flag, `DOCFED_*` variable,
//!   file key and default from one field); the layers merged (`config::layer`) and validated
//!   into one [`NodeConfig`] (`tls`, `keys`, `retention`: the parts that read files).
//! * [`token`] — the bearer token for writes: given, read from a file, or generated once.
//! * [`api`] — the HTTP API of ARCHITECTURE.md §6.2: routing, auth and body parsing in `mod.rs`,
//!   one module per resource (documents, content, changes, search, events, devices,
//!   annotations, propagation, peers, sources, metrics, admin, retention, health). Every JSON
//!   body is a type of `docfed_shared::wire`.
//! * [`error`] — `ApiError` and its HTTP status and `ErrorBody`.
//! * [`db`] — SQLite through sqlx, and all of the node's SQL: documents and versions, change
//!   feed and import (`documents`, `import`), pulls (`fetches`), outbox, receipts and
//!   annotations (`messages`), devices and flags, reachback sources; one writer connection, a
//!   pool of readers.
//! * [`store`] — the content-addressed object store and the data directory; uploads stream to
//!   disk while hashed.
//! * [`atrest`] — content sealed at rest: `docfed-atrest`'s format, and the node's key-id check,
//!   ranged reads and re-encryption of its store.
//! * [`edits`] — local edits (publish, new version, tombstone, reactivate, source items) as
//!   single transactions over database and store, recorded in groups (`edits::recorder`).
//! * [`federation`] — what makes a node part of a federation: its set-up from the topology
//!   (`setup`), routing, the outbox relay and the inbox (`outbox`, `inbox`, `admission`), the
//!   broker session loop they share (`session`, over `amqp`), pulls (`fetch` schedules, `pull`
//!   transfers, `transfers` serves them while they arrive, `ondemand` for readers), `release`
//!   of flag-only content, and `presence` (mDNS and health probes).
//! * [`events`] — push hints for devices (`GET /v1/events`), fed after commits.
//! * [`retention`] — collection of content the node no longer needs, pruning of old rows,
//!   change-feed compaction.
//! * [`reachback`] — external sources the primaries publish (`watch`ed folders, polled `http`
//!   URLs, operators' `exec` programs, `lazy` items' bytes), each run by one primary under a
//!   broker `lease`.
//! * [`metrics`] — the Prometheus counters and their rendering.
//! * [`supervisor`] — every background task by name, its state and last error; fail-stop; the
//!   one retry backoff.
//!
//! [`run`] serves a bound listener until the cancellation token fires, then shuts down in order:
//! stop accepting, let in-flight requests finish (under a deadline), close the database.

pub(crate) mod api;
pub mod atrest;
pub mod config;
pub(crate) mod db;
pub(crate) mod edits;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod federation;
pub(crate) mod metrics;
pub(crate) mod reachback;
pub(crate) mod retention;
pub(crate) mod small_objects;
pub(crate) mod store;
pub(crate) mod supervisor;
pub(crate) mod token;

/// Connecting to a federation's broker as a node does (`amqps://` with a certificate), for the
/// node's integration tests (other programs use `docfed-broker`).
pub use federation::amqp;

use std::sync::Arc;

use anyhow::Context;
use docfed_shared::ready::Ready;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::NodeConfig;
use db::Db;
use store::Store;

/// Everything a request handler and a background task needs.
pub struct Node {
    pub config: Arc<NodeConfig>,
    pub db: Db,
    pub store: Store,
    pub metrics: metrics::Metrics,
    /// Pulls in progress, readable while they arrive (stream-through).
    pub transfers: federation::transfers::Transfers,
    /// HTTP clients for pulls from and probes of other nodes: over TLS, a topology peer's
    /// accepts only that node's certificate, so another node (or the portal, or the broker) on
    /// its address or a route to it cannot answer for it ([`Node::http_for`]).
    pub http: federation::peer_http::PeerClients,
    /// Scheduled pulls in progress, stoppable (a dropped fetch).
    pub pulls: federation::fetch::Running,
    /// Wakes the fetch scheduler when a pull was queued.
    pub fetch_wake: tokio::sync::Notify,
    /// Bumped when outbox rows were committed; the outbox dispatcher watches it.
    pub outbox_wake: tokio::sync::watch::Sender<u64>,
    /// Per target node: wakes its relay when rows for it are queued (`outbox::dispatch`).
    pub relay_wakes: std::collections::HashMap<String, tokio::sync::Notify>,
    pub inbox_connected: std::sync::atomic::AtomicBool,
    pub peers: federation::presence::PeerTable,
    /// Slots for cross-region transfers started by readers (`max_ondemand_pulls`).
    pub ondemand_slots: Arc<tokio::sync::Semaphore>,
    /// Hints for devices' event streams (`GET /v1/events`).
    pub events: events::Events,
    /// Collections of content and old rows (ARCHITECTURE.md §4.4).
    pub retention: retention::Retention,
    /// Every background task, by name, with its state (ARCHITECTURE.md §5.4).
    pub supervisor: Arc<supervisor::Supervisor>,
    /// Reachback sources this node runs now (ARCHITECTURE.md §2.9).
    pub sources: reachback::Held,
    /// Local edits waiting to be recorded (`edits::recorder`).
    pub edits: edits::Edits,
}

impl Node {
    pub fn federation(&self) -> Option<&federation::Federation> {
        self.config.federation.as_ref()
    }

    /// The client to reach the node at `url` (a base URL as advertised, or one below it) with:
    /// the one that accepts only that node's certificate when the topology has a node there.
    pub fn http_for(&self, url: &str) -> reqwest::Client {
        self.http
            .for_node(self.federation().and_then(|f| f.node_at(url)))
    }

    /// Tells event streams where the change feed is now; call after a commit that may have
    /// recorded changes.
    pub async fn changes_committed(&self) {
        match self.db.last_seq().await {
            Ok(seq) => self.events.changed(seq),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the change feed's position for event streams")
            }
        }
    }

    /// Tells event streams that the content of `id` version `version` is held here now, if a
    /// device of this node flags the document.
    pub async fn content_available(&self, id: docfed_shared::DocId, version: i64) {
        // No event stream open: no lookup (one statement per pulled document otherwise). A
        // stream opened meanwhile catches up from the directory's seq.
        if !self.events.hears_available() {
            return;
        }
        if matches!(
            db::devices::flagged_by_any(self.db.reader(), &id).await,
            Ok(true)
        ) {
            self.events.available(id, version);
        }
    }

    pub fn wake_outbox(&self) {
        self.outbox_wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Nodes that hold content of this scope: its regional nodes, then the primaries.
    pub fn holders(&self, scope: &docfed_shared::Scope) -> Vec<String> {
        let Some(fed) = self.federation() else {
            return Vec::new();
        };
        let topo = &fed.topology;
        let mut out: Vec<String> = match scope {
            docfed_shared::Scope::Global => topo.regionals().map(|n| n.id.clone()).collect(),
            docfed_shared::Scope::Region(r) => topo
                .holders_of_region(r)
                .into_iter()
                .map(|n| n.id.clone())
                .collect(),
        };
        out.extend(topo.primaries().map(|n| n.id.clone()));
        out
    }

    /// Whether presence knows the node at `url` to be unreachable right now.
    pub fn presence_says_down(&self, url: &str) -> bool {
        self.peers.is_down(url)
    }
}

/// Runs a node on an already bound listener until `cancel` fires.
pub async fn run(
    config: Arc<NodeConfig>,
    listener: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let db_path = config.data_dir.join("node.sqlite");
    let mut db = Db::open(&db_path)
        .await
        .with_context(|| format!("cannot open database {}", db_path.display()))?;
    db.set_search_deadline(config.search_deadline);
    crate::atrest::check_data_dir(&config.data_dir, config.content_keys.as_ref())
        .map_err(anyhow::Error::msg)?;
    let store = Store::open(
        &config.data_dir,
        config.reserved_space,
        config.content_keys.clone().map(Arc::new),
    )
    .with_context(|| format!("cannot open content store in {}", config.data_dir.display()))?
    .with_small_max(config.small_object_max);
    // Peers are reached over TLS with this node's certificate (and only the federation CA is
    // trusted); a standalone node pulls from no one.
    let tls = config
        .tls
        .as_ref()
        .and_then(|t| t.trust.as_ref().map(|tr| (t.clone(), tr.clone())));
    let trust = tls.as_ref().map(|(_, trust)| trust.clone());
    let client = move |expect: docfed_http::tls::Expect| -> anyhow::Result<reqwest::Client> {
        let builder = match &tls {
            Some((tls, trust)) => trust
                .reqwest_for(Some((&tls.cert, &tls.key)), expect)
                .context("TLS client")?,
            None => docfed_http::tls::client_builder(),
        };
        builder
            // A connection to a peer revoked since it opened is not checked again: idle ones
            // are dropped soon, so a revocation also takes effect in this direction within
            // seconds.
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .connect_timeout(std::time::Duration::from_secs(5))
            .read_timeout(std::time::Duration::from_secs(60))
            // Pulls go to topology nodes only; a redirect could send them anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("HTTP client")
    };
    let peers = config
        .federation
        .iter()
        .flat_map(|f| f.others())
        .map(|n| n.id.clone())
        .collect();
    let http = federation::peer_http::PeerClients::new(trust, peers, Box::new(client))?;
    let node = Arc::new(Node {
        config: config.clone(),
        db: db.clone(),
        store,
        metrics: metrics::Metrics::default(),
        transfers: Default::default(),
        http,
        pulls: Default::default(),
        fetch_wake: tokio::sync::Notify::new(),
        outbox_wake: tokio::sync::watch::Sender::new(0),
        relay_wakes: config
            .federation
            .iter()
            .flat_map(|f| f.others())
            .map(|n| (n.id.clone(), tokio::sync::Notify::new()))
            .collect(),
        inbox_connected: std::sync::atomic::AtomicBool::new(false),
        peers: Default::default(),
        ondemand_slots: Arc::new(tokio::sync::Semaphore::new(config.max_ondemand_pulls)),
        events: events::Events::new(
            db.last_seq().await.context("change feed position")?,
            config.max_event_streams,
            config.max_event_streams_per_device,
            cancel.clone(),
        ),
        retention: Default::default(),
        supervisor: Arc::new(supervisor::Supervisor::new(cancel.clone())),
        sources: Default::default(),
        edits: Default::default(),
    });
    let supervisor = node.supervisor.clone();
    let sup = &node.supervisor;
    if node.store.keys().is_some() {
        // After a key rotation (or encryption turned on), seal what is not sealed with the
        // current key, in the background: reads go on meanwhile, with either key.
        let (sealer, stop) = (node.clone(), cancel.clone());
        sup.job("re-encryption", |_| async move {
            // At shutdown the pass, on a blocking thread, is not waited for; each object is
            // sealed again whole or not at all.
            let sealed = tokio::select! {
                sealed = sealer.store.rekey() => sealed,
                () = stop.cancelled() => return Ok(()),
            };
            match sealed {
                Ok(0) => {}
                Ok(n) => tracing::info!(objects = n, "content sealed again with the current key"),
                Err(e) => {
                    tracing::error!(error = %e, "sealing content with the current key failed; it stays readable with the old key");
                    return Err(e);
                }
            }
            let keys = sealer.store.keys().expect("a content key").clone();
            let small = tokio::select! {
                sealed = small_objects::reseal(&sealer.db, &keys) => sealed,
                () = stop.cancelled() => return Ok(()),
            };
            match small {
                Ok(0) => {}
                Ok(n) => tracing::info!(objects = n, "small objects sealed again with the current key"),
                Err(e) => {
                    tracing::error!(error = %e, "sealing small objects with the current key failed; they stay readable with the old key");
                    return Err(std::io::Error::other(e));
                }
            }
            Ok(())
        });
    }
    if let Some(trust) = config.tls.as_ref().and_then(|t| t.trust.clone()) {
        if trust.has_crl() {
            let cancel = cancel.clone();
            sup.critical("revocation list", |task| async move {
                task.running();
                trust.watch_crl(cancel, move |e| task.error(e)).await;
            });
        }
    }
    sup.critical("retention", |task| {
        retention::run(node.clone(), cancel.clone(), task)
    });
    if let Some(fed) = node.federation() {
        if fed.key.is_none() {
            tracing::warn!(
                "the topology lists no public keys: messages between nodes are not signed, and \
                 anyone who can publish to this node's inbox can forge them \
                 (`docfed-topology keys` makes keys)"
            );
        }
        if node.config.content_keys.is_none() {
            tracing::warn!(
                "no content key: this node keeps every document in plaintext on disk, where \
                 anyone who reads its data directory (a backup, a disk sent for repair) reads \
                 them; pass --content-key-file (a file of 64 hex digits, e.g. `openssl rand \
                 -hex 32`, kept outside the data directory)"
            );
        }
        sup.critical("inbox", |task| {
            federation::inbox::run(node.clone(), cancel.clone(), task)
        });
        sup.critical("fetch scheduler", |task| {
            federation::fetch::run(node.clone(), cancel.clone(), task)
        });
        sup.critical("presence", |task| {
            federation::presence::run(node.clone(), cancel.clone(), task)
        });
        sup.critical("outbox dispatcher", |task| {
            federation::outbox::dispatch(node.clone(), cancel.clone(), task)
        });
        for peer in fed.others() {
            sup.critical(format!("relay to {}", peer.id), |task| {
                federation::outbox::run_relay(node.clone(), peer.id.clone(), cancel.clone(), task)
            });
        }
        reachback::start(&node, &cancel);
    }

    let addr = listener.local_addr()?;
    Ready::for_this_process(Some(&config.node_id), addr)
        .over_tls(config.tls.is_some())
        .write(&config.data_dir)?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(node = %config.node_id, http = %format!("{scheme}://{addr}"), data_dir = %config.data_dir.display(), "node ready");

    let tls = match &config.tls {
        Some(t) => Some(docfed_http::TlsServer {
            config: match &t.trust {
                Some(trust) => trust.server_config(&t.cert, &t.key, true),
                None => docfed_http::tls::server_config_without_clients(&t.cert, &t.key),
            }
            .context("TLS server")?,
            trust: t.trust.clone(),
            also_plain: config
                .federation
                .as_ref()
                .is_some_and(|f| f.tls_migration.is_some()),
        }),
        None => None,
    };
    let server = docfed_http::serve(
        listener,
        api::router(node),
        config.http_limits,
        tls,
        cancel.clone(),
    );
    let deadline = async {
        cancel.cancelled().await;
        tokio::time::sleep(config.shutdown_timeout).await;
    };
    tokio::select! {
        () = server => {}
        () = deadline => tracing::warn!(timeout = ?config.shutdown_timeout, "in-flight requests cut off at shutdown deadline"),
    }
    cancel.cancel();
    if !supervisor.wait(config.shutdown_timeout).await {
        tracing::warn!("background tasks did not stop in time");
    }
    db.close().await;
    Ready::remove(&config.data_dir);
    if let Some(why) = supervisor.failure() {
        anyhow::bail!(why);
    }
    tracing::info!("node stopped");
    Ok(())
}
