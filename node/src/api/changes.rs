//! `GET /v1/changes?since=SEQ&limit=N`: the change feed a client replays to rebuild or update
//! its copy of the directory.

use axum::extract::State;
use axum::Json;
use docfed_shared::wire::ChangeFeed;
use serde::Deserialize;

use super::{ApiQuery, AppState};
use crate::error::ApiError;

const DEFAULT_LIMIT: u32 = 1000;
const MAX_LIMIT: u32 = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesParams {
    since: Option<i64>,
    limit: Option<u32>,
}

pub async fn changes(
    State(node): State<AppState>,
    ApiQuery(p): ApiQuery<ChangesParams>,
) -> Result<Json<ChangeFeed>, ApiError> {
    let since = p.since.unwrap_or(0);
    if since < 0 {
        return Err(ApiError::invalid(
            "since",
            "must be 0 or a sequence number from a previous answer",
        ));
    }
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(Json(node.db.changes(since, limit).await?))
}
