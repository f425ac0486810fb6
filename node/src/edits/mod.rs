//! Local edits: publish, new version, tombstone, reactivate.
//!
//! Each edit reads the current version, builds the next one and records it in a writer
//! transaction, with the edits that arrived while the previous group was recorded (`recorder`).
//! New content is moved into the store inside that same transaction and removed again if the
//! commit fails, so a document, its version and its object appear together or not at all.
//!
//! A primary of a keyed federation signs each version it accepts, over its metadata and the
//! content's SHA-256, so that no node below it can forge or alter a document (ARCHITECTURE.md §7).

use std::sync::Arc;

use docfed_shared::wire::{ChangeKind, DocumentVersion, Timestamp};
use docfed_shared::{DocId, Md5Hex, Scope, Sha256Hex};

mod recorder;
pub use recorder::Edits;

use crate::error::ApiError;
use crate::store::Ingested;
use crate::Node;

/// Metadata supplied with a publication or a new version; `None` keeps the previous value (or
/// the default, for a first publication).
#[derive(Debug, Clone, Default)]
pub struct MetaInput {
    pub title: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub filename: Option<String>,
    pub source: Option<String>,
    pub scope: Option<Scope>,
    pub content_type: Option<String>,
    pub author: Option<String>,
}

impl Node {
    pub async fn publish(
        self: &Arc<Self>,
        meta: MetaInput,
        content: Ingested,
    ) -> Result<DocumentVersion, ApiError> {
        let id = DocId::new();
        let origin = self.config.node_id.clone();
        self.apply(id, Incoming::Bytes(content), move |current, c| {
            debug_assert!(current.is_none(), "fresh ids are unknown");
            if meta.title.is_none() {
                return Err(ApiError::invalid("title", "is required"));
            }
            let v = version_from(id, 1, origin, meta, c);
            Ok((v, ChangeKind::Published))
        })
        .await
    }

    pub async fn new_version(
        self: &Arc<Self>,
        id: DocId,
        meta: MetaInput,
        content: Ingested,
    ) -> Result<DocumentVersion, ApiError> {
        let origin = self.config.node_id.clone();
        self.apply(id, Incoming::Bytes(content), move |current, c| {
            let prev = live(id, current)?;
            let v = DocumentVersion {
                id,
                version: prev.version + 1,
                origin,
                title: meta.title.unwrap_or(prev.title),
                description: meta.description.unwrap_or(prev.description),
                tags: meta.tags.unwrap_or(prev.tags),
                filename: meta.filename.unwrap_or(prev.filename),
                source: meta.source.unwrap_or(prev.source),
                scope: meta.scope.unwrap_or(prev.scope),
                content_type: meta.content_type.unwrap_or(prev.content_type),
                md5: c.md5,
                size: c.size,
                deleted: false,
                created_at: Timestamp::now(),
                author: meta.author.unwrap_or(prev.author),
                sha256: c.sha256,
                signature: None,
                lazy: false,
            };
            Ok((v, ChangeKind::Updated))
        })
        .await
    }

    /// Makes an item of a reachback source the current version of its derived document
    /// (`sources::item_id`): version 1, the next version of a live document, or the revival of a
    /// deleted one (an item that came back). Every field comes from `meta`.
    pub async fn put_item(
        self: &Arc<Self>,
        id: DocId,
        meta: MetaInput,
        content: Ingested,
    ) -> Result<DocumentVersion, ApiError> {
        self.put_item_with(id, meta, Incoming::Bytes(content)).await
    }

    /// [`put_item`](Self::put_item) for an item whose bytes stay at its source until first read
    /// (a lazy version, ARCHITECTURE.md §2.9).
    pub async fn put_lazy_item(
        self: &Arc<Self>,
        id: DocId,
        meta: MetaInput,
        content: Content,
    ) -> Result<DocumentVersion, ApiError> {
        let content = Content {
            lazy: true,
            ..content
        };
        self.put_item_with(id, meta, Incoming::AtSource(content))
            .await
    }

    async fn put_item_with(
        self: &Arc<Self>,
        id: DocId,
        meta: MetaInput,
        content: Incoming,
    ) -> Result<DocumentVersion, ApiError> {
        let origin = self.config.node_id.clone();
        self.apply(id, content, move |current, c| {
            let (version, kind) = match &current {
                None => (1, ChangeKind::Published),
                Some(p) if p.deleted => (p.version + 1, ChangeKind::Reactivated),
                Some(p) => (p.version + 1, ChangeKind::Updated),
            };
            let v = version_from(id, version, origin, meta, c);
            Ok((v, kind))
        })
        .await
    }

    /// The bytes of lazy version `md5` of `id` were fetched from their source, verified and
    /// stored here: the same content becomes an ordinary version, which the tiers replicate as
    /// any other. Nothing happens when the current version is no longer that lazy one.
    pub async fn materialise(
        self: &Arc<Self>,
        id: DocId,
        md5: &Md5Hex,
    ) -> Result<Option<DocumentVersion>, ApiError> {
        let current = self.db.document(&id).await?.map(|d| d.current);
        if !current.is_some_and(|c| c.lazy && !c.deleted && c.md5 == *md5) {
            return Ok(None);
        }
        let origin = self.config.node_id.clone();
        let md5 = md5.clone();
        let made = self
            .apply(id, Incoming::Kept, move |current, c| {
                let prev = live(id, current)?;
                if !prev.lazy || prev.md5 != md5 {
                    return Err(ApiError::Conflict(format!(
                        "document {id} changed while its content was fetched"
                    )));
                }
                let mut v = successor(prev, origin, false, c);
                v.lazy = false;
                Ok((v, ChangeKind::Updated))
            })
            .await;
        match made {
            Ok(v) => Ok(Some(v)),
            Err(ApiError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn tombstone(self: &Arc<Self>, id: DocId) -> Result<DocumentVersion, ApiError> {
        let origin = self.config.node_id.clone();
        self.apply(id, Incoming::Kept, move |current, c| {
            let prev = live(id, current)?;
            Ok((successor(prev, origin, true, c), ChangeKind::Deleted))
        })
        .await
    }

    pub async fn reactivate(self: &Arc<Self>, id: DocId) -> Result<DocumentVersion, ApiError> {
        let origin = self.config.node_id.clone();
        self.apply(id, Incoming::Kept, move |current, c| {
            let prev = current.ok_or_else(|| ApiError::not_found(format!("document {id}")))?;
            if !prev.deleted {
                return Err(ApiError::Conflict(format!("document {id} is not deleted")));
            }
            Ok((successor(prev, origin, false, c), ChangeKind::Reactivated))
        })
        .await
    }

    /// Refuses edits on a node that is not a primary of its federation (a standalone node is
    /// its own primary). A bulk publication asks before reading its request.
    pub fn check_primary(&self) -> Result<(), ApiError> {
        match self.federation() {
            Some(fed) if !fed.is_primary() => Err(ApiError::WrongTier(format!(
                "{} is a {} node; publish, edit and delete on a primary",
                fed.id(),
                fed.me.tier
            ))),
            _ => Ok(()),
        }
    }

    /// Runs one edit: `make` sees the current version and the new content's digests (or the
    /// current one's, for edits without content); the version it makes is signed and recorded
    /// with the edits that arrived meanwhile (`recorder`).
    async fn apply<F>(
        self: &Arc<Self>,
        id: DocId,
        content: Incoming,
        make: F,
    ) -> Result<DocumentVersion, ApiError>
    where
        F: FnOnce(
                Option<DocumentVersion>,
                Content,
            ) -> Result<(DocumentVersion, ChangeKind), ApiError>
            + Send
            + 'static,
    {
        self.check_primary()?;
        let legacy_sha256 = match &content {
            Incoming::Kept => self.legacy_sha256(&id).await?,
            Incoming::Bytes(_) | Incoming::AtSource(_) => None,
        };
        recorder::record(
            self,
            recorder::Edit {
                id,
                content,
                legacy_sha256,
                make: Box::new(make),
            },
        )
        .await
    }
}

/// A version made of `meta` alone (defaults for what it leaves out) and `c`: a first
/// publication, or a source item, which replaces every field.
fn version_from(
    id: DocId,
    version: i64,
    origin: String,
    meta: MetaInput,
    c: Content,
) -> DocumentVersion {
    DocumentVersion {
        id,
        version,
        origin,
        title: meta.title.unwrap_or_default(),
        description: meta.description.unwrap_or_default(),
        tags: meta.tags.unwrap_or_default(),
        filename: meta.filename.unwrap_or_default(),
        source: meta.source.unwrap_or_default(),
        scope: meta.scope.unwrap_or(Scope::Global),
        content_type: meta
            .content_type
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        md5: c.md5,
        size: c.size,
        deleted: false,
        created_at: Timestamp::now(),
        author: meta.author.unwrap_or_default(),
        sha256: c.sha256,
        signature: None,
        lazy: c.lazy,
    }
}

/// What an edit knows of the content its version points to.
pub struct Content {
    pub md5: Md5Hex,
    pub sha256: Option<Sha256Hex>,
    pub size: u64,
    /// The bytes stay at their source (a lazy reachback item): no object comes with the edit.
    pub lazy: bool,
}

/// The content an edit brings.
enum Incoming {
    /// None: the version keeps the current one's.
    Kept,
    Bytes(Ingested),
    /// Known by its digests only; the bytes stay at a reachback source.
    AtSource(Content),
}

impl Node {
    /// The SHA-256 of a document's current content when its version predates SHA-256 and the
    /// content is held here, so an edit without new content still signs a strong hash. Hashed
    /// outside the write transaction: reading gigabytes must not block other writers.
    async fn legacy_sha256(&self, id: &DocId) -> Result<Option<(Md5Hex, Sha256Hex)>, ApiError> {
        let Some(doc) = self.db.document(id).await? else {
            return Ok(None);
        };
        let cur = doc.current;
        if cur.sha256.is_some() || !doc.available_here {
            return Ok(None);
        }
        let path = self.store.object_path(&cur.md5);
        let keys = self.store.keys().cloned();
        let digests =
            tokio::task::spawn_blocking(move || crate::atrest::hash_object(&path, keys.as_ref()))
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
        match digests {
            Ok(d) if d.md5 == cur.md5 => Ok(Some((d.md5, d.sha256))),
            Ok(_) => {
                tracing::error!(doc_id = %id, md5 = %cur.md5, "stored object does not match its address");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(doc_id = %id, error = %e, "cannot hash stored content");
                Ok(None)
            }
        }
    }
}

/// The current version, which must exist and not be a tombstone.
fn live(id: DocId, current: Option<DocumentVersion>) -> Result<DocumentVersion, ApiError> {
    let prev = current.ok_or_else(|| ApiError::not_found(format!("document {id}")))?;
    if prev.deleted {
        return Err(ApiError::Conflict(format!(
            "document {id} is deleted; reactivate it first"
        )));
    }
    Ok(prev)
}

fn successor(prev: DocumentVersion, origin: String, deleted: bool, c: Content) -> DocumentVersion {
    DocumentVersion {
        version: prev.version + 1,
        origin,
        deleted,
        created_at: Timestamp::now(),
        sha256: c.sha256,
        signature: None,
        ..prev
    }
}
