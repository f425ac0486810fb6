//! The fetch scheduler: pulls the content recorded in `pending_fetches`.
//!
//! Each pull tries its sources in order (the notification's origin, the other parents, the
//! primaries); one attempt (`pull`) resumes the partial file, hashes while writing, and stores
//! nothing whose MD5, SHA-256 or size is wrong. A connection that breaks after making progress is
//! resumed at once, a few times, with the transfer kept open for its readers; a pull that fails
//! everywhere is retried with a capped, jittered backoff, forever: the row stays in SQLite until
//! the content is held, so crashes and restarts only delay it. When a pull starts, the
//! notifications it owes downstream are released, so children start pulling from this node while
//! the bytes are still arriving (stream-through, see `transfers`).
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use docfed_shared::messages::{Notification, Receipt};
use docfed_shared::wire::Timestamp;
use docfed_shared::{DocId, Md5Hex, Sha256Hex};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::outbox::{send_notifications, send_receipt};
use super::pull::{pull, PullError};
use super::routing::route;
use super::transfers::Progress;
use crate::db::documents::{object_known, record_object};
use crate::db::fetches::{self, Pending};
use crate::metrics::Metrics;
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
    // Owing nobody (a regional node): nothing to release when the pull starts, and no commit
    // (no fsync) to record that it was.
    fetches::add_waiter(
        &mut *conn,
        d,
        &serde_json::to_string(&owed).expect("serialises"),
        owed_targets.is_empty(),
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
        // Rows come oldest first, so the pulls running now are among them: read as many more
        // as there are free slots. With none free, wait: a finishing pull wakes this loop.
        let free = slots.available_permits();
        let running = active.lock().expect("not poisoned").len();
        let due = if free == 0 {
            Ok(Vec::new())
        } else {
            fetches::due(
                node.db.reader(),
                Timestamp::now().millis(),
                (running + free) as i64,
            )
            .await
        };
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
        let on_disk = crate::atrest::content_lens(&partial, node.store.keys())
            .1
            .min(row.size as u64);
        let _ = node
            .transfers
            .begin(&md5, partial.clone(), row.size as u64, on_disk);
        // A node without children (a regional one) never owes a forward: no transaction.
        let owes = fed.topology.children(fed.id()).next().is_some();
        if owes {
            if let Err(e) = release_forwards(node, &md5).await {
                tracing::warn!(md5 = %md5, error = %e, "could not release downstream notifications");
            }
        }
    }
    let sources: Vec<String> = serde_json::from_str(&row.sources).unwrap_or_default();
    let started = Instant::now();
    let mut errors = Vec::new();
    let mut resumes = 0;
    let mut next = 0;
    while let Some(src) = sources.get(next) {
        next += 1;
        if node.presence_says_down(src) {
            errors.push(format!("{src}: peer is down"));
            continue;
        }
        let before = partial_len(&partial);
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
                // Only a broken connection: a source that stalls, sends too much or sends
                // other bytes would do the same again.
                let resumable = matches!(e, PullError::Source { .. });
                errors.push(e.to_string());
                // A connection that broke after making progress is resumed from the same source
                // at once, as a download manager would: readers following this transfer keep
                // following instead of seeing their body cut because one connection broke.
                if resumable && resumes < MAX_IMMEDIATE_RESUMES && partial_len(&partial) > before {
                    resumes += 1;
                    next -= 1;
                    tracing::info!(md5 = %md5, source = %src, resumes, error = %e, "pull broke off after progress; resuming at once");
                }
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

/// How many times one round of a pull resumes a connection that broke after making progress,
/// before it gives up and waits for the usual backoff.
const MAX_IMMEDIATE_RESUMES: u32 = 3;

fn partial_len(partial: &Path) -> u64 {
    std::fs::metadata(partial).map_or(0, |m| m.len())
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
    // Content bytes, not the file's length: a sealed file is longer (`atrest`).
    let size = crate::atrest::content_lens(partial, node.store.keys()).0;
    let held = object_known(&mut tx, md5).await?;
    let placed = node.store.place(partial, md5, held).await?;
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
            send_receipt(&mut tx, fed, &r, &r.message_id()).await?;
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
