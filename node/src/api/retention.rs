//! `GET /v1/admin/gc`: what a collection would remove now, how the disk is used (live content,
//! retained old versions, collectable bytes) and each table's rows, plus the last collection's
//! report. `POST /v1/admin/gc`: run a collection now. Both need the node's token.

use axum::extract::State;
use axum::Json;
use docfed_shared::wire::gc::{GcPreview, GcReport};

use super::{AppState, Authorized};
use crate::error::ApiError;
use crate::retention::{collect, GcError};

pub async fn preview(
    State(node): State<AppState>,
    _auth: Authorized,
) -> Result<Json<GcPreview>, ApiError> {
    let preview = collect(&node, true).await.map_err(internal)?;
    Ok(Json(GcPreview {
        preview: GcReport::clone(&preview),
        last: node.retention.last().map(|r| GcReport::clone(&r)),
    }))
}

pub async fn run(
    State(node): State<AppState>,
    _auth: Authorized,
) -> Result<Json<GcReport>, ApiError> {
    let report = collect(&node, false).await.map_err(internal)?;
    Ok(Json(GcReport::clone(&report)))
}

fn internal(e: GcError) -> ApiError {
    match e {
        GcError::Db(e) => e.into(),
        GcError::Io(e) => ApiError::Internal(e.into()),
    }
}
