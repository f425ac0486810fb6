//! The HTTP API (DESIGN section 8): routing, authentication and request parsing shared by the
//! resource modules.

mod admin;
mod changes;
mod content;
mod devices;
mod documents;
mod federation;
mod health;
pub mod search;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::Node;

pub type AppState = Arc<Node>;

pub fn router(node: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health::health))
        .route(
            "/v1/documents",
            get(documents::list).post(documents::publish),
        )
        .route(
            "/v1/documents/{id}",
            get(documents::metadata)
                .put(documents::new_version)
                .delete(documents::tombstone),
        )
        .route("/v1/documents/{id}/reactivate", post(documents::reactivate))
        .route("/v1/documents/{id}/versions", get(documents::versions))
        .route("/v1/documents/{id}/content", get(content::content))
        .route(
            "/v1/documents/{id}/propagation",
            get(federation::propagation),
        )
        .route("/v1/documents/{id}/annotations", post(federation::annotate))
        .route("/v1/annotations", get(federation::annotations))
        .route("/v1/annotations/{aid}/accept", post(federation::accept))
        .route("/v1/annotations/{aid}/reject", post(federation::reject))
        .route("/v1/objects/{md5}", get(content::object))
        .route("/v1/peers", get(federation::peers))
        .route(
            "/v1/devices/{device}/flags/{id}",
            axum::routing::put(devices::flag).delete(devices::unflag),
        )
        .route("/v1/devices/{device}/flags", get(devices::flags))
        .route("/metrics", get(federation::metrics))
        .route("/v1/changes", get(changes::changes))
        .route("/v1/admin/import", post(admin::import))
        .fallback(|| async { ApiError::not_found("route") })
        // Uploads are streamed and limited by the node's own `max_upload_size`.
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(node)
}

/// Proof that the request carried the node's bearer token. Taking it as a handler argument
/// rejects the request before its body is read.
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(t) if constant_time_eq(t.as_bytes(), node.config.token.as_bytes()) => {
                Ok(Authorized)
            }
            _ => Err(ApiError::Unauthorized),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Query-string parameters, with errors that name the offending field in the JSON error body
/// (axum's own `Query` rejection is plain text).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q)
            .map(ApiQuery)
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
    }
}

/// Parses a document id from the path: a malformed one is a 400 naming `id`.
pub fn parse_id(raw: &str) -> Result<docfed_shared::DocId, ApiError> {
    raw.parse()
        .map_err(|e: docfed_shared::ParseIdError| ApiError::invalid("id", e.to_string()))
}
