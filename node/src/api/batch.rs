//! Bulk publication, `POST /v1/documents/batch`: many documents in one `multipart/form-data`
//! request, for launch-day peaks (issue 40; README "Publishing many documents at once").
//!
//! Each document is a part named `file`; its `filename=` (the last component of it) is the
//! document's file name. A part named `meta` immediately before a `file` part carries that
//! item's metadata: a JSON object with the fields of `POST /v1/documents`' query string (`tags`
//! a comma-separated string or an array of strings). The query string gives defaults for every
//! item; the title defaults to the file name. Parts of other names are read past.
//!
//! Items are read in order, each streamed into the store under `max_upload_size`. Every
//! [`CHUNK_ITEMS`] items (or [`CHUNK_BYTES`]) the chunk is published at once, so the edit
//! recorder, which records together the edits waiting for it, commits the chunk in one
//! transaction; the next chunk is read meanwhile. An item that cannot be published (too large,
//! bad metadata) is refused with its reason and the others are published: the answer lists every
//! item, in order, published or refused.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::Json;
use docfed_shared::wire::batch::{BatchItem, BatchResponse, ItemError, ItemOutcome};
use docfed_shared::wire::PublishResponse;
use serde::Deserialize;

use super::documents::MetaParams;
use super::{refuse, ApiQuery, AppState, Authorized, DRAIN_LIMIT, DRAIN_TIME};
use crate::edits::MetaInput;
use crate::error::ApiError;
use crate::store::{Ingested, StoreError};

/// Most `file` parts in one request: the answer lists each, so it stays a few megabytes.
pub const MAX_ITEMS: usize = 10_000;
/// Largest `meta` part.
pub const MAX_META: usize = 64 * 1024;
/// Items published together, in (about) one transaction.
const CHUNK_ITEMS: usize = 256;
/// A chunk is also published once its items hold this many bytes, so that what waits for its
/// commit stays bounded whatever the items' sizes.
const CHUNK_BYTES: u64 = 32 * 1024 * 1024;

/// `POST /v1/documents/batch`.
pub async fn publish(
    State(node): State<AppState>,
    _auth: Authorized,
    ApiQuery(defaults): ApiQuery<MetaParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchResponse>, ApiError> {
    // What fails every item fails the request, before its body is read.
    if let Err(e) = node.check_primary() {
        return Err(refuse(body, e).await);
    }
    if let Err(e) = defaults.clone().validate(None, false) {
        return Err(refuse(body, e).await);
    }
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        let e = ApiError::BadRequest(
            "POST /v1/documents/batch takes multipart/form-data: one part named `file` per \
             document (e.g. curl -F file=@report.pdf -F file=@notes.txt)"
                .into(),
        );
        return Err(refuse(body, e).await);
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if let Err(e) = node.store.check_space(len) {
            return Err(refuse(body, e.into()).await);
        }
    }

    let mut reader = Reader {
        node: node.clone(),
        parts: multer::Multipart::new(body.into_data_stream(), boundary),
        defaults,
        meta: None,
        next_index: 0,
        idle: node.config.upload_idle_timeout,
    };
    let mut items = Vec::new();
    let mut read: Vec<Entry> = Vec::new();
    // One chunk is published while the next is read.
    let flow = loop {
        let publishing = publish_chunk(&node, std::mem::take(&mut read));
        let (published, (chunk, flow)) = futures::join!(publishing, reader.read_chunk());
        items.extend(published);
        read = chunk;
        if !matches!(flow, Flow::More) {
            break flow;
        }
    };
    items.extend(publish_chunk(&node, read).await);
    match flow {
        Flow::Broken(Some(e)) if items.is_empty() => return Err(e),
        Flow::Broken(Some(e)) => items.push(refused(reader.next_index, None, &e)),
        Flow::TooMany => reader.drain_rest().await,
        Flow::More | Flow::End | Flow::Broken(None) => {}
    }
    if items.is_empty() {
        return Err(ApiError::BadRequest(
            "the request has no part named `file`: send one per document".into(),
        ));
    }
    let published = items
        .iter()
        .filter(|i| matches!(i.outcome, ItemOutcome::Published(_)))
        .count();
    let refused = items.len() - published;
    tracing::info!(published, refused, "bulk publication");
    Ok(Json(BatchResponse {
        published,
        refused,
        items,
    }))
}

/// An item read from the request: refused already, or ingested and waiting for its chunk's
/// publication.
enum Entry {
    Done(BatchItem),
    Ingested(Box<Pending>),
}

/// An item ingested, waiting for its chunk's publication.
struct Pending {
    index: usize,
    filename: Option<String>,
    meta: MetaInput,
    content: Ingested,
}

/// Where the reading of the request stands after a part.
enum Flow {
    More,
    /// The request ended properly.
    End,
    /// The request cannot be read any further (the client broke off, or sent something that is
    /// not multipart): the reason, unless an item's refusal already says it.
    Broken(Option<ApiError>),
    /// A `file` part past [`MAX_ITEMS`]: refused, and the rest of the request not read.
    TooMany,
}

/// Per-item metadata (a `meta` part): the query string's fields, `tags` also as an array.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemMeta {
    title: Option<String>,
    description: Option<String>,
    tags: Option<serde_json::Value>,
    filename: Option<String>,
    source: Option<String>,
    scope: Option<String>,
    content_type: Option<String>,
    author: Option<String>,
}

impl ItemMeta {
    /// `defaults` with this item's fields over them. The file name is this item's, else the
    /// part's `filename=`, else the default; the title this item's, else the default, else the
    /// file name.
    fn over(
        self,
        defaults: &MetaParams,
        part_filename: Option<String>,
    ) -> Result<MetaParams, ApiError> {
        let tags = match self.tags {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Array(list)) => {
                let mut joined = Vec::with_capacity(list.len());
                for t in list {
                    match t {
                        serde_json::Value::String(t) if !t.contains(',') => joined.push(t),
                        serde_json::Value::String(t) => {
                            return Err(ApiError::invalid(
                                "tags",
                                format!("tag {t:?} contains a comma"),
                            ))
                        }
                        _ => {
                            return Err(ApiError::invalid("tags", "must be strings"));
                        }
                    }
                }
                Some(joined.join(","))
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "tags",
                    "must be a comma-separated string or an array of strings",
                ))
            }
        };
        let d = defaults.clone();
        let filename = self.filename.or(part_filename).or(d.filename);
        Ok(MetaParams {
            title: self.title.or(d.title).or_else(|| filename.clone()),
            description: self.description.or(d.description),
            tags: tags.or(d.tags),
            filename,
            source: self.source.or(d.source),
            scope: self.scope.or(d.scope),
            content_type: self.content_type.or(d.content_type),
            author: self.author.or(d.author),
        })
    }
}

/// Reads the request's parts in order.
struct Reader {
    node: AppState,
    parts: multer::Multipart<'static>,
    defaults: MetaParams,
    /// The `meta` part read for the next `file` part, or why it is refused.
    meta: Option<Result<ItemMeta, ApiError>>,
    /// The index of the next `file` part.
    next_index: usize,
    idle: Duration,
}

impl Reader {
    /// Reads items until a chunk is full or the request ends.
    async fn read_chunk(&mut self) -> (Vec<Entry>, Flow) {
        let mut chunk = Vec::new();
        let (mut count, mut bytes) = (0usize, 0u64);
        while count < CHUNK_ITEMS && bytes < CHUNK_BYTES {
            let before = chunk.len();
            let flow = self.next_part(&mut chunk).await;
            if !matches!(flow, Flow::More) {
                return (chunk, flow);
            }
            // A `meta` part adds no entry.
            if let (true, Some(Entry::Ingested(pending))) = (chunk.len() > before, chunk.last()) {
                count += 1;
                bytes += pending.content.size;
            }
        }
        (chunk, Flow::More)
    }

    /// Reads one part: a `file` part becomes an entry of `chunk`.
    async fn next_part(&mut self, chunk: &mut Vec<Entry>) -> Flow {
        let field = match tokio::time::timeout(self.idle, self.parts.next_field()).await {
            Err(_) => return Flow::Broken(Some(self.idle_error())),
            Ok(Err(e)) => return Flow::Broken(Some(malformed(e))),
            Ok(Ok(None)) => {
                if let Some(meta) = self.meta.take() {
                    let e = meta.err().unwrap_or_else(|| {
                        ApiError::BadRequest(
                            "the last `meta` part has no `file` part after it".into(),
                        )
                    });
                    chunk.push(Entry::Done(refused(self.next_index, None, &e)));
                }
                return Flow::End;
            }
            Ok(Ok(Some(field))) => field,
        };
        match field.name() {
            Some("file") => self.read_file(field, chunk).await,
            Some("meta") => {
                let meta = match self.read_meta(field).await {
                    Ok(meta) => meta,
                    Err(broken) => return Flow::Broken(Some(broken)),
                };
                self.meta = Some(match self.meta.take() {
                    None => meta,
                    Some(_) => Err(ApiError::BadRequest(
                        "two `meta` parts in a row: each must come immediately before its \
                         `file` part"
                            .into(),
                    )),
                });
                Flow::More
            }
            other => {
                let name = other.unwrap_or("").to_owned();
                let mut field = field;
                if let Err(broken) = self.drain_field(&mut field).await {
                    return Flow::Broken(Some(broken));
                }
                if self.meta.is_some() {
                    self.meta = Some(Err(ApiError::BadRequest(format!(
                        "a part named {name:?} came between a `meta` part and its `file` part"
                    ))));
                }
                Flow::More
            }
        }
    }

    /// A `meta` part: its metadata, or why its item is refused. `Err` when the request broke.
    async fn read_meta(
        &mut self,
        mut field: multer::Field<'static>,
    ) -> Result<Result<ItemMeta, ApiError>, ApiError> {
        let mut text = Vec::new();
        loop {
            match tokio::time::timeout(self.idle, field.chunk()).await {
                Err(_) => return Err(self.idle_error()),
                Ok(Err(e)) => return Err(malformed(e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) if text.len() + c.len() > MAX_META => {
                    self.drain_field(&mut field).await?;
                    return Ok(Err(ApiError::BadRequest(format!(
                        "the `meta` part is longer than {MAX_META} bytes"
                    ))));
                }
                Ok(Ok(Some(c))) => text.extend_from_slice(&c),
            }
        }
        Ok(serde_json::from_slice::<ItemMeta>(&text)
            .map_err(|e| ApiError::BadRequest(format!("the `meta` part is not valid: {e}"))))
    }

    /// A `file` part: ingested, or refused with its bytes read past.
    async fn read_file(
        &mut self,
        mut field: multer::Field<'static>,
        chunk: &mut Vec<Entry>,
    ) -> Flow {
        let index = self.next_index;
        let part_filename = field.file_name().map(last_component);
        if index >= MAX_ITEMS {
            let e = ApiError::BadRequest(format!(
                "a request carries at most {MAX_ITEMS} documents: this one and those after it \
                 were not read; send them in another request"
            ));
            chunk.push(Entry::Done(refused(index, part_filename, &e)));
            return Flow::TooMany;
        }
        self.next_index += 1;
        // A part labelled application/octet-stream (curl's default) says nothing about the
        // document: its file name is a better guess.
        let declared = field
            .headers()
            .get(header::CONTENT_TYPE)
            .filter(|v| v.as_bytes() != b"application/octet-stream")
            .cloned();
        let meta = self.meta.take().unwrap_or_else(|| Ok(ItemMeta::default()));
        let prepared = meta
            .and_then(|m| m.over(&self.defaults, part_filename.clone()))
            .and_then(|p| validate(p, declared.as_ref()));
        let meta = match prepared {
            Ok(meta) => meta,
            Err(e) => {
                return self
                    .refuse_file(field, chunk, index, part_filename, e)
                    .await
            }
        };
        let filename = meta.filename.clone();
        if let Err(e) = self.node.store.check_space(1) {
            return self
                .refuse_file(field, chunk, index, filename, e.into())
                .await;
        }
        let limit = self.node.config.max_upload_size;
        match self.node.store.ingest(&mut field, limit, self.idle).await {
            Ok(content) => {
                chunk.push(Entry::Ingested(Box::new(Pending {
                    index,
                    filename,
                    meta,
                    content,
                })));
                Flow::More
            }
            // The request itself broke off: nothing after this item can be read.
            Err(e @ (StoreError::BodyAborted(_) | StoreError::IdleTimeout(_))) => {
                chunk.push(Entry::Done(refused(index, filename, &e.into())));
                Flow::Broken(None)
            }
            Err(e) => {
                self.refuse_file(field, chunk, index, filename, e.into())
                    .await
            }
        }
    }

    /// Refuses the item of `field` with `e`, reading past the rest of its bytes.
    async fn refuse_file(
        &mut self,
        mut field: multer::Field<'static>,
        chunk: &mut Vec<Entry>,
        index: usize,
        filename: Option<String>,
        e: ApiError,
    ) -> Flow {
        chunk.push(Entry::Done(refused(index, filename, &e)));
        match self.drain_field(&mut field).await {
            Ok(()) => Flow::More,
            Err(broken) => Flow::Broken(Some(broken)),
        }
    }

    /// Reads and drops the rest of a part; `Err` when the request broke off meanwhile.
    async fn drain_field(&self, field: &mut multer::Field<'static>) -> Result<(), ApiError> {
        loop {
            match tokio::time::timeout(self.idle, field.chunk()).await {
                Err(_) => return Err(self.idle_error()),
                Ok(Err(e)) => return Err(malformed(e)),
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(_))) => {}
            }
        }
    }

    /// Reads and drops a bounded part of what is left of the request before it is answered
    /// early (see `api::refuse`): past the bound the connection is closed.
    async fn drain_rest(&mut self) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIME;
        let mut drained = 0usize;
        while let Ok(Ok(Some(mut field))) =
            tokio::time::timeout_at(deadline, self.parts.next_field()).await
        {
            while let Ok(Ok(Some(c))) = tokio::time::timeout_at(deadline, field.chunk()).await {
                drained += c.len();
                if drained > DRAIN_LIMIT {
                    return;
                }
            }
        }
    }

    fn idle_error(&self) -> ApiError {
        ApiError::UploadAborted(StoreError::IdleTimeout(self.idle).to_string())
    }
}

/// A request whose multipart body cannot be read further.
fn malformed(e: multer::Error) -> ApiError {
    ApiError::UploadAborted(format!("the multipart/form-data body cannot be read: {e}"))
}

/// An item's metadata, validated as a single publication's; it must have a file name.
fn validate(p: MetaParams, declared: Option<&HeaderValue>) -> Result<MetaInput, ApiError> {
    if p.filename.is_none() {
        return Err(ApiError::invalid(
            "filename",
            "is required: give the `file` part a filename= (or `filename` in its `meta` part)",
        ));
    }
    p.validate(declared, true)
}

/// The file name without the directories some clients send with it.
fn last_component(name: &str) -> String {
    name.rsplit(['/', '\\']).next().unwrap_or(name).to_owned()
}

/// Publishes the ingested items of `chunk` together and answers every entry, in order.
async fn publish_chunk(node: &AppState, chunk: Vec<Entry>) -> Vec<BatchItem> {
    // Polled together, every publication joins the edit recorder's queue before the recorder
    // takes it: one transaction (two, when the recorder started on the first meanwhile).
    let answers = chunk.into_iter().map(|entry| async move {
        match entry {
            Entry::Done(item) => item,
            Entry::Ingested(pending) => {
                let Pending {
                    index,
                    filename,
                    meta,
                    content,
                } = *pending;
                match node.publish(meta, content).await {
                    Ok(v) => BatchItem {
                        index,
                        filename,
                        outcome: ItemOutcome::Published(PublishResponse {
                            id: v.id,
                            version: v.version,
                            md5: v.md5,
                            size: v.size,
                        }),
                    },
                    Err(e) => refused(index, filename, &e),
                }
            }
        }
    });
    futures::future::join_all(answers).await
}

/// The answer for a refused item, in the terms of a single publication's error.
fn refused(index: usize, filename: Option<String>, e: &ApiError) -> BatchItem {
    if e.status().is_server_error() {
        tracing::warn!(index, error = ?e, "bulk publication: item failed");
    }
    BatchItem {
        index,
        filename,
        outcome: ItemOutcome::Refused {
            error: ItemError {
                code: e.code(),
                message: e.to_string(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(json: &str) -> ItemMeta {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_item_takes_its_own_fields_then_the_defaults_then_its_file_name() {
        let defaults = MetaParams {
            scope: Some("eu".into()),
            tags: Some("a,b".into()),
            ..MetaParams::default()
        };
        let p = meta(r#"{"tags":["x","y"]}"#)
            .over(&defaults, Some("r.pdf".into()))
            .unwrap();
        assert_eq!(p.tags.as_deref(), Some("x,y"));
        assert_eq!(p.scope.as_deref(), Some("eu"));
        assert_eq!(p.filename.as_deref(), Some("r.pdf"));
        assert_eq!(p.title.as_deref(), Some("r.pdf"));
        let p = meta(r#"{"title":"T","filename":"s.txt"}"#)
            .over(&defaults, Some("r.pdf".into()))
            .unwrap();
        assert_eq!(p.title.as_deref(), Some("T"));
        assert_eq!(p.filename.as_deref(), Some("s.txt"));
        assert_eq!(p.tags.as_deref(), Some("a,b"));
    }

    #[test]
    fn tags_are_a_string_or_an_array_of_strings_without_commas() {
        let d = MetaParams::default();
        assert!(meta(r#"{"tags":"a, b"}"#).over(&d, None).is_ok());
        assert!(meta(r#"{"tags":["a,b"]}"#).over(&d, None).is_err());
        assert!(meta(r#"{"tags":[1]}"#).over(&d, None).is_err());
        assert!(meta(r#"{"tags":7}"#).over(&d, None).is_err());
        assert!(serde_json::from_str::<ItemMeta>(r#"{"titel":"x"}"#).is_err());
    }

    #[test]
    fn a_file_name_loses_its_directories() {
        assert_eq!(last_component("a/b/c.txt"), "c.txt");
        assert_eq!(last_component("C:\\x\\y.doc"), "y.doc");
        assert_eq!(last_component("plain"), "plain");
    }
}
