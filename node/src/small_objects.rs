//! The small-object store: content at most `small_object_max` kept in the database
//! (`small_objects`) rather than as a file in `objects/` (ARCHITECTURE.md §2a).
//!
//! A batch of small documents, whether uploaded together or arriving inline in notifications,
//! then becomes durable with the one commit that records its versions; a file each cost a write,
//! its fsync and a directory fsync. Readers see no difference: the same `objects` row says the
//! content is held, and the same Range/ETag serving reads it (`api::content`). Sealed at rest
//! with the node's content key in the format of a sealed file, whole (`atrest::seal_bytes`).
//! Deleting the `objects` row deletes the bytes (a trigger, migration 0013), so retention and
//! released flags collect small objects as they collect files.

use bytes::Bytes;
use docfed_shared::Md5Hex;
use sqlx::{SqliteConnection, SqliteExecutor};

use crate::atrest::Keys;
use crate::db::documents::record_objects;

/// Records `items` (`(md5, content)`, each content verified against its md5 by the caller) as
/// held here: their `objects` rows and their bytes, sealed with `keys` when given, in a few
/// statements inside the caller's transaction. Content already held is left as it is.
pub async fn record_all(
    conn: &mut SqliteConnection,
    keys: Option<&Keys>,
    items: &[(&Md5Hex, &[u8])],
) -> Result<(), sqlx::Error> {
    if items.is_empty() {
        return Ok(());
    }
    let objects: Vec<(&Md5Hex, u64)> = items.iter().map(|(m, c)| (*m, c.len() as u64)).collect();
    // Rows already held (as files or here) keep their form: only the new ones get bytes.
    let held = crate::db::documents::objects_held(
        &mut *conn,
        &items.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
    )
    .await?;
    record_objects(&mut *conn, &objects).await?;
    let rows: Vec<(&str, bool, Vec<u8>)> = items
        .iter()
        .filter(|(m, _)| !held.contains(m.as_str()))
        .map(|(m, c)| match keys {
            Some(k) => (m.as_str(), true, crate::atrest::seal_bytes(&k.current, c)),
            None => (m.as_str(), false, c.to_vec()),
        })
        .collect();
    // A statement binds at most 32,766 values; 3 per row, and rows of up to 256 KiB: a few
    // hundred rows per statement keep each one's memory bounded too.
    for chunk in rows.chunks(256) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT OR IGNORE INTO small_objects (md5, sealed, data) ",
        );
        qb.push_values(chunk, |mut row, (md5, sealed, data)| {
            row.push_bind(*md5)
                .push_bind(*sealed)
                .push_bind(data.as_slice());
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The content `md5` when the small-object store holds it, opened when sealed. An error when it
/// is sealed with a key this node was not given, or altered.
pub async fn read<'e>(
    db: impl SqliteExecutor<'e>,
    keys: Option<&Keys>,
    md5: &Md5Hex,
) -> Result<Option<Bytes>, ReadError> {
    let row: Option<(bool, Vec<u8>)> =
        sqlx::query_as("SELECT sealed, data FROM small_objects WHERE md5 = ?")
            .bind(md5.as_str())
            .fetch_optional(db)
            .await?;
    let Some((sealed, data)) = row else {
        return Ok(None);
    };
    if !sealed {
        return Ok(Some(Bytes::from(data)));
    }
    let keys = keys.ok_or_else(|| {
        ReadError::Sealed(std::io::Error::other(
            "stored content is sealed and this node was given no content key",
        ))
    })?;
    crate::atrest::open_bytes(keys, &data)
        .map(|plain| Some(Bytes::from(plain)))
        .map_err(ReadError::Sealed)
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Sealed(std::io::Error),
}

/// Seals again every small object not sealed with the current key: plain ones (encryption was
/// turned on) and ones sealed with an old key (a rotation). A batch per transaction, so the
/// writer is never held for long. Returns how many were sealed again.
pub async fn reseal(db: &crate::db::Db, keys: &Keys) -> Result<u64, ReadError> {
    let current = keys.current.id_hex();
    let mut done = 0u64;
    let mut after = String::new();
    loop {
        let rows: Vec<(String, bool, Vec<u8>)> = sqlx::query_as(
            "SELECT md5, sealed, data FROM small_objects WHERE md5 > ? ORDER BY md5 LIMIT 256",
        )
        .bind(&after)
        .fetch_all(db.reader())
        .await?;
        let Some(last) = rows.last() else {
            return Ok(done);
        };
        after = last.0.clone();
        let mut updates = Vec::new();
        for (md5, sealed, data) in rows {
            if sealed && crate::atrest::sealed_with(&data).as_deref() == Some(current.as_str()) {
                continue;
            }
            let plain = if sealed {
                crate::atrest::open_bytes(keys, &data).map_err(ReadError::Sealed)?
            } else {
                data
            };
            updates.push((md5, crate::atrest::seal_bytes(&keys.current, &plain)));
        }
        if updates.is_empty() {
            continue;
        }
        let mut tx = db.begin_write().await?;
        for (md5, data) in &updates {
            sqlx::query("UPDATE small_objects SET sealed = 1, data = ? WHERE md5 = ?")
                .bind(data.as_slice())
                .bind(md5)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        done += updates.len() as u64;
    }
}
