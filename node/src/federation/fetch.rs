//! The fetch scheduler: pulls the content recorded in `pending_fetches`.
//!
//! Each pull tries its sources in order (the notification's origin, the other parents, the
//! primaries), resumes a partial file with `Range` + `If-Range`, hashes while writing, and
//! stores nothing whose MD5 or size is wrong. A pull that fails everywhere is retried with a
//! capped, jittered backoff, forever: the row stays in SQLite until the content is held, so
//! crashes and restarts only delay it. When a pull starts, the notifications it owes
//! downstream are released, so children start pulling from this node while the bytes are still
//! arriving (stream-through, see `transfers`).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use docfed_shared::hashing::{ParallelHasher, StreamHash};
use docfed_shared::messages::{Notification, Receipt};
use docfed_shared::wire::Timestamp;
use docfed_shared::{ContentHasher, DocId, Md5Hex, Sha256Hex};
use futures::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::outbox::{send_notifications, send_receipt};
use super::routing::route;
use super::transfers::{Progress, Transfer};
use crate::db::documents::{object_known, record_object};
use crate::db::fetches::{self, Pending};
use crate::metrics::Metrics;
use crate::store::{SpaceReservation, StoreError};
use crate::supervisor::{Backoff, Task};
use crate::Node;

/// Pulls in flight per node: small documents are latency-bound (several fsyncs each), large
/// ones share the disk either way.
const MAX_CONCURRENT: usize = 16;

/// Records that this node must pull `md5`, adding `source` to the places to try. Idempotent.
pub async fn enqueue_fetch(
    conn: &mut sqlx::SqliteConnection,
    fed: &super::Federation,
    n: &Notification,
    owed_targets: &[String],
) -> Result<(), sqlx::Error> {
    let d = &n.document;
    let existing = fetches::sources(&mut *conn, &d.md5).await?;
    let mut sources: Vec<String> = existing
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    for s in fed.sources(&n.origin_url) {
        if !sources.contains(&s) {
            sources.push(s);
        }
    }
    let sources = serde_json::to_string(&sources).expect("strings serialise");
    fetches::upsert(&mut *conn, d, &sources).await?;
    let mut owed = n.clone();
    owed.targets = owed_targets.to_vec();
    fetches::add_waiter(
        &mut *conn,
        d,
        &serde_json::to_string(&owed).expect("serialises"),
    )
    .await
}

/// Scheduled pulls in progress, each with a token that stops it: a pull whose fetch was
/// dropped (`release`) and that nobody follows stops at once instead of pulling the rest of
/// the bytes for nothing.
#[derive(Debug, Default)]
pub struct Running(Mutex<std::collections::HashMap<String, CancellationToken>>);

impl Running {
    fn start(&self, md5: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.0
            .lock()
            .expect("not poisoned")
            .insert(md5.to_owned(), token.clone());
        token
    }

    fn finish(&self, md5: &str) {
        self.0.lock().expect("not poisoned").remove(md5);
    }

    /// Stops the scheduled pull of `md5`, if one runs. Returns whether one did.
    pub fn stop(&self, md5: &Md5Hex) -> bool {
        match self.0.lock().expect("not poisoned").get(md5.as_str()) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

pub async fn pending_count(node: &Node) -> Result<i64, sqlx::Error> {
    fetches::count(node.db.reader()).await
}

/// Runs pulls until cancelled, at most `MAX_CONCURRENT` at a time.
pub async fn run(node: Arc<Node>, cancel: CancellationToken, task: Task) {
    task.running();
    let active: Arc<Mutex<HashSet<String>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let due = fetches::due(node.db.reader(), Timestamp::now().millis(), 64).await;
        match due {
            Ok(rows) => {
                for row in rows {
                    if active.lock().expect("not poisoned").contains(&row.md5) {
                        continue;
                    }
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        break;
                    };
                    active.lock().expect("not poisoned").insert(row.md5.clone());
                    let supervisor = node.supervisor.clone();
                    let (node, active, cancel) = (node.clone(), active.clone(), cancel.clone());
                    supervisor.spawn(async move {
                        // Released on every way out, a panic included: an md5 left in
                        // `active` would never be pulled again.
                        let _slot = ActivePull {
                            md5: row.md5.clone(),
                            active,
                            node: node.clone(),
                            _permit: permit,
                        };
                        let md5 = row.md5.clone();
                        let stop = node.pulls.start(&md5);
                        tokio::select! {
                            () = fetch_one(&node, row) => {}
                            () = cancel.cancelled() => {}
                            () = stop.cancelled() => abandon(&node, &md5),
                        }
                        node.pulls.finish(&md5);
                    });
                }
            }
            Err(e) => {
                task.error(&format_args!("cannot read pending fetches: {e}"));
                tracing::warn!(error = %e, "cannot read pending fetches")
            }
        }
        tokio::select! {
            () = node.fetch_wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Cleans up after a pull stopped because its fetch was dropped: its transfer ends (it had no
/// readers) and its partial file goes.
fn abandon(node: &Node, md5: &str) {
    let partial = node.config.data_dir.join("partial").join(md5);
    if let Ok(md5) = md5.parse::<Md5Hex>() {
        node.transfers.end(&md5, &partial, Progress::Failed);
    }
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %partial.display(), error = %e, "cannot remove a stopped pull's partial file")
        }
    }
    tracing::info!(md5 = %md5, "stopped a pull whose fetch was dropped");
}

/// A pull in progress: its md5 in the active set and its concurrency permit, both given back
/// when dropped.
struct ActivePull {
    md5: String,
    active: Arc<Mutex<HashSet<String>>>,
    node: Arc<Node>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for ActivePull {
    fn drop(&mut self) {
        if let Ok(mut a) = self.active.lock() {
            a.remove(&self.md5);
        }
        self.node.fetch_wake.notify_one();
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    #[error("{source_url}: {reason}")]
    Source { source_url: String, reason: String },
    #[error("MD5 mismatch from {source_url}: expected {expected}, got {actual}")]
    Md5Mismatch {
        source_url: String,
        expected: Md5Hex,
        actual: Md5Hex,
    },
    #[error("SHA-256 mismatch from {source_url}: the signed version says {expected}, the bytes hash to {actual}")]
    Sha256Mismatch {
        source_url: String,
        expected: Sha256Hex,
        actual: Sha256Hex,
    },
    #[error("{source_url} sent less than {MIN_PROGRESS} bytes ({received}) in {window:?}")]
    Stalled {
        source_url: String,
        received: u64,
        window: Duration,
    },
    #[error("{source_url} sent more than the declared {declared} bytes")]
    Oversized { source_url: String, declared: u64 },
    #[error(
        "waiting for disk space: {needed} bytes needed, {available} available above the reserve"
    )]
    NoSpace { needed: u64, available: u64 },
    #[error("local I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

async fn fetch_one(node: &Arc<Node>, row: Pending) {
    let fed = node.federation().expect("federation").clone();
    let sha256 = row
        .sha256
        .as_deref()
        .map(str::parse::<Sha256Hex>)
        .transpose();
    let (Ok(md5), Ok(doc_id), Ok(sha256)) = (
        row.md5.parse::<Md5Hex>(),
        row.doc_id.parse::<DocId>(),
        sha256,
    ) else {
        tracing::error!(md5 = %row.md5, "corrupt pending fetch row; dropping it");
        let _ = fetches::forget(node.db.writer(), &row.md5).await;
        return;
    };
    // The scheduler reads through the reader pool, whose snapshot may predate the commit of a
    // pull that just finished; the writer connection always sees the latest state. Without
    // this, a finished pull could be repeated in full.
    match fetches::is_pending(node.db.writer(), md5.as_str()).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(md5 = %md5, error = %e, "cannot confirm a pending fetch; retrying later");
            return;
        }
    }
    let partial = node.config.data_dir.join("partial").join(md5.as_str());
    if node.transfers.get(&md5).is_some_and(|t| t.path != partial) {
        // A cross-region (on-demand) transfer of the same content is running: one transfer per
        // content address. Try again shortly; by then it is held, or that transfer is over.
        let _ = fetches::postpone(node.db.writer(), &md5, Timestamp::now().millis() + 1_000).await;
        return;
    }
    if fed.stream_through {
        // Register before telling children, so their first request finds the pull.
        let on_disk = std::fs::metadata(&partial)
            .map_or(0, |m| m.len())
            .min(row.size as u64);
        let _ = node
            .transfers
            .begin(&md5, partial.clone(), row.size as u64, on_disk);
        if let Err(e) = release_forwards(node, &md5).await {
            tracing::warn!(md5 = %md5, error = %e, "could not release downstream notifications");
        }
    }
    let sources: Vec<String> = serde_json::from_str(&row.sources).unwrap_or_default();
    let started = Instant::now();
    let mut errors = Vec::new();
    for src in &sources {
        if node.presence_says_down(src) {
            errors.push(format!("{src}: peer is down"));
            continue;
        }
        match pull(
            node,
            &md5,
            sha256.as_ref(),
            row.size as u64,
            src,
            &partial,
            fed.stream_through,
        )
        .await
        {
            Ok(()) => match complete(
                node,
                &fed,
                &md5,
                doc_id,
                row.version,
                src,
                &partial,
                row.attempts,
                started,
            )
            .await
            {
                Ok(()) => return,
                Err(e) => {
                    errors.push(format!("storing: {e}"));
                    break;
                }
            },
            Err(e @ PullError::NoSpace { .. }) => {
                // No source helps: wait (with the usual backoff) until space is freed.
                Metrics::inc(&node.metrics.pulls_waiting_for_space);
                tracing::warn!(md5 = %md5, doc_id = %doc_id, error = %e, "pull postponed: the disk reserve would be crossed");
                errors.push(e.to_string());
                break;
            }
            Err(e) => {
                match e {
                    PullError::Md5Mismatch { .. } => Metrics::inc(&node.metrics.md5_mismatches),
                    PullError::Sha256Mismatch { .. } => {
                        Metrics::inc(&node.metrics.sha256_mismatches)
                    }
                    _ => {}
                }
                tracing::debug!(md5 = %md5, error = %e, "pull attempt failed");
                errors.push(e.to_string());
            }
        }
    }
    node.transfers.end(&md5, &partial, Progress::Failed);
    Metrics::inc(&node.metrics.fetch_retries);
    let attempts = row.attempts + 1;
    let delay = Backoff::PULL
        .delay(attempts.clamp(0, 32) as u32)
        .as_millis() as i64;
    let error = errors.join("; ");
    tracing::warn!(md5 = %md5, doc_id = %doc_id, attempts, retry_in_ms = delay, error = %error, "pull failed everywhere; will retry");
    let _ = fetches::record_failure(
        node.db.writer(),
        &md5,
        attempts,
        Timestamp::now().millis() + delay,
        &error,
    )
    .await;
}

/// Sends the notifications that waited for this pull to start.
async fn release_forwards(node: &Node, md5: &Md5Hex) -> Result<(), sqlx::Error> {
    let fed = node.federation().expect("federation");
    let mut tx = node.db.begin_write().await?;
    let owed = fetches::unforwarded(&mut *tx, md5).await?;
    if owed.is_empty() {
        return Ok(());
    }
    for (doc_id, version, origin, json) in &owed {
        if let Ok(n) = serde_json::from_str::<Notification>(json) {
            let hops = route(&fed.topology, fed.id(), &n.targets, 1, doc_id);
            send_notifications(&mut tx, fed, &n, hops).await?;
        }
        fetches::mark_forwarded(&mut *tx, md5, doc_id, *version, origin).await?;
    }
    tx.commit().await?;
    node.wake_outbox();
    Ok(())
}

/// Pulls `md5` from `src` into `partial`, resuming what is already there, and verifies it: its
/// MD5 and size always, its SHA-256 when the version that asked for it carries one.
#[allow(clippy::too_many_arguments)]
async fn pull(
    node: &Arc<Node>,
    md5: &Md5Hex,
    sha256: Option<&Sha256Hex>,
    size: u64,
    src: &str,
    partial: &Path,
    stream_through: bool,
) -> Result<(), PullError> {
    let source_err = |reason: String| PullError::Source {
        source_url: src.to_owned(),
        reason,
    };
    std::fs::create_dir_all(partial.parent().expect("partial dir"))?;
    // Hash what a previous attempt left, so a resumed pull is verified end to end.
    let (file, mut hash) = {
        let path = partial.to_owned();
        tokio::task::spawn_blocking(move || {
            docfed_shared::hashing::open_for_resume::<ContentHasher>(&path, size)
        })
        .await
        .map_err(std::io::Error::other)??
    };
    let already = hash.len();
    // `None` when an on-demand transfer took the address meanwhile: pull without readers.
    let transfer = stream_through
        .then(|| node.transfers.begin(md5, partial.to_owned(), size, already))
        .flatten();
    let result = async {
        let (file, hash) = if already == size {
            (file, hash)
        } else {
            let space = reserve_space(node, size - already)?;
            let fed = node.federation().expect("pulls run in a federation");
            let dial = fed.dial(src);
            let mut req = fed.pull_request(&node.http, format!("{dial}/v1/objects/{md5}"), md5);
            if already > 0 {
                req = req
                    .header("Range", format!("bytes={already}-"))
                    .header("If-Range", format!("\"{md5}\""));
            }
            let resp = req.send().await.map_err(|e| source_err(e.to_string()))?;
            let status = resp.status();
            let file = match status.as_u16() {
                206 => file,
                200 => {
                    // The source ignored the range: start over.
                    file.set_len(0)?;
                    hash = ContentHasher::new();
                    if let Some(t) = &transfer {
                        t.set(Progress::Written(0));
                    }
                    file
                }
                _ => return Err(source_err(format!("HTTP {status}"))),
            };
            write_stream(node, resp, file, hash, size, transfer.clone(), space, src).await?
        };
        let got = hash.finish();
        if got.size != size || got.md5 != *md5 {
            let _ = std::fs::remove_file(partial);
            return Err(PullError::Md5Mismatch {
                source_url: src.to_owned(),
                expected: md5.clone(),
                actual: got.md5,
            });
        }
        if let Some(expected) = sha256.filter(|&h| *h != got.sha256) {
            // Same MD5, other bytes: a collision crafted to pass the content address.
            let _ = std::fs::remove_file(partial);
            return Err(PullError::Sha256Mismatch {
                source_url: src.to_owned(),
                expected: expected.clone(),
                actual: got.sha256,
            });
        }
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(std::io::Error::other)??;
        Ok(())
    }
    .await;
    if result.is_err() {
        node.transfers.end(md5, partial, Progress::Failed);
    }
    result
}

/// Least a source must send per `pull_stall_timeout` to keep a pull slot: a source that trickles
/// a byte a minute would otherwise hold it for ever.
pub const MIN_PROGRESS: u64 = 64 * 1024;

/// Reserves the disk space a pull will still write, so that pulls never eat into the reserve.
pub(crate) fn reserve_space(node: &Node, needed: u64) -> Result<SpaceReservation, PullError> {
    node.store.reserve(needed).map_err(|e| match e {
        StoreError::DiskFull { needed, available } => PullError::NoSpace { needed, available },
        StoreError::Io(e) => PullError::Io(e),
        other => PullError::Io(std::io::Error::other(other.to_string())),
    })
}

/// Appends the response body to `file` on a blocking thread that hashes as it writes and
/// publishes progress to stream-through readers. Takes at most the declared `size` (counting
/// what `hash` already covers): a source that sends more is cut there, so it can never fill
/// the disk; a source that sends less than [`MIN_PROGRESS`] bytes per `pull_stall_timeout`
/// is abandoned.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_stream(
    node: &Arc<Node>,
    resp: reqwest::Response,
    file: std::fs::File,
    hash: ContentHasher,
    size: u64,
    transfer: Option<Arc<Transfer>>,
    space: SpaceReservation,
    src: &str,
) -> Result<(std::fs::File, ContentHasher), PullError> {
    let mut remaining = size.saturating_sub(hash.len());
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let writer =
        tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, ContentHasher)> {
            let (mut file, mut hash) = (file, ParallelHasher::new(hash)?);
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
                space.written(chunk.len() as u64);
                hash.update(chunk);
                if let Some(t) = &transfer {
                    t.set(Progress::Written(hash.len()));
                }
            }
            Ok((file, hash.finish()?))
        });
    let mut body = resp.bytes_stream();
    let mut received = 0u64;
    let started = Instant::now();
    let stall = node.config.pull_stall_timeout;
    let (mut window_start, mut window_bytes) = (tokio::time::Instant::now(), 0u64);
    let mut failure = None;
    loop {
        let next = match tokio::time::timeout_at(window_start + stall, body.next()).await {
            Ok(next) => next,
            Err(_) => {
                Metrics::inc(&node.metrics.pulls_stalled);
                failure = Some(PullError::Stalled {
                    source_url: src.to_owned(),
                    received: window_bytes,
                    window: stall,
                });
                break;
            }
        };
        let Some(chunk) = next else { break };
        match chunk {
            Ok(mut chunk) => {
                if chunk.len() as u64 > remaining {
                    Metrics::inc(&node.metrics.pulls_oversized);
                    failure = Some(PullError::Oversized {
                        source_url: src.to_owned(),
                        declared: size,
                    });
                    chunk.truncate(remaining as usize);
                }
                remaining -= chunk.len() as u64;
                received += chunk.len() as u64;
                window_bytes += chunk.len() as u64;
                if window_bytes >= MIN_PROGRESS {
                    (window_start, window_bytes) = (tokio::time::Instant::now(), 0);
                }
                Metrics::add(&node.metrics.bytes_pulled, chunk.len() as u64);
                if let Some(rate) = node.config.pull_rate_limit {
                    // Pace to the limit: never ahead of where `rate` would have got us.
                    let due = Duration::from_secs_f64(received as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                        // Our own pacing is not the source stalling.
                        window_start += wait;
                    }
                }
                if !chunk.is_empty() && tx.send(chunk).await.is_err() {
                    break;
                }
                if failure.is_some() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(PullError::Source {
                    source_url: src.to_owned(),
                    reason: format!("transfer interrupted after {received} bytes: {e}"),
                });
                break;
            }
        }
    }
    drop(tx);
    let (file, hash) = writer.await.map_err(std::io::Error::other)??;
    match failure {
        Some(e) => Err(e),
        None => Ok((file, hash)),
    }
}

/// Moves a verified pull into the store and, in the same transaction, releases the forwards
/// still owed, sends receipts upward and forgets the pending fetch.
#[allow(clippy::too_many_arguments)]
async fn complete(
    node: &Arc<Node>,
    fed: &super::Federation,
    md5: &Md5Hex,
    doc_id: DocId,
    version: i64,
    src: &str,
    partial: &PathBuf,
    attempts: i64,
    started: Instant,
) -> Result<(), PullError> {
    let mut tx = node.db.begin_write().await?;
    // The fetch was dropped while the pull ran (the device flag that queued it went, see
    // `release`): keep nothing. Readers following the transfer hold the file open and may
    // read it to the end: its bytes are verified.
    if !fetches::is_pending(&mut *tx, md5.as_str()).await? {
        drop(tx);
        node.transfers.end(md5, partial, Progress::Done);
        let _ = std::fs::remove_file(partial);
        tracing::info!(md5 = %md5, doc_id = %doc_id, "pull finished after its fetch was dropped; not kept");
        return Ok(());
    }
    let size = std::fs::metadata(partial)?.len();
    let held = object_known(&mut tx, md5).await?;
    let placed = node
        .store
        .place(partial, md5, held)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let result: Result<(), sqlx::Error> = async {
        record_object(&mut tx, md5, size).await?;
        let waiters = fetches::waiters(&mut *tx, md5).await?;
        for (w_doc, w_version, w_origin, json, forwarded) in waiters {
            let Ok(n) = serde_json::from_str::<Notification>(&json) else {
                continue;
            };
            if !forwarded {
                let hops = route(&fed.topology, fed.id(), &n.targets, 1, &w_doc);
                send_notifications(&mut tx, fed, &n, hops).await?;
            }
            let r = Receipt {
                doc_id: n.document.id,
                version: w_version,
                origin: w_origin.clone(),
                md5: md5.clone(),
                node: fed.id().to_owned(),
                content: true,
                at: Timestamp::now(),
            };
            send_receipt(
                &mut tx,
                fed,
                &r,
                &format!("r:{}:{w_doc}:{w_version}:{w_origin}:c", fed.id()),
            )
            .await?;
        }
        let started_at = Timestamp::now().millis() - started.elapsed().as_millis() as i64;
        fetches::complete(&mut tx, md5, src, size, attempts + 1, started_at).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = result {
        if placed {
            node.store.discard(md5).await;
        }
        node.transfers.end(md5, partial, Progress::Failed);
        return Err(e.into());
    }
    node.transfers.end(md5, partial, Progress::Done);
    Metrics::inc(&node.metrics.fetches_completed);
    node.wake_outbox();
    node.content_available(doc_id, version).await;
    tracing::info!(md5 = %md5, doc_id = %doc_id, version, source = src, bytes = size,
        ms = started.elapsed().as_millis() as u64, "pulled and verified");
    Ok(())
}
