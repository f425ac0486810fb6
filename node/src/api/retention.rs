//! `GET /v1/admin/gc`: what a collection would remove now, how the disk is used (live content,
//! retained old versions, collectable bytes) and each table's rows, plus the last collection's
//! report. `POST /v1/admin/gc`: run a collection now. Both need the node's token.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::{AppState, Authorized};
use crate::error::ApiError;
use crate::retention::{collect, GcError, Report};

#[derive(Serialize)]
pub struct Preview {
    /// What the next collection would do, measured now.
    preview: std::sync::Arc<Report>,
    /// The last collection that ran (periodic or asked for), if any since the node started.
    last: Option<std::sync::Arc<Report>>,
}

pub async fn preview(
    State(node): State<AppState>,
    _auth: Authorized,
) -> Result<Json<Preview>, ApiError> {
    let preview = collect(&node, true).await.map_err(internal)?;
    Ok(Json(Preview {
        preview,
        last: node.retention.last(),
    }))
}

pub async fn run(
    State(node): State<AppState>,
    _auth: Authorized,
) -> Result<Json<std::sync::Arc<Report>>, ApiError> {
    Ok(Json(collect(&node, false).await.map_err(internal)?))
}

fn internal(e: GcError) -> ApiError {
    match e {
        GcError::Db(e) => e.into(),
        GcError::Io(e) => ApiError::Internal(e.into()),
    }
}
