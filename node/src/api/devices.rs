//! Device flags: `PUT`/`DELETE /v1/devices/{device}/flags/{id}` and
//! `GET /v1/devices/{device}/flags`. A flagged document's content is kept on this node (pulled
//! now if needed, and every new version too) so the device can get it whenever it connects.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use docfed_shared::messages::Notification;
use docfed_shared::wire::{ChangeKind, DocumentMeta, Timestamp};

use super::{parse_id, AppState};
use crate::db::documents::object_known;
use crate::error::ApiError;

fn parse_device(raw: &str) -> Result<String, ApiError> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::invalid(
            "device",
            "must be 1-64 characters of A-Z, a-z, 0-9, `-`, `_`, `.`",
        ))
    }
}

pub async fn flag(
    State(node): State<AppState>,
    Path((device, id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let device = parse_device(&device)?;
    let id = parse_id(&id)?;
    let doc = node
        .db
        .document(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("document {id}")))?;
    let mut tx = node.db.begin_write().await?;
    let new = sqlx::query(
        "INSERT OR IGNORE INTO device_flags (device, doc_id, created_at) VALUES (?, ?, ?)",
    )
    .bind(&device)
    .bind(id.to_string())
    .bind(Timestamp::now().millis())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    let mut pulling = false;
    if let Some(fed) = node.federation() {
        let d = &doc.current;
        if !d.deleted && !object_known(&mut tx, &d.md5).await? {
            let sources = crate::federation::ondemand::sources(&node, d);
            if let Some(origin) = sources.first() {
                let n = Notification {
                    document: d.clone(),
                    kind: ChangeKind::Updated,
                    origin_url: origin.clone(),
                    targets: Vec::new(),
                };
                crate::federation::fetch::enqueue_fetch(&mut tx, fed, &n, &[]).await?;
                pulling = true;
            }
        }
    }
    tx.commit().await?;
    if pulling {
        node.fetch_wake.notify_one();
    }
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(
            serde_json::json!({ "device": device, "id": id, "flagged": true, "pulling": pulling }),
        ),
    ))
}

pub async fn unflag(
    State(node): State<AppState>,
    Path((device, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = parse_device(&device)?;
    let id = parse_id(&id)?;
    let mut tx = node.db.begin_write().await?;
    let n = sqlx::query("DELETE FROM device_flags WHERE device = ? AND doc_id = ?")
        .bind(&device)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    if n == 0 {
        return Err(ApiError::not_found(format!(
            "flag of document {id} by device {device}"
        )));
    }
    Ok(Json(
        serde_json::json!({ "device": device, "id": id, "flagged": false }),
    ))
}

pub async fn flags(
    State(node): State<AppState>,
    Path(device): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = parse_device(&device)?;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT doc_id FROM device_flags WHERE device = ? ORDER BY created_at")
            .bind(&device)
            .fetch_all(node.db.reader())
            .await?;
    let mut documents: Vec<DocumentMeta> = Vec::with_capacity(ids.len());
    for id in ids {
        if let Ok(id) = id.parse() {
            if let Some(mut d) = node.db.document(&id).await? {
                d.available_at = node.holders(&d.current.scope);
                documents.push(d);
            }
        }
    }
    Ok(Json(
        serde_json::json!({ "device": device, "documents": documents }),
    ))
}
