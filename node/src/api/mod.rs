//! The HTTP API (ARCHITECTURE.md §6.2): routing, authentication and request parsing shared by the
//! resource modules.

mod admin;
mod annotations;
mod batch;
mod changes;
mod content;
mod devices;
mod documents;
mod events;
mod health;
mod metrics;
mod peers;
mod propagation;
mod retention;
pub mod search;
mod sources;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use docfed_shared::secrets::constant_time_eq;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::Node;

pub type AppState = Arc<Node>;

pub fn router(node: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health::health))
        .route("/v1/sources", get(sources::sources))
        .route(
            "/v1/documents",
            get(documents::list).post(documents::publish),
        )
        .route("/v1/documents/batch", post(batch::publish))
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
            get(propagation::propagation),
        )
        .route(
            "/v1/documents/{id}/annotations",
            get(annotations::accepted).post(annotations::annotate),
        )
        .route("/v1/annotations", get(annotations::annotations))
        .route("/v1/annotations/{aid}", get(annotations::annotation))
        .route("/v1/annotations/{aid}/accept", post(annotations::accept))
        .route("/v1/annotations/{aid}/reject", post(annotations::reject))
        .route("/v1/objects/{md5}", get(content::object))
        .route("/v1/peers", get(peers::peers))
        .route("/v1/devices", get(devices::list).post(devices::register))
        .route(
            "/v1/devices/{device}",
            axum::routing::delete(devices::revoke),
        )
        .route(
            "/v1/devices/{device}/flags/{id}",
            axum::routing::put(devices::flag).delete(devices::unflag),
        )
        .route("/v1/devices/{device}/flags", get(devices::flags))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/changes", get(changes::changes))
        .route("/v1/events", get(events::events))
        .route("/v1/admin/import", post(admin::import))
        .route("/v1/admin/gc", get(retention::preview).post(retention::run))
        .fallback(|| async { ApiError::not_found("route") })
        // Handlers that buffer a body (JSON) read at most this much; uploads take the raw
        // body, which this limit does not touch, and stream it under `max_upload_size`.
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http().on_failure(
            |class: tower_http::classify::ServerErrorsFailureClass,
             latency: std::time::Duration,
             _span: &tracing::Span| {
                // The handler already logged what failed (`ApiError::into_response`); a 503
                // "not yet" or "busy" is the protocol working, not a failure worth a warning.
                use tower_http::classify::ServerErrorsFailureClass::StatusCode as Status;
                match class {
                    Status(s) if s == axum::http::StatusCode::SERVICE_UNAVAILABLE => {
                        tracing::debug!(?latency, "answered 503")
                    }
                    other => tracing::warn!(classification = %other, ?latency, "response failed"),
                }
            },
        ))
        .with_state(node)
}

/// Largest JSON request body: an annotation of 20,000 characters (up to 80 KB as UTF-8, more
/// with JSON escapes) with room to spare. Nothing anonymous can make a node buffer more.
pub const MAX_JSON_BODY: usize = 256 * 1024;

/// Most of an unread body read and discarded before an early refusal is sent.
pub(crate) const DRAIN_LIMIT: usize = 32 * 1024 * 1024;
/// Longest an early refusal waits for the body to be drained.
pub(crate) const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses a request whose body was not (fully) read, after reading and dropping a bounded part
/// of it. Answering and closing with the body unread makes the kernel reset the connection, and
/// a client still sending then sees "broken pipe" instead of the answer (and a portal would
/// take the primary for dead). Past the limit the connection is closed anyway.
pub(crate) async fn refuse(body: Body, error: ApiError) -> ApiError {
    drain(body.into_data_stream(), error).await
}

async fn drain(mut stream: axum::body::BodyDataStream, error: ApiError) -> ApiError {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut drained = 0usize;
    while drained <= DRAIN_LIMIT {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => drained += chunk.len(),
            _ => break,
        }
    }
    error
}

/// A JSON request body of at most [`MAX_JSON_BODY`] bytes, read in chunks and refused with 413
/// as soon as it is longer (whatever its `Content-Length` says), so a client streaming gigabytes
/// costs the node one buffer of that size. An empty body reads as JSON `null`: a handler whose
/// body is optional takes `JsonBody<Option<T>>`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, ApiError> {
        let too_large = || ApiError::TooLarge {
            limit: MAX_JSON_BODY as u64,
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_JSON_BODY as u64) {
            return Err(refuse(req.into_body(), too_large()).await);
        }
        let mut stream = req.into_body().into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::UploadAborted(e.to_string()))?;
            if buf.len() + chunk.len() > MAX_JSON_BODY {
                return Err(drain(stream, too_large()).await);
            }
            buf.extend_from_slice(&chunk);
        }
        let text: &[u8] = if buf.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &buf
        };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// Proof that the request carried the node's bearer token. Taking it as a handler argument
/// rejects the request before its body is read.
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &AppState) -> Result<Self, ApiError> {
        if carries_token(&parts.headers, node) {
            Ok(Authorized)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// Whether the request carries the node's bearer token, for endpoints that show more to
/// operators than to anonymous readers.
pub fn carries_token(headers: &axum::http::HeaderMap, node: &AppState) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .is_some_and(|t| constant_time_eq(t, &node.config.token))
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
