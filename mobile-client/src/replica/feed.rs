//! The change feed as the replica follows it: the position reached at each server, a page
//! applied with the position after it in one transaction, and when the last complete sync was.

use docfed_shared::wire::{supersedes, ChangeFeed, DocumentVersion, Timestamp};
use sqlx::SqliteConnection;

use super::Replica;
use crate::error::CliError;

/// What one page of the feed did to the directory, counted per change.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Applied {
    /// Documents seen for the first time.
    pub new: u64,
    /// Newer versions of known documents that stay (or stay not) deleted.
    pub updated: u64,
    /// Documents that became deleted.
    pub deleted: u64,
    /// Deleted documents that came back.
    pub reactivated: u64,
}

impl Applied {
    pub fn add(&mut self, o: Applied) {
        self.new += o.new;
        self.updated += o.updated;
        self.deleted += o.deleted;
        self.reactivated += o.reactivated;
    }
}

impl Replica {
    /// The feed position reached at `server` (0: never synced there).
    pub async fn position(&self, server: &str) -> Result<i64, CliError> {
        Ok(
            sqlx::query_scalar("SELECT last_seq FROM servers WHERE url = ?")
                .bind(server)
                .fetch_optional(&self.read)
                .await?
                .unwrap_or(0),
        )
    }

    /// Applies one page of `server`'s feed and moves the position to its `last_seq`, in one
    /// transaction.
    pub async fn apply_page(&self, server: &str, feed: &ChangeFeed) -> Result<Applied, CliError> {
        let mut tx = self.write.begin().await?;
        let versions: Vec<&DocumentVersion> = feed.changes.iter().map(|c| &c.document).collect();
        let applied = apply_versions(&mut tx, &versions).await?;
        sqlx::query(
            "INSERT INTO servers (url, last_seq) VALUES (?, ?) \
             ON CONFLICT (url) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
        )
        .bind(server)
        .bind(feed.last_seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Records a complete sync against `server`.
    pub async fn mark_synced(&self, server: &str) -> Result<(), CliError> {
        sqlx::query(
            "INSERT INTO servers (url, last_seq, synced_at) VALUES (?, 0, ?) \
             ON CONFLICT (url) DO UPDATE SET synced_at = excluded.synced_at",
        )
        .bind(server)
        .bind(Timestamp::now().millis())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The last complete sync: when, and with which server.
    pub async fn last_sync(&self) -> Result<Option<(Timestamp, String)>, CliError> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT synced_at, url FROM servers WHERE synced_at IS NOT NULL \
             ORDER BY synced_at DESC LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|(t, u)| (Timestamp(t), u)))
    }
}

/// Rows per multi-row statement of `apply_versions` (14 columns each: 7,000 parameters, well
/// below SQLite's 32,766).
const ROWS_PER_STATEMENT: usize = 500;

/// Records `versions` (in feed order) and makes each document's newest one current, by the
/// node's rule (`node/src/db/documents.rs` `supersedes`): higher version, then higher origin
/// id. The result is that of applying them one at a time, but the page is resolved in memory
/// against its documents' current rows (read with one query per 500 documents) and written with
/// multi-row statements: every version into `versions`, each changed document's final winner
/// into `documents` (whose triggers keep `documents_fts`), instead of three statements per
/// change. A version already in `versions` was applied when it came, so the current version is
/// at least as new and the rule skips it again.
async fn apply_versions(
    tx: &mut SqliteConnection,
    versions: &[&DocumentVersion],
) -> Result<Applied, CliError> {
    use sqlx::QueryBuilder;
    use std::collections::HashMap;
    let mut applied = Applied::default();
    if versions.is_empty() {
        return Ok(applied);
    }
    let ids: Vec<String> = versions.iter().map(|v| v.id.to_string()).collect();

    // The current (version, origin, deleted, published_at) of the page's documents.
    let mut current: HashMap<&str, (i64, &str, bool, i64)> = HashMap::new();
    let mut known: Vec<(String, i64, String, bool, i64)> = Vec::new();
    let mut distinct: Vec<&str> = ids.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    for chunk in distinct.chunks(ROWS_PER_STATEMENT) {
        let mut qb = QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT doc_id, version, origin, deleted, published_at FROM documents \
             WHERE doc_id IN (",
        );
        let mut list = qb.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        qb.push(")");
        known.extend(
            qb.build_query_as::<(String, i64, String, bool, i64)>()
                .fetch_all(&mut *tx)
                .await?,
        );
    }
    for (id, version, origin, deleted, published_at) in &known {
        current.insert(id, (*version, origin, *deleted, *published_at));
    }

    // Resolve in feed order; remember each changed document's winner, in the order the
    // documents first changed (new documents get their `rid` in feed order, as before).
    let mut winner: HashMap<&str, usize> = HashMap::new();
    let mut changed: Vec<&str> = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let id = ids[i].as_str();
        let created = v.created_at.millis();
        match current.get_mut(id) {
            Some(c) => {
                if !supersedes((v.version, &v.origin), (c.0, c.1)) {
                    // A concurrent version that lost, an old one arriving late, or one already
                    // applied: history only.
                    continue;
                }
                match (c.2, v.deleted) {
                    (false, true) => applied.deleted += 1,
                    (true, false) => applied.reactivated += 1,
                    _ => applied.updated += 1,
                }
                *c = (v.version, v.origin.as_str(), v.deleted, c.3.min(created));
            }
            None => {
                applied.new += 1;
                current.insert(id, (v.version, v.origin.as_str(), v.deleted, created));
            }
        }
        if winner.insert(id, i).is_none() {
            changed.push(id);
        }
    }

    let json: Vec<String> = versions
        .iter()
        .map(|v| serde_json::to_string(v).expect("serialisable"))
        .collect();
    let all: Vec<usize> = (0..versions.len()).collect();
    for chunk in all.chunks(ROWS_PER_STATEMENT * 2) {
        let mut qb = QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT OR IGNORE INTO versions (doc_id, version, origin, json) ",
        );
        qb.push_values(chunk, |mut row, &i| {
            row.push_bind(ids[i].as_str())
                .push_bind(versions[i].version)
                .push_bind(versions[i].origin.as_str())
                .push_bind(json[i].as_str());
        });
        qb.build().execute(&mut *tx).await?;
    }
    let rows: Vec<usize> = changed.iter().map(|id| winner[id]).collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut qb = QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO documents (doc_id, version, origin, title, description, tags_text, \
               filename, source, scope, author, md5, deleted, published_at, json) ",
        );
        qb.push_values(chunk, |mut row, &i| {
            let v = versions[i];
            row.push_bind(ids[i].as_str())
                .push_bind(v.version)
                .push_bind(v.origin.as_str())
                .push_bind(v.title.as_str())
                .push_bind(v.description.as_str())
                .push_bind(v.tags.join(" "))
                .push_bind(v.filename.as_str())
                .push_bind(v.source.as_str())
                .push_bind(v.scope.to_string())
                .push_bind(v.author.as_str())
                .push_bind(v.md5.as_str())
                .push_bind(v.deleted)
                .push_bind(current[ids[i].as_str()].3)
                .push_bind(json[i].as_str());
        });
        qb.push(
            " ON CONFLICT (doc_id) DO UPDATE SET version = excluded.version, \
               origin = excluded.origin, title = excluded.title, \
               description = excluded.description, tags_text = excluded.tags_text, \
               filename = excluded.filename, source = excluded.source, scope = excluded.scope, \
               author = excluded.author, md5 = excluded.md5, deleted = excluded.deleted, \
               json = excluded.json, \
               published_at = MIN(documents.published_at, excluded.published_at)",
        );
        qb.build().execute(&mut *tx).await?;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{page, version};
    use super::*;
    use docfed_shared::wire::Timestamp;

    /// Concurrent versions resolve as on the node (higher version, then higher origin), in
    /// whatever order they arrive; a repeated page changes nothing.
    #[tokio::test]
    async fn the_newest_version_wins_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path()).await.unwrap();
        let id = docfed_shared::DocId::new();
        let vs = [
            version(id, 1, "p-a", false),
            version(id, 2, "p-b", true),
            version(id, 2, "p-a", false),
        ];
        let applied = r.apply_page("http://n", &page(3, &vs)).await.unwrap();
        assert_eq!((applied.new, applied.deleted, applied.updated), (1, 1, 0));
        let again = r.apply_page("http://n", &page(3, &vs)).await.unwrap();
        assert_eq!((again.new, again.deleted, again.updated), (0, 0, 0));
        let d = r.document(&id.to_string()).await.unwrap().unwrap();
        assert_eq!((d.current.version, d.current.origin.as_str()), (2, "p-b"));
        assert!(d.current.deleted);
        assert_eq!(d.published_at, Timestamp(1));
        assert_eq!(r.position("http://n").await.unwrap(), 3);
        // An older page never moves the position back.
        r.apply_page("http://n", &page(1, &[])).await.unwrap();
        assert_eq!(r.position("http://n").await.unwrap(), 3);
        let versions = r.versions(&id.to_string()).await.unwrap().unwrap();
        assert_eq!(versions.versions.len(), 3);
        assert_eq!(versions.versions.iter().filter(|v| v.current).count(), 1);
    }

    /// A page applied at once leaves the directory exactly as its changes applied one page
    /// each (same current versions, publication dates, `rid` order and counts).
    #[tokio::test]
    async fn a_page_applies_as_its_changes_one_by_one() {
        let ids: Vec<_> = (0..6).map(|_| docfed_shared::DocId::new()).collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut vs = Vec::new();
        for _ in 0..300 {
            let id = ids[(next() % 6) as usize];
            let origin = ["p-a", "p-b"][(next() % 2) as usize];
            let mut v = version(id, 1 + (next() % 5) as i64, origin, next() % 4 == 0);
            v.created_at = Timestamp((next() % 1000) as i64);
            vs.push(v);
        }
        let dir = tempfile::tempdir().unwrap();
        let (one, whole) = (dir.path().join("one"), dir.path().join("whole"));
        let (r1, r2) = (
            Replica::open(&one).await.unwrap(),
            Replica::open(&whole).await.unwrap(),
        );
        let mut a1 = Applied::default();
        for (i, v) in vs.iter().enumerate() {
            a1.add(
                r1.apply_page("http://n", &page(i as i64, std::slice::from_ref(v)))
                    .await
                    .unwrap(),
            );
        }
        let mut a2 = Applied::default();
        for chunk in vs.chunks(128) {
            a2.add(r2.apply_page("http://n", &page(0, chunk)).await.unwrap());
        }
        assert_eq!(
            (a1.new, a1.updated, a1.deleted, a1.reactivated),
            (a2.new, a2.updated, a2.deleted, a2.reactivated)
        );
        let rows = |r: &Replica| {
            let pool = r.read.clone();
            async move {
                sqlx::query_as::<_, (i64, String, i64, String, bool, i64, String)>(
                    "SELECT rid, doc_id, version, origin, deleted, published_at, json \
                     FROM documents ORDER BY rid",
                )
                .fetch_all(&pool)
                .await
                .unwrap()
            }
        };
        assert_eq!(rows(&r1).await, rows(&r2).await);
        let count = |r: &Replica| {
            let pool = r.read.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM versions")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(count(&r1).await, count(&r2).await);
        let hits = |r: &Replica| {
            let pool = r.read.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT rowid FROM documents_fts WHERE documents_fts MATCH 'p' ORDER BY rowid",
                )
                .fetch_all(&pool)
                .await
                .unwrap()
            }
        };
        assert_eq!(hits(&r1).await, hits(&r2).await);
    }
}
