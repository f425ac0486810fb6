//! Documents, versions and the change feed.

use docfed_shared::wire::{
    Change, ChangeFeed, ChangeKind, DocumentList, DocumentMeta, DocumentVersion, Timestamp,
    VersionEntry, VersionList,
};
use docfed_shared::{DocId, Md5Hex, Scope};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::Db;

pub(super) const VERSION_COLUMNS: &str =
    "doc_id, version, origin, title, description, tags, filename, \
     source, scope, content_type, md5, size, deleted, created_at, author, sha256, signature, lazy";

#[derive(sqlx::FromRow)]
struct VersionRow {
    doc_id: String,
    version: i64,
    origin: String,
    title: String,
    description: String,
    tags: String,
    filename: String,
    source: String,
    scope: String,
    content_type: String,
    md5: String,
    size: i64,
    deleted: bool,
    created_at: i64,
    author: String,
    sha256: Option<String>,
    signature: Option<String>,
    lazy: bool,
}

#[derive(sqlx::FromRow)]
struct DocumentRow {
    #[sqlx(flatten)]
    v: VersionRow,
    published_at: i64,
    available_here: bool,
}

fn decode_err(what: &str, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("corrupt {what} in database: {e}").into())
}

impl TryFrom<VersionRow> for DocumentVersion {
    type Error = sqlx::Error;
    fn try_from(r: VersionRow) -> Result<Self, sqlx::Error> {
        Ok(DocumentVersion {
            id: r.doc_id.parse().map_err(|e| decode_err("doc_id", e))?,
            version: r.version,
            origin: r.origin,
            title: r.title,
            description: r.description,
            tags: serde_json::from_str(&r.tags).map_err(|e| decode_err("tags", e))?,
            filename: r.filename,
            source: r.source,
            scope: r.scope.parse().map_err(|e| decode_err("scope", e))?,
            content_type: r.content_type,
            md5: r.md5.parse().map_err(|e| decode_err("md5", e))?,
            size: r.size as u64,
            deleted: r.deleted,
            created_at: Timestamp(r.created_at),
            author: r.author,
            sha256: r
                .sha256
                .map(|h| h.parse())
                .transpose()
                .map_err(|e| decode_err("sha256", e))?,
            signature: r.signature,
            lazy: r.lazy,
        })
    }
}

impl TryFrom<DocumentRow> for DocumentMeta {
    type Error = sqlx::Error;
    fn try_from(r: DocumentRow) -> Result<Self, sqlx::Error> {
        Ok(DocumentMeta {
            current: r.v.try_into()?,
            published_at: Timestamp(r.published_at),
            available_here: r.available_here,
            available_at: Vec::new(),
        })
    }
}

/// Which documents a listing includes with respect to tombstones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeletedFilter {
    #[default]
    Exclude,
    Only,
    Include,
}

/// Where the next page of a listing starts. Relevance-ranked searches page by offset; plain
/// listings page by key (newest first), which stays cheap however deep the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Offset(u64),
    BeforeRid(i64),
}

impl Cursor {
    pub fn encode(self) -> String {
        match self {
            Cursor::Offset(n) => format!("o{n}"),
            Cursor::BeforeRid(r) => format!("k{r}"),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (kind, n) = s.split_at_checked(1)?;
        match kind {
            "o" => n.parse().ok().map(Cursor::Offset),
            "k" => n.parse().ok().map(Cursor::BeforeRid),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Already converted to a safe FTS5 expression (see `api::search`).
    pub fts: Option<String>,
    pub scope: Option<Scope>,
    pub tag: Option<String>,
    pub source: Option<String>,
    pub author: Option<String>,
    pub content_type: Option<String>,
    /// First publication at or after (Unix ms).
    pub since: Option<i64>,
    /// First publication before (Unix ms).
    pub until: Option<i64>,
    pub deleted: DeletedFilter,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

impl Db {
    pub async fn document(&self, id: &DocId) -> Result<Option<DocumentMeta>, sqlx::Error> {
        let row: Option<DocumentRow> = sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS}, published_at, \
             EXISTS (SELECT 1 FROM objects o WHERE o.md5 = d.md5) AS available_here \
             FROM documents d WHERE doc_id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    pub async fn versions(&self, id: &DocId) -> Result<Option<VersionList>, sqlx::Error> {
        let current: Option<(i64, String)> =
            sqlx::query_as("SELECT version, origin FROM documents WHERE doc_id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.read)
                .await?;
        let Some(current) = current else {
            return Ok(None);
        };
        let rows: Vec<DocumentRow> = sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS}, created_at AS published_at, \
             EXISTS (SELECT 1 FROM objects o WHERE o.md5 = v.md5) AS available_here \
             FROM versions v WHERE doc_id = ? ORDER BY version, origin"
        ))
        .bind(id.to_string())
        .fetch_all(&self.read)
        .await?;
        let versions = rows
            .into_iter()
            .map(|r| {
                let available_here = r.available_here;
                let version: DocumentVersion = r.v.try_into()?;
                Ok(VersionEntry {
                    current: (version.version, version.origin.as_str())
                        == (current.0, current.1.as_str()),
                    version,
                    available_here,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Some(VersionList { id: *id, versions }))
    }

    /// A current, live, lazy version whose content is `md5` (ARCHITECTURE.md §2.9): content
    /// this node may fetch from above when asked for it.
    pub async fn lazy_version(&self, md5: &Md5Hex) -> Result<Option<DocumentVersion>, sqlx::Error> {
        let row: Option<VersionRow> = sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS} FROM documents WHERE md5 = ? AND lazy AND NOT deleted LIMIT 1"
        ))
        .bind(md5.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    /// A specific version's metadata, for content requests of older versions.
    pub async fn version(
        &self,
        id: &DocId,
        version: i64,
    ) -> Result<Option<DocumentVersion>, sqlx::Error> {
        // When concurrent versions share a number, the winner (highest origin) is the one meant.
        let row: Option<VersionRow> = sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE doc_id = ? AND version = ? \
             ORDER BY origin DESC LIMIT 1"
        ))
        .bind(id.to_string())
        .bind(version)
        .fetch_optional(&self.read)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    /// How many matches of a full-text search are ranked: the newest ones that pass its
    /// filters. Broad words match a large share of a big directory, and bm25 for every match
    /// was the slow tail of searches at a million documents (BENCHMARKS.md §3); a narrower query
    /// (more words, or a filter) reaches older documents.
    pub const FTS_CANDIDATES: u32 = 10_000;

    pub async fn list(&self, f: &ListFilter) -> Result<DocumentList, sqlx::Error> {
        // The inner query finds and orders only row ids (and scores), so sorting many matches of
        // a broad search moves small rows; the outer query fetches the page's columns.
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT d.rid, {}, d.published_at, \
             EXISTS (SELECT 1 FROM objects o WHERE o.md5 = d.md5) AS available_here FROM (",
            VERSION_COLUMNS
                .split(", ")
                .map(|c| format!("d.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let limit = f.limit.max(1);
        let offset = match &f.fts {
            Some(fts) => {
                push_ranked_search(&mut qb, f, fts);
                match f.cursor {
                    Some(Cursor::Offset(n)) => n,
                    _ => 0,
                }
            }
            None => {
                push_listing(&mut qb, f);
                0
            }
        };
        // One row more than asked tells whether there is a next page.
        qb.push(" LIMIT ").push_bind(i64::from(limit) + 1);
        qb.push(" OFFSET ").push_bind(offset as i64);
        qb.push(") top JOIN documents d ON d.rid = top.rid ORDER BY top.score, d.rid DESC");

        #[derive(sqlx::FromRow)]
        struct Hit {
            rid: i64,
            #[sqlx(flatten)]
            doc: DocumentRow,
        }
        let mut hits: Vec<Hit> = if f.fts.is_some() {
            // A search's cost grows with what its words match, which the client chooses: it
            // runs under a deadline, checked by SQLite every few thousand instructions, so a
            // broad search ends with an error instead of holding a reader for minutes. It runs
            // as a task of its own so that a client who hangs up cannot cancel it between
            // setting the deadline and clearing it, which would leave a pooled connection
            // that interrupts whatever it runs next.
            let pool = self.read.clone();
            let deadline = std::time::Instant::now() + self.search_deadline;
            tokio::spawn(async move {
                let mut conn = pool.acquire().await?;
                conn.lock_handle()
                    .await?
                    .set_progress_handler(SEARCH_CHECK_EVERY, move || {
                        std::time::Instant::now() < deadline
                    });
                let hits = qb.build_query_as().fetch_all(&mut *conn).await;
                let cleared = match conn.lock_handle().await {
                    Ok(mut handle) => {
                        handle.remove_progress_handler();
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = cleared {
                    // Not back to the pool with the deadline still set: closed instead.
                    drop(conn.detach());
                    return Err(e);
                }
                hits
            })
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("search task: {e}")))??
        } else {
            qb.build_query_as().fetch_all(&self.read).await?
        };
        let more = hits.len() > limit as usize;
        hits.truncate(limit as usize);
        let next_cursor = match (more, hits.last()) {
            (true, Some(last)) => Some(if f.fts.is_some() {
                Cursor::Offset(offset + u64::from(limit)).encode()
            } else {
                Cursor::BeforeRid(last.rid).encode()
            }),
            _ => None,
        };
        let documents = hits
            .into_iter()
            .map(|h| h.doc.try_into())
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(DocumentList {
            documents,
            next_cursor,
        })
    }

    pub async fn changes(&self, since: i64, limit: u32) -> Result<ChangeFeed, sqlx::Error> {
        #[derive(sqlx::FromRow)]
        struct Row {
            seq: i64,
            kind: String,
            at: i64,
            #[sqlx(flatten)]
            v: VersionRow,
        }
        let cols = VERSION_COLUMNS
            .split(", ")
            .map(|c| format!("v.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        // Read first: the horizon only grows, so the answer never claims less compaction than
        // its rows show.
        let horizon: i64 = sqlx::query_scalar("SELECT horizon FROM feed_horizon WHERE id = 1")
            .fetch_optional(&self.read)
            .await?
            .unwrap_or(0);
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT c.seq, c.kind, c.at, {cols} FROM changes c \
             JOIN versions v ON v.doc_id = c.doc_id AND v.version = c.version AND v.origin = c.origin \
             WHERE c.seq > ? ORDER BY c.seq LIMIT ?"
        ))
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let last_seq = rows.last().map_or(since, |r| r.seq);
        let changes = rows
            .into_iter()
            .map(|r| {
                Ok(Change {
                    seq: r.seq,
                    kind: ChangeKind::parse(&r.kind)
                        .ok_or_else(|| decode_err("change kind", &r.kind))?,
                    at: Timestamp(r.at),
                    document: r.v.try_into()?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(ChangeFeed {
            changes,
            last_seq,
            horizon,
        })
    }
}

/// SQLite virtual-machine instructions between two looks at a search's deadline (about a
/// microsecond's worth on this machine: the check itself costs nothing measurable).
const SEARCH_CHECK_EVERY: i32 = 1000;

/// The values of `deleted` a filter admits, as an SQL condition on that column.
fn deleted_condition(filter: DeletedFilter) -> &'static str {
    match filter {
        DeletedFilter::Exclude => " = 0",
        DeletedFilter::Only => " = 1",
        DeletedFilter::Include => " IN (0, 1)",
    }
}

/// The inner query of a full-text search: the row ids and scores of the newest
/// [`Db::FTS_CANDIDATES`] matches that pass the filters, in rank order.
///
/// Everything is decided from the FTS table and narrow indexes, never by reading each match's
/// row of `documents`: a filter is a correlated `EXISTS` that seeks the filter's own index for
/// the match's row id (the whole key: value, `deleted`, `rid`), and SQLite evaluates it before
/// the `rank` column, so bm25 runs only for matches that pass. Joining each match to `documents`
/// for its filter columns was a random b-tree lookup per match and the slow tail of filtered
/// searches at a million documents (BENCHMARKS.md §3); `rowid IN (subquery)` is worse still,
/// because FTS5 answers it with one query per value. `INDEXED BY` is needed: for a lookup by
/// `rid` the planner prefers the table's primary key, which reads the wide row.
fn push_ranked_search(qb: &mut QueryBuilder<Sqlite>, f: &ListFilter, fts: &str) {
    qb.push(
        "SELECT rid, score FROM (SELECT documents_fts.rowid AS rid, \
         documents_fts.rank AS score FROM documents_fts WHERE documents_fts MATCH ",
    )
    .push_bind(fts.to_owned());
    // Tombstones are a small set, read from the `(deleted, rid)` index once per query.
    match f.deleted {
        DeletedFilter::Exclude => {
            qb.push(
                " AND documents_fts.rowid NOT IN (SELECT rid FROM documents WHERE deleted = 1)",
            );
        }
        DeletedFilter::Only => {
            qb.push(" AND documents_fts.rowid IN (SELECT rid FROM documents WHERE deleted = 1)");
        }
        DeletedFilter::Include => {}
    }
    // The usually most selective filter first: each is tested only for matches that passed
    // the ones before it.
    if let Some(tag) = &f.tag {
        qb.push(" AND EXISTS (SELECT 1 FROM document_tags t WHERE t.tag = ")
            .push_bind(tag.clone())
            .push(" AND t.rid = documents_fts.rowid)");
    }
    let deleted = deleted_condition(f.deleted);
    for (index, column, value) in [
        ("documents_author", "author", f.author.clone()),
        ("documents_source", "source", f.source.clone()),
        (
            "documents_scope",
            "scope",
            f.scope.as_ref().map(Scope::to_string),
        ),
    ] {
        if let Some(value) = value {
            qb.push(format!(
                " AND EXISTS (SELECT 1 FROM documents x INDEXED BY {index} WHERE x.{column} = "
            ))
            .push_bind(value)
            .push(format!(
                " AND x.deleted{deleted} AND x.rid = documents_fts.rowid)"
            ));
        }
    }
    // Filters no narrow index answers read the match's row.
    if f.content_type.is_some() || f.since.is_some() || f.until.is_some() {
        qb.push(" AND EXISTS (SELECT 1 FROM documents x WHERE x.rid = documents_fts.rowid");
        push_row_filters(qb, f, "x");
        qb.push(")");
    }
    // FTS5 walks its doclist in row id order and stops at the cap, so bm25 is computed for a
    // bounded number of rows however broad the words.
    qb.push(format!(
        " ORDER BY documents_fts.rowid DESC LIMIT {}) ORDER BY score, rid DESC",
        Db::FTS_CANDIDATES
    ));
}

/// The inner query of a listing without full text: newest first, from the row id `cursor`
/// down.
fn push_listing(qb: &mut QueryBuilder<Sqlite>, f: &ListFilter) {
    // A listing by tag is read from the tag's (tag, rid) key in listing order and stops after
    // a page, instead of listing every row id with the tag and sorting them (BENCHMARKS.md §3).
    let listing_col = match &f.tag {
        Some(tag) => {
            qb.push(
                "SELECT d.rid AS rid, 0 AS score FROM document_tags t \
                 JOIN documents d ON d.rid = t.rid WHERE t.tag = ",
            )
            .push_bind(tag.clone());
            "t.rid"
        }
        None => {
            qb.push("SELECT d.rid AS rid, 0 AS score FROM documents d WHERE 1 = 1");
            "d.rid"
        }
    };
    if f.deleted != DeletedFilter::Include {
        qb.push(format!(" AND d.deleted{}", deleted_condition(f.deleted)));
    }
    if let Some(scope) = &f.scope {
        qb.push(" AND d.scope = ").push_bind(scope.to_string());
    }
    if let Some(source) = &f.source {
        qb.push(" AND d.source = ").push_bind(source.clone());
    }
    if let Some(author) = &f.author {
        qb.push(" AND d.author = ").push_bind(author.clone());
    }
    push_row_filters(qb, f, "d");
    if let Some(Cursor::BeforeRid(rid)) = f.cursor {
        qb.push(format!(" AND {listing_col} < ")).push_bind(rid);
    }
    qb.push(format!(" ORDER BY {listing_col} DESC"));
}

/// The filters on columns of the row `alias` of `documents` that no index answers.
fn push_row_filters(qb: &mut QueryBuilder<Sqlite>, f: &ListFilter, alias: &str) {
    if let Some(ct) = &f.content_type {
        // `text/plain` also matches `text/plain; charset=utf-8`.
        qb.push(format!(" AND ({alias}.content_type = "))
            .push_bind(ct.clone())
            .push(format!(" OR {alias}.content_type LIKE "))
            .push_bind(format!("{};%", ct.replace(['%', '_'], "")))
            .push(")");
    }
    if let Some(since) = f.since {
        qb.push(format!(" AND {alias}.published_at >= "))
            .push_bind(since);
    }
    if let Some(until) = f.until {
        qb.push(format!(" AND {alias}.published_at < "))
            .push_bind(until);
    }
}

/// The current version of a document as seen inside a write transaction.
pub async fn current_version(
    conn: &mut SqliteConnection,
    id: &DocId,
) -> Result<Option<DocumentVersion>, sqlx::Error> {
    let row: Option<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM documents WHERE doc_id = ?"
    ))
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(TryInto::try_into).transpose()
}

pub async fn object_known(conn: &mut SqliteConnection, md5: &Md5Hex) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM objects WHERE md5 = ?")
        .bind(md5.as_str())
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

/// Which of `md5s` are held here, in one statement.
pub async fn objects_held(
    conn: &mut SqliteConnection,
    md5s: &[&Md5Hex],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if md5s.is_empty() {
        return Ok(Default::default());
    }
    let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT md5 FROM objects WHERE md5 IN ");
    super::push_in_list(&mut qb, md5s.iter().map(|m| m.as_str()));
    let held: Vec<String> = qb.build_query_scalar().fetch_all(&mut *conn).await?;
    Ok(held.into_iter().collect())
}

/// [`record_object`] for many objects, `(md5, size)`, in one statement.
pub async fn record_objects(
    conn: &mut SqliteConnection,
    objects: &[(&Md5Hex, u64)],
) -> Result<(), sqlx::Error> {
    if objects.is_empty() {
        return Ok(());
    }
    let now = Timestamp::now().millis();
    let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT OR IGNORE INTO objects (md5, size, stored_at) ",
    );
    qb.push_values(objects, |mut row, (md5, size)| {
        row.push_bind(md5.as_str())
            .push_bind(*size as i64)
            .push_bind(now);
    });
    qb.build().execute(&mut *conn).await.map(|_| ())
}

pub async fn record_object(
    conn: &mut SqliteConnection,
    md5: &Md5Hex,
    size: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR IGNORE INTO objects (md5, size, stored_at) VALUES (?, ?, ?)")
        .bind(md5.as_str())
        .bind(size as i64)
        .bind(Timestamp::now().millis())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds a version's columns in [`VERSION_COLUMNS`] order (`tags` is the JSON array), for the
/// history row and the current-document row alike.
fn bind_version<'q>(q: SqliteQuery<'q>, v: &'q DocumentVersion, tags: &'q str) -> SqliteQuery<'q> {
    q.bind(v.id.to_string())
        .bind(v.version)
        .bind(&v.origin)
        .bind(&v.title)
        .bind(&v.description)
        .bind(tags)
        .bind(&v.filename)
        .bind(&v.source)
        .bind(v.scope.to_string())
        .bind(&v.content_type)
        .bind(v.md5.as_str())
        .bind(v.size as i64)
        .bind(v.deleted)
        .bind(v.created_at.millis())
        .bind(&v.author)
        .bind(v.sha256.as_ref().map(|h| h.as_str()))
        .bind(v.signature.as_deref())
        .bind(v.lazy)
}

/// The upsert clause that makes an inserted `documents` row the current version of its document:
/// every column follows the new version except `published_at`, which keeps the earliest.
pub(super) const MAKE_CURRENT: &str = "ON CONFLICT (doc_id) DO UPDATE SET \
    version = excluded.version, origin = excluded.origin, title = excluded.title, \
    description = excluded.description, tags = excluded.tags, tags_text = excluded.tags_text, \
    filename = excluded.filename, source = excluded.source, scope = excluded.scope, \
    content_type = excluded.content_type, md5 = excluded.md5, size = excluded.size, \
    deleted = excluded.deleted, created_at = excluded.created_at, author = excluded.author, \
    sha256 = excluded.sha256, signature = excluded.signature, lazy = excluded.lazy, \
    published_at = MIN(documents.published_at, excluded.published_at), \
    last_seq = excluded.last_seq";

/// Records a version: keeps it in the history, makes it current if it supersedes the current one,
/// and appends it to the change feed. Returns false (and changes nothing) if this exact version
/// was already known, which makes redelivered messages harmless.
pub async fn record_version(
    conn: &mut SqliteConnection,
    v: &DocumentVersion,
    kind: ChangeKind,
) -> Result<bool, sqlx::Error> {
    let tags = serde_json::to_string(&v.tags).expect("strings serialise");
    let sql = format!(
        "INSERT OR IGNORE INTO versions ({VERSION_COLUMNS}) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    let inserted = bind_version(sqlx::query(&sql), v, &tags)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO changes (doc_id, version, origin, kind, at) VALUES (?, ?, ?, ?, ?) RETURNING seq",
    )
    .bind(v.id.to_string())
    .bind(v.version)
    .bind(&v.origin)
    .bind(kind.as_str())
    .bind(Timestamp::now().millis())
    .fetch_one(&mut *conn)
    .await?;

    let current = current_version(conn, &v.id).await?;
    if current.as_ref().is_some_and(|c| !v.supersedes(c)) {
        // A concurrent version that lost: kept in history and in the feed, not current.
        return Ok(true);
    }
    let tags_text = v.tags.join(" ");
    let sql = format!(
        "INSERT INTO documents ({VERSION_COLUMNS}, tags_text, published_at, last_seq) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         {MAKE_CURRENT} RETURNING rid"
    );
    let rid: i64 = bind_version(sqlx::query(&sql), v, &tags)
        .bind(&tags_text)
        .bind(v.created_at.millis())
        .bind(seq)
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    sqlx::query("DELETE FROM document_tags WHERE rid = ?")
        .bind(rid)
        .execute(&mut *conn)
        .await?;
    for tag in &v.tags {
        sqlx::query("INSERT OR IGNORE INTO document_tags (tag, rid) VALUES (?, ?)")
            .bind(tag)
            .bind(rid)
            .execute(&mut *conn)
            .await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
