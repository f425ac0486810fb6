//! This device's flags: set when a server confirms them (or queued offline), and merged three
//! ways with each server's list for the device.

use docfed_shared::wire::{DocumentMeta, Timestamp};
use sqlx::SqliteConnection;

use super::{meta, Replica};
use crate::error::CliError;

/// What a server must be told so that its flags for this device equal the replica's.
#[derive(Debug, Default)]
pub struct FlagPush {
    pub flag: Vec<String>,
    pub unflag: Vec<String>,
}

impl Replica {
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

    /// Records a flag (or its removal) that a server confirmed.
    pub async fn set_flag(&self, id: &str, on: bool) -> Result<(), CliError> {
        let mut tx = self.write.begin().await?;
        set_flag(&mut tx, id, on).await?;
        tx.commit().await?;
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
}

pub(super) async fn set_flag(
    tx: &mut SqliteConnection,
    id: &str,
    on: bool,
) -> Result<(), sqlx::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
