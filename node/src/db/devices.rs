//! Registered devices and their flags (`devices`, `device_flags`; migration 0005).
//!
//! A device's secret is never stored: only its SHA-256 (hex), compared in constant time. The
//! secret is 32 random bytes, so a plain hash is enough (nothing to brute-force, unlike a
//! password).

use docfed_shared::wire::Timestamp;
use docfed_shared::DocId;
use sha2::{Digest, Sha256};
use sqlx::SqliteConnection;

use super::Db;

/// Lowercase hex SHA-256 of a device secret, as kept in `devices.secret_hash`.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh device secret: 32 random bytes from the thread's CSPRNG, as 64 hex digits.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// A fresh device id: a random (version 4) UUID, so ids say nothing about when or in which
/// order devices registered.
pub fn new_device_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

/// One row of `GET /v1/devices`.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DeviceRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// Unix ms of the revocation, if revoked.
    pub revoked: Option<i64>,
    pub flags: i64,
}

/// How much a device's flags keep on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlagUsage {
    pub flags: u64,
    /// Sum of the current versions' sizes of the flagged documents.
    pub bytes: u64,
}

/// Why a registration was refused.
#[derive(Debug)]
pub enum RegisterError {
    /// `active` devices are registered already, the most allowed.
    Full {
        active: u64,
    },
    Db(sqlx::Error),
}

impl From<sqlx::Error> for RegisterError {
    fn from(e: sqlx::Error) -> Self {
        RegisterError::Db(e)
    }
}

impl Db {
    /// Registers a device unless `max_active` active devices exist already. Count and insert
    /// run in one writer transaction, so concurrent registrations cannot overshoot the cap.
    pub async fn register_device(
        &self,
        id: &str,
        name: &str,
        secret_hash: &str,
        max_active: u64,
    ) -> Result<i64, RegisterError> {
        let mut tx = self.begin_write().await?;
        let active: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE revoked IS NULL")
            .fetch_one(&mut *tx)
            .await?;
        if active as u64 >= max_active {
            return Err(RegisterError::Full {
                active: active as u64,
            });
        }
        let now = Timestamp::now().millis();
        sqlx::query(
            "INSERT INTO devices (id, name, secret_hash, created_at, revoked) VALUES (?, ?, ?, ?, NULL)",
        )
        .bind(id)
        .bind(name)
        .bind(secret_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(now)
    }

    /// The secret hash of an active device; `None` for an unknown or revoked one.
    pub async fn active_device_hash(&self, id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT secret_hash FROM devices WHERE id = ? AND revoked IS NULL")
            .bind(id)
            .fetch_optional(self.reader())
            .await
    }

    /// Every device, oldest first, with its number of flags.
    pub async fn devices(&self) -> Result<Vec<DeviceRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT d.id, d.name, d.created_at, d.revoked, \
                    (SELECT COUNT(*) FROM device_flags f WHERE f.device = d.id) AS flags \
             FROM devices d ORDER BY d.created_at, d.id",
        )
        .fetch_all(self.reader())
        .await
    }
}

/// Whether the device exists and is active, seen from a write transaction.
pub async fn device_active(conn: &mut SqliteConnection, id: &str) -> Result<bool, sqlx::Error> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE id = ? AND revoked IS NULL")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(n > 0)
}

/// Marks a device revoked and removes its flags; returns the documents it had flagged, or
/// `None` if there is no such device. Revoking a revoked device changes nothing.
pub async fn revoke_device(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<Option<Vec<DocId>>, sqlx::Error> {
    let known: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE id = ?")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    if known == 0 {
        return Ok(None);
    }
    sqlx::query("UPDATE devices SET revoked = ? WHERE id = ? AND revoked IS NULL")
        .bind(Timestamp::now().millis())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let docs: Vec<String> =
        sqlx::query_scalar("DELETE FROM device_flags WHERE device = ? RETURNING doc_id")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    Ok(Some(docs.iter().filter_map(|d| d.parse().ok()).collect()))
}

/// How much a device's flags keep here now.
pub async fn flag_usage(
    conn: &mut SqliteConnection,
    device: &str,
) -> Result<FlagUsage, sqlx::Error> {
    let (flags, bytes): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(d.size), 0) FROM device_flags f \
         LEFT JOIN documents d ON d.doc_id = f.doc_id WHERE f.device = ?",
    )
    .bind(device)
    .fetch_one(&mut *conn)
    .await?;
    Ok(FlagUsage {
        flags: flags.max(0) as u64,
        bytes: bytes.max(0) as u64,
    })
}

/// The sizes of the current versions of every document some device flags (each counted once,
/// however many flag it), summed per scope.
pub async fn flagged_bytes_by_scope(
    conn: &mut SqliteConnection,
) -> Result<Vec<(String, u64)>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT d.scope, COALESCE(SUM(d.size), 0) FROM documents d \
         WHERE d.doc_id IN (SELECT doc_id FROM device_flags) GROUP BY d.scope",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(s, b)| (s, b.max(0) as u64))
        .collect())
}

/// Whether `device` flags `doc`.
pub async fn has_flag<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    device: &str,
    doc: &DocId,
) -> Result<bool, sqlx::Error> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM device_flags WHERE device = ? AND doc_id = ?")
            .bind(device)
            .bind(doc.to_string())
            .fetch_one(db)
            .await?;
    Ok(n > 0)
}

/// Whether any device of this node flags `doc` (from a write transaction to see the latest).
pub async fn flagged_by_any<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    doc: &DocId,
) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM device_flags WHERE doc_id = ?")
        .bind(doc.to_string())
        .fetch_one(db)
        .await?;
    Ok(n > 0)
}

/// Whether a device here flags `doc`, and whether the content `md5` is held here: what a
/// notification's handling needs to know, in one statement.
/// Which of the documents `ids` a device of this node flagged, in one statement.
pub async fn flagged_among(
    conn: &mut sqlx::SqliteConnection,
    ids: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "SELECT DISTINCT doc_id FROM device_flags WHERE doc_id IN ",
    );
    super::push_in_list(&mut qb, ids.iter().map(String::as_str));
    let rows: Vec<String> = qb.build_query_scalar().fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().collect())
}

/// The active device whose secret hashes to `secret_hash`.
pub async fn device_by_secret<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    secret_hash: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM devices WHERE secret_hash = ? AND revoked IS NULL")
        .bind(secret_hash)
        .fetch_optional(db)
        .await
}

/// Records that `device` flags `doc`.
pub async fn add_flag<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    device: &str,
    doc: &DocId,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO device_flags (device, doc_id, created_at) VALUES (?, ?, ?)")
        .bind(device)
        .bind(doc.to_string())
        .bind(docfed_shared::wire::Timestamp::now().millis())
        .execute(db)
        .await
        .map(|_| ())
}

/// Removes `device`'s flag on `doc`. Returns whether there was one.
pub async fn remove_flag<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    device: &str,
    doc: &DocId,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM device_flags WHERE device = ? AND doc_id = ?")
            .bind(device)
            .bind(doc.to_string())
            .execute(db)
            .await?
            .rows_affected()
            > 0,
    )
}

/// The documents `device` flags, oldest flag first.
pub async fn flags_of<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    device: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT doc_id FROM device_flags WHERE device = ? ORDER BY created_at, doc_id",
    )
    .bind(device)
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_64_hex_digits_and_hash_to_64_more() {
        let s = new_secret();
        assert_eq!(s.len(), 64);
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(s, new_secret());
        let h = secret_hash(&s);
        assert_eq!(h.len(), 64);
        assert_ne!(h, s);
        // The well-known SHA-256 of "abc".
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn device_ids_are_uuids() {
        let id = new_device_id();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    }
}
