//! Actions taken offline (flag, unflag, annotate), queued for the next sync in the order they
//! were taken.

use docfed_shared::wire::Timestamp;

use super::flags::set_flag;
use super::Replica;
use crate::error::CliError;

/// A queued action.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxItem {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub doc_id: String,
    pub body: String,
}

impl Replica {
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
}
