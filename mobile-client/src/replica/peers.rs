//! The regional nodes of the federation a server listed: where the daemon fails over to.

use docfed_shared::wire::Timestamp;

use super::Replica;
use crate::error::CliError;

/// A regional node of the federation, as a server listed it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Peer {
    pub url: String,
    pub node_id: String,
    pub region: Option<String>,
    /// The backup of the node that listed it: it holds that node's regional documents.
    pub backup: bool,
}

impl Replica {
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
}
