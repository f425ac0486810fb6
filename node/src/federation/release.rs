//! Releasing content that only device flags kept here (README "Devices", ARCHITECTURE.md §2.8).
//!
//! A flag makes a node pull and keep a document's content, even out of its scope. When the flag
//! goes (unflag, or revocation of the device), no other device of this node flags the document,
//! and this node's routing does not keep content of its scope ([`Federation::keeps_content`]),
//! then for each content address of the document's versions:
//! * a pending fetch is dropped, unless one of its waiters still owes notifications downstream;
//!   each dropped waiter gets the metadata-only receipt that `on_notify` would have sent had
//!   the content not been wanted (the content receipt its pull would have sent never comes);
//! * the stored object is deleted (its `objects` row in the caller's writer transaction, the
//!   file once that committed), unless this node keeps the same bytes for something else: a
//!   version of any document that a device flags or whose scope this node keeps, or a transfer
//!   in progress (a scheduled or cross-region pull of that address).
//!
//! A pull already running when its fetch is dropped is stopped, its partial file removed; if a
//! reader follows it (stream-through), it runs to its end for that reader, then finds its row
//! gone and keeps nothing (`fetch::complete`). A standalone node keeps everything: all content
//! there is its own.

use std::str::FromStr;

use docfed_shared::messages::{Notification, Receipt};
use docfed_shared::wire::Timestamp;
use docfed_shared::{DocId, Md5Hex, Scope};
use sqlx::SqliteConnection;

use super::outbox::send_receipt;
use super::Federation;
use crate::db::devices::flagged_by_any;
use crate::db::documents::current_version;
use crate::metrics::Metrics;
use crate::Node;

/// What a release took away in its transaction, to finish after the commit.
#[derive(Debug, Default)]
#[must_use = "call `finish` after the commit to unlink the files"]
pub struct Released {
    /// Objects whose rows were deleted: (address, size, document).
    objects: Vec<(Md5Hex, u64, DocId)>,
    /// Partial files of dropped fetches no pull is writing.
    partials: Vec<Md5Hex>,
    /// Dropped fetches whose pull may be running.
    running: Vec<Md5Hex>,
    fetches_dropped: u64,
}

impl Released {
    /// Objects released.
    pub fn objects(&self) -> usize {
        self.objects.len()
    }

    /// After the commit: unlinks the released files, counts and logs them. (Before the commit
    /// a failure would leave rows naming files that are gone.)
    pub async fn finish(self, node: &Node) {
        for (md5, size, doc) in &self.objects {
            // Under the writer connection, where every placement happens: a pull that placed
            // these bytes again since the commit (a new version with the same content) keeps
            // its file.
            match node.db.writer().acquire().await {
                Ok(mut conn) => {
                    let placed_again: Result<Option<i64>, _> =
                        sqlx::query_scalar("SELECT 1 FROM objects WHERE md5 = ?")
                            .bind(md5.as_str())
                            .fetch_optional(&mut *conn)
                            .await;
                    if !matches!(placed_again, Ok(None)) {
                        continue;
                    }
                    node.store.remove(md5).await;
                }
                // The next collection removes a file without a row (retention's debris sweep).
                Err(e) => {
                    tracing::warn!(md5 = %md5, error = %e, "cannot remove a released object now");
                    continue;
                }
            }
            Metrics::inc(&node.metrics.objects_released);
            Metrics::add(&node.metrics.bytes_released, *size);
            tracing::info!(doc_id = %doc, md5 = %md5, bytes = size,
                "released content no device of this node flags any more");
        }
        for md5 in &self.partials {
            let path = node.config.data_dir.join("partial").join(md5.as_str());
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a dropped pull's partial file")
                }
            }
        }
        for md5 in &self.running {
            // Nobody follows it: stop it now. With readers it runs to its end so that they get
            // their bytes, and then keeps nothing (`fetch::complete`).
            if node.transfers.get(md5).is_none_or(|t| t.readers() == 0) {
                node.pulls.stop(md5);
            }
        }
        if self.fetches_dropped > 0 {
            Metrics::add(&node.metrics.fetches_dropped, self.fetches_dropped);
            node.wake_outbox();
        }
    }
}

/// Releases what the removal of the flags on `docs` (already deleted in `tx`) leaves unneeded.
pub async fn release(
    node: &Node,
    tx: &mut SqliteConnection,
    docs: &[DocId],
) -> Result<Released, sqlx::Error> {
    let mut out = Released::default();
    let Some(fed) = node.federation() else {
        return Ok(out);
    };
    for doc in docs {
        if flagged_by_any(&mut *tx, doc).await? {
            continue;
        }
        if let Some(cur) = current_version(tx, doc).await? {
            if !cur.deleted && fed.keeps_content(&cur.scope) {
                continue;
            }
        }
        let md5s: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT md5 FROM versions WHERE doc_id = ?")
                .bind(doc.to_string())
                .fetch_all(&mut *tx)
                .await?;
        for md5 in md5s {
            let Ok(md5) = md5.parse::<Md5Hex>() else {
                continue;
            };
            if kept_for_something_else(fed, tx, &md5).await? {
                continue;
            }
            if !drop_fetch(node, fed, tx, &md5, &mut out).await? {
                // A waiter owes notifications downstream: this node must get the bytes.
                continue;
            }
            if node.transfers.get(&md5).is_some() {
                continue;
            }
            let size: Option<i64> =
                sqlx::query_scalar("DELETE FROM objects WHERE md5 = ? RETURNING size")
                    .bind(md5.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(size) = size {
                // Logged like a collection: a later pull of the same bytes is then a re-pull,
                // not a duplicate transfer.
                sqlx::query(
                    "INSERT INTO collections (md5, size, reason, at) VALUES (?, ?, 'released', ?)",
                )
                .bind(md5.as_str())
                .bind(size)
                .bind(docfed_shared::wire::Timestamp::now().millis())
                .execute(&mut *tx)
                .await?;
                out.objects.push((md5, size.max(0) as u64, *doc));
            }
        }
    }
    Ok(out)
}

/// Whether some version with these bytes is one this node keeps: not a tombstone, and its
/// document flagged by a device here or of a scope this node's routing keeps.
async fn kept_for_something_else(
    fed: &Federation,
    tx: &mut SqliteConnection,
    md5: &Md5Hex,
) -> Result<bool, sqlx::Error> {
    let users: Vec<(String, bool)> = sqlx::query_as(
        "SELECT v.scope, EXISTS (SELECT 1 FROM device_flags f WHERE f.doc_id = v.doc_id) \
         FROM versions v WHERE v.md5 = ? AND v.deleted = 0",
    )
    .bind(md5.as_str())
    .fetch_all(&mut *tx)
    .await?;
    Ok(users.iter().any(|(scope, flagged)| {
        // A scope this node cannot read is kept: better a stray object than a lost one.
        *flagged || Scope::from_str(scope).map_or(true, |s| fed.keeps_content(&s))
    }))
}

/// Drops the pending fetch of `md5`, if any, unless one of its waiters still owes a
/// notification to a node downstream. Returns whether nothing is owed (the content may go).
async fn drop_fetch(
    node: &Node,
    fed: &Federation,
    tx: &mut SqliteConnection,
    md5: &Md5Hex,
    out: &mut Released,
) -> Result<bool, sqlx::Error> {
    let waiters: Vec<(String, i64, String, String)> = sqlx::query_as(
        "SELECT doc_id, version, origin, notification FROM fetch_waiters WHERE md5 = ?",
    )
    .bind(md5.as_str())
    .fetch_all(&mut *tx)
    .await?;
    let mut receipts = Vec::with_capacity(waiters.len());
    for (doc, version, origin, json) in &waiters {
        match serde_json::from_str::<Notification>(json) {
            Ok(n) if n.targets.is_empty() => receipts.push(Receipt {
                doc_id: n.document.id,
                version: *version,
                origin: origin.clone(),
                md5: md5.clone(),
                node: fed.id().to_owned(),
                content: false,
                at: Timestamp::now(),
            }),
            Ok(_) => return Ok(false),
            Err(e) => {
                // Not ours to judge: keep the fetch.
                tracing::warn!(doc_id = %doc, version, error = %e, "unreadable fetch waiter");
                return Ok(false);
            }
        }
    }
    let dropped = sqlx::query("DELETE FROM pending_fetches WHERE md5 = ?")
        .bind(md5.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM fetch_waiters WHERE md5 = ?")
        .bind(md5.as_str())
        .execute(&mut *tx)
        .await?;
    for r in &receipts {
        send_receipt(tx, fed, r, &r.message_id()).await?;
    }
    if dropped > 0 {
        out.fetches_dropped += dropped;
        let partial = node.config.data_dir.join("partial").join(md5.as_str());
        // A pull writing the partial file now removes it itself when it is stopped or finds
        // its row gone.
        if node.transfers.get(md5).is_none_or(|t| t.path != partial) {
            out.partials.push(md5.clone());
        }
        out.running.push(md5.clone());
        tracing::info!(md5 = %md5, "dropped a pending fetch no device of this node needs any more");
    }
    Ok(true)
}
