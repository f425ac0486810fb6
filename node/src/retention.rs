//! Retention (ARCHITECTURE.md §4.4): a node's disk holds what its role requires and nothing
//! else.
//!
//! # What is kept
//! An object is **live** when it is the content of a document's current version that this node
//! keeps (its routing keeps the scope, [`Federation::keeps_content`], or a device of this node
//! flagged the document), or a pull of it is pending. It is **retained** when the policy keeps
//! it: one of the last `keep_versions` superseded versions of a live document, superseded less
//! than `version_grace` ago; or any version of a document deleted less than `tombstone_grace`
//! ago. Everything else is **collectable**: superseded versions beyond the policy, tombstoned
//! documents' content after the grace, content of documents this node no longer keeps, objects
//! no version references. Primaries (and standalone nodes) keep every version and every
//! tombstoned document's content by default, as the publication record.
//!
//! # Never racing a pull or a reader
//! Every placement of a file into `objects/` happens while its writer holds the database's one
//! writer connection (`Store::place` inside the writer transaction). A collection takes that
//! connection for each batch, re-decides each candidate inside its transaction (a version that
//! arrived since the candidates were listed may need the same bytes again), skips content a
//! transfer is writing or streaming, deletes the rows, commits, and unlinks the files **before
//! it gives the connection back**: no pull can place the same address between the decision and
//! the unlink. A reader that opened a file keeps reading it after the unlink (POSIX); one that
//! comes later no longer finds the row and is served from another node like any content not
//! held here. The same holds for files in `objects/` without a row (a crash between the rename
//! and the commit) and for partial files of pulls that no longer exist.
//!
//! # Operational tables and the change feed
//! `fetch_log` and `collections` rows older than `log_retention` go, and so do receipts older
//! than the newest one per node and document. Past `feed_horizon`, the change feed keeps only
//! the latest change of each document (deletions included) and the change of its current
//! version (an older or losing version may have come later), so a client that asks from
//! before the horizon replays those entries of each document changed since (a snapshot) plus
//! the changes after: it ends with the same directory and never resurrects a deleted document.
//! Versions, documents and tombstones are the record and stay forever.
//!
//! Over 600 lines on purpose: classification, batched removal, debris sweeping, row pruning and
//! feed compaction share the policy and the writer-connection discipline that makes them race-free
//! with pulls; splitting them would spread that discipline.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use docfed_shared::wire::Timestamp;
use docfed_shared::{Md5Hex, Scope};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::supervisor::Task;
use crate::Node;

pub use docfed_shared::wire::gc::{GcReport as Report, Policy, Usage};

/// Parses `N` or `all`.
pub fn parse_count_or_all(s: &str) -> Result<Option<u32>, String> {
    match s.trim() {
        "all" | "unlimited" => Ok(None),
        n => n
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("expected a number of versions or `all`, got {s:?}")),
    }
}

/// Parses a duration (`90s`, `7d`) or `forever`.
pub fn parse_duration_or_forever(s: &str) -> Result<Option<Duration>, String> {
    match s.trim() {
        "forever" | "never" => Ok(None),
        d => humantime::parse_duration(d)
            .map(Some)
            .map_err(|e| format!("{s:?}: {e} (a duration such as `12h`, or `forever`)")),
    }
}

/// Parses a duration or `off`.
pub fn parse_interval(s: &str) -> Result<Option<Duration>, String> {
    match s.trim() {
        "off" | "never" => Ok(None),
        d => match humantime::parse_duration(d) {
            Ok(d) if d >= Duration::from_secs(1) => Ok(Some(d)),
            Ok(_) => Err(format!("{s:?}: at least 1s, or `off`")),
            Err(e) => Err(format!("{s:?}: {e} (a duration such as `10m`, or `off`)")),
        },
    }
}

/// Collections in progress and the last report, shared by the periodic task and the admin
/// endpoint.
#[derive(Debug, Default)]
pub struct Retention {
    running: tokio::sync::Mutex<()>,
    last: std::sync::Mutex<Option<Arc<Report>>>,
    pub runs: AtomicU64,
    pub objects_collected: AtomicU64,
    pub bytes_collected: AtomicU64,
    pub files_removed: AtomicU64,
    pub rows_pruned: AtomicU64,
}

impl Retention {
    pub fn last(&self) -> Option<Arc<Report>> {
        self.last.lock().expect("not poisoned").clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("storage: {0}")]
    Io(#[from] io::Error),
}

/// Rows decided per writer transaction: short enough that pulls and inbox batches wait
/// milliseconds, not seconds, for the writer.
const BATCH: usize = 200;
const PRUNE_BATCH: i64 = 5_000;

/// Runs a collection every `interval` until cancelled. The first one, right after start, also
/// removes what a crash left behind.
pub async fn run(node: Arc<Node>, cancel: CancellationToken, task: Task) {
    task.running();
    let policy = node.config.retention;
    // Crash debris is never needed: it goes even when periodic collection is off.
    match sweep_debris(&node, false).await {
        Ok((orphans, partials)) if orphans.count + partials.count > 0 => {
            tracing::info!(
                orphan_files = orphans.count,
                orphan_bytes = orphans.bytes,
                stale_partials = partials.count,
                "removed files a crash left behind"
            )
        }
        Ok(_) => {}
        Err(e) => {
            task.error(&format_args!("cannot sweep crash debris: {e}"));
            tracing::warn!(error = %e, "cannot sweep crash debris")
        }
    }
    let Some(interval) = policy.interval else {
        cancel.cancelled().await;
        return;
    };
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        next = tokio::time::Instant::now() + interval;
        let started = Instant::now();
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            r = collect(&node, false) => r,
        };
        match outcome {
            Ok(r) => tracing::info!(
                collected = r.collected.count,
                bytes = r.collected.bytes,
                live_bytes = r.live.bytes,
                retained_bytes = r.retained.bytes,
                rows_pruned = r.rows_pruned.values().sum::<u64>(),
                ms = started.elapsed().as_millis() as u64,
                "collection done"
            ),
            Err(e) => {
                task.error(&format_args!("collection failed: {e}"));
                tracing::warn!(error = %e, "collection failed; next one at the usual time")
            }
        }
    }
}

/// Runs one collection, or with `dry_run` says what it would do.
pub async fn collect(node: &Node, dry_run: bool) -> Result<Arc<Report>, GcError> {
    let _one_at_a_time = node.retention.running.lock().await;
    let started = Instant::now();
    let policy = node.config.retention;
    let at = Timestamp::now().millis();
    let params = Params::new(node, &policy, at).await?;
    let mut report = Report {
        at,
        dry_run,
        policy: Some(policy),
        ..Report::default()
    };

    classify_and_collect(node, &params, dry_run, &mut report).await?;
    let (orphans, partials) = sweep_debris(node, dry_run).await?;
    report.orphan_files = orphans;
    report.stale_partials = partials;
    prune_tables(node, &policy, at, dry_run, &mut report).await?;
    report.tables = table_sizes(node).await?;
    report.feed_horizon = sqlx::query_scalar("SELECT horizon FROM feed_horizon WHERE id = 1")
        .fetch_one(node.db.reader())
        .await?;
    report.duration_ms = started.elapsed().as_millis() as u64;
    let report = Arc::new(report);
    if !dry_run {
        node.retention.runs.fetch_add(1, Ordering::Relaxed);
        *node.retention.last.lock().expect("not poisoned") = Some(report.clone());
    }
    Ok(report)
}

/// The policy turned into query parameters at one instant.
struct Params {
    /// JSON array of the scopes this node keeps content of.
    kept_scopes: String,
    keep_versions: i64,
    version_cutoff: i64,
    tombstone_cutoff: i64,
}

impl Params {
    async fn new(node: &Node, policy: &Policy, at: i64) -> Result<Self, sqlx::Error> {
        let kept_scopes = kept_scopes(node, node.db.reader()).await?;
        let cutoff = |grace: Option<Duration>| {
            grace.map_or(i64::MIN, |g| at.saturating_sub(g.as_millis() as i64))
        };
        Ok(Params {
            kept_scopes,
            keep_versions: policy.keep_versions.map_or(i64::MAX, i64::from),
            version_cutoff: cutoff(policy.version_grace),
            tombstone_cutoff: cutoff(policy.tombstone_grace),
        })
    }
}

/// The scopes of documents held here whose content this node keeps, as a JSON array.
async fn kept_scopes<'e>(
    node: &Node,
    db: impl sqlx::SqliteExecutor<'e>,
) -> Result<String, sqlx::Error> {
    let scopes: Vec<String> = sqlx::query_scalar("SELECT DISTINCT scope FROM documents")
        .fetch_all(db)
        .await?;
    let kept: Vec<String> = scopes
        .into_iter()
        .filter(|s| match node.federation() {
            // A scope this node cannot read is kept: better a stray object than a lost one.
            Some(fed) => Scope::from_str(s).map_or(true, |s| fed.keeps_content(&s)),
            // All content of a standalone node is its own.
            None => true,
        })
        .collect();
    Ok(serde_json::to_string(&kept).expect("strings serialise"))
}

/// Whether the document `d` is one whose content this node keeps: its scope is one of `?1` (a
/// JSON array) or a device of this node flagged it.
const KEPT: &str = "(d.scope IN (SELECT value FROM json_each(?1)) \
    OR EXISTS (SELECT 1 FROM device_flags f WHERE f.doc_id = d.doc_id))";

/// SQL conditions on the object `o` (an alias of `objects`): whether it is live, and whether
/// the policy retains it (`?2` superseded versions kept, `?3` and `?4` the oldest superseding
/// and tombstone times kept, Unix ms). Evaluated per object through the indexes on
/// `documents.md5`, `versions.md5` and the versions' primary key, so a collection's memory and
/// each page's time stay bounded whatever the size of the directory (a version of the same
/// decision as one query with window functions over all versions took twice the CPU and 550 MB
/// at a million documents).
fn conditions() -> (String, String) {
    let live = format!(
        "(EXISTS (SELECT 1 FROM pending_fetches p WHERE p.md5 = o.md5) \
          OR EXISTS (SELECT 1 FROM documents d WHERE d.md5 = o.md5 AND d.deleted = 0 AND {KEPT}))"
    );
    // A superseded version of a live document is retained while fewer than `?2` newer ones
    // (not deleted, not current) exist and the version after it is recent enough; any version
    // of a document whose tombstone is recent enough is retained.
    let retained = format!(
        "EXISTS (SELECT 1 FROM versions v JOIN documents d ON d.doc_id = v.doc_id \
           WHERE v.md5 = o.md5 AND v.deleted = 0 AND {KEPT} \
             AND ((d.deleted = 1 AND d.created_at >= ?4) \
               OR (d.deleted = 0 AND NOT (v.version = d.version AND v.origin = d.origin) \
                   AND (SELECT n.created_at FROM versions n \
                        WHERE n.doc_id = v.doc_id AND (n.version, n.origin) > (v.version, v.origin) \
                        ORDER BY n.version, n.origin LIMIT 1) >= ?3 \
                   AND (SELECT COUNT(*) FROM versions n \
                        WHERE n.doc_id = v.doc_id AND n.deleted = 0 \
                          AND (n.version, n.origin) > (v.version, v.origin) \
                          AND NOT (n.version = d.version AND n.origin = d.origin)) < ?2)))"
    );
    (live, retained)
}

/// Why an object is collectable, for the report and the `collections` log.
const REASON_SQL: &str = "CASE \
    WHEN NOT EXISTS (SELECT 1 FROM versions v WHERE v.md5 = o.md5) THEN 'unreferenced' \
    WHEN EXISTS (SELECT 1 FROM documents d WHERE d.md5 = o.md5 AND d.deleted = 0) THEN 'out_of_scope' \
    WHEN EXISTS (SELECT 1 FROM versions v JOIN documents d ON d.doc_id = v.doc_id \
                 WHERE v.md5 = o.md5 AND d.deleted = 1 AND v.deleted = 0) THEN 'tombstoned' \
    ELSE 'superseded' END";

fn reason_name(s: &str) -> &'static str {
    match s {
        "unreferenced" => "unreferenced",
        "out_of_scope" => "out_of_scope",
        "tombstoned" => "tombstoned",
        _ => "superseded",
    }
}

/// Objects classified per page, in address order (keyset paging: no long read transaction, no
/// list of a million candidates in memory).
const PAGE: i64 = 2_000;

/// Sorts every held object into live, retained and collectable and, unless `dry_run`, removes
/// the collectable ones page by page.
async fn classify_and_collect(
    node: &Node,
    p: &Params,
    dry_run: bool,
    report: &mut Report,
) -> Result<(), GcError> {
    let (live, retained) = conditions();
    let sql = format!(
        "SELECT o.md5, o.size, o.class, CASE WHEN o.class = 2 THEN {REASON_SQL} END \
         FROM (SELECT o.md5, o.size, \
                 CASE WHEN {live} THEN 0 WHEN {retained} THEN 1 ELSE 2 END AS class \
               FROM objects o WHERE o.md5 > ?5 ORDER BY o.md5 LIMIT ?6) o"
    );
    let mut after = String::new();
    loop {
        let page: Vec<(String, i64, i64, Option<String>)> = sqlx::query_as(&sql)
            .bind(&p.kept_scopes)
            .bind(p.keep_versions)
            .bind(p.version_cutoff)
            .bind(p.tombstone_cutoff)
            .bind(&after)
            .bind(PAGE)
            .fetch_all(node.db.reader())
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.0.clone();
        let mut candidates = Vec::new();
        for (md5, size, class, reason) in page {
            let size = size.max(0) as u64;
            match class {
                0 => report.live.add(size),
                1 => report.retained.add(size),
                _ => {
                    let reason = reason_name(reason.as_deref().unwrap_or_default());
                    report.collectable.add(size);
                    report
                        .collectable_by_reason
                        .entry(reason.to_owned())
                        .or_default()
                        .add(size);
                    candidates.push((md5, reason));
                }
            }
        }
        if !dry_run {
            for batch in candidates.chunks(BATCH) {
                remove_batch(node, p, batch, report).await?;
            }
        }
    }
}

/// Removes one batch of candidates: inside the writer transaction, deletes the rows of those
/// that are still collectable (the decision is taken again there: a version that arrived since
/// may need the same bytes) and not used by a transfer, commits, and unlinks the files while
/// still holding the writer connection.
async fn remove_batch(
    node: &Node,
    p: &Params,
    batch: &[(String, &'static str)],
    report: &mut Report,
) -> Result<(), GcError> {
    let unused: Vec<&str> = batch
        .iter()
        .map(|(m, _)| m.as_str())
        .filter(|m| {
            m.parse::<Md5Hex>()
                .is_ok_and(|a| node.transfers.get(&a).is_none())
        })
        .collect();
    report.spared += (batch.len() - unused.len()) as u64;
    let json = serde_json::to_string(&unused).expect("strings serialise");
    let (live, retained) = conditions();
    let mut conn = node.db.writer().acquire().await?;
    let mut tx = conn.begin().await?;
    // Read again here: a document of a scope first seen since the page was classified may
    // need one of these addresses.
    let kept = kept_scopes(node, &mut *tx).await?;
    let deleted: Vec<(String, i64)> = sqlx::query_as(&format!(
        "DELETE FROM objects AS o WHERE o.md5 IN (SELECT value FROM json_each(?5)) \
         AND NOT {live} AND NOT {retained} RETURNING md5, size"
    ))
    .bind(&kept)
    .bind(p.keep_versions)
    .bind(p.version_cutoff)
    .bind(p.tombstone_cutoff)
    .bind(&json)
    .fetch_all(&mut *tx)
    .await?;
    report.spared += (unused.len() - deleted.len()) as u64;
    let now = Timestamp::now().millis();
    let reasons: std::collections::HashMap<&str, &'static str> =
        batch.iter().map(|(m, r)| (m.as_str(), *r)).collect();
    let mut doomed = Vec::with_capacity(deleted.len());
    for (md5, size) in deleted {
        let reason = reasons.get(md5.as_str()).copied().unwrap_or("superseded");
        sqlx::query("INSERT INTO collections (md5, size, reason, at) VALUES (?, ?, ?, ?)")
            .bind(&md5)
            .bind(size)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if let Ok(address) = md5.parse::<Md5Hex>() {
            doomed.push((address, size.max(0) as u64, reason));
        }
    }
    tx.commit().await?;
    // Still holding the writer: nothing can place these addresses again before they are gone.
    let paths: Vec<PathBuf> = doomed
        .iter()
        .map(|(m, _, _)| node.store.object_path(m))
        .collect();
    let unlinked = tokio::task::spawn_blocking(move || unlink_all(&paths))
        .await
        .map_err(io::Error::other)?;
    drop(conn);
    for ((md5, size, reason), ok) in doomed.iter().zip(unlinked) {
        if ok {
            report.collected.add(*size);
            node.retention
                .objects_collected
                .fetch_add(1, Ordering::Relaxed);
            node.retention
                .bytes_collected
                .fetch_add(*size, Ordering::Relaxed);
            tracing::debug!(md5 = %md5, bytes = size, reason, "collected");
        }
        // A file that could not be unlinked has no row now: the next debris sweep takes it.
    }
    Ok(())
}

/// Unlinks files, saying for each whether it is gone (a file already gone counts as gone).
fn unlink_all(paths: &[PathBuf]) -> Vec<bool> {
    paths
        .iter()
        .map(|p| match std::fs::remove_file(p) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove a collected object");
                false
            }
        })
        .collect()
}

/// Files in `objects/` without a row and partial files without a pending fetch: what a crash
/// (or a failed unlink) left behind. Each batch is decided and removed while holding the writer
/// connection, so a placement in progress is never mistaken for debris.
async fn sweep_debris(node: &Node, dry_run: bool) -> Result<(Usage, Usage), GcError> {
    let objects_dir = node.config.data_dir.join("objects");
    let partial_dir = node.config.data_dir.join("partial");
    let (objects, partials) = tokio::task::spawn_blocking(move || {
        Ok::<_, io::Error>((list_objects(&objects_dir)?, list_flat(&partial_dir)?))
    })
    .await
    .map_err(io::Error::other)??;
    let mut orphans = Usage::default();
    for batch in objects.chunks(BATCH) {
        orphans = add(
            orphans,
            remove_unrecorded(node, batch, "SELECT md5 FROM objects", dry_run).await?,
        );
    }
    let mut stale = Usage::default();
    for batch in partials.chunks(BATCH) {
        stale = add(
            stale,
            remove_unrecorded(node, batch, "SELECT md5 FROM pending_fetches", dry_run).await?,
        );
    }
    Ok((orphans, stale))
}

fn add(a: Usage, b: Usage) -> Usage {
    Usage {
        count: a.count + b.count,
        bytes: a.bytes + b.bytes,
    }
}

/// Removes the files of `batch` whose address `recorded_sql` (a `SELECT md5 FROM …`) does not
/// list and no transfer is using.
async fn remove_unrecorded(
    node: &Node,
    batch: &[(Md5Hex, PathBuf, u64)],
    recorded_sql: &str,
    dry_run: bool,
) -> Result<Usage, GcError> {
    let json = serde_json::to_string(&batch.iter().map(|(m, _, _)| m.as_str()).collect::<Vec<_>>())
        .expect("strings serialise");
    let sql = format!("{recorded_sql} WHERE md5 IN (SELECT value FROM json_each(?))");
    let mut conn = node.db.writer().acquire().await?;
    let recorded: HashSet<String> = sqlx::query_scalar(&sql)
        .bind(&json)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let debris: Vec<&(Md5Hex, PathBuf, u64)> = batch
        .iter()
        .filter(|(m, _, _)| !recorded.contains(m.as_str()) && node.transfers.get(m).is_none())
        .collect();
    let mut usage = Usage::default();
    if dry_run {
        for (_, _, size) in &debris {
            usage.add(*size);
        }
        return Ok(usage);
    }
    let paths: Vec<PathBuf> = debris.iter().map(|(_, p, _)| p.clone()).collect();
    let gone = tokio::task::spawn_blocking(move || unlink_all(&paths))
        .await
        .map_err(io::Error::other)?;
    drop(conn);
    for ((md5, path, size), ok) in debris.into_iter().zip(gone) {
        if ok {
            usage.add(*size);
            node.retention.files_removed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(md5 = %md5, path = %path.display(), bytes = size, "removed a file no row refers to");
        }
    }
    Ok(usage)
}

/// `objects/<ab>/<md5>` files: (address, path, size). Anything else there is left alone.
fn list_objects(dir: &Path) -> io::Result<Vec<(Md5Hex, PathBuf, u64)>> {
    let mut out = Vec::new();
    let Ok(prefixes) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for prefix in prefixes {
        let prefix = prefix?;
        if !prefix.file_type()?.is_dir() {
            continue;
        }
        for (md5, path, size) in list_flat(&prefix.path())? {
            if md5.as_str()[..2] == *prefix.file_name().to_string_lossy() {
                out.push((md5, path, size));
            }
        }
    }
    Ok(out)
}

/// Regular files of `dir` named by a content address.
fn list_flat(dir: &Path) -> io::Result<Vec<(Md5Hex, PathBuf, u64)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        if let Some(md5) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Md5Hex>().ok())
        {
            out.push((md5, entry.path(), meta.len()));
        }
    }
    Ok(out)
}

/// Prunes (or, on a dry run, counts) the operational tables' old rows and compacts the change
/// feed, each in short writer transactions.
async fn prune_tables(
    node: &Node,
    policy: &Policy,
    at: i64,
    dry_run: bool,
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    let log_cutoff = at.saturating_sub(policy.log_retention.as_millis() as i64);
    let tables: [(&'static str, &str, &str); 3] = [
        (
            "fetch_log",
            "FROM fetch_log WHERE done_at < ?1",
            "DELETE FROM fetch_log WHERE rowid IN (SELECT rowid FROM fetch_log WHERE done_at < ?1 LIMIT ?2)",
        ),
        (
            "collections",
            "FROM collections WHERE at < ?1",
            "DELETE FROM collections WHERE rowid IN (SELECT rowid FROM collections WHERE at < ?1 LIMIT ?2)",
        ),
        (
            "receipts",
            "FROM receipts r WHERE ?1 = ?1 AND EXISTS (SELECT 1 FROM receipts n \
               WHERE n.doc_id = r.doc_id AND n.node = r.node \
                 AND (n.version > r.version OR (n.version = r.version AND n.origin > r.origin)))",
            "DELETE FROM receipts WHERE (doc_id, node, version, origin) IN ( \
               SELECT r.doc_id, r.node, r.version, r.origin FROM receipts r \
               WHERE ?1 = ?1 AND EXISTS (SELECT 1 FROM receipts n \
                 WHERE n.doc_id = r.doc_id AND n.node = r.node \
                   AND (n.version > r.version OR (n.version = r.version AND n.origin > r.origin))) \
               LIMIT ?2)",
        ),
    ];
    for (table, pred, delete) in tables {
        let n = if dry_run {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) {pred}"))
                .bind(log_cutoff)
                .fetch_one(node.db.reader())
                .await?
                .max(0) as u64
        } else {
            let mut total = 0u64;
            loop {
                let n = sqlx::query(delete)
                    .bind(log_cutoff)
                    .bind(PRUNE_BATCH)
                    .execute(node.db.writer())
                    .await?
                    .rows_affected();
                total += n;
                if n < PRUNE_BATCH as u64 {
                    break;
                }
            }
            total
        };
        report.rows_pruned.insert(table.to_owned(), n);
        if !dry_run {
            node.retention.rows_pruned.fetch_add(n, Ordering::Relaxed);
        }
    }
    let compacted = match policy.feed_horizon {
        Some(h) => compact_feed(node, at.saturating_sub(h.as_millis() as i64), dry_run).await?,
        None => 0,
    };
    report.rows_pruned.insert("changes".to_owned(), compacted);
    Ok(())
}

/// A change row `c` that compaction may drop: the document has a later change, and `c` is not
/// the change that made the document's current version current (`documents.last_seq`). A
/// version that arrives after a newer one (an older version delivered late, or a concurrent
/// version that lost) is recorded in the feed after the current one; dropping the current
/// one's change then would leave a client replaying from before the horizon with the older
/// version as current (a late update resurrects a deleted document, a late deletion hides a
/// live one).
const FOLDED: &str =
    "EXISTS (SELECT 1 FROM changes n WHERE n.doc_id = c.doc_id AND n.seq > c.seq) \
     AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.doc_id = c.doc_id AND d.last_seq = c.seq)";

/// Past the horizon, keeps only each document's latest change and the change of its current
/// version (not the same when an older version arrived late). The horizon is raised first, so
/// a feed answer never claims less compaction than its rows show; rows go in seq ranges of
/// [`PRUNE_BATCH`], each its own transaction.
async fn compact_feed(node: &Node, cutoff: i64, dry_run: bool) -> Result<u64, sqlx::Error> {
    let horizon: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM changes WHERE at < ?")
        .bind(cutoff)
        .fetch_one(node.db.reader())
        .await?;
    let Some(horizon) = horizon else {
        return Ok(0);
    };
    if dry_run {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM changes c WHERE c.seq <= ? AND {FOLDED}"
        ))
        .bind(horizon)
        .fetch_one(node.db.reader())
        .await?;
        return Ok(n.max(0) as u64);
    }
    sqlx::query("UPDATE feed_horizon SET horizon = MAX(horizon, ?) WHERE id = 1")
        .bind(horizon)
        .execute(node.db.writer())
        .await?;
    let first: i64 = sqlx::query_scalar("SELECT COALESCE(MIN(seq), 1) FROM changes")
        .fetch_one(node.db.reader())
        .await?;
    let mut total = 0u64;
    let mut lo = first - 1;
    while lo < horizon {
        let hi = (lo + PRUNE_BATCH).min(horizon);
        total += sqlx::query(&format!(
            "DELETE FROM changes WHERE seq IN (SELECT c.seq FROM changes c \
             WHERE c.seq > ? AND c.seq <= ? AND {FOLDED})"
        ))
        .bind(lo)
        .bind(hi)
        .execute(node.db.writer())
        .await?
        .rows_affected();
        lo = hi;
    }
    node.retention
        .rows_pruned
        .fetch_add(total, Ordering::Relaxed);
    Ok(total)
}

/// Rows per table of the node's schema, for the status output and metrics.
async fn table_sizes(node: &Node) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    const TABLES: [&str; 14] = [
        "documents",
        "versions",
        "changes",
        "objects",
        "pending_fetches",
        "fetch_waiters",
        "outbox",
        "receipts",
        "annotations",
        "devices",
        "device_flags",
        "fetch_log",
        "collections",
        "document_tags",
    ];
    let mut out = BTreeMap::new();
    for t in TABLES {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
            .fetch_one(node.db.reader())
            .await?;
        out.insert(t.to_owned(), n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use docfed_shared::topology::Tier;

    #[test]
    fn policy_values_parse_with_their_words() {
        assert_eq!(parse_count_or_all("3"), Ok(Some(3)));
        assert_eq!(parse_count_or_all("all"), Ok(None));
        assert!(parse_count_or_all("-1").is_err());
        assert_eq!(
            parse_duration_or_forever("2h"),
            Ok(Some(Duration::from_secs(7200)))
        );
        assert_eq!(parse_duration_or_forever("forever"), Ok(None));
        assert!(parse_duration_or_forever("soon").is_err());
        assert_eq!(parse_interval("off"), Ok(None));
        assert!(parse_interval("0s").is_err());
    }

    /// Doc a: v1 (seq 1), v2 the winner (seq 2, current), then a concurrent v2 that lost
    /// (seq 3). Doc b: v1, v2 (seq 4, 5). Compacting up to seq 5 keeps a's winner and loser and
    /// b's v2.
    #[tokio::test]
    async fn compaction_keeps_the_current_versions_change_when_a_loser_came_later() {
        let db = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE changes (seq INTEGER PRIMARY KEY, doc_id TEXT NOT NULL); \
             CREATE TABLE documents (doc_id TEXT NOT NULL UNIQUE, last_seq INTEGER NOT NULL); \
             INSERT INTO changes VALUES (1, 'a'), (2, 'a'), (3, 'a'), (4, 'b'), (5, 'b'); \
             INSERT INTO documents VALUES ('a', 2), ('b', 5);",
        )
        .execute(&db)
        .await
        .unwrap();
        sqlx::query(&format!(
            "DELETE FROM changes WHERE seq IN (SELECT c.seq FROM changes c \
             WHERE c.seq > 0 AND c.seq <= 5 AND {FOLDED})"
        ))
        .execute(&db)
        .await
        .unwrap();
        let left: Vec<i64> = sqlx::query_scalar("SELECT seq FROM changes ORDER BY seq")
            .fetch_all(&db)
            .await
            .unwrap();
        assert_eq!(left, [2, 3, 5]);
    }

    #[test]
    fn primaries_keep_the_record_and_regionals_do_not() {
        let p = Policy::for_tier(Some(Tier::Primary));
        assert_eq!(
            (p.keep_versions, p.version_grace, p.tombstone_grace),
            (None, None, None)
        );
        let r = Policy::for_tier(Some(Tier::Regional));
        assert_eq!(r.keep_versions, Some(1));
        assert!(r.tombstone_grace.is_some());
    }
}
