//! The content of flagged documents in `files/`: which fits the storage budget, installing a
//! verified download under a readable name, and removing what is no longer wanted.

use std::path::{Path, PathBuf};

use docfed_shared::wire::{DocumentVersion, Timestamp};
use sqlx::SqliteConnection;

use super::{parse_version, Replica};
use crate::error::CliError;

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

impl Replica {
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

#[cfg(test)]
mod tests {
    use super::super::testing::version;
    use super::*;

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
}
