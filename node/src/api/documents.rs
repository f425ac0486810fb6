//! Document resources: publish, new version, tombstone, reactivate, metadata, versions and the
//! directory listing/search.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use docfed_shared::wire::{
    DocumentList, DocumentMeta, DocumentVersion, PublishResponse, VersionList,
};
use docfed_shared::Scope;
use serde::Deserialize;

use super::search::bounded_fts_query;
use super::{parse_id, refuse, ApiQuery, AppState, Authorized};
use crate::db::{Cursor, DeletedFilter, ListFilter};
use crate::edits::MetaInput;
use crate::error::ApiError;
use crate::store::Ingested;

use docfed_shared::limits::{
    MAX_CONTENT_TYPE, MAX_DESCRIPTION, MAX_FILENAME, MAX_SOURCE, MAX_TAG, MAX_TAGS, MAX_TITLE,
};

/// Metadata of a publication or a new version, as the query string carries it.
/// `POST /v1/documents/batch` takes the same fields as JSON, per item (`batch`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaParams {
    pub(super) title: Option<String>,
    pub(super) description: Option<String>,
    /// Comma-separated.
    pub(super) tags: Option<String>,
    pub(super) filename: Option<String>,
    pub(super) source: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) content_type: Option<String>,
    pub(super) author: Option<String>,
}

impl MetaParams {
    /// Validates every field, naming the first bad one. `content_type` falls back to the
    /// `Content-Type` the content was sent with (`declared`: the request's, or a batch part's).
    pub(super) fn validate(
        self,
        declared: Option<&HeaderValue>,
        title_required: bool,
    ) -> Result<MetaInput, ApiError> {
        let title = match self.title {
            Some(t) => Some(text_field("title", t.trim(), 1, MAX_TITLE)?),
            None if title_required => return Err(ApiError::invalid("title", "is required")),
            None => None,
        };
        let description = self
            .description
            .map(|d| multiline_field("description", &d, MAX_DESCRIPTION))
            .transpose()?;
        let filename = self
            .filename
            .map(|f| text_field("filename", f.trim(), 1, MAX_FILENAME))
            .transpose()?;
        let source = self
            .source
            .map(|s| text_field("source", s.trim(), 0, MAX_SOURCE))
            .transpose()?;
        let tags = self.tags.map(|t| parse_tags(&t)).transpose()?;
        let author = self
            .author
            .map(|a| text_field("author", a.trim(), 0, MAX_SOURCE))
            .transpose()?;
        let scope = self
            .scope
            .map(|s| {
                s.parse::<Scope>()
                    .map_err(|e| ApiError::invalid("scope", e.to_string()))
            })
            .transpose()?;
        let content_type = match self.content_type {
            Some(ct) => Some(content_type("content_type", &ct)?),
            None => match declared.map(|v| v.to_str()) {
                Some(Err(_)) => return Err(ApiError::invalid("content_type", "is not ASCII")),
                // curl and browsers label a raw body as a form by default: that says nothing
                // about the document, so the file name is a better guess.
                Some(Ok(v)) if !is_form_type(v) => Some(content_type("content_type", v)?),
                _ => filename
                    .as_deref()
                    .and_then(|f| mime_guess::from_path(f).first_raw())
                    .map(str::to_owned),
            },
        };
        Ok(MetaInput {
            title,
            description,
            tags,
            filename,
            source,
            scope,
            content_type,
            author,
        })
    }
}

fn text_field(field: &'static str, v: &str, min: usize, max: usize) -> Result<String, ApiError> {
    let n = v.chars().count();
    if n < min {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if n > max {
        return Err(ApiError::invalid(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(v.to_owned())
}

fn multiline_field(field: &'static str, v: &str, max: usize) -> Result<String, ApiError> {
    if v.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if v.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(v.to_owned())
}

fn parse_tags(raw: &str) -> Result<Vec<String>, ApiError> {
    let mut tags: Vec<String> = Vec::new();
    for t in raw.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if t.chars().count() > MAX_TAG {
            return Err(ApiError::invalid(
                "tags",
                format!("tag {t:?} is longer than {MAX_TAG} characters"),
            ));
        }
        if t.chars().any(|c| c.is_control()) {
            return Err(ApiError::invalid(
                "tags",
                "must not contain control characters",
            ));
        }
        let t = t.to_lowercase();
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    Ok(tags)
}

fn is_form_type(v: &str) -> bool {
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/x-www-form-urlencoded" || essence == "multipart/form-data"
}

fn content_type(field: &'static str, v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    let essence = v.split(';').next().unwrap_or("").trim();
    let valid_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match essence.split_once('/') {
        Some((t, s))
            if valid_token(t)
                && valid_token(s)
                && v.len() <= MAX_CONTENT_TYPE
                && v.is_ascii()
                && !v.chars().any(|c| c.is_ascii_control()) =>
        {
            Ok(v.to_owned())
        }
        _ => Err(ApiError::invalid(
            field,
            format!("{v:?} is not a media type such as text/plain"),
        )),
    }
}

/// Streams the request body into the store, after refusing early what cannot succeed.
async fn receive(node: &AppState, headers: &HeaderMap, body: Body) -> Result<Ingested, ApiError> {
    let limit = node.config.max_upload_size;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return Err(refuse(body, ApiError::TooLarge { limit }).await);
        }
        if let Err(e) = node.store.check_space(len) {
            return Err(refuse(body, e.into()).await);
        }
    }
    Ok(node
        .store
        .ingest(
            body.into_data_stream(),
            limit,
            node.config.upload_idle_timeout,
        )
        .await?)
}

fn published(v: &DocumentVersion) -> Json<PublishResponse> {
    Json(PublishResponse {
        id: v.id,
        version: v.version,
        md5: v.md5.clone(),
        size: v.size,
    })
}

pub async fn publish(
    State(node): State<AppState>,
    _auth: Authorized,
    ApiQuery(params): ApiQuery<MetaParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    let meta = params.validate(headers.get(header::CONTENT_TYPE), true)?;
    let content = receive(&node, &headers, body).await?;
    let v = node.publish(meta, content).await?;
    Ok((StatusCode::CREATED, published(&v)))
}

pub async fn new_version(
    State(node): State<AppState>,
    _auth: Authorized,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<MetaParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishResponse>, ApiError> {
    let id = parse_id(&id)?;
    let meta = params.validate(headers.get(header::CONTENT_TYPE), false)?;
    // Refuse before receiving gigabytes for a document that cannot take a new version.
    match node.db.document(&id).await? {
        None => return Err(refuse(body, ApiError::not_found(format!("document {id}"))).await),
        Some(d) if d.current.deleted => {
            let e = ApiError::Conflict(format!("document {id} is deleted; reactivate it first"));
            return Err(refuse(body, e).await);
        }
        Some(_) => {}
    }
    let content = receive(&node, &headers, body).await?;
    let v = node.new_version(id, meta, content).await?;
    Ok(published(&v))
}

pub async fn tombstone(
    State(node): State<AppState>,
    _auth: Authorized,
    Path(id): Path<String>,
) -> Result<Json<PublishResponse>, ApiError> {
    let v = node.tombstone(parse_id(&id)?).await?;
    Ok(published(&v))
}

pub async fn reactivate(
    State(node): State<AppState>,
    _auth: Authorized,
    Path(id): Path<String>,
) -> Result<Json<PublishResponse>, ApiError> {
    let v = node.reactivate(parse_id(&id)?).await?;
    Ok(published(&v))
}

pub async fn metadata(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DocumentMeta>, ApiError> {
    let id = parse_id(&id)?;
    let mut doc = node
        .db
        .document(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("document {id}")))?;
    doc.available_at = node.holders(&doc.current.scope);
    Ok(Json(doc))
}

pub async fn versions(
    State(node): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    let id = parse_id(&id)?;
    node.db
        .versions(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("document {id}")))
}

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    q: Option<String>,
    /// Shorthand for `scope=region:R`.
    region: Option<String>,
    scope: Option<String>,
    tag: Option<String>,
    /// `false` (default), `true` (only tombstones) or `any`.
    deleted: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    source: Option<String>,
    author: Option<String>,
    content_type: Option<String>,
    /// First published at or after this time (RFC 3339, or a date `YYYY-MM-DD`).
    since: Option<String>,
    /// First published before this time.
    until: Option<String>,
}

fn parse_time(field: &'static str, v: &str) -> Result<i64, ApiError> {
    let text = if v.len() == 10 {
        format!("{v}T00:00:00Z")
    } else {
        v.to_owned()
    };
    let t = humantime::parse_rfc3339_weak(&text).map_err(|_| {
        ApiError::invalid(
            field,
            format!("{v:?} is not a date (YYYY-MM-DD) or RFC 3339 time"),
        )
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

pub async fn list(
    State(node): State<AppState>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<DocumentList>, ApiError> {
    let scope = match (p.scope, p.region) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "region",
                "give either `scope` or `region`, not both",
            ))
        }
        (Some(s), None) => Some(
            s.parse::<Scope>()
                .map_err(|e| ApiError::invalid("scope", e.to_string()))?,
        ),
        (None, Some(r)) => Some(
            format!("region:{r}")
                .parse::<Scope>()
                .map_err(|_| ApiError::invalid("region", format!("{r:?} is not a region name")))?,
        ),
        (None, None) => None,
    };
    let deleted = match p.deleted.as_deref() {
        None | Some("false") => DeletedFilter::Exclude,
        Some("true") => DeletedFilter::Only,
        Some("any") => DeletedFilter::Include,
        Some(other) => {
            return Err(ApiError::invalid(
                "deleted",
                format!("must be true, false or any, not {other:?}"),
            ))
        }
    };
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let fts = match p.q.as_deref() {
        Some(q) => bounded_fts_query(q).map_err(|why| ApiError::invalid("q", why))?,
        None => None,
    };
    let cursor = p
        .cursor
        .map(|c| {
            Cursor::decode(&c)
                .filter(|c| matches!(c, Cursor::Offset(_)) == fts.is_some())
                .ok_or_else(|| {
                    ApiError::invalid("cursor", "is not a cursor returned by this search")
                })
        })
        .transpose()?;
    let filter = ListFilter {
        fts,
        scope,
        tag: p.tag.map(|t| t.trim().to_lowercase()),
        source: p.source,
        author: p.author,
        content_type: p.content_type,
        since: p
            .since
            .as_deref()
            .map(|v| parse_time("since", v))
            .transpose()?,
        until: p
            .until
            .as_deref()
            .map(|v| parse_time("until", v))
            .transpose()?,
        deleted,
        limit,
        cursor,
    };
    let mut list = match node.db.list(&filter).await {
        Err(e) if crate::db::is_interrupted(&e) => {
            return Err(ApiError::invalid(
                "q",
                format!(
                    "the search was stopped after {} (limit `search_deadline`): it matches too \
                     much; use longer words or fewer prefix searches",
                    humantime::format_duration(node.db.search_deadline())
                ),
            ))
        }
        other => other?,
    };
    for d in &mut list.documents {
        d.available_at = node.holders(&d.current.scope);
    }
    Ok(Json(list))
}
