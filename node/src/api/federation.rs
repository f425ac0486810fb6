//! Federation views and upward flows: propagation status, annotations, peers and metrics.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use docfed_shared::messages::Annotation;
use docfed_shared::wire::Timestamp;
use serde::{Deserialize, Serialize};

use super::{parse_id, ApiQuery, AppState, Authorized, JsonBody};
use crate::db::messages;
use crate::error::ApiError;
use crate::federation::{fetch, outbox};
use docfed_shared::messages::AnnotationState;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct NodeHolding {
    node: String,
    version: i64,
    origin: String,
    md5: String,
    /// The node holds the bytes (not only the metadata).
    content: bool,
    #[sqlx(rename = "at")]
    #[serde(skip)]
    at_ms: i64,
    #[sqlx(skip)]
    at: Option<Timestamp>,
    #[sqlx(skip)]
    current: bool,
}

/// `GET /v1/documents/{id}/propagation`: the newest version each node reported holding.
pub async fn propagation(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id)?;
    let doc = node
        .db
        .document(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("document {id}")))?;
    let mut rows: Vec<NodeHolding> =
        messages::latest_receipts(node.db.reader(), &id.to_string()).await?;
    for r in &mut rows {
        r.at = Some(Timestamp(r.at_ms));
        r.current = r.version == doc.current.version && r.origin == doc.current.origin;
    }
    let missing: Vec<String> = node
        .federation()
        .map(|f| {
            f.topology
                .nodes
                .iter()
                .filter(|n| !rows.iter().any(|r| r.node == n.id && r.current))
                .map(|n| n.id.clone())
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(serde_json::json!({
        "id": id,
        "version": doc.current.version,
        "origin": doc.current.origin,
        "deleted": doc.current.deleted,
        "nodes": rows,
        "not_yet_current": missing,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotateBody {
    text: String,
    #[serde(default)]
    author: Option<String>,
    /// A UUID chosen by the client, which makes the request idempotent: a device that queued
    /// the annotation offline can send it again after a lost answer without a second copy.
    #[serde(default)]
    id: Option<String>,
}

/// `POST /v1/documents/{id}/annotations` (any node): stored here and sent toward the author.
/// 201 for a new annotation; 200 with `"duplicate": true` when one with the client's `id`
/// exists for this document already (409 if that id belongs to another document's).
pub async fn annotate(
    State(node): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AnnotateBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = parse_id(&id)?;
    let text = body.text.trim();
    if text.is_empty() || text.chars().count() > 20_000 {
        return Err(ApiError::invalid("text", "must be 1-20000 characters"));
    }
    let author = body.author.unwrap_or_default();
    if author.chars().count() > 200 || author.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "author",
            "must be at most 200 printable characters",
        ));
    }
    let aid = match body.id.as_deref() {
        Some(a) => a
            .parse::<docfed_shared::DocId>()
            .map_err(|_| ApiError::invalid("id", "must be a UUID"))?
            .to_string(),
        None => docfed_shared::DocId::new().to_string(),
    };
    let doc = node
        .db
        .document(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("document {id}")))?;
    let a = Annotation {
        id: aid,
        doc_id: id,
        doc_version: doc.current.version,
        author,
        text: text.to_owned(),
        created_at: Timestamp::now(),
        node: node.config.node_id.clone(),
    };
    let mut tx = node.db.begin_write().await?;
    // Checked in the writer transaction, so two copies of one request cannot both insert.
    let known = messages::annotation(&mut *tx, &a.id).await?;
    if let Some(Annotation {
        doc_id,
        doc_version,
        ..
    }) = known
    {
        if doc_id != id {
            return Err(ApiError::Conflict(format!(
                "annotation {} belongs to another document",
                a.id
            )));
        }
        return Ok((
            StatusCode::OK,
            Json(serde_json::json!({
                "id": a.id, "doc_id": id, "doc_version": doc_version, "duplicate": true
            })),
        ));
    }
    match node.federation() {
        Some(fed) => {
            crate::federation::inbox::on_annotation(fed, &mut tx, &a, &a.message_id()).await?;
        }
        None => {
            messages::record_annotation(&mut *tx, &a).await?;
        }
    }
    tx.commit().await?;
    node.wake_outbox();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": a.id, "doc_id": id, "doc_version": a.doc_version })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationParams {
    /// pending (default), accepted, rejected or any.
    state: Option<String>,
    doc_id: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AnnotationRow {
    id: String,
    doc_id: String,
    doc_version: i64,
    author: String,
    text: String,
    state: String,
    #[serde(skip)]
    created_at: i64,
    #[sqlx(skip)]
    created: Option<Timestamp>,
    document_title: Option<String>,
    /// The annotated document is tombstoned now: the author may reactivate it.
    document_deleted: Option<bool>,
}

/// `GET /v1/annotations`: the authors' vetting queue.
pub async fn annotations(
    State(node): State<AppState>,
    _auth: Authorized,
    ApiQuery(p): ApiQuery<AnnotationParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let state = p.state.unwrap_or_else(|| "pending".into());
    if !["pending", "accepted", "rejected", "any"].contains(&state.as_str()) {
        return Err(ApiError::invalid(
            "state",
            "must be pending, accepted, rejected or any",
        ));
    }
    let doc = p
        .doc_id
        .as_deref()
        .map(parse_id)
        .transpose()?
        .map(|d| d.to_string());
    let mut rows: Vec<AnnotationRow> =
        messages::annotations(node.db.reader(), &state, doc.as_deref()).await?;
    for r in &mut rows {
        r.created = Some(Timestamp(r.created_at));
    }
    Ok(Json(serde_json::json!({ "annotations": rows })))
}

/// Records the decision here and, in the same transaction, queues it to every other node of
/// the federation: the other primary, and every node where a reader may ask.
async fn decide(
    node: &AppState,
    aid: &str,
    state: AnnotationState,
) -> Result<Json<serde_json::Value>, ApiError> {
    use docfed_shared::messages::{Body, Decision, Envelope};
    let mut tx = node.db.begin_write().await?;
    let Some(mut annotation) = messages::annotation(&mut *tx, aid).await? else {
        return Err(ApiError::not_found(format!("annotation {aid}")));
    };
    annotation.node = node.config.node_id.clone();
    let decision = Decision {
        annotation,
        state,
        decided_at: Timestamp::now(),
        by: node.config.node_id.clone(),
    };
    messages::apply_decision(&mut tx, &decision).await?;
    if let Some(fed) = node.federation() {
        let env = Envelope::new(
            decision.message_id(),
            fed.id(),
            Body::Decision(decision.clone()),
        );
        let everyone: Vec<String> = fed.others().map(|n| n.id.clone()).collect();
        outbox::enqueue_to_all(&mut tx, &everyone, &env).await?;
    }
    tx.commit().await?;
    node.wake_outbox();
    Ok(Json(
        serde_json::json!({ "id": aid, "state": state.as_str(), "decided_at": decision.decided_at }),
    ))
}

/// What anyone holding an annotation's id may read of it, on any node.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AnnotationStatus {
    id: String,
    doc_id: String,
    doc_version: i64,
    author: String,
    text: String,
    /// pending | accepted | rejected
    state: String,
    #[serde(skip)]
    created_at: i64,
    #[serde(skip)]
    decided_at: Option<i64>,
    #[sqlx(skip)]
    created: Option<Timestamp>,
    #[sqlx(skip)]
    decided: Option<Timestamp>,
}

impl AnnotationStatus {
    fn stamped(mut self) -> Self {
        self.created = Some(Timestamp(self.created_at));
        self.decided = self.decided_at.map(Timestamp);
        self
    }
}

/// `GET /v1/annotations/{aid}`: one annotation and its state. The id (a random UUID the
/// writer got back) is what lets a reader see it; pending annotations are listed only to the
/// token (`GET /v1/annotations`).
pub async fn annotation(
    State(node): State<AppState>,
    Path(aid): Path<String>,
) -> Result<Json<AnnotationStatus>, ApiError> {
    let aid = parse_id(&aid)?.to_string();
    messages::annotation_status::<AnnotationStatus>(node.db.reader(), &aid)
        .await?
        .map(|a| Json(a.stamped()))
        .ok_or_else(|| ApiError::not_found(format!("annotation {aid}")))
}

/// `GET /v1/documents/{id}/annotations`: the annotations its author accepted, on any node.
pub async fn accepted(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id)?;
    if node.db.document(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("document or annotation {id}")));
    }
    let rows: Vec<AnnotationStatus> =
        messages::accepted_annotations(node.db.reader(), &id.to_string()).await?;
    let rows: Vec<AnnotationStatus> = rows.into_iter().map(AnnotationStatus::stamped).collect();
    Ok(Json(
        serde_json::json!({ "doc_id": id, "annotations": rows }),
    ))
}

pub async fn accept(
    State(node): State<AppState>,
    _auth: Authorized,
    Path(aid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    decide(&node, &aid, AnnotationState::Accepted).await
}

pub async fn reject(
    State(node): State<AppState>,
    _auth: Authorized,
    Path(aid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    decide(&node, &aid, AnnotationState::Rejected).await
}

/// `GET /v1/peers`: presence for anyone (a device uses it to find other regional nodes); queue
/// depths and the inbox's state only for operators, with the token.
pub async fn peers(
    State(node): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let peers = node.peers.snapshot();
    // The regional node that holds this one's regional documents: where a device of this
    // region fails over to first.
    let backup = node.federation().and_then(|f| f.me.backup.clone());
    if !super::carries_token(&headers, &node) {
        return Ok(Json(serde_json::json!({
            "node": node.config.node_id,
            "backup": backup,
            "peers": peers,
        })));
    }
    let outbox_depth = outbox::depth(&node).await?;
    let pending = fetch::pending_count(&node).await?;
    Ok(Json(serde_json::json!({
        "node": node.config.node_id,
        "backup": backup,
        "inbox_connected": node.inbox_connected.load(std::sync::atomic::Ordering::Relaxed),
        "outbox_depth": outbox_depth,
        "pending_fetches": pending,
        "peers": peers,
        // Background tasks: state, since when, errors and the last one (ARCHITECTURE.md §5.4).
        "tasks": node.supervisor.tasks(),
    })))
}

/// `GET /metrics`: operators only (Prometheus sends the token with `authorization`).
pub async fn metrics(
    State(node): State<AppState>,
    _auth: Authorized,
) -> Result<impl IntoResponse, ApiError> {
    let outbox_depth = outbox::depth(&node).await?;
    let pending = fetch::pending_count(&node).await?;
    let node_id = node.config.node_id.clone();
    let sources = super::sources::sources(State(node.clone()), Authorized)
        .await?
        .0;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics
            .render(&node.config.node_id, outbox_depth, pending)
            + &crate::metrics::render_retention(&node.config.node_id, &node.retention)
            + &crate::metrics::render_tasks(&node.config.node_id, &node.supervisor.tasks())
            + &super::sources::render_metrics(&node_id, &sources.sources),
    ))
}
