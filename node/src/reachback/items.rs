//! From an external item to a document version (ARCHITECTURE.md §2.9), for every kind of source.
//!
//! The directory is the source's state: an item is new, changed or unchanged by comparison with
//! the current version of its document (`sources::item_id`), which the other primary holds too.
//! The local item cache (`db::sources`) only spares reading an item whose change marker did not
//! move; a takeover without it reads every item once and publishes nothing that is unchanged.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use docfed_shared::limits;
use docfed_shared::sources::{item_id, item_source_field, OnRemove, SourceSpec};
use docfed_shared::wire::DocumentVersion;
use docfed_shared::DocId;
use futures::Stream;

use crate::db::sources::{CachedItem, Counts};
use crate::edits::{Content, MetaInput};
use crate::error::ApiError;
use crate::store::Ingested;
use crate::Node;

/// Longest pause in an item's bytes before reading it is abandoned.
const ITEM_IDLE: Duration = Duration::from_secs(60);

/// What a source knows of one item, besides its bytes.
#[derive(Debug, Clone)]
pub struct Item {
    /// Unique within the source: a relative path, an entry id, a feed item's key.
    pub key: String,
    pub title: String,
    pub filename: String,
    /// Tags of this item, added to the source's.
    pub tags: Vec<String>,
    pub description: String,
    pub content_type: String,
    /// The kind's change marker (a file's size and mtime, an entry's update time, a hash of a
    /// feed item): the same marker as last time means the same item.
    pub stamp: String,
}

/// An item's bytes as a version gets them: read into the store, or left at the source (a lazy
/// item: its digests and where the bytes are).
pub enum ItemBytes {
    Read(Ingested),
    AtSource(Content, String),
}

/// What offering an item did.
#[derive(Debug)]
pub enum Offered {
    /// The current version already is this item.
    Unchanged,
    Published(Box<DocumentVersion>),
}

/// One source's way into the node's edits.
#[derive(Clone)]
pub struct Publisher {
    pub node: Arc<Node>,
    pub spec: Arc<SourceSpec>,
}

impl Publisher {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    fn id(&self, key: &str) -> DocId {
        item_id(&self.spec.name, key)
    }

    /// Refuses an item whose metadata would not fit a version, before its bytes are read.
    pub fn check(&self, item: &Item) -> anyhow::Result<()> {
        let source = item_source_field(&self.spec.name, &item.key);
        if item.key.is_empty() || source.chars().count() > limits::MAX_SOURCE {
            anyhow::bail!(
                "item key {:?} is empty or longer than {} characters with the source's name",
                item.key,
                limits::MAX_SOURCE
            );
        }
        if item.key.chars().any(char::is_control) {
            anyhow::bail!("item key {:?} contains control characters", item.key);
        }
        Ok(())
    }

    /// Whether the item, as its marker says, is what this node last made current, and still is.
    pub async fn is_unchanged(&self, key: &str, stamp: &str) -> anyhow::Result<bool> {
        let db = &self.node.db;
        let Some(cached) = db.cached_item(&self.spec.name, key).await? else {
            return Ok(false);
        };
        if cached.stamp != stamp {
            return Ok(false);
        }
        let current = db.document(&self.id(key)).await?;
        Ok(current.is_some_and(|d| !d.current.deleted && d.current.md5 == cached.md5))
    }

    /// Reads the item's bytes into the store and makes them the document's current version
    /// unless it already is exactly this (same content and metadata).
    pub async fn offer<S, E>(&self, item: Item, body: S) -> anyhow::Result<Offered>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let ingested = self.read(&item, body).await?;
        self.commit(item, ingested).await
    }

    /// Streams an item's bytes into the store (hashed, fsynced, not yet a document).
    pub async fn read<S, E>(&self, item: &Item, body: S) -> anyhow::Result<Ingested>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.check(item)?;
        let limit = self.max_item_size();
        self.node
            .store
            .ingest(body, limit, ITEM_IDLE)
            .await
            .with_context(|| format!("cannot read item {:?}", item.key))
    }

    /// Makes read bytes the item's current version, unless it already is exactly this.
    pub async fn commit(&self, item: Item, ingested: Ingested) -> anyhow::Result<Offered> {
        self.make_current(item, ItemBytes::Read(ingested)).await
    }

    /// Whether the source's items are lazy unless an item says otherwise.
    pub fn lazy(&self) -> bool {
        self.spec.lazy.unwrap_or(false)
    }

    /// Hashes an item's bytes without keeping them: how a lazy item whose source does not
    /// declare its digests gets them (its bytes are read once here, then stay at the source).
    pub async fn learn<S, E>(&self, item: &Item, body: S) -> anyhow::Result<Content>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use docfed_shared::hashing::StreamHash;
        use futures::StreamExt;
        self.check(item)?;
        let limit = self.max_item_size();
        let mut body = body;
        let mut hasher = docfed_shared::ContentHasher::new();
        loop {
            let next = tokio::time::timeout(ITEM_IDLE, body.next())
                .await
                .map_err(|_| anyhow::anyhow!("item {:?}: no bytes for {ITEM_IDLE:?}", item.key))?;
            let Some(chunk) = next else { break };
            let chunk =
                chunk.map_err(|e| anyhow::anyhow!("cannot read item {:?}: {e}", item.key))?;
            if hasher.len() + chunk.len() as u64 > limit {
                anyhow::bail!("item {:?} is larger than {limit} bytes", item.key);
            }
            hasher.update(&chunk);
        }
        let d = hasher.finish();
        Ok(Content {
            md5: d.md5,
            sha256: Some(d.sha256),
            size: d.size,
            lazy: true,
        })
    }

    /// Makes a lazy item (its digests, and where its bytes are read) the current version of its
    /// document, unless the current version already has this content and metadata (lazy still,
    /// or fetched since).
    pub async fn commit_lazy(
        &self,
        item: Item,
        content: Content,
        locator: String,
    ) -> anyhow::Result<Offered> {
        self.check(&item)?;
        if content.size > self.max_item_size() {
            anyhow::bail!(
                "item {:?} is larger than {} bytes",
                item.key,
                self.max_item_size()
            );
        }
        self.make_current(item, ItemBytes::AtSource(content, locator))
            .await
    }

    /// Makes the item's bytes, read or left at the source, its current version, unless the
    /// current version already has this content and metadata (lazy still, or fetched since).
    pub async fn make_current(&self, item: Item, bytes: ItemBytes) -> anyhow::Result<Offered> {
        let node = &self.node;
        let id = self.id(&item.key);
        let meta = self.meta(&item);
        let cached = match &bytes {
            ItemBytes::Read(i) => CachedItem {
                md5: i.md5.clone(),
                size: i.size,
                stamp: item.stamp.clone(),
                locator: None,
            },
            ItemBytes::AtSource(c, locator) => CachedItem {
                md5: c.md5.clone(),
                size: c.size,
                stamp: item.stamp.clone(),
                locator: Some(locator.clone()),
            },
        };
        let current = node.db.document(&id).await?.map(|d| d.current);
        let unchanged = current.as_ref().is_some_and(|c| {
            !c.deleted && c.md5 == cached.md5 && c.size == cached.size && same_meta(c, &meta)
        });
        let made = if unchanged {
            None
        } else {
            let made = match bytes {
                ItemBytes::Read(ingested) => node.put_item(id, meta, ingested).await,
                ItemBytes::AtSource(content, _) => node.put_lazy_item(id, meta, content).await,
            };
            Some(made.map_err(api_error)?)
        };
        node.db
            .remember_item(&self.spec.name, &item.key, &cached)
            .await?;
        let Some(version) = made else {
            return Ok(Offered::Unchanged);
        };
        self.published(&item, &version).await;
        Ok(Offered::Published(Box::new(version)))
    }

    fn max_item_size(&self) -> u64 {
        self.spec
            .max_item_size
            .unwrap_or(self.node.config.max_upload_size)
    }

    async fn published(&self, item: &Item, version: &DocumentVersion) {
        self.count(
            Counts {
                published: 1,
                ..Counts::default()
            },
            None,
        )
        .await;
        tracing::info!(source = %self.spec.name, key = %item.key, doc_id = %version.id,
            version = version.version, size = version.size, lazy = version.lazy, "published source item");
    }

    /// The item is gone from its source: its document is deleted (unless the source keeps
    /// documents of removed items). Returns whether a tombstone was made.
    pub async fn remove(&self, key: &str) -> anyhow::Result<bool> {
        self.node.db.forget_item(&self.spec.name, key).await?;
        if self.spec.on_remove == OnRemove::Keep {
            return Ok(false);
        }
        let id = self.id(key);
        let live = self
            .node
            .db
            .document(&id)
            .await?
            .is_some_and(|d| !d.current.deleted);
        if !live {
            return Ok(false);
        }
        match self.node.tombstone(id).await {
            Ok(_) => {}
            // Deleted meanwhile (by an operator through the API): what we wanted.
            Err(ApiError::Conflict(_)) | Err(ApiError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(api_error(e)),
        }
        self.count(
            Counts {
                removed: 1,
                ..Counts::default()
            },
            None,
        )
        .await;
        tracing::info!(source = %self.spec.name, key, doc_id = %id, "item removed from its source; document deleted");
        Ok(true)
    }

    /// After a complete listing of the source: every live document of the source whose key was
    /// not listed is removed. Returns how many were.
    pub async fn sweep(&self, present: &HashSet<String>) -> anyhow::Result<usize> {
        let mut removed = 0;
        for doc in self.node.db.source_documents(&self.spec.name).await? {
            if !doc.deleted && !present.contains(&doc.key) && self.remove(&doc.key).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Counts a failed item and makes its error the source's last error.
    pub async fn failed(&self, key: &str, error: &anyhow::Error) {
        tracing::warn!(source = %self.spec.name, key, error = format!("{error:#}"), "source item not taken");
        self.count(
            Counts {
                failed: 1,
                ..Counts::default()
            },
            Some(&format!("{key}: {error:#}")),
        )
        .await;
    }

    /// Records a finished run: `seen` items after a complete listing, else `error`.
    pub async fn record_run(&self, seen: Option<u64>, error: Option<&str>) {
        if let Err(e) = self.node.db.record_run(self.name(), seen, error).await {
            tracing::warn!(source = %self.spec.name, error = %e, "cannot record the source's run");
        }
    }

    async fn count(&self, counts: Counts, error: Option<&str>) {
        if let Err(e) = self
            .node
            .db
            .count_items(&self.spec.name, counts, error)
            .await
        {
            tracing::warn!(source = %self.spec.name, error = %e, "cannot update the source's counters");
        }
    }

    fn meta(&self, item: &Item) -> MetaInput {
        let mut tags = self.spec.tags.clone();
        for t in &item.tags {
            if !tags.contains(t) && tags.len() < limits::MAX_TAGS {
                tags.push(t.clone());
            }
        }
        MetaInput {
            title: Some(truncate(&item.title, limits::MAX_TITLE, false)),
            description: Some(truncate(&item.description, limits::MAX_DESCRIPTION, true)),
            tags: Some(tags),
            filename: Some(truncate(&item.filename, limits::MAX_FILENAME, false)),
            source: Some(item_source_field(&self.spec.name, &item.key)),
            scope: Some(self.spec.scope()),
            content_type: Some(item.content_type.clone()),
            author: Some(truncate(&self.spec.author(), limits::MAX_SOURCE, false)),
        }
    }
}

/// A lazy item's locator for a file: its path, which must be UTF-8.
pub fn path_locator(path: &std::path::Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("path {} is not UTF-8", path.display()))
}

fn same_meta(current: &DocumentVersion, meta: &MetaInput) -> bool {
    let eq = |a: &str, b: &Option<String>| b.as_deref() == Some(a);
    eq(&current.title, &meta.title)
        && eq(&current.description, &meta.description)
        && eq(&current.filename, &meta.filename)
        && eq(&current.source, &meta.source)
        && eq(&current.content_type, &meta.content_type)
        && eq(&current.author, &meta.author)
        && meta.tags.as_ref() == Some(&current.tags)
        && meta.scope.as_ref() == Some(&current.scope)
}

/// At most `max` characters, control characters (but newlines where `multiline`) replaced:
/// external metadata is cut to fit rather than refused.
pub fn truncate(s: &str, max: usize, multiline: bool) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && !(multiline && c == '\n') {
                ' '
            } else {
                c
            }
        })
        .take(max)
        .collect()
}

fn api_error(e: ApiError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
