//! Reachback sources' rows (ARCHITECTURE.md §2.9): the item cache that spares re-reading
//! unchanged items, each source's status, and the lookup of a source's documents.

use docfed_shared::wire::sources::SourceStatus;
use docfed_shared::wire::Timestamp;
use docfed_shared::{DocId, Md5Hex};

use super::Db;

/// What this node last saw of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedItem {
    pub md5: Md5Hex,
    pub size: u64,
    pub stamp: String,
    /// Where a lazy item's bytes are read (an absolute path or a URL); `None` when the item was
    /// published with its bytes.
    pub locator: Option<String>,
}

/// A lazy item whose bytes this node's source can read: where, and under which item.
#[derive(Debug, Clone)]
pub struct LazyItem {
    pub source: String,
    pub key: String,
    pub locator: String,
}

/// The current version of one of a source's documents, as the directory holds it.
#[derive(Debug, Clone)]
pub struct SourceDocument {
    pub id: DocId,
    /// The key, from the document's `source` field (`<source>:<key>`).
    pub key: String,
    pub deleted: bool,
}

/// One source's `source_status` row (its cursor aside), as `GET /v1/sources` shows it.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
struct StatusRow {
    source: String,
    runs: i64,
    last_run_at: Option<i64>,
    last_success_at: Option<i64>,
    items_seen: i64,
    published: i64,
    removed: i64,
    failed: i64,
    last_error: Option<String>,
    last_error_at: Option<i64>,
}

impl From<StatusRow> for SourceStatus {
    fn from(r: StatusRow) -> Self {
        SourceStatus {
            source: r.source,
            runs: r.runs,
            last_run_at: r.last_run_at,
            last_success_at: r.last_success_at,
            items_seen: r.items_seen,
            published: r.published,
            removed: r.removed,
            failed: r.failed,
            last_error: r.last_error,
            last_error_at: r.last_error_at,
        }
    }
}

/// What one item or one run changed in a source's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub published: i64,
    pub removed: i64,
    pub failed: i64,
}

impl Db {
    pub async fn cached_item(
        &self,
        source: &str,
        key: &str,
    ) -> Result<Option<CachedItem>, sqlx::Error> {
        let row: Option<(String, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT md5, size, stamp, locator FROM source_items WHERE source = ? AND key = ?",
        )
        .bind(source)
        .bind(key)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.and_then(|(md5, size, stamp, locator)| {
            Some(CachedItem {
                md5: md5.parse().ok()?,
                size: u64::try_from(size).ok()?,
                stamp,
                locator,
            })
        }))
    }

    /// Where this node's sources read the bytes of lazy content `md5`, if one of them can.
    pub async fn lazy_item(&self, md5: &Md5Hex) -> Result<Option<LazyItem>, sqlx::Error> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT source, key, locator FROM source_items \
             WHERE md5 = ? AND locator IS NOT NULL ORDER BY seen_at DESC LIMIT 1",
        )
        .bind(md5.as_str())
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|(source, key, locator)| LazyItem {
            source,
            key,
            locator,
        }))
    }

    pub async fn remember_item(
        &self,
        source: &str,
        key: &str,
        item: &CachedItem,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO source_items (source, key, md5, size, stamp, seen_at, locator) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (source, key) DO UPDATE SET md5 = excluded.md5, size = excluded.size, \
             stamp = excluded.stamp, seen_at = excluded.seen_at, locator = excluded.locator",
        )
        .bind(source)
        .bind(key)
        .bind(item.md5.as_str())
        .bind(item.size as i64)
        .bind(&item.stamp)
        .bind(Timestamp::now().millis())
        .bind(item.locator.as_deref())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn forget_item(&self, source: &str, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM source_items WHERE source = ? AND key = ?")
            .bind(source)
            .bind(key)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The documents of `source` in the directory: those whose `source` field is
    /// `<source>:<key>` and whose id is the one that key derives (an author's document that
    /// merely names the source in its `source` field is not one of them).
    pub async fn source_documents(&self, source: &str) -> Result<Vec<SourceDocument>, sqlx::Error> {
        let prefix = format!("{source}:");
        // `:` + 1 = `;`: the range of every string that starts with the prefix, on the index.
        let end = format!("{source};");
        let rows: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT doc_id, source, deleted FROM documents \
             WHERE source <> '' AND source >= ? AND source < ?",
        )
        .bind(&prefix)
        .bind(&end)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, field, deleted)| {
                let id: DocId = id.parse().ok()?;
                let key = field.strip_prefix(&prefix)?.to_owned();
                (docfed_shared::sources::item_id(source, &key) == id).then_some(SourceDocument {
                    id,
                    key,
                    deleted,
                })
            })
            .collect())
    }

    /// Counts one finished run: `seen` items when it was complete (`None` after a failure).
    pub async fn record_run(
        &self,
        source: &str,
        seen: Option<u64>,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let now = Timestamp::now().millis();
        sqlx::query(
            "INSERT INTO source_status (source, runs, last_run_at, last_success_at, items_seen, \
               last_error, last_error_at) \
             VALUES (?1, 1, ?2, CASE WHEN ?3 IS NULL THEN ?2 END, COALESCE(?4, 0), ?3, \
               CASE WHEN ?3 IS NOT NULL THEN ?2 END) \
             ON CONFLICT (source) DO UPDATE SET runs = runs + 1, last_run_at = ?2, \
               last_success_at = CASE WHEN ?3 IS NULL THEN ?2 ELSE last_success_at END, \
               items_seen = COALESCE(?4, items_seen), \
               last_error = COALESCE(?3, last_error), \
               last_error_at = CASE WHEN ?3 IS NOT NULL THEN ?2 ELSE last_error_at END",
        )
        .bind(source)
        .bind(now)
        .bind(error)
        .bind(seen.map(|n| n as i64))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Adds to a source's counters; an item's error becomes the source's last error.
    pub async fn count_items(
        &self,
        source: &str,
        counts: Counts,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let now = Timestamp::now().millis();
        sqlx::query(
            "INSERT INTO source_status (source, published, removed, failed, last_error, \
               last_error_at) VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?5 IS NOT NULL THEN ?6 END) \
             ON CONFLICT (source) DO UPDATE SET published = published + ?2, \
               removed = removed + ?3, failed = failed + ?4, \
               last_error = COALESCE(?5, last_error), \
               last_error_at = CASE WHEN ?5 IS NOT NULL THEN ?6 ELSE last_error_at END",
        )
        .bind(source)
        .bind(counts.published)
        .bind(counts.removed)
        .bind(counts.failed)
        .bind(error)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn source_statuses(&self) -> Result<Vec<SourceStatus>, sqlx::Error> {
        let rows: Vec<StatusRow> = sqlx::query_as(
            "SELECT source, runs, last_run_at, last_success_at, items_seen, published, removed, \
               failed, last_error, last_error_at FROM source_status ORDER BY source",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(SourceStatus::from).collect())
    }

    pub async fn source_cursor(&self, source: &str) -> Result<Option<String>, sqlx::Error> {
        let cursor: Option<Option<String>> =
            sqlx::query_scalar("SELECT cursor FROM source_status WHERE source = ?")
                .bind(source)
                .fetch_optional(&self.read)
                .await?;
        Ok(cursor.flatten())
    }

    pub async fn set_source_cursor(
        &self,
        source: &str,
        cursor: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO source_status (source, cursor) VALUES (?1, ?2) \
             ON CONFLICT (source) DO UPDATE SET cursor = ?2",
        )
        .bind(source)
        .bind(cursor)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
