//! Local edits recorded in groups: every edit that arrives while the writer records a group waits
//! for the next turn, which takes all of them in one transaction. Each edit still reads the
//! current version as the edits before it in the group left it; their new content is renamed into
//! the store with one round of directory fsyncs (`Store::commit_all`); one commit (one fsync of
//! the WAL) acknowledges them all. Under concurrent uploads a primary otherwise held its one
//! writer through two fsyncs per document.
//!
//! Content at most `small_object_max` never touches a file: it is stored in the database by the
//! group's commit (`small_objects`), and travels inline in the notifications.
//!
//! An edit refused on its own merits (a conflict, a missing title) changes nothing, and the others
//! of its group are recorded. A database error fails the whole group, as it would have failed
//! each of its edits alone; its files go again.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use docfed_shared::wire::{ChangeKind, DocumentVersion};
use docfed_shared::{DocId, Md5Hex, Sha256Hex};
use tokio::sync::oneshot;

use super::{Content, Incoming};
use crate::db::documents::{current_version, objects_held, record_object, record_version};
use crate::error::ApiError;
use crate::store::Ingested;
use crate::Node;

/// Builds an edit's version from the current one and the content it will point to.
pub(super) type MakeVersion = Box<
    dyn FnOnce(Option<DocumentVersion>, Content) -> Result<(DocumentVersion, ChangeKind), ApiError>
        + Send,
>;

/// One edit of one document.
pub(super) struct Edit {
    pub id: DocId,
    pub content: Incoming,
    /// The current content's SHA-256 when its version predates SHA-256 (`legacy_sha256`).
    pub legacy_sha256: Option<(Md5Hex, Sha256Hex)>,
    pub make: MakeVersion,
}

type Outcome = Result<DocumentVersion, ApiError>;

/// Edits waiting for their turn, and the turn.
#[derive(Default)]
pub struct Edits {
    waiting: std::sync::Mutex<Vec<(Edit, oneshot::Sender<Outcome>)>>,
    turn: tokio::sync::Mutex<()>,
}

/// Records `edit` with whatever else is waiting; returns its version once committed.
pub(super) async fn record(node: &Arc<Node>, edit: Edit) -> Outcome {
    let (done, outcome) = oneshot::channel();
    node.edits
        .waiting
        .lock()
        .expect("not poisoned")
        .push((edit, done));
    // On a task of its own, which shutdown waits for: a request that goes away (its client hung
    // up) must not take down the group its edit is recorded with.
    let recorder = node.clone();
    node.supervisor
        .spawn(async move { record_waiting(&recorder).await });
    outcome
        .await
        .unwrap_or_else(|_| Err(ApiError::DbUnavailable(sqlx::Error::PoolClosed)))
}

/// One turn: records every edit waiting (none when an earlier turn took them).
async fn record_waiting(node: &Arc<Node>) {
    let _turn = node.edits.turn.lock().await;
    let group = std::mem::take(&mut *node.edits.waiting.lock().expect("not poisoned"));
    if group.is_empty() {
        return;
    }
    let (edits, replies): (Vec<Edit>, Vec<_>) = group.into_iter().unzip();
    let count = edits.len();
    let outcomes = match record_group(node, edits).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::warn!(edits = count, error = %e, "could not record local edits");
            (0..count).map(|_| Err(same_failure(&e))).collect()
        }
    };
    if outcomes.iter().any(Result::is_ok) {
        node.wake_outbox();
        node.changes_committed().await;
    }
    for (done, outcome) in replies.into_iter().zip(outcomes) {
        if let Ok(v) = &outcome {
            tracing::info!(doc_id = %v.id, version = v.version, md5 = %v.md5, size = v.size,
                edits = count, "recorded local edit");
        }
        // Nobody waits when the request went away.
        let _ = done.send(outcome);
    }
}

/// An edit's step once its content is settled: the content it brings, if any, and whether
/// that content is new bytes to record as an object.
struct Step {
    id: DocId,
    given: Option<Content>,
    new_bytes: bool,
    /// The new content's bytes when they go to the small-object store (and inline in the
    /// notifications).
    small: Option<Bytes>,
    legacy_sha256: Option<(Md5Hex, Sha256Hex)>,
    make: MakeVersion,
}

/// The group's transaction. `Err` fails every edit of the group.
async fn record_group(node: &Node, edits: Vec<Edit>) -> Result<Vec<Outcome>, ApiError> {
    let mut tx = node.db.begin_write().await?;
    let md5s: Vec<&Md5Hex> = edits
        .iter()
        .filter_map(|e| match &e.content {
            Incoming::Bytes(c) => Some(&c.md5),
            _ => None,
        })
        .collect();
    let held = objects_held(&mut tx, &md5s).await?;
    // New content to place: the first upload of each content not held yet. Another upload of
    // the same bytes is dropped here, its temporary file with it.
    let mut to_place: Vec<Ingested> = Vec::new();
    let mut steps = Vec::with_capacity(edits.len());
    for e in edits {
        let (given, new_bytes, small) = match e.content {
            Incoming::Kept => (None, false, None),
            Incoming::AtSource(c) => (Some(c), false, None),
            Incoming::Bytes(c) => {
                let given = Content {
                    md5: c.md5.clone(),
                    sha256: Some(c.sha256.clone()),
                    size: c.size,
                    lazy: false,
                };
                let small = c.small().cloned();
                if small.is_none()
                    && !held.contains(c.md5.as_str())
                    && !to_place.iter().any(|p| p.md5 == c.md5)
                {
                    to_place.push(c);
                }
                (Some(given), true, small)
            }
        };
        steps.push(Step {
            id: e.id,
            given,
            new_bytes,
            small,
            legacy_sha256: e.legacy_sha256,
            make: e.make,
        });
    }
    let placing: Vec<Md5Hex> = to_place.iter().map(|i| i.md5.clone()).collect();
    let mut placed = Vec::new();
    let mut unplaced: Vec<(Md5Hex, ApiError)> = Vec::new();
    for (md5, result) in placing
        .into_iter()
        .zip(node.store.commit_all(to_place).await)
    {
        match result {
            Ok(()) => placed.push(md5),
            Err(e) => unplaced.push((md5, e.into())),
        }
    }
    let mut recorded_objects = HashSet::new();
    // Small content of the edits recorded, stored after them in a few statements.
    let mut small_recorded: Vec<(Md5Hex, Bytes)> = Vec::new();
    let recorded: Result<Vec<Outcome>, ApiError> = async {
        let mut outcomes = Vec::with_capacity(steps.len());
        for step in steps {
            let failed = step.given.as_ref().and_then(|c| {
                unplaced
                    .iter()
                    .find(|(m, _)| step.new_bytes && *m == c.md5)
                    .map(|(_, e)| same_failure(e))
            });
            if let Some(e) = failed {
                outcomes.push(Err(e));
                continue;
            }
            let current = current_version(&mut tx, &step.id).await?;
            let address = match (step.given, &current) {
                (Some(c), _) => c,
                (None, Some(cur)) => Content {
                    md5: cur.md5.clone(),
                    sha256: cur.sha256.clone().or_else(|| {
                        step.legacy_sha256
                            .filter(|(md5, _)| *md5 == cur.md5)
                            .map(|(_, h)| h)
                    }),
                    size: cur.size,
                    lazy: cur.lazy,
                },
                (None, None) => {
                    outcomes.push(Err(ApiError::not_found(format!("document {}", step.id))));
                    continue;
                }
            };
            let (md5, size) = (address.md5.clone(), address.size);
            let (mut version, kind) = match (step.make)(current, address) {
                Ok(made) => made,
                Err(e) => {
                    outcomes.push(Err(e));
                    continue;
                }
            };
            if let Some(key) = node.federation().and_then(|f| f.key.as_ref()) {
                version.signature = Some(key.sign(&version.signing_input()));
            }
            match &step.small {
                Some(bytes) if !small_recorded.iter().any(|(m, _)| *m == md5) => {
                    small_recorded.push((md5.clone(), bytes.clone()));
                }
                Some(_) => {}
                None if step.new_bytes => {
                    record_object(&mut tx, &md5, size).await?;
                    recorded_objects.insert(md5);
                }
                None => {}
            }
            record_version(&mut tx, &version, kind).await?;
            if let Some(fed) = node.federation() {
                let inline = match &step.small {
                    Some(bytes) => Some(bytes.clone()),
                    None => {
                        crate::federation::inbox::inline_content(node, fed, &mut tx, &version)
                            .await?
                    }
                };
                crate::federation::inbox::announce_local_edit(fed, &mut tx, &version, kind, inline)
                    .await?;
            }
            outcomes.push(Ok(version));
        }
        let small: Vec<(&Md5Hex, &[u8])> = small_recorded
            .iter()
            .map(|(m, b)| (m, b.as_ref()))
            .collect();
        crate::small_objects::record_all(&mut tx, node.store.keys(), &small).await?;
        Ok(outcomes)
    }
    .await;
    let outcomes = match recorded {
        Ok(outcomes) => outcomes,
        Err(e) => {
            for md5 in &placed {
                node.store.discard(md5).await;
            }
            return Err(e);
        }
    };
    // Content placed for edits that were refused: nothing records it. Removed while this
    // transaction still holds the writer, so no other one can have recorded it meanwhile.
    for md5 in placed.iter().filter(|m| !recorded_objects.contains(*m)) {
        node.store.discard(md5).await;
    }
    if let Err(e) = tx.commit().await {
        for md5 in placed.iter().filter(|m| recorded_objects.contains(*m)) {
            node.store.discard(md5).await;
        }
        return Err(e.into());
    }
    Ok(outcomes)
}

/// The failure `e` again, for another edit it failed too.
fn same_failure(e: &ApiError) -> ApiError {
    match e {
        ApiError::InsufficientStorage => ApiError::InsufficientStorage,
        ApiError::TooLarge { limit } => ApiError::TooLarge { limit: *limit },
        ApiError::UploadAborted(m) => ApiError::UploadAborted(m.clone()),
        ApiError::DbUnavailable(e) => ApiError::DbUnavailable(sqlx::Error::Protocol(e.to_string())),
        e => ApiError::Internal(anyhow::anyhow!("{e:#}")),
    }
}
