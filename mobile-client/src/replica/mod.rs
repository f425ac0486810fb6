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
//! One module per concern, each adding its queries to [`Replica`]: `feed` (positions and pages of
//! the change feed), `directory` (search and the documents as read offline), `flags`, `outbox`
//! (actions taken offline), `peers` (the regional nodes to fail over to) and `files` (the content
//! of flagged documents and the storage budget).

mod directory;
mod feed;
mod files;
mod flags;
mod outbox;
mod peers;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use docfed_shared::wire::{DocumentMeta, DocumentVersion, Timestamp};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::error::CliError;

pub use directory::SearchQuery;
pub use feed::Applied;
pub use peers::Peer;

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

impl From<sqlx::migrate::MigrateError> for CliError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        CliError::Local(format!("replica database: {e}"))
    }
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

/// Builders of the versions and feed pages the modules' tests apply.
#[cfg(test)]
mod testing {
    use docfed_shared::wire::{ChangeFeed, DocumentVersion, Timestamp};

    pub(super) fn version(
        id: docfed_shared::DocId,
        n: i64,
        origin: &str,
        deleted: bool,
    ) -> DocumentVersion {
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

    pub(super) fn page(last_seq: i64, versions: &[DocumentVersion]) -> ChangeFeed {
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
}
