//! Readers' annotations and the authors' decisions (bodies: `docfed_shared::wire::annotations`):
//! an annotation is written at any node and travels toward the primaries; a decision is taken
//! at a primary and replicated to every node.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use docfed_shared::messages::{Annotation, AnnotationState};
use docfed_shared::wire::annotations::{
    AcceptedAnnotations, AnnotationCreated, AnnotationList, AnnotationStatus, DecisionOutcome,
    NewAnnotation, MAX_AUTHOR, MAX_TEXT,
};
use docfed_shared::wire::Timestamp;
use docfed_shared::DocId;
use serde::Deserialize;

use super::{parse_id, ApiQuery, AppState, Authorized, JsonBody};
use crate::db::messages;
use crate::error::ApiError;
use crate::federation::outbox;

/// `POST /v1/documents/{id}/annotations` (any node): stored here and sent toward the author.
/// 201 for a new annotation; 200 with `"duplicate": true` when one with the client's `id`
/// exists for this document already (409 if that id belongs to another document's).
pub async fn annotate(
    State(node): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<NewAnnotation>,
) -> Result<(StatusCode, Json<AnnotationCreated>), ApiError> {
    let id = parse_id(&id)?;
    let text = body.text.trim();
    if text.is_empty() || text.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid(
            "text",
            format!("must be 1-{MAX_TEXT} characters"),
        ));
    }
    let author = body.author.unwrap_or_default();
    if author.chars().count() > MAX_AUTHOR || author.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "author",
            format!("must be at most {MAX_AUTHOR} printable characters"),
        ));
    }
    let aid = match body.id.as_deref() {
        Some(a) => a
            .parse::<DocId>()
            .map_err(|_| ApiError::invalid("id", "must be a UUID"))?
            .to_string(),
        None => DocId::new().to_string(),
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
            Json(AnnotationCreated {
                id: a.id,
                doc_id: id,
                doc_version,
                duplicate: true,
            }),
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
        Json(AnnotationCreated {
            id: a.id,
            doc_id: id,
            doc_version: a.doc_version,
            duplicate: false,
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationParams {
    /// pending (default), accepted, rejected or any.
    state: Option<String>,
    doc_id: Option<String>,
}

/// `GET /v1/annotations`: the authors' vetting queue.
pub async fn annotations(
    State(node): State<AppState>,
    _auth: Authorized,
    ApiQuery(p): ApiQuery<AnnotationParams>,
) -> Result<Json<AnnotationList>, ApiError> {
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
    let annotations = messages::annotations(node.db.reader(), &state, doc.as_deref()).await?;
    Ok(Json(AnnotationList { annotations }))
}

/// Records the decision here and, in the same transaction, queues it to every other node of
/// the federation: the other primary, and every node where a reader may ask.
async fn decide(
    node: &AppState,
    aid: &str,
    state: AnnotationState,
) -> Result<Json<DecisionOutcome>, ApiError> {
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
    Ok(Json(DecisionOutcome {
        id: aid.to_owned(),
        state,
        decided_at: decision.decided_at,
    }))
}

/// `GET /v1/annotations/{aid}`: one annotation and its state. The id (a random UUID the
/// writer got back) is what lets a reader see it; pending annotations are listed only to the
/// token (`GET /v1/annotations`).
pub async fn annotation(
    State(node): State<AppState>,
    Path(aid): Path<String>,
) -> Result<Json<AnnotationStatus>, ApiError> {
    let aid = parse_id(&aid)?.to_string();
    messages::annotation_status(node.db.reader(), &aid)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("annotation {aid}")))
}

/// `GET /v1/documents/{id}/annotations`: the annotations its author accepted, on any node.
pub async fn accepted(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AcceptedAnnotations>, ApiError> {
    let id = parse_id(&id)?;
    if node.db.document(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("document or annotation {id}")));
    }
    let annotations = messages::accepted_annotations(node.db.reader(), &id.to_string()).await?;
    Ok(Json(AcceptedAnnotations {
        doc_id: id,
        annotations,
    }))
}

pub async fn accept(
    State(node): State<AppState>,
    _auth: Authorized,
    Path(aid): Path<String>,
) -> Result<Json<DecisionOutcome>, ApiError> {
    decide(&node, &aid, AnnotationState::Accepted).await
}

pub async fn reject(
    State(node): State<AppState>,
    _auth: Authorized,
    Path(aid): Path<String>,
) -> Result<Json<DecisionOutcome>, ApiError> {
    decide(&node, &aid, AnnotationState::Rejected).await
}
