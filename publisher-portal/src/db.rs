//! The portal's SQLite database: authors, sessions, failed logins and document ownership.
//!
//! The primaries know nothing about authors, so which author owns which document is recorded
//! here when the portal publishes it. Next to ownership the portal keeps a cache of each owned
//! document's current metadata, refreshed whenever the portal writes to the document or shows
//! its page; "My documents" (search, filters, paging) is a query over that cache, so listing
//! costs no request per document and still works while both primaries are down.
//!
//! Over 600 lines with its tests (about 150): one function per query of the portal's own small
//! schema.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use docfed_shared::wire::DocumentMeta;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "portal.db";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the portal database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("cannot migrate the portal database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("an author named {0:?} exists already")]
    DuplicateAuthor(String),
    #[error("no author named {0:?}")]
    NoSuchAuthor(String),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

#[derive(Debug, Clone)]
pub struct AuthorRow {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
}

/// A live session, as the session middleware hands it to handlers.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id_hash: String,
    pub author_id: i64,
    pub author_name: String,
    pub csrf: String,
    pub expires_at: i64,
}

/// Cached metadata of an owned document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocRow {
    pub doc_id: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub filename: String,
    pub source: String,
    pub scope: String,
    pub size: u64,
    pub md5: String,
    pub version: i64,
    pub deleted: bool,
    pub published_at: i64,
    pub updated_at: i64,
}

impl DocRow {
    pub fn from_meta(m: &DocumentMeta) -> DocRow {
        let c = &m.current;
        DocRow {
            doc_id: c.id.to_string(),
            title: c.title.clone(),
            description: c.description.clone(),
            tags: c.tags.clone(),
            filename: c.filename.clone(),
            source: c.source.clone(),
            scope: c.scope.to_string(),
            size: c.size,
            md5: c.md5.to_string(),
            version: c.version,
            deleted: c.deleted,
            published_at: m.published_at.millis(),
            updated_at: c.created_at.millis(),
        }
    }
}

/// Which of an author's documents to list.
#[derive(Debug, Clone, Default)]
pub struct DocFilter {
    /// Words that must all appear (case-insensitively) in title, description, tags, file name or
    /// source.
    pub q: String,
    /// `global` or `region:R`; empty for any.
    pub scope: String,
    /// One tag; empty for any.
    pub tag: String,
    /// `live` (default), `deleted` or `any`.
    pub state: String,
    pub offset: u32,
    pub limit: u32,
}

/// What [`Db::begin_attempt`] decided.
#[derive(Debug)]
pub enum Attempt {
    /// Recorded as a failure; [`Db::forget_attempt`] takes it back.
    Counted(CountedAttempt),
    /// A key is locked until this time (Unix ms); nothing was recorded.
    Locked { until: i64 },
}

/// A login attempt counted as a failure until its password proves right.
#[derive(Debug)]
#[must_use = "an attempt stays counted as a failure unless forgotten"]
pub struct CountedAttempt {
    keys: Vec<String>,
    at: i64,
}

#[derive(Clone)]
pub struct Db {
    pool: SqlitePool,
}

pub fn now_ms() -> i64 {
    docfed_shared::wire::Timestamp::now().millis()
}

impl Db {
    /// Opens (creating if needed) `DIR/portal.db` and applies the migrations.
    pub async fn open(dir: &Path) -> Result<Db, DbError> {
        std::fs::create_dir_all(dir).map_err(|e| DbError::Open {
            path: dir.display().to_string(),
            source: sqlx::Error::Io(e),
        })?;
        let path = dir.join(DB_FILE);
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| DbError::Open {
                path: path.display().to_string(),
                source,
            })?
            .filename(&path)
            .create_if_missing(true)
            // WAL: `add-author` may write while a running portal reads and writes.
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| DbError::Open {
                path: path.display().to_string(),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Db { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- authors ----

    pub async fn add_author(&self, name: &str, password_hash: &str) -> Result<i64, DbError> {
        let r =
            sqlx::query("INSERT INTO authors (name, password_hash, created_at) VALUES (?, ?, ?)")
                .bind(name)
                .bind(password_hash)
                .bind(now_ms())
                .execute(&self.pool)
                .await;
        match r {
            Ok(done) => Ok(done.last_insert_rowid()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(DbError::DuplicateAuthor(name.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces an author's password and ends all of their sessions.
    pub async fn set_password(&self, name: &str, password_hash: &str) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM authors WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let id = id.ok_or_else(|| DbError::NoSuchAuthor(name.to_owned()))?;
        sqlx::query("UPDATE authors SET password_hash = ? WHERE id = ?")
            .bind(password_hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE author_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn author_by_name(&self, name: &str) -> Result<Option<AuthorRow>, DbError> {
        let row = sqlx::query("SELECT id, name, password_hash FROM authors WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| AuthorRow {
            id: r.get(0),
            name: r.get(1),
            password_hash: r.get(2),
        }))
    }

    // ---- sessions ----

    pub async fn create_session(
        &self,
        id_hash: &str,
        author_id: i64,
        csrf: &str,
        expires_at: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, author_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id_hash)
        .bind(author_id)
        .bind(csrf)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session with this id hash, if it exists and has not expired.
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRow>, DbError> {
        let row = sqlx::query(
            "SELECT s.id_hash, s.author_id, a.name, s.csrf, s.expires_at FROM sessions s \
             JOIN authors a ON a.id = s.author_id WHERE s.id_hash = ? AND s.expires_at > ?",
        )
        .bind(id_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| SessionRow {
            id_hash: r.get(0),
            author_id: r.get(1),
            author_name: r.get(2),
            csrf: r.get(3),
            expires_at: r.get(4),
        }))
    }

    pub async fn extend_session(&self, id_hash: &str, expires_at: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE sessions SET expires_at = ? WHERE id_hash = ?")
            .bind(expires_at)
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops expired sessions and login failures older than `failure_window`.
    pub async fn purge(&self, failure_window: Duration) -> Result<(), DbError> {
        let now = now_ms();
        sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM login_failures WHERE at <= ?")
            .bind(now - failure_window.as_millis() as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- login rate limiting ----

    /// Counts a login attempt as a failure under every key *before* its password is checked,
    /// unless a key already holds its limit of failures within `window`: then nothing is
    /// recorded and the answer says until when the lock lasts.
    ///
    /// Check and record are one `BEGIN IMMEDIATE` transaction. SQLite lets one writer in at a
    /// time, so of any number of parallel attempts exactly the first `limit` find a free slot;
    /// checking first and recording only after the (slow) password verification let them all
    /// through.
    pub async fn begin_attempt(
        &self,
        keys: &[(&str, usize)],
        window: Duration,
    ) -> Result<Attempt, DbError> {
        let now = now_ms();
        let since = now - window.as_millis() as i64;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut locked = None;
        for (key, limit) in keys {
            let newest_first: Vec<i64> = sqlx::query_scalar(
                "SELECT at FROM login_failures WHERE key = ? AND at > ? ORDER BY at DESC LIMIT ?",
            )
            .bind(key)
            .bind(since)
            .bind(*limit as i64)
            .fetch_all(&mut *tx)
            .await?;
            locked = locked.max(crate::auth::locked_until(&newest_first, *limit, window));
        }
        if let Some(until) = locked {
            tx.rollback().await?;
            return Ok(Attempt::Locked { until });
        }
        for (key, _) in keys {
            sqlx::query("INSERT INTO login_failures (key, at) VALUES (?, ?)")
                .bind(key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Attempt::Counted(CountedAttempt {
            keys: keys.iter().map(|(k, _)| (*k).to_owned()).collect(),
            at: now,
        }))
    }

    /// Un-counts an attempt whose password proved right, or that was never checked.
    pub async fn forget_attempt(&self, attempt: CountedAttempt) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        for key in &attempt.keys {
            // Rows with the same key and time are interchangeable: remove one. (Not by rowid:
            // SQLite reuses the rowid of a deleted last row, which could be another attempt's.)
            // None left means a success cleared the key meanwhile.
            sqlx::query(
                "DELETE FROM login_failures WHERE rowid = \
                 (SELECT rowid FROM login_failures WHERE key = ? AND at = ? LIMIT 1)",
            )
            .bind(key)
            .bind(attempt.at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn clear_failures(&self, key: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM login_failures WHERE key = ?")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- documents ----

    /// Records that `author_id` owns the document and caches its metadata. Never moves a
    /// document to another author.
    pub async fn own_document(&self, author_id: i64, d: &DocRow) -> Result<(), DbError> {
        let insert = sqlx::query(
            "INSERT INTO documents (title, description, tags, filename, source, scope, size, md5, \
               version, deleted, published_at, updated_at, doc_id, author_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (doc_id) DO NOTHING",
        );
        bind_metadata(insert, d)
            .bind(&d.doc_id)
            .bind(author_id)
            .execute(&self.pool)
            .await?;
        self.refresh(d, Some(author_id)).await
    }

    /// Refreshes the cached metadata of a document (whose ownership the caller checked), unless
    /// the cache already holds a newer version (two pages may race).
    pub async fn update_document(&self, d: &DocRow) -> Result<(), DbError> {
        self.refresh(d, None).await
    }

    async fn refresh(&self, d: &DocRow, author_id: Option<i64>) -> Result<(), DbError> {
        let update = sqlx::query(
            "UPDATE documents SET title = ?, description = ?, tags = ?, filename = ?, source = ?, \
               scope = ?, size = ?, md5 = ?, version = ?, deleted = ?, published_at = ?, updated_at = ? \
             WHERE doc_id = ? AND version <= ? AND (? IS NULL OR author_id = ?)",
        );
        bind_metadata(update, d)
            .bind(&d.doc_id)
            .bind(d.version)
            .bind(author_id)
            .bind(author_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The cached row of a document owned by `author_id`; `None` if it is someone else's or
    /// unknown (both look the same to the author: not found).
    pub async fn owned_document(
        &self,
        author_id: i64,
        doc_id: &str,
    ) -> Result<Option<DocRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {DOC_COLUMNS} FROM documents WHERE doc_id = ? AND author_id = ?"
        ))
        .bind(doc_id)
        .bind(author_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| doc_row(&r)))
    }

    pub async fn owned_ids(
        &self,
        author_id: i64,
    ) -> Result<std::collections::HashSet<String>, DbError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT doc_id FROM documents WHERE author_id = ?")
                .bind(author_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(ids.into_iter().collect())
    }

    /// How many of `doc_ids` (one entry per pending annotation, so repeats count) are the
    /// author's documents: one query whose cost follows the list, not the author's library.
    pub async fn count_owned(&self, author_id: i64, doc_ids: &[String]) -> Result<u64, DbError> {
        if doc_ids.is_empty() {
            return Ok(0);
        }
        let list = serde_json::to_string(doc_ids).unwrap_or_else(|_| "[]".into());
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM json_each(?) j WHERE EXISTS \
             (SELECT 1 FROM documents d WHERE d.author_id = ? AND d.doc_id = j.value)",
        )
        .bind(list)
        .bind(author_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    /// One page of an author's documents, newest change first. Returns `limit + 1` rows at most,
    /// so the caller knows whether there is a next page.
    pub async fn list_documents(
        &self,
        author_id: i64,
        f: &DocFilter,
    ) -> Result<Vec<DocRow>, DbError> {
        let mut sql = format!("SELECT {DOC_COLUMNS} FROM documents WHERE author_id = ?");
        let mut binds: Vec<String> = Vec::new();
        for word in f.q.split_whitespace().take(10) {
            sql.push_str(
                " AND (title || ' ' || description || ' ' || tags || ' ' || filename || ' ' || source) \
                 LIKE ? ESCAPE '\\'",
            );
            binds.push(format!("%{}%", like_escape(word)));
        }
        if !f.scope.is_empty() {
            sql.push_str(" AND scope = ?");
            binds.push(f.scope.clone());
        }
        if !f.tag.is_empty() {
            sql.push_str(" AND tags LIKE ? ESCAPE '\\'");
            binds.push(format!("%,{},%", like_escape(&f.tag.to_lowercase())));
        }
        match f.state.as_str() {
            "deleted" => sql.push_str(" AND deleted = 1"),
            "any" => {}
            _ => sql.push_str(" AND deleted = 0"),
        }
        sql.push_str(" ORDER BY updated_at DESC, doc_id DESC LIMIT ? OFFSET ?");
        let mut q = sqlx::query(&sql).bind(author_id);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q
            .bind(i64::from(f.limit) + 1)
            .bind(i64::from(f.offset))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(doc_row).collect())
    }
}

const DOC_COLUMNS: &str = "doc_id, title, description, tags, filename, source, scope, size, md5, \
                           version, deleted, published_at, updated_at";

fn doc_row(r: &sqlx::sqlite::SqliteRow) -> DocRow {
    let tags: String = r.get(3);
    DocRow {
        doc_id: r.get(0),
        title: r.get(1),
        description: r.get(2),
        tags: tags
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        filename: r.get(4),
        source: r.get(5),
        scope: r.get(6),
        size: r.get::<i64, _>(7).max(0) as u64,
        md5: r.get(8),
        version: r.get(9),
        deleted: r.get(10),
        published_at: r.get(11),
        updated_at: r.get(12),
    }
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds a cached document's metadata columns, in the order both the insert and the refresh
/// name them: title, description, tags, filename, source, scope, size, md5, version, deleted,
/// published_at, updated_at.
fn bind_metadata<'q>(q: SqliteQuery<'q>, d: &'q DocRow) -> SqliteQuery<'q> {
    q.bind(&d.title)
        .bind(&d.description)
        .bind(tags_column(&d.tags))
        .bind(&d.filename)
        .bind(&d.source)
        .bind(&d.scope)
        .bind(d.size as i64)
        .bind(&d.md5)
        .bind(d.version)
        .bind(d.deleted)
        .bind(d.published_at)
        .bind(d.updated_at)
}

fn tags_column(tags: &[String]) -> String {
    if tags.is_empty() {
        String::new()
    } else {
        format!(",{},", tags.join(","))
    }
}

/// Escapes LIKE wildcards so a search for `50%` matches the text `50%` only.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, title: &str, tags: &[&str], deleted: bool, at: i64) -> DocRow {
        DocRow {
            doc_id: id.into(),
            title: title.into(),
            description: String::new(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            filename: "f.txt".into(),
            source: String::new(),
            scope: "global".into(),
            size: 1,
            md5: String::new(),
            version: 1,
            deleted,
            published_at: at,
            updated_at: at,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempts_count_before_the_check_ends() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).await.unwrap();
        let window = Duration::from_secs(60);
        // 40 attempts at once under a limit of 5: exactly 5 are counted, the rest locked.
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let ip = format!("ip:{i}");
                    db.begin_attempt(&[("user:a", 5), (&ip, 20)], window).await
                })
            })
            .collect();
        let mut counted = Vec::new();
        for t in tasks {
            match t.await.unwrap().unwrap() {
                Attempt::Counted(a) => counted.push(a),
                Attempt::Locked { until } => assert!(until > now_ms()),
            }
        }
        assert_eq!(counted.len(), 5);
        // Forgetting one (its password was right) frees one slot, once.
        db.forget_attempt(counted.pop().unwrap()).await.unwrap();
        let again = db.begin_attempt(&[("user:a", 5)], window).await.unwrap();
        assert!(matches!(again, Attempt::Counted(_)));
        let full = db.begin_attempt(&[("user:a", 5)], window).await.unwrap();
        assert!(matches!(full, Attempt::Locked { .. }));
        // A locked attempt recorded nothing under its other key; a counted one did.
        let counted_ip = counted[0].keys[1].clone();
        let locked_ip = (0..40)
            .map(|i| format!("ip:{i}"))
            .find(|k| !counted.iter().any(|a| &a.keys[1] == k))
            .unwrap();
        assert!(matches!(
            db.begin_attempt(&[(&locked_ip, 1)], window).await.unwrap(),
            Attempt::Counted(_)
        ));
        assert!(matches!(
            db.begin_attempt(&[(&counted_ip, 1)], window).await.unwrap(),
            Attempt::Locked { .. }
        ));
        // Clearing a key (a success) and then forgetting an attempt under it is harmless.
        db.clear_failures("user:a").await.unwrap();
        for a in counted {
            db.forget_attempt(a).await.unwrap();
        }
        assert!(matches!(
            db.begin_attempt(&[("user:a", 1)], window).await.unwrap(),
            Attempt::Counted(_)
        ));
    }

    #[tokio::test]
    async fn ownership_search_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).await.unwrap();
        let alice = db.add_author("alice", "h").await.unwrap();
        let bob = db.add_author("bob", "h").await.unwrap();
        assert!(matches!(
            db.add_author("ALICE", "h").await,
            Err(DbError::DuplicateAuthor(_))
        ));
        db.own_document(
            alice,
            &doc("a1", "Annual report 50%", &["finance"], false, 1),
        )
        .await
        .unwrap();
        db.own_document(alice, &doc("a2", "Maps", &["geo", "fin"], true, 2))
            .await
            .unwrap();
        db.own_document(bob, &doc("b1", "Annual bob", &["finance"], false, 3))
            .await
            .unwrap();
        // Someone else's id is never taken over.
        db.own_document(bob, &doc("a1", "stolen", &[], false, 4))
            .await
            .unwrap();
        assert_eq!(
            db.owned_document(alice, "a1").await.unwrap().unwrap().title,
            "Annual report 50%"
        );
        assert!(db.owned_document(bob, "a1").await.unwrap().is_none());

        let list = |q: &str, tag: &str, state: &str| DocFilter {
            q: q.into(),
            tag: tag.into(),
            state: state.into(),
            limit: 50,
            ..Default::default()
        };
        let ids = |v: Vec<DocRow>| v.into_iter().map(|d| d.doc_id).collect::<Vec<_>>();
        assert_eq!(
            ids(db.list_documents(alice, &list("", "", "")).await.unwrap()),
            ["a1"]
        );
        assert_eq!(
            ids(db
                .list_documents(alice, &list("", "", "any"))
                .await
                .unwrap()),
            ["a2", "a1"]
        );
        assert_eq!(
            ids(db
                .list_documents(alice, &list("annual", "", "any"))
                .await
                .unwrap()),
            ["a1"]
        );
        assert!(db
            .list_documents(alice, &list("5_%", "", "any"))
            .await
            .unwrap()
            .is_empty());
        // A tag matches whole tags only: `fin` is not `finance`.
        assert_eq!(
            ids(db
                .list_documents(alice, &list("", "fin", "any"))
                .await
                .unwrap()),
            ["a2"]
        );
    }
}
