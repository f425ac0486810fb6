//! `GET /v1/peers`: presence for anyone (a device uses it to find other regional nodes); queue
//! depths, the inbox's state and the background tasks only for operators, with the token.

use axum::extract::State;
use axum::Json;
use docfed_shared::wire::peers::PeersView;

use super::AppState;
use crate::error::ApiError;
use crate::federation::{fetch, outbox};

pub async fn peers(
    State(node): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<PeersView>, ApiError> {
    let mut view = PeersView {
        node: node.config.node_id.clone(),
        backup: node.federation().and_then(|f| f.me.backup.clone()),
        peers: node.peers.snapshot(),
        ..PeersView::default()
    };
    if super::carries_token(&headers, &node) {
        view.inbox_connected = Some(
            node.inbox_connected
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        view.outbox_depth = Some(outbox::depth(&node).await?);
        view.pending_fetches = Some(fetch::pending_count(&node).await?);
        view.tasks = Some(node.supervisor.tasks());
    }
    Ok(Json(view))
}
