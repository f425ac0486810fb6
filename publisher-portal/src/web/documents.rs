//! The author's documents: the list with search and filters, publishing and new versions
//! (streamed by `upload`), a document's page, downloading the author's own file, delete and
//! reactivate.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Form;
use docfed_shared::wire::{DocumentMeta, VersionList};
use docfed_shared::DocId;
use serde::Deserialize;

use crate::db::{DocFilter, DocRow, SessionRow};
use crate::error::PortalError;
use crate::upload;
use crate::views::{self, FormValues, Nav};
use docfed_shared::wire::propagation::Propagation;

use super::*;

pub(super) const PAGE_SIZE: u32 = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ListQuery {
    pub(super) q: String,
    pub(super) scope: String,
    pub(super) tag: String,
    pub(super) state: String,
    pub(super) offset: u32,
    pub(super) done: String,
}

pub(super) async fn documents(
    State(st): State<AppState>,
    Author(s): Author,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, PortalError> {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let filter = DocFilter {
        q: q.q.chars().take(200).collect(),
        scope: q.scope,
        tag: q.tag.trim().chars().take(64).collect(),
        state: match q.state.as_str() {
            "deleted" | "any" => q.state,
            _ => "live".into(),
        },
        offset: q.offset.min(1_000_000),
        limit: PAGE_SIZE,
    };
    let mut rows = st.db.list_documents(s.author_id, &filter).await?;
    let has_more = rows.len() > PAGE_SIZE as usize;
    rows.truncate(PAGE_SIZE as usize);
    let (ctx, propagation) = tokio::join!(
        st.page(Some(&s), Some(&q.done), Nav::Documents),
        list_propagation(&st, &rows),
    );
    Ok(html(
        StatusCode::OK,
        views::documents_page(
            &ctx,
            &views::ListPage {
                filter: &filter,
                rows: &rows,
                has_more,
                regions: &st.config.regions,
                propagation: &propagation,
            },
        ),
    ))
}

pub(super) async fn publish_form(State(st): State<AppState>, Author(s): Author) -> Response {
    let ctx = st.page(Some(&s), None, Nav::Publish).await;
    let values = FormValues {
        scope: "global".into(),
        ..Default::default()
    };
    html(
        StatusCode::OK,
        views::publish_page(&ctx, &upload::publish_form(&st, &s, &values, &[])),
    )
}

pub(super) async fn publish(
    State(st): State<AppState>,
    Author(s): Author,
    req: Request,
) -> Response {
    upload::receive(&st, &s, None, req).await
}

pub(super) async fn new_version(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, PortalError> {
    let doc = owned(&st, &s, &id).await?;
    Ok(upload::receive(&st, &s, Some(doc), req).await)
}

/// The cached row of a document the author owns, or 404 (also for someone else's document).
pub(super) async fn owned(st: &AppState, s: &SessionRow, id: &str) -> Result<DocRow, PortalError> {
    if id.parse::<DocId>().is_err() {
        return Err(PortalError::NotFound);
    }
    st.db
        .owned_document(s.author_id, id)
        .await?
        .ok_or(PortalError::NotFound)
}

/// Fresh metadata from a primary, cached; the cached row when no primary answers.
pub(super) async fn refresh(st: &AppState, doc: DocRow) -> Result<(DocRow, bool), PortalError> {
    match st
        .primaries
        .get_json::<DocumentMeta>(&format!("/v1/documents/{}", doc.doc_id), &[])
        .await
    {
        Ok((meta, _)) => {
            let row = DocRow::from_meta(&meta);
            st.db.update_document(&row).await?;
            Ok((row, false))
        }
        Err(e) if e.is_not_found() => {
            // Published through the other primary a moment ago and not replicated yet: the
            // cache is the best there is.
            Ok((doc, true))
        }
        Err(crate::primaries::NodeError::Unavailable(_)) => Ok((doc, true)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DoneQuery {
    pub(super) done: String,
}

pub(super) async fn document(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
    q: Result<Query<DoneQuery>, QueryRejection>,
) -> Result<Response, PortalError> {
    let cached = owned(&st, &s, &id).await?;
    let (doc, stale) = refresh(&st, cached).await?;
    let versions_path = format!("/v1/documents/{id}/versions");
    let propagation_path = format!("/v1/documents/{id}/propagation");
    let (versions, prop, accepted, presence) = tokio::join!(
        st.primaries.get_json::<VersionList>(&versions_path, &[]),
        st.primaries.get_json::<Propagation>(&propagation_path, &[]),
        st.primaries.annotations("accepted", Some(&id)),
        st.primaries.presence(),
    );
    let versions = versions.ok().map(|(v, _)| v.versions);
    let tombstones: Vec<i64> = versions
        .iter()
        .flatten()
        .filter(|v| v.version.deleted)
        .map(|v| v.version.version)
        .collect();
    let prop = prop.ok().map(|(p, _)| {
        let published = (doc.version == p.version).then_some(doc.updated_at);
        prop_view(&st, p, Some(&presence), published, &tombstones)
    });
    let accepted = accepted.ok();
    let values = FormValues {
        title: doc.title.clone(),
        description: doc.description.clone(),
        tags: doc.tags.join(", "),
        source: doc.source.clone(),
        scope: doc.scope.clone(),
    };
    let ctx = st
        .page(
            Some(&s),
            q.as_ref().ok().map(|Query(q)| q.done.as_str()),
            Nav::None,
        )
        .await;
    let form = (!doc.deleted).then(|| upload::version_form(&st, &s, &doc, &values, &[]));
    Ok(html(
        StatusCode::OK,
        views::document_page(
            &ctx,
            &views::DocPage {
                doc: &doc,
                stale,
                versions: versions.as_deref(),
                propagation: prop.as_ref(),
                accepted: accepted.as_deref(),
                form,
            },
        ),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DownloadQuery {
    pub(super) version: Option<i64>,
}

/// The author's own file: the current version, or `?version=N`. Streamed from a primary (with
/// the token, so old versions of a deleted document come too) chunk by chunk as it arrives,
/// never held whole; `Range`, `If-Range` and `If-None-Match` go through, so a browser can resume.
/// The primary's `Content-Disposition` (the author's file name, RFC 6266) is passed on, and the
/// bytes are never rendered on the portal's origin: `attachment`, `nosniff` and a sandboxing CSP.
pub(super) async fn download(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
    q: Result<Query<DownloadQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PortalError> {
    owned(&st, &s, &id).await?;
    let Ok(Query(q)) = q else {
        return Err(PortalError::NotFound);
    };
    let mut query = Vec::new();
    if let Some(v) = q.version {
        query.push(("version", v.to_string()));
    }
    let mut forward = reqwest::header::HeaderMap::new();
    for h in [header::RANGE, header::IF_RANGE, header::IF_NONE_MATCH] {
        if let Some(v) = headers.get(&h) {
            forward.insert(h, v.clone());
        }
    }
    let (r, i) = st
        .primaries
        .download(&format!("/v1/documents/{id}/content"), &query, forward)
        .await?;
    let status = r.status();
    if !(status.is_success()
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::RANGE_NOT_SATISFIABLE)
    {
        return Err(match status {
            StatusCode::NOT_FOUND => PortalError::NotFound,
            _ => crate::primaries::refused(st.primaries.get(i).name.clone(), r)
                .await
                .into(),
        });
    }
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = status;
    let out = resp.headers_mut();
    for h in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::ETAG,
        header::CONTENT_DISPOSITION,
    ] {
        if let Some(v) = r.headers().get(&h) {
            out.insert(h, v.clone());
        }
    }
    out.entry(header::CONTENT_DISPOSITION)
        .or_insert(HeaderValue::from_static("attachment"));
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    out.insert(
        "content-security-policy",
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    *resp.body_mut() = axum::body::Body::from_stream(r.bytes_stream());
    Ok(resp)
}

pub(super) async fn delete_form(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let doc = owned(&st, &s, &id).await?;
    if doc.deleted {
        return Ok(see_other(&format!("/documents/{id}")));
    }
    let ctx = st.page(Some(&s), None, Nav::None).await;
    Ok(html(StatusCode::OK, views::delete_confirm(&ctx, &doc)))
}

pub(super) async fn delete(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PortalError> {
    let Form(f) = form.map_err(|_| PortalError::csrf())?;
    check_csrf(&s, &f.csrf)?;
    owned(&st, &s, &id).await?;
    metadata_write(&st, reqwest::Method::DELETE, &format!("/v1/documents/{id}")).await?;
    tracing::info!(author = %s.author_name, doc_id = %id, "deleted");
    Ok(see_other(&format!("/documents/{id}?done=deleted")))
}

pub(super) async fn reactivate(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PortalError> {
    let Form(f) = form.map_err(|_| PortalError::csrf())?;
    check_csrf(&s, &f.csrf)?;
    owned(&st, &s, &id).await?;
    metadata_write(
        &st,
        reqwest::Method::POST,
        &format!("/v1/documents/{id}/reactivate"),
    )
    .await?;
    tracing::info!(author = %s.author_name, doc_id = %id, "reactivated");
    Ok(if f.back == "annotations" {
        see_other("/annotations?done=reactivated")
    } else {
        see_other(&format!("/documents/{id}?done=reactivated"))
    })
}

/// Delete or reactivate (retried on the other primary if one is down), then refresh the cache
/// from the primary that did it.
pub(super) async fn metadata_write(
    st: &AppState,
    method: reqwest::Method,
    path: &str,
) -> Result<(), PortalError> {
    let (done, i) = st.primaries.write(method, path).await?;
    match st
        .primaries
        .get_json_from::<DocumentMeta>(i, &format!("/v1/documents/{}", done.id))
        .await
    {
        Ok(meta) => st.db.update_document(&DocRow::from_meta(&meta)).await?,
        Err(e) => tracing::warn!(error = %e, "cannot read back the document after a change"),
    }
    Ok(())
}

// ---------------------------------------------------------------- federation
