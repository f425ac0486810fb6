//! `GET /metrics`: Prometheus text, for operators only (Prometheus sends the token with
//! `authorization`).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{AppState, Authorized};
use crate::error::ApiError;
use crate::federation::{fetch, outbox};

pub async fn metrics(
    State(node): State<AppState>,
    _auth: Authorized,
) -> Result<impl IntoResponse, ApiError> {
    let outbox_depth = outbox::depth(&node).await?;
    let pending = fetch::pending_count(&node).await?;
    let node_id = &node.config.node_id;
    let sources = super::sources::view(&node).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics.render(node_id, outbox_depth, pending)
            + &crate::metrics::render_retention(node_id, &node.retention)
            + &crate::metrics::render_tasks(node_id, &node.supervisor.tasks())
            + &super::sources::render_metrics(node_id, &sources.sources),
    ))
}
