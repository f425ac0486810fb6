//! `GET /v1/documents/{id}/propagation` (primaries): the newest version each node reported
//! holding, from the content receipts, and the topology's nodes that do not hold the current
//! version yet.

use axum::extract::{Path, State};
use axum::Json;
use docfed_shared::wire::propagation::Propagation;

use super::{parse_id, AppState};
use crate::db::messages;
use crate::error::ApiError;

pub async fn propagation(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Propagation>, ApiError> {
    let id = parse_id(&id)?;
    let doc = node
        .db
        .document(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("document {id}")))?;
    let mut nodes = messages::latest_receipts(node.db.reader(), &id.to_string()).await?;
    for r in &mut nodes {
        r.current = r.version == doc.current.version && r.origin == doc.current.origin;
    }
    let not_yet_current: Vec<String> = node
        .federation()
        .map(|f| {
            f.topology
                .nodes
                .iter()
                .filter(|n| !nodes.iter().any(|r| r.node == n.id && r.current))
                .map(|n| n.id.clone())
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(Propagation {
        id,
        version: doc.current.version,
        origin: doc.current.origin,
        deleted: doc.current.deleted,
        nodes,
        not_yet_current,
    }))
}
