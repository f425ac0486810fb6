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
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use super::outbox::{send_notifications, send_receipts};
use super::pull::{pull, PullError, Wanted};
use super::routing::route;
use super::transfers::Progress;
use crate::db::documents::record_objects;
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
/// the bytes for nothing. Also the scheduler's view of its pulls ([`Scheduled`]).
#[derive(Debug, Default)]
pub struct Running {
    tokens: Mutex<std::collections::HashMap<String, CancellationToken>>,
    scheduled: Arc<Mutex<Scheduled>>,
}

impl Running {
    fn start(&self, md5: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.tokens
            .lock()
            .expect("not poisoned")
            .insert(md5.to_owned(), token.clone());
        token
    }

    fn finish(&self, md5: &str) {
        self.tokens.lock().expect("not poisoned").remove(md5);
    }

    /// The pending pull of `md5` was settled outside the scheduler (its content arrived by
    /// another transfer, `ondemand`), after its commit: a due row read before that commit is
    /// stale and must not start a pull, exactly as for a pull of the scheduler's own that ended.
    pub fn settled_elsewhere(&self, md5: &Md5Hex) {
        self.scheduled
            .lock()
            .expect("not poisoned")
            .ended
            .insert(md5.to_string());
    }

    /// Stops the scheduled pull of `md5`, if one runs. Returns whether one did.
    pub fn stop(&self, md5: &Md5Hex) -> bool {
        match self.tokens.lock().expect("not poisoned").get(md5.as_str()) {
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
    let active = node.pulls.scheduled.clone();
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    // Each pull in flight hands over at most one finished pull at a time. The recorder ends
    // when every sender has gone (this loop and its pulls), after the group it is recording.
    let (completions, finished) = mpsc::channel(MAX_CONCURRENT);
    node.supervisor
        .spawn(record_completions(node.clone(), finished));
    loop {
        // Rows come oldest first, so the pulls running now are among them: read as many more
        // as there are free slots. With none free, wait: a finishing pull wakes this loop.
        let free = slots.available_permits();
        let running = active.lock().expect("not poisoned").running.len();
        let due = if free == 0 {
            Ok(Vec::new())
        } else {
            active.lock().expect("not poisoned").ended.clear();
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
                    if active.lock().expect("not poisoned").stale(&row.md5) {
                        continue;
                    }
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        break;
                    };
                    active
                        .lock()
                        .expect("not poisoned")
                        .running
                        .insert(row.md5.clone());
                    let supervisor = node.supervisor.clone();
                    let (node, active, cancel) = (node.clone(), active.clone(), cancel.clone());
                    let completions = completions.clone();
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
                            () = fetch_one(&node, &completions, row) => {}
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

/// The scheduler's view of its pulls. A row read as due may be stale by the time it is looked
/// at: the pull it names may have ended (and committed) while the read ran. Such a pull is
/// either still `running` or among those `ended` since the read began, so neither is started
/// again from that read, and no pull needs to confirm it is still pending before it starts.
#[derive(Debug, Default)]
struct Scheduled {
    running: HashSet<String>,
    /// Pulls that ended since the last read of due rows began.
    ended: HashSet<String>,
}

impl Scheduled {
    fn stale(&self, md5: &str) -> bool {
        self.running.contains(md5) || self.ended.contains(md5)
    }
}

/// A pull in progress: its md5 among the running ones and its concurrency permit, both given back
/// when dropped.
struct ActivePull {
    md5: String,
    active: Arc<Mutex<Scheduled>>,
    node: Arc<Node>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for ActivePull {
    fn drop(&mut self) {
        if let Ok(mut a) = self.active.lock() {
            a.running.remove(&self.md5);
            a.ended.insert(self.md5.clone());
        }
        self.node.fetch_wake.notify_one();
    }
}

async fn fetch_one(node: &Arc<Node>, completions: &mpsc::Sender<Finished>, row: Pending) {
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
        let want = Wanted {
            md5: &md5,
            sha256: sha256.as_ref(),
            size: row.size as u64,
        };
        match pull(node, want, src, &partial, fed.stream_through).await {
            Ok(()) => match complete(
                completions,
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
                    errors.push(e);
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

/// A verified pull waiting to be stored and recorded, with whatever else finished meanwhile.
struct Finished {
    md5: Md5Hex,
    doc_id: DocId,
    version: i64,
    src: String,
    partial: PathBuf,
    attempts: i64,
    started: Instant,
    done: oneshot::Sender<Result<(), String>>,
}

/// Finished pulls recorded in one transaction at most.
const MAX_GROUP: usize = 64;

/// Hands a verified pull to [`record_completions`] and waits for its outcome.
#[allow(clippy::too_many_arguments)]
async fn complete(
    completions: &mpsc::Sender<Finished>,
    md5: &Md5Hex,
    doc_id: DocId,
    version: i64,
    src: &str,
    partial: &Path,
    attempts: i64,
    started: Instant,
) -> Result<(), String> {
    let (done, outcome) = oneshot::channel();
    let finished = Finished {
        md5: md5.clone(),
        doc_id,
        version,
        src: src.to_owned(),
        partial: partial.to_owned(),
        attempts,
        started,
        done,
    };
    completions
        .send(finished)
        .await
        .map_err(|_| "the node is stopping".to_owned())?;
    outcome
        .await
        .unwrap_or_else(|_| Err("the node is stopping".to_owned()))
}

/// Stores and records finished pulls, all that finished while the previous group was being
/// recorded in one go: their files renamed into the store with one round of directory fsyncs,
/// their rows in one transaction (one commit, one fsync). With 16 pulls in flight, small
/// documents finish faster than one fsync-bound transaction each could record them, and each
/// of those transactions held the node's one writer through two fsyncs.
async fn record_completions(node: Arc<Node>, mut finished: mpsc::Receiver<Finished>) {
    let fed = node.federation().expect("federation").clone();
    while let Some(first) = finished.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match finished.try_recv() {
                Ok(f) => group.push(f),
                Err(_) => break,
            }
        }
        complete_group(&node, &fed, group).await;
    }
}

/// What became of one finished pull.
enum Outcome {
    /// Stored (or already held) and recorded: `bytes` of content.
    Kept { bytes: u64 },
    /// Its fetch was dropped while the pull ran (the device flag that queued it went, see
    /// `release`): nothing kept.
    Dropped,
    /// It could not be placed in the store; nothing recorded for it.
    Failed(String),
}

/// Moves verified pulls into the store and, in one transaction, records them, releases the
/// forwards still owed, sends receipts upward and forgets the pending fetches.
async fn complete_group(node: &Arc<Node>, fed: &super::Federation, group: Vec<Finished>) {
    let outcomes = match store_and_record(node, fed, &group).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let e = e.to_string();
            tracing::warn!(pulls = group.len(), error = %e, "could not record finished pulls");
            group.iter().map(|_| Outcome::Failed(e.clone())).collect()
        }
    };
    let mut kept = false;
    for (f, outcome) in group.into_iter().zip(outcomes) {
        let result = match outcome {
            Outcome::Kept { bytes } => {
                kept = true;
                node.transfers.end(&f.md5, &f.partial, Progress::Done);
                Metrics::inc(&node.metrics.fetches_completed);
                node.content_available(f.doc_id, f.version).await;
                tracing::info!(md5 = %f.md5, doc_id = %f.doc_id, version = f.version,
                    source = %f.src, bytes, ms = f.started.elapsed().as_millis() as u64,
                    "pulled and verified");
                Ok(())
            }
            Outcome::Dropped => {
                // Readers following the transfer hold the file open and may read it to the
                // end: its bytes are verified.
                node.transfers.end(&f.md5, &f.partial, Progress::Done);
                let _ = std::fs::remove_file(&f.partial);
                tracing::info!(md5 = %f.md5, doc_id = %f.doc_id, "pull finished after its fetch was dropped; not kept");
                Ok(())
            }
            Outcome::Failed(e) => {
                node.transfers.end(&f.md5, &f.partial, Progress::Failed);
                Err(e)
            }
        };
        // Nobody waits any more when the node is stopping.
        let _ = f.done.send(result);
    }
    if kept {
        node.wake_outbox();
    }
}

/// The transaction of [`complete_group`], in a fixed number of statements for the group. A
/// database error fails the whole group, and what it placed in the store goes again: the pulls
/// are retried as any failed pull is.
async fn store_and_record(
    node: &Arc<Node>,
    fed: &super::Federation,
    group: &[Finished],
) -> Result<Vec<Outcome>, PullError> {
    // Content bytes, not the file's length: a sealed file is longer (`atrest`).
    let sizes: Vec<u64> = group
        .iter()
        .map(|f| crate::atrest::content_lens(&f.partial, node.store.keys()).0)
        .collect();
    let md5s: Vec<&Md5Hex> = group.iter().map(|f| &f.md5).collect();
    let mut tx = node.db.begin_write().await?;
    let pending = fetches::pending_of(&mut tx, &md5s).await?;
    let mut outcomes = Vec::with_capacity(group.len());
    // Indexes into `group` of the files to rename into the store.
    let mut to_place = Vec::new();
    for (i, (f, &bytes)) in group.iter().zip(&sizes).enumerate() {
        match pending.get(f.md5.as_str()) {
            None => {
                outcomes.push(Outcome::Dropped);
                continue;
            }
            // Held already (the same bytes under another document or version).
            Some(true) => {
                let _ = std::fs::remove_file(&f.partial);
            }
            Some(false) => to_place.push(i),
        }
        outcomes.push(Outcome::Kept { bytes });
    }
    let files = to_place
        .iter()
        .map(|&i| (group[i].partial.clone(), group[i].md5.clone()))
        .collect();
    let mut placed = Vec::new();
    for (i, result) in to_place.into_iter().zip(node.store.place_all(files).await) {
        match result {
            Ok(()) => placed.push(group[i].md5.clone()),
            Err(e) => outcomes[i] = Outcome::Failed(format!("storing: {e}")),
        }
    }
    let recorded: Result<(), sqlx::Error> = async {
        let kept: Vec<(&Finished, u64)> = group
            .iter()
            .zip(&outcomes)
            .filter_map(|(f, o)| match *o {
                Outcome::Kept { bytes } => Some((f, bytes)),
                _ => None,
            })
            .collect();
        let objects: Vec<(&Md5Hex, u64)> = kept.iter().map(|(f, b)| (&f.md5, *b)).collect();
        record_objects(&mut tx, &objects).await?;
        let done: Vec<fetches::Completed> = kept
            .iter()
            .map(|(f, bytes)| fetches::Completed {
                md5: &f.md5,
                source: &f.src,
                bytes: *bytes,
                attempts: f.attempts + 1,
                started_at: Timestamp::now().millis() - f.started.elapsed().as_millis() as i64,
            })
            .collect();
        settle(&mut tx, fed, &done).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = recorded {
        for md5 in &placed {
            node.store.discard(md5).await;
        }
        return Err(e.into());
    }
    Ok(outcomes)
}

/// Settles pending pulls whose content is now held here (its `objects` rows already written in
/// `tx`): the forwards their waiters still owe go out, each waiter's content receipt is sent,
/// and the waiters and pending rows go, logged in `fetch_log`. A fixed number of statements
/// for the lot. Used by finished pulls and by an on-demand transfer that kept the same bytes.
pub(super) async fn settle(
    tx: &mut sqlx::SqliteConnection,
    fed: &super::Federation,
    done: &[fetches::Completed<'_>],
) -> Result<(), sqlx::Error> {
    let md5s: Vec<&Md5Hex> = done.iter().map(|c| c.md5).collect();
    let mut receipts = Vec::new();
    for (md5, (w_doc, w_version, w_origin, json, forwarded)) in
        fetches::waiters_of(&mut *tx, &md5s).await?
    {
        let (Ok(n), Ok(md5)) = (serde_json::from_str::<Notification>(&json), md5.parse()) else {
            continue;
        };
        if !forwarded {
            let hops = route(&fed.topology, fed.id(), &n.targets, 1, &w_doc);
            send_notifications(&mut *tx, fed, &n, hops).await?;
        }
        let r = Receipt {
            doc_id: n.document.id,
            version: w_version,
            origin: w_origin,
            md5,
            node: fed.id().to_owned(),
            content: true,
            at: Timestamp::now(),
        };
        let id = r.message_id();
        receipts.push((r, id));
    }
    fetches::complete_all(&mut *tx, done).await?;
    if !receipts.is_empty() {
        let receipts: Vec<_> = receipts.iter().map(|(r, id)| (r, id.as_str())).collect();
        send_receipts(&mut *tx, fed, &receipts).await?;
    }
    Ok(())
}
