//! The device's replica in `--home DIR` (ARCHITECTURE.md §2.8): `DIR/replica.sqlite` holds the
//! complete directory as the nodes' change feed describes it (with FTS5 search, like a node's),
//! this device's flags, an outbox of actions taken offline and the feed position reached at each
//! server; `DIR/files/` holds the verified content of flagged documents under readable names,
//! `DIR/partial/` the downloads in progress (named by MD5, so a resume never mixes contents).
//!
//! The database is set up like a node's (`node/src/db/mod.rs`): WAL, `synchronous = FULL`, all
//! writes through one connection. A page of the feed and the position after it commit in one
//! transaction, so a process killed at any moment neither loses a change nor applies one twice
//! in a way that matters (applying a version is idempotent anyway).
//!
//! Over 600 lines with its tests (about 240): the replica's schema and every query over it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use docfed_shared::search::fts_query;
use docfed_shared::wire::{
    ChangeFeed, DocumentList, DocumentMeta, DocumentVersion, Timestamp, VersionEntry, VersionList,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};

use crate::error::CliError;

const DB_FILE: &str = "replica.sqlite";

/// `$XDG_DATA_HOME/docfed`, else `~/.local/share/docfed`.
pub fn default_home() -> Result<PathBuf, CliError> {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map(|d| d.join("docfed"))
        .ok_or_else(|| {
            CliError::Local(
                "neither XDG_DATA_HOME nor HOME is set: pass --home DIR for the replica".into(),
            )
        })
}

impl From<sqlx::Error> for CliError {
    fn from(e: sqlx::Error) -> Self {
        CliError::Local(format!("replica database: {e}"))
    }
}

/// How many of its newest matches a full-text search with no other filter ranks, as on the
/// node: bm25 for every match of a broad word was the slow tail at a million documents.
const FTS_CANDIDATES: u32 = 10_000;

impl From<sqlx::migrate::MigrateError> for CliError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        CliError::Local(format!("replica database: {e}"))
    }
}

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

/// A queued action.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxItem {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub doc_id: String,
    pub body: String,
}

/// What a server must be told so that its flags for this device equal the replica's.
#[derive(Debug, Default)]
pub struct FlagPush {
    pub flag: Vec<String>,
    pub unflag: Vec<String>,
}

/// What `files/` is to hold under the storage budget (`Replica::plan_content`).
#[derive(Debug, Default)]
pub struct ContentPlan {
    /// Newest versions to download, oldest flag first.
    pub download: Vec<DocumentVersion>,
    /// Flagged documents whose content does not fit.
    pub deferred: Vec<DocumentVersion>,
    /// Bytes of the content kept (held or to download).
    pub kept_bytes: u64,
}

/// A regional node of the federation, as a server listed it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Peer {
    pub url: String,
    pub node_id: String,
    pub region: Option<String>,
    /// The backup of the node that listed it: it holds that node's regional documents.
    pub backup: bool,
}

/// The search of `docfed search`, answered locally.
#[derive(Debug, Default)]
pub struct SearchQuery {
    pub text: String,
    pub scope: Option<String>,
    pub tag: Option<String>,
    pub source: Option<String>,
    pub author: Option<String>,
    pub deleted: bool,
    pub limit: u32,
    pub cursor: Option<String>,
}

pub struct Replica {
    pub home: PathBuf,
    read: SqlitePool,
    write: SqlitePool,
}

impl Replica {
    /// Whether `home` holds a replica (without creating one).
    pub fn exists(home: &Path) -> bool {
        home.join(DB_FILE).is_file()
    }

    /// Opens the replica in `home`, creating it (and `files/`, `partial/`) if needed.
    pub async fn open(home: &Path) -> Result<Self, CliError> {
        for d in [home.to_owned(), home.join("files"), home.join("partial")] {
            std::fs::create_dir_all(&d)
                .map_err(|e| CliError::Local(format!("{}: {e}", d.display())))?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite:")?
            .filename(home.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .pragma("temp_store", "memory");
        // One writer: a `docfed flag` run during a `docfed sync` waits for the lock (busy
        // timeout) instead of failing.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Self {
            home: home.to_owned(),
            read,
            write,
        })
    }

    pub fn files_dir(&self) -> PathBuf {
        self.home.join("files")
    }

    pub fn partial_dir(&self) -> PathBuf {
        self.home.join("partial")
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    // --- change feed --------------------------------------------------------------------------

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

    // --- directory ----------------------------------------------------------------------------

    pub async fn search(&self, q: &SearchQuery) -> Result<DocumentList, CliError> {
        let offset: u64 = match q.cursor.as_deref() {
            None => 0,
            Some(c) => c
                .strip_prefix("replica:")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    CliError::Refused(format!(
                        "cursor {c:?} does not come from a search of the replica"
                    ))
                })?,
        };
        let fts = fts_query(&q.text);
        // The inner query finds and orders row ids only; the page's JSON is read afterwards.
        // A full-text search without filters ranks from the FTS table alone and tells tombstones
        // by their row ids (as the node does: a join per match was the slow tail).
        let fts_only = fts.is_some()
            && q.scope.is_none()
            && q.source.is_none()
            && q.author.is_none()
            && q.tag.is_none();
        let mut qb =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT d.json, d.published_at FROM (");
        if fts_only {
            // The newest matches only, as the node ranks them (`Db::FTS_CANDIDATES` there).
            qb.push(
                "SELECT rid, score FROM (SELECT documents_fts.rowid AS rid, \
                 documents_fts.rank AS score FROM documents_fts WHERE 1 = 1",
            );
        } else if fts.is_some() {
            qb.push(
                "SELECT d.rid AS rid, documents_fts.rank AS score FROM documents d \
                 JOIN documents_fts ON documents_fts.rowid = d.rid WHERE 1 = 1",
            );
        } else {
            qb.push("SELECT d.rid AS rid, 0 AS score FROM documents d WHERE 1 = 1");
        }
        if let Some(f) = &fts {
            qb.push(" AND documents_fts MATCH ").push_bind(f.clone());
        }
        if !q.deleted {
            qb.push(if fts_only {
                " AND documents_fts.rowid NOT IN (SELECT rid FROM documents WHERE deleted = 1)"
            } else {
                " AND d.deleted = 0"
            });
        }
        if fts_only {
            qb.push(format!(
                " ORDER BY documents_fts.rowid DESC LIMIT {FTS_CANDIDATES})"
            ));
        } else {
            for (col, val) in [
                ("d.scope", &q.scope),
                ("d.source", &q.source),
                ("d.author", &q.author),
            ] {
                if let Some(v) = val {
                    qb.push(format!(" AND {col} = ")).push_bind(v.clone());
                }
            }
            if let Some(tag) = &q.tag {
                qb.push(" AND EXISTS (SELECT 1 FROM json_each(d.json, '$.tags') WHERE value = ")
                    .push_bind(tag.clone())
                    .push(")");
            }
        }
        qb.push(match (fts_only, fts.is_some()) {
            (true, _) => " ORDER BY score, rid DESC",
            (false, true) => " ORDER BY documents_fts.rank, d.rid DESC",
            (false, false) => " ORDER BY d.rid DESC",
        });
        qb.push(" LIMIT ")
            .push_bind(i64::from(q.limit) + 1)
            .push(" OFFSET ")
            .push_bind(offset as i64);
        qb.push(") top JOIN documents d ON d.rid = top.rid ORDER BY top.score, d.rid DESC");
        let rows: Vec<(String, i64)> = qb.build_query_as().fetch_all(&self.read).await?;
        let more = rows.len() > q.limit as usize;
        let mut documents = Vec::with_capacity(rows.len());
        for (json, published) in rows.into_iter().take(q.limit as usize) {
            let mut d = meta(&json, published)?;
            d.available_here = self.holds_current(&d).await?;
            documents.push(d);
        }
        Ok(DocumentList {
            documents,
            next_cursor: more.then(|| format!("replica:{}", offset + u64::from(q.limit))),
        })
    }

    pub async fn document(&self, id: &str) -> Result<Option<DocumentMeta>, CliError> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT json, published_at FROM documents WHERE doc_id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
        let Some(mut d) = row.map(|(j, p)| meta(&j, p)).transpose()? else {
            return Ok(None);
        };
        d.available_here = self.holds_current(&d).await?;
        Ok(Some(d))
    }

    /// Whether `files/` holds the current version of `d`: offline, "here" is this device, so
    /// that `info` and `flags` answered from the replica agree with each other and with the
    /// local file they show.
    async fn holds_current(&self, d: &DocumentMeta) -> Result<bool, CliError> {
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM files WHERE doc_id = ? AND md5 = ?")
                .bind(d.current.id.to_string())
                .bind(d.current.md5.as_str())
                .fetch_optional(&self.read)
                .await?;
        Ok(!d.current.deleted && name.is_some_and(|n| self.files_dir().join(n).is_file()))
    }

    pub async fn versions(&self, id: &str) -> Result<Option<VersionList>, CliError> {
        let Some(current) = self.document(id).await? else {
            return Ok(None);
        };
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT json FROM versions WHERE doc_id = ? ORDER BY version, origin")
                .bind(id)
                .fetch_all(&self.read)
                .await?;
        let versions = rows
            .into_iter()
            .map(|(j,)| {
                let v = parse_version(&j)?;
                Ok(VersionEntry {
                    current: v.version == current.current.version
                        && v.origin == current.current.origin,
                    available_here: false,
                    version: v,
                })
            })
            .collect::<Result<_, CliError>>()?;
        Ok(Some(VersionList {
            id: current.current.id,
            versions,
        }))
    }

    /// The flagged documents the directory knows, and the ids of flags it does not know yet.
    pub async fn flagged(&self) -> Result<(Vec<DocumentMeta>, Vec<String>), CliError> {
        let rows: Vec<(String, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT f.doc_id, d.json, d.published_at FROM flags f \
             LEFT JOIN documents d ON d.doc_id = f.doc_id ORDER BY f.flagged_at",
        )
        .fetch_all(&self.read)
        .await?;
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for (id, json, published) in rows {
            match (json, published) {
                (Some(j), Some(p)) => {
                    let mut d = meta(&j, p)?;
                    d.available_here = self.holds_current(&d).await?;
                    known.push(d);
                }
                _ => unknown.push(id),
            }
        }
        Ok((known, unknown))
    }

    /// Where the content of `id` is, when `files/` holds it.
    pub async fn local_path(&self, id: &str) -> Result<Option<PathBuf>, CliError> {
        let name: Option<String> = sqlx::query_scalar("SELECT name FROM files WHERE doc_id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(name
            .map(|n| self.files_dir().join(n))
            .filter(|p| p.is_file()))
    }

    // --- flags and outbox ---------------------------------------------------------------------

    /// Records a flag (or its removal) that a server confirmed.
    pub async fn set_flag(&self, id: &str, on: bool) -> Result<(), CliError> {
        let mut tx = self.write.begin().await?;
        set_flag(&mut tx, id, on).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues an action for the next sync and applies it to the replica at once. Returns the
    /// outbox id (the annotation's id for `annotate`).
    pub async fn queue(&self, kind: &str, id: &str, body: &str) -> Result<String, CliError> {
        let oid = docfed_shared::DocId::new().to_string();
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO outbox (id, kind, doc_id, body, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&oid)
        .bind(kind)
        .bind(id)
        .bind(body)
        .bind(Timestamp::now().millis())
        .execute(&mut *tx)
        .await?;
        match kind {
            "flag" => set_flag(&mut tx, id, true).await?,
            "unflag" => set_flag(&mut tx, id, false).await?,
            _ => {}
        }
        tx.commit().await?;
        Ok(oid)
    }

    pub async fn outbox(&self) -> Result<Vec<OutboxItem>, CliError> {
        Ok(
            sqlx::query_as("SELECT seq, id, kind, doc_id, body FROM outbox ORDER BY seq")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Removes a delivered (or refused) action.
    pub async fn outbox_done(&self, seq: i64) -> Result<(), CliError> {
        sqlx::query("DELETE FROM outbox WHERE seq = ?")
            .bind(seq)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Merges the flags `server` lists for this device into the replica, three ways: against
    /// what the server held at the last reconciliation (`server_flags`), a flag the server
    /// gained since is adopted and one it lost (an operator's action, a revocation) is dropped;
    /// everything else the replica says stands. Returns what the server must be told to make
    /// its list equal the replica's, or `None` while actions are still queued (the server has
    /// not seen them yet).
    pub async fn merge_flags(
        &self,
        server: &str,
        listed: &[String],
    ) -> Result<Option<FlagPush>, CliError> {
        use std::collections::BTreeSet;
        let mut tx = self.write.begin().await?;
        let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&mut *tx)
            .await?;
        if queued > 0 {
            return Ok(None);
        }
        let base: BTreeSet<String> =
            sqlx::query_scalar("SELECT doc_id FROM server_flags WHERE url = ?")
                .bind(server)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let listed: BTreeSet<String> = listed.iter().cloned().collect();
        for gained in listed.difference(&base) {
            set_flag(&mut tx, gained, true).await?;
        }
        for lost in base.difference(&listed) {
            set_flag(&mut tx, lost, false).await?;
        }
        // Flags of documents the replica knows as deleted are not pushed: the node would
        // refuse them, and their content is not wanted anyway.
        let mine: BTreeSet<String> = sqlx::query_scalar(
            "SELECT f.doc_id FROM flags f LEFT JOIN documents d ON d.doc_id = f.doc_id \
             WHERE d.deleted IS NOT 1",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let all: BTreeSet<String> = sqlx::query_scalar("SELECT doc_id FROM flags")
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        tx.commit().await?;
        Ok(Some(FlagPush {
            flag: mine.difference(&listed).cloned().collect(),
            unflag: listed.difference(&all).cloned().collect(),
        }))
    }

    /// Records the flags `server` holds for this device after a reconciliation.
    pub async fn set_server_flags(&self, server: &str, held: &[String]) -> Result<(), CliError> {
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM server_flags WHERE url = ?")
            .bind(server)
            .execute(&mut *tx)
            .await?;
        for id in held {
            sqlx::query("INSERT OR IGNORE INTO server_flags (url, doc_id) VALUES (?, ?)")
                .bind(server)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // --- peers --------------------------------------------------------------------------------

    /// Replaces the regional nodes `server` listed as members of its federation.
    pub async fn set_peers(&self, server: &str, peers: &[Peer]) -> Result<(), CliError> {
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM peers").execute(&mut *tx).await?;
        let now = Timestamp::now().millis();
        for p in peers {
            sqlx::query(
                "INSERT OR REPLACE INTO peers (url, node_id, region, backup, learned_from, learned_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&p.url)
            .bind(&p.node_id)
            .bind(&p.region)
            .bind(p.backup)
            .bind(server)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The regional nodes learned by `set_peers`: the backup first, then by node id.
    pub async fn peers(&self) -> Result<Vec<Peer>, CliError> {
        Ok(sqlx::query_as(
            "SELECT url, node_id, region, backup FROM peers ORDER BY backup DESC, node_id",
        )
        .fetch_all(&self.read)
        .await?)
    }

    // --- files --------------------------------------------------------------------------------

    /// The storage budget for flagged content (`--max-storage`), if any.
    pub async fn storage_budget(&self) -> Result<Option<u64>, CliError> {
        let v: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'max_storage'")
                .fetch_optional(&self.read)
                .await?;
        Ok(v.and_then(|v| v.parse().ok()))
    }

    /// Sets (or, with `None`, lifts) the storage budget; it holds for later syncs too.
    pub async fn set_storage_budget(&self, budget: Option<u64>) -> Result<(), CliError> {
        match budget {
            Some(b) => {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ('max_storage', ?) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(b.to_string())
                .execute(&self.write)
                .await?
            }
            None => {
                sqlx::query("DELETE FROM settings WHERE key = 'max_storage'")
                    .execute(&self.write)
                    .await?
            }
        };
        Ok(())
    }

    /// Decides which flagged documents' newest content `files/` holds: all of them, or under a
    /// budget, each in the order they were flagged if it fits in what is left (a document
    /// flagged long ago is never pushed out by a newer flag; a small one may use room a large
    /// one could not). The rest are recorded as deferred, and
    /// their older files leave `files/` at the next `prune_files`: what `files/` holds is
    /// always a newest version. Returns the versions to download.
    pub async fn plan_content(&self, budget: Option<u64>) -> Result<ContentPlan, CliError> {
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT d.json, fi.md5, fi.name FROM flags f JOIN documents d ON d.doc_id = f.doc_id \
             LEFT JOIN files fi ON fi.doc_id = f.doc_id WHERE d.deleted = 0 \
             ORDER BY f.flagged_at, f.doc_id",
        )
        .fetch_all(&self.read)
        .await?;
        let mut plan = ContentPlan::default();
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM deferred")
            .execute(&mut *tx)
            .await?;
        for (json, md5, name) in rows {
            let v = parse_version(&json)?;
            if budget.is_some_and(|b| plan.kept_bytes + v.size > b) {
                sqlx::query("INSERT INTO deferred (doc_id, size, budget, at) VALUES (?, ?, ?, ?)")
                    .bind(v.id.to_string())
                    .bind(v.size as i64)
                    .bind(budget.unwrap_or_default() as i64)
                    .bind(Timestamp::now().millis())
                    .execute(&mut *tx)
                    .await?;
                plan.deferred.push(v);
                continue;
            }
            plan.kept_bytes += v.size;
            let held = md5.as_deref() == Some(v.md5.as_str())
                && name.is_some_and(|n| self.files_dir().join(n).is_file());
            if !held {
                plan.download.push(v);
            }
        }
        tx.commit().await?;
        Ok(plan)
    }

    /// Why the content of flagged document `id` is not in `files/`, if the budget is why:
    /// (its size, the budget).
    pub async fn deferred(&self, id: &str) -> Result<Option<(u64, u64)>, CliError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT size, budget FROM deferred WHERE doc_id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|(s, b)| (s as u64, b as u64)))
    }

    /// Moves the verified content of `v` from `partial` to its place in `files/` (the same name
    /// as the document's earlier versions, else its file name made unique) and records it.
    pub async fn install(&self, v: &DocumentVersion, partial: &Path) -> Result<PathBuf, CliError> {
        let mut tx = self.write.begin().await?;
        let id = v.id.to_string();
        let name: Option<String> = sqlx::query_scalar("SELECT name FROM files WHERE doc_id = ?")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        let name = match name {
            Some(n) => n,
            None => unique_name(&mut tx, v).await?,
        };
        let dest = self.files_dir().join(&name);
        std::fs::File::open(partial)?.sync_all()?;
        std::fs::rename(partial, &dest)?;
        std::fs::File::open(self.files_dir())?.sync_all()?;
        sqlx::query(
            "INSERT INTO files (doc_id, name, version, origin, md5, size, stored_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (doc_id) DO UPDATE SET \
             version = excluded.version, origin = excluded.origin, md5 = excluded.md5, \
             size = excluded.size, stored_at = excluded.stored_at",
        )
        .bind(&id)
        .bind(&name)
        .bind(v.version)
        .bind(&v.origin)
        .bind(v.md5.as_str())
        .bind(v.size as i64)
        .bind(Timestamp::now().millis())
        .execute(&mut *tx)
        .await?;
        // If this commit fails the new bytes are in place but unrecorded: the next sync
        // downloads them again, which is wasteful but never wrong.
        tx.commit().await?;
        Ok(dest)
    }

    /// Removes from `files/` the content of documents that are deleted, no longer flagged, or
    /// deferred by the storage budget.
    /// Returns the paths removed.
    pub async fn prune_files(&self) -> Result<Vec<PathBuf>, CliError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT fi.doc_id, fi.name FROM files fi \
             LEFT JOIN documents d ON d.doc_id = fi.doc_id \
             LEFT JOIN flags f ON f.doc_id = fi.doc_id \
             WHERE f.doc_id IS NULL OR d.deleted IS NOT 0 \
             OR fi.doc_id IN (SELECT doc_id FROM deferred)",
        )
        .fetch_all(&self.read)
        .await?;
        let mut removed = Vec::new();
        for (id, name) in rows {
            let path = self.files_dir().join(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CliError::Local(format!("{}: {e}", path.display()))),
            }
            // The row goes after the file: a crash in between leaves a row without a file,
            // which the next prune removes.
            sqlx::query("DELETE FROM files WHERE doc_id = ?")
                .bind(&id)
                .execute(&self.write)
                .await?;
        }
        Ok(removed)
    }
}

async fn set_flag(tx: &mut SqliteConnection, id: &str, on: bool) -> Result<(), sqlx::Error> {
    if on {
        sqlx::query("INSERT OR IGNORE INTO flags (doc_id, flagged_at) VALUES (?, ?)")
            .bind(id)
            .bind(Timestamp::now().millis())
            .execute(&mut *tx)
            .await?;
    } else {
        sqlx::query("DELETE FROM flags WHERE doc_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
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
                if (v.version, v.origin.as_str()) <= (c.0, c.1) {
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

/// The document's file name, reduced to a safe last component and made unique among the
/// names in `files/` (case-insensitively, for case-insensitive file systems): `report.pdf`,
/// `report (2).pdf`, …
async fn unique_name(tx: &mut SqliteConnection, v: &DocumentVersion) -> Result<String, CliError> {
    let base: String = v
        .filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .trim_matches('.')
        .to_owned();
    let base = if base.is_empty() {
        v.id.to_string()
    } else {
        base
    };
    let (stem, ext) = match base.rfind('.') {
        Some(i) if i > 0 => (&base[..i], &base[i..]),
        _ => (base.as_str(), ""),
    };
    for n in 1u32.. {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{stem} ({n}){ext}")
        };
        let taken: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM files WHERE name = ? COLLATE NOCASE")
                .bind(&name)
                .fetch_one(&mut *tx)
                .await?;
        if taken == 0 {
            return Ok(name);
        }
    }
    unreachable!("some name is free")
}

fn parse_version(json: &str) -> Result<DocumentVersion, CliError> {
    serde_json::from_str(json).map_err(|e| CliError::Local(format!("replica database: {e}")))
}

fn meta(json: &str, published_at: i64) -> Result<DocumentMeta, CliError> {
    Ok(DocumentMeta {
        current: parse_version(json)?,
        published_at: Timestamp(published_at),
        available_here: false,
        available_at: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: docfed_shared::DocId, n: i64, origin: &str, deleted: bool) -> DocumentVersion {
        DocumentVersion {
            id,
            version: n,
            origin: origin.into(),
            title: format!("v{n} by {origin}"),
            description: String::new(),
            tags: vec!["t".into()],
            filename: "report.pdf".into(),
            source: String::new(),
            scope: docfed_shared::Scope::Global,
            content_type: "application/pdf".into(),
            md5: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            size: 1,
            deleted,
            created_at: Timestamp(n),
            author: String::new(),
            sha256: None,
            signature: None,
            lazy: false,
        }
    }

    fn page(last_seq: i64, versions: &[DocumentVersion]) -> ChangeFeed {
        ChangeFeed {
            changes: versions
                .iter()
                .enumerate()
                .map(|(i, v)| docfed_shared::wire::Change {
                    seq: i as i64 + 1,
                    kind: docfed_shared::wire::ChangeKind::Updated,
                    at: Timestamp(0),
                    document: v.clone(),
                })
                .collect(),
            last_seq,
            horizon: 0,
        }
    }

    /// Offline full-text search: alone (ranked from the index) and with a filter (joined to the
    /// documents) it agrees on tombstones, and pages through every match.
    #[tokio::test]
    async fn offline_full_text_search_agrees_with_and_without_filters() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path()).await.unwrap();
        let (live, gone) = (docfed_shared::DocId::new(), docfed_shared::DocId::new());
        let mut vs = vec![
            version(live, 1, "p-a", false),
            version(gone, 1, "p-a", false),
        ];
        vs.push(version(gone, 2, "p-a", true));
        for _ in 0..5 {
            vs.push(version(docfed_shared::DocId::new(), 3, "p-b", false));
        }
        r.apply_page("http://n", &page(8, &vs)).await.unwrap();
        let search = |text: &str, tag: Option<&str>, deleted: bool, cursor: Option<String>| {
            let q = SearchQuery {
                text: text.into(),
                tag: tag.map(Into::into),
                deleted,
                limit: 2,
                cursor,
                ..Default::default()
            };
            let r = &r;
            async move { r.search(&q).await.unwrap() }
        };
        let ids = |l: &DocumentList| -> Vec<String> {
            l.documents
                .iter()
                .map(|d| d.current.id.to_string())
                .collect()
        };
        // "v1" is in the title of `live` (and of `gone`'s first version, no longer current).
        assert_eq!(
            ids(&search("v1", None, false, None).await),
            [live.to_string()]
        );
        assert_eq!(
            ids(&search("v1", Some("t"), false, None).await),
            [live.to_string()]
        );
        assert_eq!(
            ids(&search("v2", None, false, None).await),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(&search("v2", None, true, None).await),
            [gone.to_string()]
        );
        assert_eq!(
            ids(&search("v2", Some("t"), true, None).await),
            [gone.to_string()]
        );
        // Five matches of "p-b", two per page.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = search("v3", None, false, cursor).await;
            seen.extend(ids(&page));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 5);
    }

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

    #[tokio::test]
    async fn file_names_are_made_unique() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path()).await.unwrap();
        let mut names = Vec::new();
        for (i, filename) in ["report.pdf", "REPORT.pdf", "../x/report.pdf", "..", "notes"]
            .iter()
            .enumerate()
        {
            let mut v = version(docfed_shared::DocId::new(), 1, "p", false);
            v.filename = filename.to_string();
            let part = dir.path().join(format!("part{i}"));
            std::fs::write(&part, b"x").unwrap();
            let path = r.install(&v, &part).await.unwrap();
            assert_eq!(path.parent(), Some(r.files_dir().as_path()));
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(
            names[..3],
            ["report.pdf", "REPORT (2).pdf", "report (3).pdf"]
        );
        assert_eq!(names[4], "notes");
        assert!(
            names[3].len() == 36,
            "an empty name becomes the id: {}",
            names[3]
        );
    }

    async fn flags(r: &Replica) -> Vec<String> {
        let mut f: Vec<String> = sqlx::query_scalar("SELECT doc_id FROM flags")
            .fetch_all(&r.read)
            .await
            .unwrap();
        f.sort();
        f
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Three-way merge of flags: the server's changes since the last reconciliation are
    /// adopted, the replica's are pushed, and a server never seen before receives them all.
    #[tokio::test]
    async fn flags_merge_three_ways_per_server() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path()).await.unwrap();
        // First contact: the server's flags (made before the replica existed) are adopted.
        let push = r
            .merge_flags("http://home", &ids(&["a", "b"]))
            .await
            .unwrap()
            .unwrap();
        assert!(push.flag.is_empty() && push.unflag.is_empty());
        assert_eq!(flags(&r).await, ids(&["a", "b"]));
        r.set_server_flags("http://home", &ids(&["a", "b"]))
            .await
            .unwrap();

        // Failing over: the other node holds nothing for this device and is given everything.
        let push = r.merge_flags("http://backup", &[]).await.unwrap().unwrap();
        assert_eq!(push.flag, ids(&["a", "b"]));
        r.set_server_flags("http://backup", &ids(&["a", "b"]))
            .await
            .unwrap();

        // Meanwhile: the device flags c and unflags a; home's operator dropped b.
        r.set_flag("c", true).await.unwrap();
        r.set_flag("a", false).await.unwrap();
        let push = r
            .merge_flags("http://home", &ids(&["a"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(flags(&r).await, ids(&["c"]), "b was dropped at home");
        assert_eq!(push.flag, ids(&["c"]));
        assert_eq!(push.unflag, ids(&["a"]));

        // Nothing merges while actions are queued: the server has not seen them.
        r.queue("flag", "d", "{}").await.unwrap();
        assert!(r.merge_flags("http://home", &[]).await.unwrap().is_none());
    }

    #[test]
    fn search_words_are_literal() {
        assert_eq!(fts_query("annual rep*").unwrap(), r#""annual" "rep"*"#);
        assert_eq!(fts_query(" * - "), None);
    }
}
