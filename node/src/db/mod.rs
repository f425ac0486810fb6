//! SQLite through sqlx: one read pool and one single-connection write pool.
//!
//! All writes go through the one writer connection, so write transactions never race each other
//! for SQLite's lock (no `SQLITE_BUSY` surprises under load), and code that must make a file
//! rename and a row insert atomic (the content store) can do both while holding it. WAL mode lets
//! readers proceed while the writer works; `synchronous = FULL` makes a commit durable before it
//! is acknowledged, because the federation acks messages on the strength of a commit.

pub mod devices;
pub mod documents;
pub mod fetches;
pub mod import;
pub mod messages;
pub mod sources;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

/// Bound parameters per statement: SQLite's limit (`SQLITE_MAX_VARIABLE_NUMBER`, 32,766 since
/// 3.32), for the multi-row statements of imports, receipts and the outbox.
pub(crate) const MAX_PARAMS: usize = 32_766;

/// Appends `(?, ?, …)` binding each of `values`: the list of an `IN`. An empty list is valid
/// SQL in SQLite and matches nothing.
pub(crate) fn push_in_list<'q>(
    qb: &mut sqlx::QueryBuilder<'q, sqlx::Sqlite>,
    values: impl IntoIterator<Item = &'q str>,
) {
    qb.push("(");
    let mut list = qb.separated(", ");
    for v in values {
        list.push_bind(v);
    }
    list.push_unseparated(")");
}

pub use documents::{Cursor, DeletedFilter, ListFilter};

/// The most SQLite maps of a database file (its `SQLITE_MAX_MMAP_SIZE`); pages beyond are read.
const READ_MMAP_BYTES: u64 = 0x7fff_0000;

#[derive(Debug, Clone)]
pub struct Db {
    read: SqlitePool,
    write: SqlitePool,
    /// How long a full-text search may run before SQLite interrupts it.
    search_deadline: Duration,
    /// A first load holds the writer (`begin_first_load`): other writers are turned away at
    /// once instead of waiting out the pool's timeout.
    loading: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The writer held for a first load; other writers are refused until it is dropped.
pub struct FirstLoad {
    tx: Option<WriteTx>,
    loading: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FirstLoad {
    /// The load's transaction.
    pub fn tx(&mut self) -> &mut WriteTx {
        self.tx.as_mut().expect("present until committed")
    }

    /// Commits the load; other writers may then write again.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.tx
            .take()
            .expect("present until committed")
            .commit()
            .await
    }
}

impl Drop for FirstLoad {
    fn drop(&mut self) {
        self.loading
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Default of `search_deadline`: far above a search at a million documents (tens of
/// milliseconds, BENCHMARKS.md §3), far below what would let a few clients hold every reader.
pub const DEFAULT_SEARCH_DEADLINE: Duration = Duration::from_secs(2);

/// Whether `e` is SQLite's answer to an interrupted statement (a search past its deadline).
pub fn is_interrupted(e: &sqlx::Error) -> bool {
    // SQLITE_INTERRUPT is 9.
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("9"))
}

pub type WriteTx = sqlx::Transaction<'static, sqlx::Sqlite>;

impl Db {
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let opts = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .optimize_on_close(true, None);
        // No ping before handing out a connection (sqlx's default): a file on a local disk
        // does not go away like a server connection, and each ping is a round trip to the
        // connection's thread, on every query.
        let write = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .after_release(|conn, _| Box::pin(async move { Ok(!left_in_transaction(conn).await) }))
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&write).await?;
        // Readers map the file (SQLite's largest map, 2 GiB) instead of copying pages through
        // each connection's 2 MiB cache: a ranked search at a million documents reads a page of
        // the FTS size table per match, scattered over 14 MB, and those reads were half its time
        // (45 ms, 15 with the map; BENCHMARKS.md §3). The pages are the kernel's page cache,
        // shared by all connections and reclaimable, but they count in the process's RSS as
        // file-backed memory (`RssFile`). The writer keeps `pread`: only readers map.
        let read = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(
                opts.read_only(true)
                    .pragma("mmap_size", READ_MMAP_BYTES.to_string()),
            )
            .await?;
        Ok(Self {
            read,
            write,
            search_deadline: DEFAULT_SEARCH_DEADLINE,
            loading: Default::default(),
        })
    }

    /// Sets how long a full-text search may run (`search_deadline`).
    pub fn set_search_deadline(&mut self, deadline: Duration) {
        self.search_deadline = deadline;
    }

    pub fn search_deadline(&self) -> Duration {
        self.search_deadline
    }

    /// Starts a transaction on the writer connection. While a first load holds it, fails at
    /// once (as a pool timeout: "unavailable, retry").
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        if self.loading.load(std::sync::atomic::Ordering::Acquire) {
            return Err(sqlx::Error::PoolTimedOut);
        }
        self.write.begin().await
    }

    /// Takes the writer for a first load (`api::admin::import` into an empty directory):
    /// writers that come meanwhile are refused at once (`begin_write`), readers keep reading
    /// what was committed before.
    pub async fn begin_first_load(&self) -> Result<FirstLoad, sqlx::Error> {
        if self.loading.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Err(sqlx::Error::PoolTimedOut);
        }
        let loading = self.loading.clone();
        let reset = || loading.store(false, std::sync::atomic::Ordering::Release);
        match self.write.begin().await {
            Ok(tx) => Ok(FirstLoad {
                tx: Some(tx),
                loading: self.loading.clone(),
            }),
            Err(e) => {
                reset();
                Err(e)
            }
        }
    }

    /// Runs `sql` (statements without parameters) on the writer connection with
    /// `synchronous = NORMAL`: its commit is not flushed to disk. Only for changes whose loss
    /// in a power cut is harmless; the next ordinary commit flushes the same write-ahead log,
    /// so it never becomes durable ahead of them. One round trip to the connection's thread
    /// for the three statements.
    pub async fn execute_unflushed(&self, sql: &str) -> Result<(), sqlx::Error> {
        let mut conn = Unflushed(Some(self.write.acquire().await?));
        let c = conn.0.as_mut().expect("present until the end");
        let all = format!("PRAGMA synchronous = NORMAL; {sql}; PRAGMA synchronous = FULL;");
        // Not kept in the statement cache: `sql` differs from call to call.
        sqlx::query(&all)
            .persistent(false)
            .execute(&mut **c)
            .await?;
        // Back to FULL: it may go back to the pool.
        conn.0.take();
        Ok(())
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// The writer connection while it may be set to commit without flushing (see
/// [`Db::execute_unflushed`]).
struct Unflushed(Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>);

impl Drop for Unflushed {
    /// Not set back to FULL (an error, a cancelled future): the connection might commit
    /// without flushing, so it is closed instead of going back to the pool, and the pool
    /// opens a replacement that flushes.
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// Whether the connection is still inside a transaction although it went back to the pool.
///
/// That happens when a COMMIT fails (a full disk: SQLITE_FULL) and the ROLLBACK queued by the
/// dropped transaction fails too: sqlx then still counts one open transaction and turns the
/// next `begin` into a SAVEPOINT nested in the old transaction, whose RELEASE commits nothing.
/// Every later "commit" would stay invisible to the readers and vanish with the process, while
/// the node acknowledged messages and requests on the strength of it. Such a connection is
/// closed (rolling the stale transaction back) and the pool opens a fresh one.
async fn left_in_transaction(conn: &mut sqlx::SqliteConnection) -> bool {
    match conn.lock_handle().await {
        Ok(mut handle) => {
            let raw = handle.as_raw_handle();
            // SAFETY: the handle is locked for the duration of the call and stays valid;
            // sqlite3_get_autocommit only reads the connection's transaction state.
            let autocommit = unsafe { libsqlite3_sys::sqlite3_get_autocommit(raw.as_ptr()) };
            if autocommit == 0 {
                tracing::error!("database connection returned inside a transaction; replacing it");
                return true;
            }
            false
        }
        Err(_) => true,
    }
}

/// Whether a database error means the disk (or the database file's volume) is full.
pub fn is_disk_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            // SQLITE_FULL = 13; extended codes keep it in the low byte.
            db.code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| c & 0xff == 13)
        }
        sqlx::Error::Io(io) => io.raw_os_error() == Some(nix::libc::ENOSPC),
        _ => false,
    }
}

impl Db {
    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map(|_| ())
    }
}

impl Db {
    /// The newest change-feed seq (0 when empty).
    pub async fn last_seq(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
            .fetch_one(&self.read)
            .await
    }

    /// The read pool, for queries outside this module.
    pub fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// The single writer connection's pool, for one-statement writes outside a transaction.
    pub fn writer(&self) -> &SqlitePool {
        &self.write
    }
}

impl Db {
    /// Size of a held object.
    pub async fn object_size(
        &self,
        md5: &docfed_shared::Md5Hex,
    ) -> Result<Option<u64>, sqlx::Error> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM objects WHERE md5 = ?")
            .bind(md5.as_str())
            .fetch_optional(&self.read)
            .await?;
        Ok(size.map(|s| s as u64))
    }

    /// Whether this content belongs to versions of documents that are all deleted now.
    pub async fn withdrawn(&self, md5: &docfed_shared::Md5Hex) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM versions WHERE md5 = ?1) \
               AND NOT EXISTS (SELECT 1 FROM versions v JOIN documents d ON d.doc_id = v.doc_id \
                               WHERE v.md5 = ?1 AND d.deleted = 0)",
        )
        .bind(md5.as_str())
        .fetch_one(&self.read)
        .await
    }

    /// Whether a pull of this content is queued (it will be served soon).
    pub async fn fetch_pending(&self, md5: &docfed_shared::Md5Hex) -> Result<bool, sqlx::Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pending_fetches WHERE md5 = ?")
            .bind(md5.as_str())
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }
}

impl Db {
    /// Whether any device of this node flagged the document.
    pub async fn flagged(&self, id: &docfed_shared::DocId) -> Result<bool, sqlx::Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM device_flags WHERE doc_id = ?")
            .bind(id.to_string())
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn writer_synchronous(db: &Db) -> i64 {
        let mut tx = db.begin_write().await.unwrap();
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *tx)
            .await
            .unwrap()
    }

    /// 2 is FULL: every commit but an unflushed one's is flushed, whether the unflushed
    /// statements succeeded or failed half-way.
    #[tokio::test]
    async fn the_writer_flushes_again_after_an_unflushed_change() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("node.sqlite")).await.unwrap();
        assert_eq!(writer_synchronous(&db).await, 2);
        db.execute_unflushed("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        assert_eq!(writer_synchronous(&db).await, 2);
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(db.writer())
            .await
            .unwrap();
        assert_eq!(rows, 1);
        // Failing half-way, after NORMAL was set: the connection is replaced.
        assert!(db
            .execute_unflushed("INSERT INTO nowhere VALUES (1)")
            .await
            .is_err());
        assert_eq!(writer_synchronous(&db).await, 2);
    }
}
