//! The transactional outbox (`outbox`), delivery receipts (`receipts`) and annotations as they
//! arrive (`annotations`): the relay's and the inbox's SQL (`federation::outbox`,
//! `federation::inbox`).

use docfed_shared::messages::{Annotation, Decision, Receipt};
use docfed_shared::wire::Timestamp;
use sqlx::SqliteExecutor;

/// Queues several messages, `(target, payload)`, in the caller's transaction with one statement:
/// one round trip to the connection's thread for a notification's hops or a receipt's parents.
pub async fn enqueue_all<'e, T: AsRef<str>, P: AsRef<[u8]>>(
    db: impl SqliteExecutor<'e>,
    rows: &[(T, P)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let now = Timestamp::now().millis();
    let mut qb = sqlx::QueryBuilder::new("INSERT INTO outbox (target, payload, created_at) ");
    qb.push_values(rows, |mut row, (target, payload)| {
        row.push_bind(target.as_ref())
            .push_bind(payload.as_ref())
            .push_bind(now);
    });
    qb.build().execute(db).await.map(|_| ())
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

/// The oldest `limit` messages for `target`: (id, payload).
pub async fn batch<'e>(
    db: impl SqliteExecutor<'e>,
    target: &str,
    limit: i64,
) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("SELECT id, payload FROM outbox WHERE target = ? ORDER BY id LIMIT ?")
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

/// Records a receipt. Returns whether it is news: a new row, or a content receipt for a
/// version only a metadata receipt was known for (upgraded).
pub async fn record_receipt(
    conn: &mut sqlx::SqliteConnection,
    r: &Receipt,
) -> Result<bool, sqlx::Error> {
    let new = sqlx::query(
        "INSERT OR IGNORE INTO receipts (doc_id, node, version, origin, md5, at, content) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.doc_id.to_string())
    .bind(&r.node)
    .bind(r.version)
    .bind(&r.origin)
    .bind(r.md5.as_str())
    .bind(r.at.millis())
    .bind(r.content)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    if new || !r.content {
        return Ok(new);
    }
    Ok(sqlx::query(
        "UPDATE receipts SET content = 1, at = ? \
         WHERE doc_id = ? AND node = ? AND version = ? AND origin = ? AND content = 0",
    )
    .bind(r.at.millis())
    .bind(r.doc_id.to_string())
    .bind(&r.node)
    .bind(r.version)
    .bind(&r.origin)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0)
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
pub async fn latest_receipts<'e, T>(
    db: impl SqliteExecutor<'e>,
    doc: &str,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    sqlx::query_as(
        "SELECT node, version, origin, md5, content, at FROM receipts r WHERE doc_id = ? \
         AND NOT EXISTS (SELECT 1 FROM receipts n WHERE n.doc_id = r.doc_id AND n.node = r.node \
           AND (n.version > r.version OR (n.version = r.version AND n.origin > r.origin))) \
         ORDER BY node",
    )
    .bind(doc)
    .fetch_all(db)
    .await
}

/// Annotations in `state` (`any` for all), of one document or all, oldest first, at most 1,000,
/// with their document's title and whether it is deleted.
pub async fn annotations<'e, T>(
    db: impl SqliteExecutor<'e>,
    state: &str,
    doc: Option<&str>,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    sqlx::query_as(
        "SELECT a.id, a.doc_id, a.doc_version, a.author, a.text, a.state, a.created_at, \
           d.title AS document_title, d.deleted AS document_deleted \
         FROM annotations a LEFT JOIN documents d ON d.doc_id = a.doc_id \
         WHERE (?1 = 'any' OR a.state = ?1) AND (?2 IS NULL OR a.doc_id = ?2) \
         ORDER BY a.created_at LIMIT 1000",
    )
    .bind(state)
    .bind(doc)
    .fetch_all(db)
    .await
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

/// What a reader may see of one annotation: its state, and when it was decided.
pub async fn annotation_status<'e, T>(
    db: impl SqliteExecutor<'e>,
    id: &str,
) -> Result<Option<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    sqlx::query_as(&format!(
        "SELECT {STATUS_COLUMNS} FROM annotations WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The accepted annotations of document `doc`, oldest first, at most 1,000.
pub async fn accepted_annotations<'e, T>(
    db: impl SqliteExecutor<'e>,
    doc: &str,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    sqlx::query_as(&format!(
        "SELECT {STATUS_COLUMNS} FROM annotations \
         WHERE doc_id = ? AND state = 'accepted' ORDER BY created_at LIMIT 1000"
    ))
    .bind(doc)
    .fetch_all(db)
    .await
}
