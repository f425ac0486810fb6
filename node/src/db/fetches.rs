//! Pulls to do (`pending_fetches`), the notifications waiting on them (`fetch_waiters`) and the
//! log of completed pulls (`fetch_log`): the fetch scheduler's SQL (`federation::fetch`).
//!
//! Functions take any executor: a pool (`Db::reader`, `Db::writer`) or a connection inside a
//! writer transaction, as the caller's atomicity needs.

use docfed_shared::wire::{DocumentVersion, Timestamp};
use docfed_shared::Md5Hex;
use sqlx::SqliteExecutor;

/// A pull to do, as the scheduler reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pending {
    pub md5: String,
    pub doc_id: String,
    pub version: i64,
    pub size: i64,
    /// JSON array of base URLs, in preference order.
    pub sources: String,
    pub attempts: i64,
    pub sha256: Option<String>,
}

/// A notification waiting for the pull of its content: (document, version, origin, the
/// notification as JSON, whether its forwards went out).
pub type Waiter = (String, i64, String, String, bool);

/// The sources recorded for a pending pull of `md5` (a JSON array), if one is pending.
pub async fn sources<'e>(
    db: impl SqliteExecutor<'e>,
    md5: &Md5Hex,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT sources FROM pending_fetches WHERE md5 = ?")
        .bind(md5.as_str())
        .fetch_optional(db)
        .await
}

/// Records (or updates the sources of) the pending pull of `d`'s content.
pub async fn upsert<'e>(
    db: impl SqliteExecutor<'e>,
    d: &DocumentVersion,
    sources_json: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pending_fetches (md5, doc_id, version, size, sources, next_attempt_at, created_at, sha256) \
         VALUES (?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT (md5) DO UPDATE SET sources = excluded.sources, \
           sha256 = COALESCE(pending_fetches.sha256, excluded.sha256)",
    )
    .bind(d.md5.as_str())
    .bind(d.id.to_string())
    .bind(d.version)
    .bind(d.size as i64)
    .bind(sources_json)
    .bind(Timestamp::now().millis())
    .bind(d.sha256.as_ref().map(|h| h.as_str()))
    .execute(db)
    .await
    .map(|_| ())
}

/// Records that the notification `json` of `d` waits for the pull (once per version);
/// `forwarded` when it owes no forwards at the pull's start (nothing below needs them).
pub async fn add_waiter<'e>(
    db: impl SqliteExecutor<'e>,
    d: &DocumentVersion,
    json: &str,
    forwarded: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT OR IGNORE INTO fetch_waiters (md5, doc_id, version, origin, notification, forwarded) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(d.md5.as_str())
    .bind(d.id.to_string())
    .bind(d.version)
    .bind(&d.origin)
    .bind(json)
    .bind(forwarded)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn count<'e>(db: impl SqliteExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM pending_fetches")
        .fetch_one(db)
        .await
}

/// Pulls due at `now` (Unix ms), oldest first.
pub async fn due<'e>(
    db: impl SqliteExecutor<'e>,
    now: i64,
    limit: i64,
) -> Result<Vec<Pending>, sqlx::Error> {
    sqlx::query_as(
        "SELECT md5, doc_id, version, size, sources, attempts, sha256 FROM pending_fetches \
         WHERE next_attempt_at <= ? ORDER BY next_attempt_at, created_at LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Forgets the pending pull of `md5` (a row that cannot be read).
pub async fn forget<'e>(db: impl SqliteExecutor<'e>, md5: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM pending_fetches WHERE md5 = ?")
        .bind(md5)
        .execute(db)
        .await
        .map(|_| ())
}

/// Tries the pull of `md5` again at `at` (Unix ms), without counting an attempt.
pub async fn postpone<'e>(
    db: impl SqliteExecutor<'e>,
    md5: &Md5Hex,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE pending_fetches SET next_attempt_at = ? WHERE md5 = ?")
        .bind(at)
        .bind(md5.as_str())
        .execute(db)
        .await
        .map(|_| ())
}

/// Records a failed attempt: the count, when to try again (Unix ms) and why.
pub async fn record_failure<'e>(
    db: impl SqliteExecutor<'e>,
    md5: &Md5Hex,
    attempts: i64,
    retry_at: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE pending_fetches SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE md5 = ?",
    )
    .bind(attempts)
    .bind(retry_at)
    .bind(error)
    .bind(md5.as_str())
    .execute(db)
    .await
    .map(|_| ())
}

/// The waiters of `md5` whose forwards have not gone out.
pub async fn unforwarded<'e>(
    db: impl SqliteExecutor<'e>,
    md5: &Md5Hex,
) -> Result<Vec<(String, i64, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT doc_id, version, origin, notification FROM fetch_waiters WHERE md5 = ? AND forwarded = 0",
    )
    .bind(md5.as_str())
    .fetch_all(db)
    .await
}

pub async fn mark_forwarded<'e>(
    db: impl SqliteExecutor<'e>,
    md5: &Md5Hex,
    doc_id: &str,
    version: i64,
    origin: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE fetch_waiters SET forwarded = 1 WHERE md5 = ? AND doc_id = ? AND version = ? AND origin = ?",
    )
    .bind(md5.as_str())
    .bind(doc_id)
    .bind(version)
    .bind(origin)
    .execute(db)
    .await
    .map(|_| ())
}

/// Of `md5s`, those whose pull is still pending, each with whether its content is already
/// held: one statement for a group of finished pulls.
pub async fn pending_of(
    conn: &mut sqlx::SqliteConnection,
    md5s: &[&Md5Hex],
) -> Result<std::collections::HashMap<String, bool>, sqlx::Error> {
    let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "SELECT p.md5, EXISTS (SELECT 1 FROM objects o WHERE o.md5 = p.md5) \
         FROM pending_fetches p WHERE p.md5 IN ",
    );
    super::push_in_list(&mut qb, md5s.iter().map(|m| m.as_str()));
    let rows: Vec<(String, bool)> = qb.build_query_as().fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().collect())
}

/// Every waiter of each of `md5s`, as `(md5, waiter)`.
pub async fn waiters_of(
    conn: &mut sqlx::SqliteConnection,
    md5s: &[&Md5Hex],
) -> Result<Vec<(String, Waiter)>, sqlx::Error> {
    if md5s.is_empty() {
        return Ok(Vec::new());
    }
    let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "SELECT md5, doc_id, version, origin, notification, forwarded FROM fetch_waiters \
         WHERE md5 IN ",
    );
    super::push_in_list(&mut qb, md5s.iter().map(|m| m.as_str()));
    let rows: Vec<(String, String, i64, String, String, bool)> =
        qb.build_query_as().fetch_all(&mut *conn).await?;
    Ok(rows
        .into_iter()
        .map(|(md5, doc, version, origin, json, forwarded)| {
            (md5, (doc, version, origin, json, forwarded))
        })
        .collect())
}

/// A completed pull, as [`complete_all`] logs it.
#[derive(Debug, Clone)]
pub struct Completed<'a> {
    pub md5: &'a Md5Hex,
    pub source: &'a str,
    pub bytes: u64,
    pub attempts: i64,
    pub started_at: i64,
}

/// Completed pulls: their waiters and rows go, and they are logged. Three statements for the
/// group, in one round trip to the connection's thread.
pub async fn complete_all(
    conn: &mut sqlx::SqliteConnection,
    done: &[Completed<'_>],
) -> Result<(), sqlx::Error> {
    if done.is_empty() {
        return Ok(());
    }
    let md5s = || done.iter().map(|c| c.md5.as_str());
    let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("DELETE FROM fetch_waiters WHERE md5 IN ");
    super::push_in_list(&mut qb, md5s());
    qb.push("; DELETE FROM pending_fetches WHERE md5 IN ");
    super::push_in_list(&mut qb, md5s());
    qb.push("; INSERT INTO fetch_log (md5, source, bytes, attempts, started_at, done_at) ");
    let now = Timestamp::now().millis();
    qb.push_values(done, |mut row, c| {
        row.push_bind(c.md5.as_str())
            .push_bind(c.source)
            .push_bind(c.bytes as i64)
            .push_bind(c.attempts)
            .push_bind(c.started_at)
            .push_bind(now);
    });
    qb.build().execute(&mut *conn).await.map(|_| ())
}
