//! Recording many versions at once, for `POST /v1/admin/import`: the same outcome as
//! [`record_version`](super::documents::record_version) called for each version in order, in a
//! fixed number of set-based statements per batch instead of about eight statements per version.
//!
//! Each statement sent to SQLite through sqlx is a round trip to the connection's worker thread;
//! per version, those round trips (not SQLite's work) bounded imports at about 3,000 versions/s.
//! Here the batch is bound, many rows per statement, into a temporary table, and every step is
//! one statement over it:
//!
//! 1. `fresh`: the version is not in `versions` and is its key's first occurrence in the batch
//!    (what `INSERT OR IGNORE` decides one at a time).
//! 2. Fresh versions enter `versions` and, in batch order, the change feed.
//! 3. `applied`: a fresh version that supersedes the current document and every earlier fresh
//!    version of the same document. One at a time, exactly those would have become current.
//! 4. The last applied version of each document becomes its row in `documents` (the full-text
//!    index follows by trigger), with `published_at` the earliest applied `created_at` and new
//!    rows numbered in the order their first version was applied; then its tags.
//!
//! A unit test holds the two paths to the same tables on random batches.

use docfed_shared::wire::{ChangeKind, DocumentVersion, Timestamp};
use sqlx::SqliteConnection;

use super::documents::{MAKE_CURRENT, VERSION_COLUMNS};
use super::MAX_PARAMS;

/// Secondary indexes a first load builds after its rows instead of row by row. Not
/// `changes_doc` and `document_tags_rid`: the load's own statements look rows up by them.
const DEFERRED_INDEXES: &[&str] = &[
    "versions_md5",
    "documents_scope",
    "documents_deleted",
    "documents_md5",
    "documents_source",
    "documents_author",
    "documents_content_type",
    "documents_published",
    "documents_by_source",
    "changes_at",
];

/// The triggers that keep the full-text index in step with `documents`: a first load rebuilds
/// the index once at its end instead.
const FTS_TRIGGERS: &[&str] = &[
    "documents_fts_insert",
    "documents_fts_delete",
    "documents_fts_update",
];

/// Whether the directory is empty: no version was ever recorded here.
pub async fn directory_is_empty(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM versions)")
        .fetch_one(&mut *conn)
        .await
}

/// The schema a first load takes down, to put back as it was (`finish_first_load`).
pub struct Deferred(Vec<String>);

/// Starts a first load inside `conn`'s transaction: the secondary indexes and the full-text
/// triggers go (their definitions kept), so the rows go in without maintaining them. Readers do
/// not see this: they read the last committed schema until the load commits.
pub async fn start_first_load(conn: &mut SqliteConnection) -> Result<Deferred, sqlx::Error> {
    let names: Vec<&str> = DEFERRED_INDEXES
        .iter()
        .chain(FTS_TRIGGERS)
        .copied()
        .collect();
    let json = serde_json::to_string(&names).expect("strings serialise");
    let defs: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT type, name, sql FROM sqlite_master \
         WHERE name IN (SELECT value FROM json_each(?)) AND sql IS NOT NULL \
         ORDER BY type = 'trigger', name",
    )
    .bind(json)
    .fetch_all(&mut *conn)
    .await?;
    for (kind, name, _) in &defs {
        let kind = if kind == "trigger" {
            "TRIGGER"
        } else {
            "INDEX"
        };
        sqlx::query(&format!("DROP {kind} \"{name}\""))
            .execute(&mut *conn)
            .await?;
    }
    Ok(Deferred(defs.into_iter().map(|(_, _, sql)| sql).collect()))
}

/// Ends a first load: the indexes built and the triggers made again from their kept
/// definitions, the full-text index rebuilt from `documents`. The caller commits.
pub async fn finish_first_load(
    conn: &mut SqliteConnection,
    deferred: Deferred,
) -> Result<(), sqlx::Error> {
    for sql in &deferred.0 {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    sqlx::query("INSERT INTO documents_fts (documents_fts) VALUES ('rebuild')")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What a batch did: versions recorded, and versions that were already known.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub recorded: u64,
    pub known: u64,
}

const STAGE: &str = "CREATE TEMP TABLE IF NOT EXISTS import_batch (
    n            INTEGER PRIMARY KEY,
    doc_id       TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    origin       TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    description  TEXT    NOT NULL,
    tags         TEXT    NOT NULL,
    filename     TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    md5          TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    author       TEXT    NOT NULL,
    sha256       TEXT,
    signature    TEXT,
    lazy         INTEGER NOT NULL,
    tags_text    TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    fresh        INTEGER NOT NULL DEFAULT 0,
    applied      INTEGER NOT NULL DEFAULT 0,
    last         INTEGER NOT NULL DEFAULT 0,
    seq          INTEGER
)";

/// Records `batch` (each version with the change kind it is fed as) inside the caller's
/// transaction. Versions already known change nothing, as with `record_version`.
pub async fn record_versions(
    conn: &mut SqliteConnection,
    batch: &[(DocumentVersion, ChangeKind)],
) -> Result<Imported, sqlx::Error> {
    if batch.is_empty() {
        return Ok(Imported::default());
    }
    // A batch's rows land all over the indexes of a large directory (document ids and MD5s are
    // random): with SQLite's default 2 MiB of page cache most of those inserts read their page
    // back through the OS. A larger cache for the batch; the default again after it, so the
    // writer stays small between imports.
    sqlx::query(&format!("PRAGMA cache_size = -{IMPORT_CACHE_KIB}"))
        .execute(&mut *conn)
        .await?;
    let recorded = stage_and_record(&mut *conn, batch, None).await;
    let restored = sqlx::query(&format!("PRAGMA cache_size = -{DEFAULT_CACHE_KIB}"))
        .execute(&mut *conn)
        .await;
    let recorded = recorded?;
    restored?;
    Ok(recorded)
}

/// [`record_versions`] for the inbox: the same recording, in the caller's transaction, without
/// changing the page cache (a batch of notifications is small), and saying for each version,
/// in order, whether it was new here (`false`: already known, or a copy of an earlier one of
/// the batch), as `record_version` returns one at a time.
pub async fn record_versions_each(
    conn: &mut SqliteConnection,
    batch: &[(DocumentVersion, ChangeKind)],
) -> Result<Vec<bool>, sqlx::Error> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut new = Vec::new();
    stage_and_record(conn, batch, Some(&mut new)).await?;
    let mut fresh = vec![false; batch.len()];
    for n in new {
        if let Some(f) = usize::try_from(n).ok().and_then(|n| fresh.get_mut(n)) {
            *f = true;
        }
    }
    Ok(fresh)
}

/// SQLite's default page cache, in KiB (`PRAGMA cache_size = -2000`).
const DEFAULT_CACHE_KIB: u32 = 2_000;

/// The writer's page cache while it records an import batch, in KiB.
const IMPORT_CACHE_KIB: u32 = 64 * 1024;

/// Stages and records `batch`; `fresh`, when given, receives the batch index of every version
/// that was new here.
async fn stage_and_record(
    conn: &mut SqliteConnection,
    batch: &[(DocumentVersion, ChangeKind)],
    fresh: Option<&mut Vec<i64>>,
) -> Result<Imported, sqlx::Error> {
    sqlx::query(STAGE).execute(&mut *conn).await?;
    sqlx::query(
        "CREATE INDEX IF NOT EXISTS temp.import_batch_key \
         ON import_batch (doc_id, version, origin, n)",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query("CREATE INDEX IF NOT EXISTS temp.import_batch_doc ON import_batch (doc_id, n)")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM temp.import_batch")
        .execute(&mut *conn)
        .await?;

    // Bound as rows of parameters, many rows per statement: parsing each row out of a JSON
    // text took a fifth of an import's time.
    let fields = format!("n, {VERSION_COLUMNS}, tags_text, kind");
    let per_row = fields.split(", ").count();
    for (chunk_no, chunk) in batch.chunks(MAX_PARAMS / per_row).enumerate() {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "INSERT INTO temp.import_batch ({fields}) "
        ));
        let first = chunk_no * (MAX_PARAMS / per_row);
        qb.push_values(chunk.iter().enumerate(), |mut row, (i, (v, kind))| {
            // The row's columns in `fields` order.
            row.push_bind((first + i) as i64)
                .push_bind(v.id.to_string())
                .push_bind(v.version)
                .push_bind(v.origin.as_str())
                .push_bind(v.title.as_str())
                .push_bind(v.description.as_str())
                .push_bind(serde_json::to_string(&v.tags).expect("strings serialise"))
                .push_bind(v.filename.as_str())
                .push_bind(v.source.as_str())
                .push_bind(v.scope.to_string())
                .push_bind(v.content_type.as_str())
                .push_bind(v.md5.as_str())
                .push_bind(v.size as i64)
                .push_bind(v.deleted)
                .push_bind(v.created_at.millis())
                .push_bind(v.author.as_str())
                .push_bind(v.sha256.as_ref().map(|h| h.as_str()))
                .push_bind(v.signature.as_deref())
                .push_bind(v.lazy)
                .push_bind(v.tags.join(" "))
                .push_bind(kind.as_str());
        });
        // Full chunks are the same statement every time; a last, shorter one is not cached.
        qb.build()
            .persistent(chunk.len() == MAX_PARAMS / per_row)
            .execute(&mut *conn)
            .await?;
    }

    // 1. New to this node, and the first of its key in the batch.
    let recorded = sqlx::query(
        "UPDATE temp.import_batch AS b SET fresh = 1 \
         WHERE NOT EXISTS (SELECT 1 FROM versions v \
                           WHERE v.doc_id = b.doc_id AND v.version = b.version AND v.origin = b.origin) \
           AND NOT EXISTS (SELECT 1 FROM temp.import_batch e \
                           WHERE e.doc_id = b.doc_id AND e.version = b.version \
                             AND e.origin = b.origin AND e.n < b.n)",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();

    // 2. History and change feed, in batch order.
    sqlx::query(&format!(
        "INSERT INTO versions ({VERSION_COLUMNS}) \
         SELECT {VERSION_COLUMNS} FROM temp.import_batch WHERE fresh ORDER BY n"
    ))
    .execute(&mut *conn)
    .await?;
    let before: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO changes (doc_id, version, origin, kind, at) \
         SELECT doc_id, version, origin, kind, ? FROM temp.import_batch WHERE fresh ORDER BY n",
    )
    .bind(Timestamp::now().millis())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE temp.import_batch AS b SET seq = \
           (SELECT c.seq FROM changes c WHERE c.doc_id = b.doc_id AND c.seq > ? \
              AND c.version = b.version AND c.origin = b.origin) \
         WHERE fresh",
    )
    .bind(before)
    .execute(&mut *conn)
    .await?;

    // 3. Would have become current, one at a time: above the current document and above every
    //    earlier fresh version of the document (`docfed_shared::wire::supersedes` compares (version, origin)).
    sqlx::query(
        "UPDATE temp.import_batch AS b SET applied = 1 \
         WHERE fresh \
           AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.doc_id = b.doc_id \
                 AND (d.version > b.version OR (d.version = b.version AND d.origin >= b.origin))) \
           AND NOT EXISTS (SELECT 1 FROM temp.import_batch e \
                 WHERE e.doc_id = b.doc_id AND e.fresh AND e.n < b.n \
                   AND (e.version > b.version OR (e.version = b.version AND e.origin >= b.origin)))",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE temp.import_batch AS b SET last = 1 \
         WHERE applied AND NOT EXISTS (SELECT 1 FROM temp.import_batch l \
                                       WHERE l.doc_id = b.doc_id AND l.applied AND l.n > b.n)",
    )
    .execute(&mut *conn)
    .await?;

    // 4. The current documents. `WHERE true`-style filters keep SQLite's upsert-after-SELECT
    //    parse unambiguous; new rows get their rid in the order their first version applied.
    sqlx::query(&format!(
        "INSERT INTO documents ({VERSION_COLUMNS}, tags_text, published_at, last_seq) \
         SELECT {VERSION_COLUMNS}, tags_text, \
                (SELECT MIN(a.created_at) FROM temp.import_batch a \
                  WHERE a.doc_id = b.doc_id AND a.applied), \
                seq \
         FROM temp.import_batch b WHERE last \
         ORDER BY (SELECT MIN(f.n) FROM temp.import_batch f WHERE f.doc_id = b.doc_id AND f.applied) \
         {MAKE_CURRENT}"
    ))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM document_tags WHERE rid IN \
           (SELECT d.rid FROM temp.import_batch b JOIN documents d ON d.doc_id = b.doc_id \
             WHERE b.last)",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT OR IGNORE INTO document_tags (tag, rid) \
         SELECT t.value, d.rid \
         FROM temp.import_batch b JOIN documents d ON d.doc_id = b.doc_id, json_each(b.tags) t \
         WHERE b.last ORDER BY b.n",
    )
    .execute(&mut *conn)
    .await?;
    if let Some(fresh) = fresh {
        *fresh = sqlx::query_scalar("SELECT n FROM temp.import_batch WHERE fresh")
            .fetch_all(&mut *conn)
            .await?;
    }
    sqlx::query("DELETE FROM temp.import_batch")
        .execute(&mut *conn)
        .await?;
    Ok(Imported {
        recorded,
        known: batch.len() as u64 - recorded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::documents::record_version;
    use crate::db::Db;
    use docfed_shared::{DocId, Md5Hex, Scope};
    use docfed_test_kit::content::Xorshift;

    fn version(rng: &mut Xorshift, ids: &[DocId]) -> (DocumentVersion, ChangeKind) {
        let id = ids[rng.below(ids.len() as u64) as usize];
        let version = 1 + rng.below(4) as i64;
        let deleted = rng.below(6) == 0;
        let words = ["tide", "storm", "quake", "map", "route", "Ünïcode"];
        let w = |rng: &mut Xorshift| *rng.pick(&words);
        let tags: Vec<String> = (0..rng.below(3)).map(|_| w(rng).to_lowercase()).collect();
        let v = DocumentVersion {
            id,
            version,
            origin: ["primary-a", "primary-b"][rng.below(2) as usize].to_owned(),
            title: format!("{} {}", w(rng), rng.below(100)),
            description: format!("about {}", w(rng)),
            tags,
            filename: "f.bin".to_owned(),
            source: format!("source-{}", rng.below(3)),
            scope: if rng.below(2) == 0 {
                Scope::Global
            } else {
                "region:eu".parse().unwrap()
            },
            content_type: "application/octet-stream".to_owned(),
            md5: Md5Hex::from_digest(md5::compute(rng.below(1000).to_be_bytes()).0),
            size: rng.below(1 << 40),
            deleted,
            created_at: Timestamp(1_700_000_000_000 + rng.below(1_000_000) as i64),
            author: format!("author-{}", rng.below(3)),
            sha256: None,
            signature: (rng.below(2) == 0).then(|| "c2lnbmF0dXJl".to_owned()),
            lazy: false,
        };
        let kind = match (v.version, v.deleted) {
            (_, true) => ChangeKind::Deleted,
            (1, false) => ChangeKind::Published,
            _ => ChangeKind::Updated,
        };
        (v, kind)
    }

    /// Everything both paths write, in a comparable form (the feed's `at` differs by design).
    async fn dump(db: &Db) -> Vec<String> {
        let mut conn = db.begin_write().await.unwrap();
        let mut out = Vec::new();
        for sql in [
            "SELECT json_array(doc_id, version, origin, title, description, tags, filename, source, \
               scope, content_type, md5, size, deleted, created_at, author, sha256, signature) \
             FROM versions ORDER BY doc_id, version, origin",
            "SELECT json_array(rid, doc_id, version, origin, title, tags, tags_text, deleted, \
               created_at, published_at, last_seq, signature) FROM documents ORDER BY rid",
            "SELECT json_array(seq, doc_id, version, origin, kind) FROM changes ORDER BY seq",
            "SELECT json_array(tag, rid) FROM document_tags ORDER BY rid, tag",
            "SELECT json_array(rowid, title, tags_text) FROM documents_fts \
             WHERE documents_fts MATCH 'tide OR storm OR quake OR map OR route OR unicode' \
             ORDER BY rowid",
        ] {
            let rows: Vec<String> = sqlx::query_scalar(sql)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            out.push(rows.join("\n"));
        }
        out
    }

    #[tokio::test]
    async fn a_batch_ends_where_recording_each_version_in_order_ends() {
        for seed in 1..=40u64 {
            let dir = tempfile::tempdir().unwrap();
            let one = Db::open(&dir.path().join("one.sqlite")).await.unwrap();
            let set = Db::open(&dir.path().join("set.sqlite")).await.unwrap();
            let mut rng = Xorshift::new(seed);
            let ids: Vec<DocId> = (0..1 + rng.below(12)).map(|_| DocId::new()).collect();
            // Two batches: the second meets documents and versions the first recorded.
            for _ in 0..2 {
                let batch: Vec<_> = (0..rng.below(60))
                    .map(|_| version(&mut rng, &ids))
                    .collect();
                let mut tx = one.begin_write().await.unwrap();
                let mut expected = Imported::default();
                for (v, kind) in &batch {
                    if record_version(&mut tx, v, *kind).await.unwrap() {
                        expected.recorded += 1;
                    } else {
                        expected.known += 1;
                    }
                }
                tx.commit().await.unwrap();
                let mut tx = set.begin_write().await.unwrap();
                let got = record_versions(&mut tx, &batch).await.unwrap();
                tx.commit().await.unwrap();
                assert_eq!(got, expected, "seed {seed}");
            }
            let (a, b) = (dump(&one).await, dump(&set).await);
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x, y, "seed {seed}");
            }
        }
    }
}
