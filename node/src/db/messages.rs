//! The transactional outbox (`outbox`), delivery receipts (`receipts`) and annotations as they
//! arrive (`annotations`): the relay's and the inbox's SQL (`federation::outbox`,
//! `federation::inbox`).

use docfed_shared::messages::{Annotation, Decision, Receipt};
use docfed_shared::wire::annotations::{AnnotationEntry, AnnotationStatus};
use docfed_shared::wire::propagation::Holding;
use docfed_shared::wire::Timestamp;
use sqlx::SqliteExecutor;

use super::MAX_PARAMS;

/// Queues several messages, `(target, payload)`, in the caller's transaction with one statement
/// (per 8,191 rows, the parameter limit): one round trip to the connection's thread for a
/// notification's hops or a batch of receipts' parents. `may_wait` messages (receipts) may
/// wait in the outbox to travel with later ones (`outbox::relay_on`).
pub async fn enqueue_all<T: AsRef<str>, P: AsRef<[u8]>>(
    conn: &mut sqlx::SqliteConnection,
    rows: &[(T, P)],
    may_wait: bool,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let now = Timestamp::now().millis();
    for chunk in rows.chunks(MAX_PARAMS / 4) {
        let mut qb =
            sqlx::QueryBuilder::new("INSERT INTO outbox (target, payload, created_at, may_wait) ");
        qb.push_values(chunk, |mut row, (target, payload)| {
            row.push_bind(target.as_ref())
                .push_bind(payload.as_ref())
                .push_bind(now)
                .push_bind(may_wait);
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Messages waiting in the outbox.
pub async fn depth<'e>(db: impl SqliteExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(db)
        .await
}

/// The targets that have queued messages: one index probe per target (a skip scan), however
/// many rows wait for a target that is down.
pub async fn targets_waiting<'e>(db: impl SqliteExecutor<'e>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH RECURSIVE t(target) AS ( \
             SELECT MIN(target) FROM outbox \
             UNION ALL \
             SELECT (SELECT MIN(target) FROM outbox WHERE target > t.target) FROM t \
             WHERE t.target IS NOT NULL) \
         SELECT target FROM t WHERE target IS NOT NULL",
    )
    .fetch_all(db)
    .await
}

/// A queued message as the relay reads it.
#[derive(Debug, sqlx::FromRow)]
pub struct Queued {
    pub id: i64,
    pub payload: Vec<u8>,
    /// When it was queued, Unix ms.
    pub created_at: i64,
    pub may_wait: bool,
}

/// The oldest `limit` messages for `target`.
pub async fn batch<'e>(
    db: impl SqliteExecutor<'e>,
    target: &str,
    limit: i64,
) -> Result<Vec<Queued>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, payload, created_at, may_wait FROM outbox WHERE target = ? \
         ORDER BY id LIMIT ?",
    )
    .bind(target)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Forgets the messages a broker confirmed, committed without a flush (see
/// [`super::Db::execute_unflushed`] and `outbox::delete`).
pub async fn delete_confirmed(db: &super::Db, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    // Row ids from this table, integers: nothing to escape.
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    db.execute_unflushed(&format!(
        "DELETE FROM outbox WHERE id IN ({})",
        list.join(",")
    ))
    .await
}

/// Records receipts as if one at a time, in order: each is news when it adds a row, or when it
/// is a content receipt for a version only a metadata receipt was known for (upgraded). Returns
/// which were news. Two statements for the lot (a multi-row insert and, for receipts that may
/// upgrade a row, a multi-row update) instead of one or two per receipt: a primary hears about
/// a dozen receipts per document, and each statement is a round trip to the connection's thread.
pub async fn record_receipts(
    conn: &mut sqlx::SqliteConnection,
    rs: &[&Receipt],
) -> Result<Vec<bool>, sqlx::Error> {
    type Key = (String, String, i64, String);
    let key = |r: &Receipt| -> Key {
        (
            r.doc_id.to_string(),
            r.node.clone(),
            r.version,
            r.origin.clone(),
        )
    };
    // `INSERT OR IGNORE … RETURNING` names the rows it added; a key twice in the input is
    // added by its first occurrence, as one at a time.
    let mut inserted: std::collections::HashSet<Key> = std::collections::HashSet::new();
    for chunk in rs.chunks(MAX_PARAMS / 7) {
        let mut qb = sqlx::QueryBuilder::new(
            "INSERT OR IGNORE INTO receipts (doc_id, node, version, origin, md5, at, content) ",
        );
        qb.push_values(chunk, |mut row, r| {
            row.push_bind(r.doc_id.to_string())
                .push_bind(&r.node)
                .push_bind(r.version)
                .push_bind(&r.origin)
                .push_bind(r.md5.as_str())
                .push_bind(r.at.millis())
                .push_bind(r.content);
        });
        qb.push(" RETURNING doc_id, node, version, origin");
        let added: Vec<Key> = qb.build_query_as().fetch_all(&mut *conn).await?;
        inserted.extend(added);
    }
    let mut news = vec![false; rs.len()];
    // Per key, the first content receipt that did not add the row may upgrade it.
    let mut upgrades: Vec<(usize, Key)> = Vec::new();
    let mut upgrade_tried: std::collections::HashSet<Key> = std::collections::HashSet::new();
    for (i, r) in rs.iter().enumerate() {
        let k = key(r);
        // Taken out of `inserted` by the first occurrence: only that one added the row.
        if inserted.remove(&k) {
            news[i] = true;
            if r.content {
                // Added with the content: nothing left to upgrade.
                upgrade_tried.insert(k);
            }
            continue;
        }
        if r.content && upgrade_tried.insert(k.clone()) {
            upgrades.push((i, k));
        }
    }
    let mut upgraded: std::collections::HashSet<Key> = std::collections::HashSet::new();
    for chunk in upgrades.chunks(MAX_PARAMS / 5) {
        let mut qb = sqlx::QueryBuilder::new("WITH u(doc_id, node, version, origin, at) AS (");
        qb.push_values(chunk, |mut row, (i, k)| {
            row.push_bind(&k.0)
                .push_bind(&k.1)
                .push_bind(k.2)
                .push_bind(&k.3)
                .push_bind(rs[*i].at.millis());
        });
        qb.push(
            ") UPDATE receipts SET content = 1, at = u.at FROM u \
             WHERE receipts.doc_id = u.doc_id AND receipts.node = u.node \
               AND receipts.version = u.version AND receipts.origin = u.origin \
               AND receipts.content = 0 \
             RETURNING receipts.doc_id, receipts.node, receipts.version, receipts.origin",
        );
        let rows: Vec<Key> = qb.build_query_as().fetch_all(&mut *conn).await?;
        upgraded.extend(rows);
    }
    for (i, k) in &upgrades {
        news[*i] = upgraded.contains(k);
    }
    Ok(news)
}

/// Stores an annotation once (keyed by its id). Returns whether it was new.
pub async fn record_annotation<'e>(
    db: impl SqliteExecutor<'e>,
    a: &Annotation,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT OR IGNORE INTO annotations (id, doc_id, doc_version, author, text, created_at, received_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&a.id)
    .bind(a.doc_id.to_string())
    .bind(a.doc_version)
    .bind(&a.author)
    .bind(&a.text)
    .bind(a.created_at.millis())
    .bind(Timestamp::now().millis())
    .execute(db)
    .await?
    .rows_affected()
        > 0)
}

/// The newest receipt of each node for document `doc`, by node (the propagation view).
pub async fn latest_receipts<'e>(
    db: impl SqliteExecutor<'e>,
    doc: &str,
) -> Result<Vec<Holding>, sqlx::Error> {
    let rows: Vec<(String, i64, String, String, bool, i64)> = sqlx::query_as(
        "SELECT node, version, origin, md5, content, at FROM receipts r WHERE doc_id = ? \
         AND NOT EXISTS (SELECT 1 FROM receipts n WHERE n.doc_id = r.doc_id AND n.node = r.node \
           AND (n.version > r.version OR (n.version = r.version AND n.origin > r.origin))) \
         ORDER BY node",
    )
    .bind(doc)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(node, version, origin, md5, content, at)| Holding {
            node,
            version,
            origin,
            md5,
            content,
            at: Some(Timestamp(at)),
            current: false,
        })
        .collect())
}

/// Annotations in `state` (`any` for all), of one document or all, oldest first, at most 1,000,
/// with their document's title and whether it is deleted.
pub async fn annotations<'e>(
    db: impl SqliteExecutor<'e>,
    state: &str,
    doc: Option<&str>,
) -> Result<Vec<AnnotationEntry>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: String,
        doc_id: String,
        doc_version: i64,
        author: String,
        text: String,
        state: String,
        created_at: i64,
        document_title: Option<String>,
        document_deleted: Option<bool>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.id, a.doc_id, a.doc_version, a.author, a.text, a.state, a.created_at, \
           d.title AS document_title, d.deleted AS document_deleted \
         FROM annotations a LEFT JOIN documents d ON d.doc_id = a.doc_id \
         WHERE (?1 = 'any' OR a.state = ?1) AND (?2 IS NULL OR a.doc_id = ?2) \
         ORDER BY a.created_at LIMIT 1000",
    )
    .bind(state)
    .bind(doc)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AnnotationEntry {
            id: r.id,
            doc_id: r.doc_id,
            doc_version: r.doc_version,
            author: r.author,
            text: r.text,
            state: r.state,
            created: Some(Timestamp(r.created_at)),
            document_title: r.document_title,
            document_deleted: r.document_deleted,
        })
        .collect())
}

/// An annotation as stored here, to build the decision that replicates it.
pub async fn annotation<'e>(
    db: impl SqliteExecutor<'e>,
    id: &str,
) -> Result<Option<Annotation>, sqlx::Error> {
    let row: Option<(String, String, i64, String, String, i64)> = sqlx::query_as(
        "SELECT id, doc_id, doc_version, author, text, created_at FROM annotations WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(
        row.and_then(|(id, doc, doc_version, author, text, created_at)| {
            Some(Annotation {
                id,
                doc_id: doc.parse().ok()?,
                doc_version,
                author,
                text,
                created_at: Timestamp(created_at),
                // Where it was written is not kept here: the caller names a node.
                node: String::new(),
            })
        }),
    )
}

/// Records a decision on an annotation (inserting the annotation if this node never saw it)
/// unless a later one is known: the latest `(decided_at, by)` wins on every node, whatever
/// order decisions arrive in. Returns whether it changed anything.
pub async fn apply_decision(
    conn: &mut sqlx::SqliteConnection,
    d: &Decision,
) -> Result<bool, sqlx::Error> {
    let a = &d.annotation;
    let n = sqlx::query(
        "INSERT INTO annotations (id, doc_id, doc_version, author, text, created_at, received_at, \
                                  state, decided_at, decided_by) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, decided_at = excluded.decided_at, \
           decided_by = excluded.decided_by \
         WHERE annotations.decided_at IS NULL \
            OR (excluded.decided_at, excluded.decided_by) > (annotations.decided_at, annotations.decided_by)",
    )
    .bind(&a.id)
    .bind(a.doc_id.to_string())
    .bind(a.doc_version)
    .bind(&a.author)
    .bind(&a.text)
    .bind(a.created_at.millis())
    .bind(Timestamp::now().millis())
    .bind(d.state.as_str())
    .bind(d.decided_at.millis())
    .bind(&d.by)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// The columns a reader may see of an annotation (`annotation_status`, `accepted_annotations`).
const STATUS_COLUMNS: &str = "id, doc_id, doc_version, author, text, state, created_at, decided_at";

#[derive(sqlx::FromRow)]
struct StatusRow {
    id: String,
    doc_id: String,
    doc_version: i64,
    author: String,
    text: String,
    state: String,
    created_at: i64,
    decided_at: Option<i64>,
}

impl From<StatusRow> for AnnotationStatus {
    fn from(r: StatusRow) -> Self {
        AnnotationStatus {
            id: r.id,
            doc_id: r.doc_id,
            doc_version: r.doc_version,
            author: r.author,
            text: r.text,
            state: r.state,
            created: Some(Timestamp(r.created_at)),
            decided: r.decided_at.map(Timestamp),
        }
    }
}

/// What a reader may see of one annotation: its state, and when it was decided.
pub async fn annotation_status<'e>(
    db: impl SqliteExecutor<'e>,
    id: &str,
) -> Result<Option<AnnotationStatus>, sqlx::Error> {
    let row: Option<StatusRow> = sqlx::query_as(&format!(
        "SELECT {STATUS_COLUMNS} FROM annotations WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(AnnotationStatus::from))
}

/// The accepted annotations of document `doc`, oldest first, at most 1,000.
pub async fn accepted_annotations<'e>(
    db: impl SqliteExecutor<'e>,
    doc: &str,
) -> Result<Vec<AnnotationStatus>, sqlx::Error> {
    let rows: Vec<StatusRow> = sqlx::query_as(&format!(
        "SELECT {STATUS_COLUMNS} FROM annotations \
         WHERE doc_id = ? AND state = 'accepted' ORDER BY created_at LIMIT 1000"
    ))
    .bind(doc)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(AnnotationStatus::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use docfed_shared::{DocId, Md5Hex};

    /// The one-at-a-time recording `record_receipts` must match: insert, or upgrade a metadata
    /// receipt to a content receipt.
    async fn record_one(conn: &mut sqlx::SqliteConnection, r: &Receipt) -> bool {
        let new = sqlx::query(
            "INSERT OR IGNORE INTO receipts (doc_id, node, version, origin, md5, at, content) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.doc_id.to_string())
        .bind(&r.node)
        .bind(r.version)
        .bind(&r.origin)
        .bind(r.md5.as_str())
        .bind(r.at.millis())
        .bind(r.content)
        .execute(&mut *conn)
        .await
        .unwrap()
        .rows_affected()
            > 0;
        if new || !r.content {
            return new;
        }
        sqlx::query(
            "UPDATE receipts SET content = 1, at = ? \
             WHERE doc_id = ? AND node = ? AND version = ? AND origin = ? AND content = 0",
        )
        .bind(r.at.millis())
        .bind(r.doc_id.to_string())
        .bind(&r.node)
        .bind(r.version)
        .bind(&r.origin)
        .execute(&mut *conn)
        .await
        .unwrap()
        .rows_affected()
            > 0
    }

    async fn dump(db: &Db) -> Vec<(String, String, i64, String, i64, bool)> {
        let mut conn = db.begin_write().await.unwrap();
        sqlx::query_as(
            "SELECT doc_id, node, version, origin, at, content FROM receipts \
             ORDER BY doc_id, node, version, origin",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn receipts_recorded_together_end_as_one_at_a_time() {
        let ids = [DocId::new(), DocId::new()];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut below = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for round in 0..30 {
            let dir = tempfile::tempdir().unwrap();
            let one = Db::open(&dir.path().join("one.sqlite")).await.unwrap();
            let all = Db::open(&dir.path().join("all.sqlite")).await.unwrap();
            // Two batches, the second meeting rows the first wrote; few keys, so that keys
            // repeat within a batch and metadata receipts meet content receipts both ways.
            for _ in 0..2 {
                let batch: Vec<Receipt> = (0..below(40))
                    .map(|_| Receipt {
                        doc_id: ids[below(2) as usize],
                        version: 1 + below(2) as i64,
                        origin: "primary-a".to_owned(),
                        md5: Md5Hex::from_digest([7; 16]),
                        node: ["na", "eu"][below(2) as usize].to_owned(),
                        content: below(2) == 0,
                        at: Timestamp(1_700_000_000_000 + below(1000) as i64),
                    })
                    .collect();
                let mut tx = one.begin_write().await.unwrap();
                let mut expected = Vec::new();
                for r in &batch {
                    expected.push(record_one(&mut tx, r).await);
                }
                tx.commit().await.unwrap();
                let mut tx = all.begin_write().await.unwrap();
                let refs: Vec<&Receipt> = batch.iter().collect();
                let got = record_receipts(&mut tx, &refs).await.unwrap();
                tx.commit().await.unwrap();
                assert_eq!(got, expected, "round {round}");
            }
            assert_eq!(dump(&one).await, dump(&all).await, "round {round}");
        }
    }
}
