//! After the fault phase: waiting for quiescence, then checking the invariants.
//!
//! The checker reads each node's SQLite database read-only (the directory, the objects table,
//! the small objects, receipts, annotations, the transfer log) and its content files, and
//! compares every stored object (a file in `objects/`, or a row of `small_objects`) byte for
//! byte with the body its title names. The HTTP API is used for liveness
//! (`/v1/peers`) and the brokers for queue depths.
//!
//! Over 600 lines on purpose: one function per invariant over the same read-only snapshot of every
//! node; splitting them would separate each check from the snapshot it reads.

use docfed_shared::wire::peers::PeersView;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use docfed_shared::topology::Tier;
use futures::StreamExt;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tokio::time::Instant;

use super::cluster::Cluster;
use super::content;
use super::faults::{self, Injector};
use super::workload::Model;

/// How many violations of one invariant the report lists (the count is always complete).
const LISTED: usize = 40;

#[derive(Debug, Clone, Serialize)]
pub struct Invariant {
    pub name: &'static str,
    pub description: &'static str,
    /// How many things were checked.
    pub checked: u64,
    pub violation_count: u64,
    pub violations: Vec<String>,
}

impl Invariant {
    pub fn new(name: &'static str, description: &'static str) -> Invariant {
        Invariant {
            name,
            description,
            checked: 0,
            violation_count: 0,
            violations: Vec::new(),
        }
    }

    pub(super) fn check(&mut self, ok: bool, violation: impl FnOnce() -> String) {
        self.checked += 1;
        if !ok {
            self.fail(violation());
        }
    }

    pub(super) fn fail(&mut self, v: String) {
        self.violation_count += 1;
        if self.violations.len() < LISTED {
            self.violations.push(v);
        }
    }

    pub fn fail_with(&mut self, v: String) {
        self.fail(v);
    }

    pub fn ok(&self) -> bool {
        self.violation_count == 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Quiescence {
    pub reached: bool,
    pub seconds: f64,
    /// What was still moving at the deadline, when not reached.
    pub busy: Vec<String>,
}

/// Waits until no node has outbox rows, pending pulls or unconsumed inbox messages, and every
/// inbox consumer is connected, for three polls in a row.
pub async fn await_quiescence(cluster: &Cluster, deadline: Duration) -> Quiescence {
    let started = Instant::now();
    let mut calm = 0;
    let mut busy = Vec::new();
    while started.elapsed() < deadline {
        busy.clear();
        for n in &cluster.topo.nodes {
            match peers(cluster, &n.id).await {
                Ok(v) => {
                    let outbox = v.outbox_depth.unwrap_or(-1);
                    let pending = v.pending_fetches.unwrap_or(-1);
                    if outbox != 0 {
                        busy.push(format!("{}: outbox {outbox}", n.id));
                    }
                    if pending != 0 {
                        busy.push(format!("{}: {pending} pulls pending", n.id));
                    }
                    if v.inbox_connected != Some(true) {
                        busy.push(format!("{}: inbox not connected", n.id));
                    }
                }
                Err(e) => busy.push(format!("{}: {e:#}", n.id)),
            }
            let url = n.amqp_url.clone().unwrap_or_default();
            match faults::inbox_state(&url, &cluster.broker_admin, &n.id).await {
                Ok((0, _)) => {}
                Ok((ready, _)) => busy.push(format!("{}: {ready} messages in inbox", n.id)),
                Err(e) => busy.push(format!("{}: inbox queue: {e:#}", n.id)),
            }
        }
        calm = if busy.is_empty() { calm + 1 } else { 0 };
        if calm >= 3 {
            return Quiescence {
                reached: true,
                seconds: started.elapsed().as_secs_f64(),
                busy,
            };
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Quiescence {
        reached: false,
        seconds: started.elapsed().as_secs_f64(),
        busy,
    }
}

async fn peers(cluster: &Cluster, id: &str) -> Result<PeersView> {
    let resp = cluster
        .http
        .get(format!("{}/v1/peers", cluster.url(id)))
        .bearer_auth(&cluster.token)
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    Ok(resp.error_for_status()?.json().await?)
}

/// A document's current version as one node holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Current {
    version: i64,
    origin: String,
    deleted: bool,
    md5: String,
    scope: String,
    title: String,
    size: i64,
}

impl Current {
    fn key(&self) -> String {
        format!(
            "v{} from {}{}",
            self.version,
            self.origin,
            if self.deleted { " (deleted)" } else { "" }
        )
    }
}

/// (document, version, origin).
type VersionKey = (String, i64, String);

struct VersionRow {
    created_at: i64,
    md5: String,
    title: String,
}

struct NodeState {
    docs: HashMap<String, Current>,
    objects: HashMap<String, i64>,
    /// (md5, end of a pull, start of the next pull of it, collected in between).
    repeated_pulls: Vec<(String, i64, i64, bool)>,
    pulls: u64,
    /// At primaries only.
    versions: HashMap<VersionKey, VersionRow>,
    /// (doc, node, version, origin) → (content, at ms), at primaries only.
    receipts: HashMap<(String, String, i64, String), (bool, i64)>,
    annotations: HashSet<String>,
}

/// The node schema (its newest migration) the checker's queries were written against.
///
/// The checker reads the node's private tables with its own SQL on purpose: it is an oracle
/// independent of the node's queries (the retention check computes the required set with window
/// functions where the node uses per-object probes), so a bug in the node's SQL cannot hide in
/// both. The price is coupling to the schema, made loud here: a database of another schema is
/// refused, and a unit test fails when the node gains a migration the checker has not been
/// reviewed against.
const CHECKED_SCHEMA: i64 = 13;

pub(super) async fn open(path: &Path) -> Result<SqlitePool> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10));
    let db = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let schema: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&db)
        .await
        .with_context(|| format!("{} has no migration table", path.display()))?;
    anyhow::ensure!(
        schema == Some(CHECKED_SCHEMA),
        "{} has node schema {schema:?}; the checker reads schema {CHECKED_SCHEMA}",
        path.display()
    );
    Ok(db)
}

async fn read_node(dir: &Path, primary: bool) -> Result<NodeState> {
    let db = open(&dir.join("node.sqlite")).await?;
    let docs = sqlx::query_as::<_, (String, i64, String, bool, String, String, String, i64)>(
        "SELECT doc_id, version, origin, deleted, md5, scope, title, size FROM documents",
    )
    .fetch_all(&db)
    .await?
    .into_iter()
    .map(|(id, version, origin, deleted, md5, scope, title, size)| {
        (
            id,
            Current {
                version,
                origin,
                deleted,
                md5,
                scope,
                title,
                size,
            },
        )
    })
    .collect();
    let objects = sqlx::query_as::<_, (String, i64)>("SELECT md5, size FROM objects")
        .fetch_all(&db)
        .await?
        .into_iter()
        .collect();
    // Each pull of an address after an earlier one, and whether a collection removed the
    // content in between (the earlier pull's end, the later one's start): pulling it again
    // then is what the node must do, not a duplicate transfer.
    let repeated_pulls = sqlx::query_as::<_, (String, i64, i64, bool)>(
        "WITH p AS (SELECT md5, started_at, done_at, \
                           ROW_NUMBER() OVER (PARTITION BY md5 ORDER BY started_at, done_at) AS n \
                    FROM fetch_log) \
         SELECT a.md5, a.done_at, b.started_at, \
                EXISTS (SELECT 1 FROM collections c WHERE c.md5 = a.md5 \
                          AND c.at >= a.done_at AND c.at <= b.started_at) \
         FROM p a JOIN p b ON b.md5 = a.md5 AND b.n = a.n + 1",
    )
    .fetch_all(&db)
    .await?;
    let pulls: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM fetch_log")
        .fetch_one(&db)
        .await?;
    let mut state = NodeState {
        docs,
        objects,
        repeated_pulls,
        pulls: pulls as u64,
        versions: HashMap::new(),
        receipts: HashMap::new(),
        annotations: HashSet::new(),
    };
    if primary {
        state.versions = sqlx::query_as::<_, (String, i64, String, i64, String, String)>(
            "SELECT doc_id, version, origin, created_at, md5, title FROM versions",
        )
        .fetch_all(&db)
        .await?
        .into_iter()
        .map(|(d, v, o, created_at, md5, title)| {
            (
                (d, v, o),
                VersionRow {
                    created_at,
                    md5,
                    title,
                },
            )
        })
        .collect();
        state.receipts = sqlx::query_as::<_, (String, String, i64, String, bool, i64)>(
            "SELECT doc_id, node, version, origin, content, at FROM receipts",
        )
        .fetch_all(&db)
        .await?
        .into_iter()
        .map(|(d, n, v, o, c, at)| ((d, n, v, o), (c, at)))
        .collect();
        state.annotations = sqlx::query_scalar::<_, String>("SELECT id FROM annotations")
            .fetch_all(&db)
            .await?
            .into_iter()
            .collect();
    }
    db.close().await;
    Ok(state)
}

/// One delivery: a regional node received a version's content.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub node: String,
    /// Seconds since the run started, when the version was published.
    pub published_s: f64,
    pub latency_s: f64,
}

pub struct Outcome {
    pub invariants: Vec<Invariant>,
    pub deliveries: Vec<Delivery>,
    pub documents: u64,
    pub versions: u64,
    pub bytes_verified: u64,
    pub pulls: u64,
    /// Pulls of content a collection had removed since its previous pull.
    pub pulled_again_after_collection: u64,
}

/// Checks every invariant. `run_start_ms` is the run's start in Unix milliseconds.
pub async fn check(
    cluster: &Cluster,
    model: &Model,
    injector: &Injector,
    run_start_ms: i64,
    retention: Invariant,
    final_at: &HashMap<String, i64>,
) -> Result<Outcome> {
    let primaries = cluster.ids(Tier::Primary);
    let regionals = cluster.ids(Tier::Regional);
    let mut nodes: BTreeMap<String, NodeState> = BTreeMap::new();
    for n in &cluster.topo.nodes {
        let state = read_node(&cluster.data_dir(&n.id), n.tier == Tier::Primary)
            .await
            .with_context(|| format!("reading node {}", n.id))?;
        nodes.insert(n.id.clone(), state);
    }
    let reference = &nodes[&primaries[0]];

    // 1. Acknowledged edits are kept by both primaries.
    let mut acked = Invariant::new(
        "acknowledged edits kept",
        "every acknowledged publication, version, delete and reactivation is in the history of both primaries",
    );
    for a in &model.acked {
        for p in &primaries {
            let key = (a.doc.clone(), a.version, a.origin.clone());
            acked.check(nodes[p].versions.contains_key(&key), || {
                format!(
                    "{} of document {} (v{} from {}, acknowledged at {:.1} s) missing at {p}",
                    a.kind,
                    a.doc,
                    a.version,
                    a.origin,
                    a.at_ms as f64 / 1000.0
                )
            });
        }
    }

    // 2. The primaries agree, and every regional directory equals theirs.
    let mut directories = Invariant::new(
        "directories complete and equal",
        "both primaries and every regional node hold the same current version (or tombstone) of every document",
    );
    let mut tombstones = Invariant::new(
        "tombstones everywhere, no resurrection",
        "a document deleted at the primaries is deleted at every regional node",
    );
    for id in primaries.iter().chain(&regionals).skip(1) {
        let here = &nodes[id];
        for (doc, want) in &reference.docs {
            match here.docs.get(doc) {
                None => {
                    directories.fail(format!("document {doc} ({}) missing at {id}", want.key()))
                }
                Some(have) if have != want => directories.fail(format!(
                    "document {doc}: {id} holds {}, {} holds {}",
                    have.key(),
                    primaries[0],
                    want.key()
                )),
                Some(_) => directories.checked += 1,
            }
            if want.deleted && regionals.contains(id) {
                tombstones.check(here.docs.get(doc).is_some_and(|h| h.deleted), || {
                    format!("document {doc} deleted at the primaries but not at {id}")
                });
            }
        }
        for doc in here
            .docs
            .keys()
            .filter(|d| !reference.docs.contains_key(*d))
        {
            directories.fail(format!(
                "document {doc} at {id} is unknown to {}",
                primaries[0]
            ));
        }
    }

    // 3. Placement: content where the scope (or a device flag) requires it, byte for byte.
    let mut placement = Invariant::new(
        "content placed by scope",
        "every current version is held, byte-identical, by both primaries, the regional nodes its scope names, and regional nodes with a device flag on it",
    );
    let flagged: BTreeSet<(String, String)> = model
        .flags
        .iter()
        .map(|(n, _, d)| (n.clone(), d.clone()))
        .collect();
    for (doc, cur) in reference.docs.iter().filter(|(_, c)| !c.deleted) {
        for id in &cluster.topo.nodes {
            let needed = match id.tier {
                Tier::Primary => true,
                Tier::Intermediate => false,
                Tier::Regional => placement_required(cluster, cur, &id.id, &flagged, doc),
            };
            if needed {
                let held = nodes[&id.id].objects.contains_key(&cur.md5);
                placement.check(held, || {
                    format!(
                        "document {doc} ({}, {}, md5 {}) not held at {}",
                        cur.key(),
                        cur.scope,
                        cur.md5,
                        id.id
                    )
                });
            }
        }
    }

    // 4. No corrupted bytes anywhere: every stored object, a file or a small object in the
    //    node's database, is compared with its generator when its body is known, else re-hashed.
    let mut intact = Invariant::new(
        "no corrupted bytes stored",
        "every object in every node's store (a file in objects/, or a small object in its database) matches its MD5 (and its generated body, byte for byte)",
    );
    let bodies: Arc<HashMap<String, (u64, u64)>> = Arc::new(
        reference
            .versions
            .values()
            .filter_map(|v| content::parse_title(&v.title).map(|b| (v.md5.clone(), b)))
            .collect(),
    );
    // One task per node, run side by side: this is the longest part of a check.
    let mut bytes_verified = 0u64;
    let verifications = cluster.topo.nodes.iter().map(|n| {
        verify_node(
            n.id.clone(),
            cluster.data_dir(&n.id),
            nodes[&n.id].objects.clone(),
            bodies.clone(),
            cluster.content_keys.clone(),
        )
    });
    for verified in futures::future::join_all(verifications).await {
        let (id, verdicts) = verified?;
        let missing: Vec<&String> = verdicts
            .iter()
            .filter(|(_, _, v)| v.as_ref().err().map(String::as_str) == Some(MISSING))
            .map(|(m, _, _)| m)
            .collect();
        // Periodic collections go on while the checker reads: an object (file or small object)
        // that a collection after the harness's last one removed is no corruption (the required set was checked at
        // that last one).
        let collected_since = collected_since(
            &cluster.data_dir(&id),
            &missing,
            final_at.get(&id).copied().unwrap_or(i64::MAX),
        )
        .await?;
        for (md5, size, verdict) in verdicts {
            if collected_since.contains(&md5) {
                continue;
            }
            bytes_verified += size.max(0) as u64;
            intact.check(verdict.is_ok(), || {
                format!("object {md5} at {id}: {}", verdict.clone().unwrap_err())
            });
        }
    }

    // 5. Receipts at both primaries for every required holding.
    let mut receipts = Invariant::new(
        "delivery receipts at both primaries",
        "for every current version, both primaries hold one receipt from every regional node that must hold it",
    );
    for (doc, cur) in reference.docs.iter().filter(|(_, c)| !c.deleted) {
        for id in &regionals {
            if !placement_required(cluster, cur, id, &flagged, doc) {
                continue;
            }
            for p in &primaries {
                let key = (doc.clone(), id.clone(), cur.version, cur.origin.clone());
                receipts.check(nodes[p].receipts.get(&key).is_some_and(|(c, _)| *c), || {
                    format!("no receipt at {p} for document {doc} {} at {id}", cur.key())
                });
            }
        }
    }

    // 6. Annotations reach both primaries.
    let mut annotations = Invariant::new(
        "annotations at both primaries, once",
        "every acknowledged annotation is stored exactly once (keyed by its id) at both primaries",
    );
    for (aid, doc, at) in &model.annotations {
        for p in &primaries {
            annotations.check(nodes[p].annotations.contains(aid), || {
                format!("annotation {aid} on document {doc} (written at {at}) missing at {p}")
            });
        }
    }

    // 7. Redundant notifications caused no second transfer.
    let mut transfers = Invariant::new(
        "no duplicate transfers",
        "no node completed two pulls of the same content (the redundant notification was deduplicated), unless a collection removed it between the two",
    );
    let mut pulls = 0;
    let mut pulled_again_after_collection = 0;
    for (id, state) in &nodes {
        pulls += state.pulls;
        transfers.checked += state.pulls;
        for (md5, done, next, collected) in &state.repeated_pulls {
            if *collected {
                pulled_again_after_collection += 1;
            } else {
                transfers.fail(format!(
                    "{id} pulled {md5} again at {:.1} s after a pull that ended at {:.1} s, \
                     with no collection of it in between",
                    (next - run_start_ms) as f64 / 1000.0,
                    (done - run_start_ms) as f64 / 1000.0
                ));
            }
        }
    }

    // 8. Every node reconnected after every broker restart.
    let mut reconnects = Invariant::new(
        "reconnect after every broker restart",
        "after each broker kill -9 and restart, every node it serves consumes its inbox again within 60 s",
    );
    for r in &injector.reconnects {
        for (node, t) in &r.nodes {
            reconnects.check(t.is_some(), || {
                format!(
                    "{node} did not consume again after broker {} restarted at {:.1} s",
                    r.broker, r.restarted_at_s
                )
            });
        }
    }

    // 9. Nodes only stop when killed; fetches never served wrong bytes; no dead letters.
    let mut crashes = Invariant::new(
        "no unexpected exits",
        "no node process exited unless the harness killed it",
    );
    crashes.checked = cluster.topo.nodes.len() as u64;
    for (node, status, at) in &injector.unexpected_exits {
        crashes.fail(format!("{node} exited with {status} at {at:.1} s"));
    }
    let mut served = Invariant::new(
        "cross-region fetches intact",
        "every cross-region fetch that answered 200 delivered bytes matching its ETag",
    );
    served.checked = model.ops.get("cross-region-fetch").map_or(0, |s| s.ok);
    for v in &model.served_corrupt {
        served.fail(v.clone());
    }
    let mut dead = Invariant::new(
        "no dead letters",
        "no node dead-lettered a message (every message the nodes exchanged was well-formed)",
    );
    for n in &cluster.topo.nodes {
        let url = n.amqp_url.clone().unwrap_or_default();
        let dead_letters = docfed_shared::topology::dead_letter_queue(&n.id);
        match faults::queue_state(&url, &cluster.broker_admin, &dead_letters).await {
            Ok((count, _)) => {
                dead.check(count == 0, || format!("{count} dead letters at {}", n.id));
            }
            Err(e) => dead.fail(format!("cannot read {}'s dead-letter queue: {e:#}", n.id)),
        }
    }

    // Deliveries for the latency plot: receipts of regional nodes at the first primary.
    let deliveries = reference
        .receipts
        .iter()
        .filter(|((_, node, _, _), (content, _))| *content && regionals.contains(node))
        .filter_map(|((doc, node, v, o), (_, at))| {
            let created = reference
                .versions
                .get(&(doc.clone(), *v, o.clone()))?
                .created_at;
            Some(Delivery {
                node: node.clone(),
                published_s: (created - run_start_ms) as f64 / 1000.0,
                latency_s: (at - created) as f64 / 1000.0,
            })
        })
        .collect();

    Ok(Outcome {
        invariants: vec![
            acked,
            directories,
            tombstones,
            placement,
            retention,
            intact,
            receipts,
            annotations,
            transfers,
            reconnects,
            crashes,
            served,
            dead,
        ],
        deliveries,
        documents: reference.docs.len() as u64,
        versions: reference.versions.len() as u64,
        bytes_verified,
        pulls,
        pulled_again_after_collection,
    })
}

/// Verdicts on every object of `objects` (md5 → size, the node's `objects` rows) at the node
/// whose data directory is `dir`: its small object when `small_objects` has the row, else its
/// file. `Err(MISSING)` when it is in neither any more.
async fn verify_node(
    id: String,
    dir: PathBuf,
    objects: HashMap<String, i64>,
    bodies: Arc<HashMap<String, (u64, u64)>>,
    keys: Option<docfed_atrest::Keys>,
) -> Result<(String, Vec<Verdict>)> {
    let mut verdicts = Vec::with_capacity(objects.len());
    // Small objects first, one row at a time (each at most a few hundred KiB): the rest are files.
    let db = open(&dir.join("node.sqlite")).await?;
    let mut as_files = objects;
    {
        let mut rows = sqlx::query_as::<_, (String, bool, Vec<u8>)>(
            "SELECT md5, sealed, data FROM small_objects",
        )
        .fetch(&db);
        while let Some(row) = rows.next().await {
            let (md5, sealed, data) = row?;
            // Orphans (no objects row) are the retention invariant's.
            let Some(size) = as_files.remove(&md5) else {
                continue;
            };
            let verdict = small_object_verdict(&md5, sealed, &data, keys.as_ref(), &bodies);
            verdicts.push((md5, size, verdict));
        }
    }
    db.close().await;
    let files = tokio::task::spawn_blocking(move || {
        as_files
            .into_iter()
            .map(|(md5, size)| {
                let path = dir.join("objects").join(&md5[..2]).join(&md5);
                let verdict = file_verdict(&md5, &path, keys.as_ref(), &bodies);
                (md5, size, verdict)
            })
            .collect::<Vec<_>>()
    })
    .await?;
    verdicts.extend(files);
    Ok((id, verdicts))
}

/// (md5, size in the objects row, verdict).
type Verdict = (String, i64, Result<(), String>);

/// Whether the object file at `path` holds the content `md5` names (blocking I/O).
fn file_verdict(
    md5: &str,
    path: &Path,
    keys: Option<&docfed_atrest::Keys>,
    bodies: &HashMap<String, (u64, u64)>,
) -> Result<(), String> {
    let verdict = match bodies.get(md5) {
        Some(&(seed, len)) => {
            content::compare_file(path, keys, seed, len).map_err(|d| d.to_string())
        }
        None => match content::md5_of_file(path, keys) {
            Ok(m) if m == md5 => Ok(()),
            Ok(m) => Err(format!("hashes to {m}")),
            Err(e) => Err(format!("unreadable: {e}")),
        },
    };
    // Gone, not corrupted (see `collected_since`).
    match verdict {
        Err(_) if !path.exists() => Err(MISSING.to_owned()),
        v => v,
    }
}

/// Whether a small object (`data`, sealed in the atrest format when `sealed`) holds the
/// content `md5` names.
fn small_object_verdict(
    md5: &str,
    sealed: bool,
    data: &[u8],
    keys: Option<&docfed_atrest::Keys>,
    bodies: &HashMap<String, (u64, u64)>,
) -> Result<(), String> {
    let opened;
    let plain = if sealed {
        let keys = keys.ok_or("small object sealed, and the run has no content key")?;
        opened = docfed_atrest::open_bytes(keys, data)
            .map_err(|e| format!("small object cannot be opened: {e}"))?;
        opened.as_slice()
    } else {
        data
    };
    match bodies.get(md5) {
        Some(&(seed, len)) => {
            content::compare_bytes(plain, seed, len).map_err(|d| format!("small object: {d}"))
        }
        None => match format!("{:x}", md5::compute(plain)) {
            m if m == md5 => Ok(()),
            m => Err(format!("small object hashes to {m}")),
        },
    }
}

const MISSING: &str = "missing";

/// Those of `md5s` that a collection at or after `since` (Unix ms) removed.
async fn collected_since(dir: &Path, md5s: &[&String], since: i64) -> Result<HashSet<String>> {
    if md5s.is_empty() {
        return Ok(HashSet::new());
    }
    let db = open(&dir.join("node.sqlite")).await?;
    let json = serde_json::to_string(md5s)?;
    let out = sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT md5 FROM collections \
         WHERE md5 IN (SELECT value FROM json_each(?)) AND at >= ?",
    )
    .bind(json)
    .bind(since)
    .fetch_all(&db)
    .await?
    .into_iter()
    .collect();
    db.close().await;
    Ok(out)
}

fn placement_required(
    cluster: &Cluster,
    cur: &Current,
    id: &str,
    flagged: &BTreeSet<(String, String)>,
    doc: &str,
) -> bool {
    cur.scope == "global"
        || cur
            .scope
            .strip_prefix("region:")
            .is_some_and(|r| cluster.topo.holders_of_region(r).iter().any(|h| h.id == id))
        || flagged.contains(&(id.to_owned(), doc.to_owned()))
}

#[cfg(test)]
mod schema_tests {
    use super::CHECKED_SCHEMA;

    /// A new node migration may rename or re-purpose what the checker reads: review the
    /// checker's queries (here and in `retention.rs`) against it, then raise `CHECKED_SCHEMA`.
    #[test]
    fn the_checker_knows_the_nodes_newest_migration() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/migrations");
        let newest = std::fs::read_dir(&dir)
            .expect("node migrations")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.split('_').next()?.parse::<i64>().ok()
            })
            .max();
        assert_eq!(newest, Some(CHECKED_SCHEMA));
    }
}

#[cfg(test)]
mod small_object_tests {
    use super::*;

    fn keys(b: u8) -> docfed_atrest::Keys {
        docfed_atrest::Keys {
            current: docfed_atrest::ContentKey::from_hex(&format!("{b:02x}").repeat(32)).unwrap(),
            old: Vec::new(),
        }
    }

    async fn body(seed: u64, size: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = Box::pin(content::stream(seed, size));
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn small_objects_are_opened_and_compared_like_files() {
        let k = keys(1);
        for size in [0u64, 1, 10_000, 65_535, 65_536] {
            let plain = body(9, size).await;
            let md5 = format!("{:x}", md5::compute(&plain));
            let known = HashMap::from([(md5.clone(), (9, size))]);
            let unknown = HashMap::new();
            let sealed = docfed_atrest::seal_bytes(&k.current, &plain);
            for bodies in [&known, &unknown] {
                assert_eq!(
                    small_object_verdict(&md5, true, &sealed, Some(&k), bodies),
                    Ok(())
                );
                assert_eq!(
                    small_object_verdict(&md5, false, &plain, None, bodies),
                    Ok(())
                );
                assert!(small_object_verdict(&md5, true, &sealed, Some(&keys(2)), bodies).is_err());
                assert!(small_object_verdict(&md5, true, &sealed, None, bodies).is_err());
            }
            if size > 0 {
                let mut altered = sealed.clone();
                *altered.last_mut().unwrap() ^= 1;
                assert!(small_object_verdict(&md5, true, &altered, Some(&k), &known).is_err());
                let mut flipped = plain.clone();
                flipped[0] ^= 1;
                assert_eq!(
                    small_object_verdict(&md5, false, &flipped, None, &known),
                    Err("small object: bytes differ from offset 0".to_owned())
                );
                assert!(small_object_verdict(&md5, false, &flipped, None, &unknown)
                    .unwrap_err()
                    .starts_with("small object hashes to "));
            }
        }
    }
}
