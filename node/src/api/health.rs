//! `GET /v1/health`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use docfed_shared::topology::Tier;
use docfed_shared::wire::Health;

use super::AppState;

pub async fn health(State(node): State<AppState>) -> (StatusCode, Json<Health>) {
    let db_ok = node.db.ping().await.is_ok();
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            node: node.config.node_id.clone(),
            tier: node
                .config
                .tier
                .map_or("standalone", Tier::as_str)
                .to_owned(),
            region: node.config.region.clone(),
            status: if db_ok {
                "ok"
            } else {
                "degraded: database unavailable"
            }
            .to_owned(),
        }),
    )
}
