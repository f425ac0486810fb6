//! Publishing and new versions: the browser's multipart upload, streamed to a primary.
//!
//! The form's fields arrive in document order: `csrf`, the text fields, then `file` **last**.
//! The portal reads and checks the small fields first (CSRF token, title, scope, ...) and only
//! then starts the request to the primary, piping the file part into it chunk by chunk through
//! a bounded channel ([`CHANNEL_CHUNKS`] chunks): the portal never holds more than a few chunks of
//! a file, whatever its size, and the browser is slowed to the primary's pace (backpressure).
//!
//! Outcomes, and what the author sees:
//! * bad CSRF token → 403, nothing read further;
//! * bad fields → the form again with every problem and what was typed (the rest of the upload
//!   is read and discarded first, so the browser reliably gets the answer);
//! * file over `--max-upload-size` → 413 (the request to the primary is aborted);
//! * the primary refuses (413, 400, 409, 507...) → its reason, in the form;
//! * the primary fails mid-upload (crash, network) → "primary X failed during the upload; nothing
//!   was published; please retry". A broken stream can't be replayed (its bytes are gone), so
//!   there is no automatic retry; the primary is marked down, so the retry goes to the other
//!   one. The node keeps nothing of an upload whose body did not end properly (the aborted
//!   chunked body never gets its terminating chunk), so there is no half-published document.
//!
//! A little over 600 lines: the upload's phases (open, CSRF, fields, send) and every way it can end
//! (refused, too large, broken off, primary failed, published) read together; the form's validation
//! is in `form.rs`.

use std::io;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use bytes::Bytes;
use docfed_shared::wire::{DocumentMeta, ErrorCode, PublishResponse};
use docfed_shared::{Md5Hex, Md5Stream};
use tokio::sync::mpsc;

use crate::config::human_size;
use crate::db::{now_ms, DocRow, SessionRow};
use crate::error::{node_info, PortalError};
use crate::primaries::{refused, transport_error, NodeError};
use crate::views::{self, FieldError, FormValues, UploadForm};
use crate::web::AppState;

mod form;

use form::*;

/// Chunks in flight between the browser side and the primary side.
const CHANNEL_CHUNKS: usize = 8;

/// Limit of each text field.
const TEXT_FIELD_LIMIT: u64 = 64 * 1024;

/// Room for the text fields and multipart framing on top of the file.
const FORM_OVERHEAD: u64 = 1 << 20;

/// How much of a refused upload the portal still reads (and discards) so that the client,
/// which is still sending, reliably receives the answer: closing a socket with unread data
/// resets the connection and can destroy the answer in flight. Beyond that, it closes.
const DRAIN_CAP: u64 = 64 << 20;

pub fn publish_form<'a>(
    st: &'a AppState,
    s: &'a SessionRow,
    values: &'a FormValues,
    errors: &'a [FieldError],
) -> UploadForm<'a> {
    UploadForm {
        action: "/publish".into(),
        heading: "Publish a document",
        submit: "Publish",
        values,
        errors,
        regions: &st.config.regions,
        max_upload: st.config.max_upload_size,
        csrf: &s.csrf,
    }
}

pub fn version_form<'a>(
    st: &'a AppState,
    s: &'a SessionRow,
    doc: &DocRow,
    values: &'a FormValues,
    errors: &'a [FieldError],
) -> UploadForm<'a> {
    UploadForm {
        action: format!("/documents/{}/versions", doc.doc_id),
        heading: "Publish a new version",
        submit: "Publish new version",
        values,
        errors,
        regions: &st.config.regions,
        max_upload: st.config.max_upload_size,
        csrf: &s.csrf,
    }
}

/// Handles `POST /publish` (`doc = None`) and `POST /documents/{id}/versions`.
pub async fn receive(st: &AppState, s: &SessionRow, doc: Option<DocRow>, req: Request) -> Response {
    let mut up = Upload {
        st,
        s,
        doc,
        values: FormValues::default(),
    };
    up.run(req).await
}

struct Upload<'a> {
    st: &'a AppState,
    s: &'a SessionRow,
    doc: Option<DocRow>,
    values: FormValues,
}

/// How the browser-to-primary pump ended.
enum Pumped {
    /// The whole file went to the primary.
    Complete { size: u64, md5: Md5Hex },
    /// The file exceeded the portal's limit; the primary's request was aborted.
    TooLarge,
    /// The primary's side stopped taking bytes (it answered early or failed).
    PrimaryStopped,
    /// The browser's stream broke; the primary's request was aborted.
    BrowserFailed(String),
}

/// The form's fields before the file's bytes: validated, ready to send.
struct FileField {
    file: multer::Field<'static>,
    filename: String,
    content_type: Option<String>,
    meta: Meta,
}

impl Upload<'_> {
    /// The form is read in order: the CSRF token first (nothing else is looked at without it),
    /// then the text fields up to the file, whose bytes then stream to one primary.
    async fn run(&mut self, req: Request) -> Response {
        let result = async {
            let mut mp = self.open(req).await?;
            self.check_csrf(&mut mp).await?;
            let form = self.read_fields(&mut mp).await?;
            Ok(self.send(&mut mp, form).await)
        }
        .await;
        result.unwrap_or_else(|refusal| refusal)
    }

    /// The multipart reader of the request, within the size limits; refuses a body that
    /// declares more than the limit before reading it.
    async fn open(&self, req: Request) -> Result<multer::Multipart<'static>, Response> {
        let limit = self.st.config.max_upload_size;
        let boundary = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| multer::parse_boundary(ct).ok());
        let Some(boundary) = boundary else {
            return Err(PortalError::BadRequest(
                "The upload must be sent as multipart/form-data (the portal's publish form does \
                 that)."
                    .into(),
            )
            .into_response());
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|&n| n > limit + FORM_OVERHEAD) {
            let mut r = self.too_large();
            if n <= limit + FORM_OVERHEAD + DRAIN_CAP {
                // Read and discard it, so the client (still sending) gets the answer.
                let mut body = req.into_body().into_data_stream();
                while let Some(Ok(_)) = futures::StreamExt::next(&mut body).await {}
            } else {
                // Not worth reading: answer at once and close. Browsers never get here (the
                // page checks the size before sending).
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return Err(r);
        }
        let constraints = multer::Constraints::new().size_limit(
            multer::SizeLimit::new()
                .whole_stream(limit + FORM_OVERHEAD + DRAIN_CAP)
                .per_field(TEXT_FIELD_LIMIT)
                .for_field("file", u64::MAX),
        );
        Ok(multer::Multipart::with_constraints(
            req.into_body().into_data_stream(),
            boundary,
            constraints,
        ))
    }

    async fn check_csrf(&self, mp: &mut multer::Multipart<'static>) -> Result<(), Response> {
        let csrf_ok = match mp.next_field().await {
            Ok(Some(f)) if f.name() == Some("csrf") => matches!(
                f.text().await,
                Ok(t) if !t.is_empty() && crate::auth::constant_time_eq(&t, &self.s.csrf)
            ),
            _ => false,
        };
        if !csrf_ok {
            drain(mp).await;
            return Err(PortalError::csrf().into_response());
        }
        Ok(())
    }

    /// The text fields up to the file, validated, and the file field (not read yet).
    async fn read_fields(
        &mut self,
        mp: &mut multer::Multipart<'static>,
    ) -> Result<FileField, Response> {
        let mut errors = Vec::new();
        let mut file = None;
        loop {
            match mp.next_field().await {
                Ok(Some(f)) if f.name() == Some("file") => {
                    file = Some(f);
                    break;
                }
                Ok(Some(f)) => {
                    let name = f.name().unwrap_or("").to_owned();
                    let slot = match name.as_str() {
                        "title" => Some(&mut self.values.title),
                        "description" => Some(&mut self.values.description),
                        "tags" => Some(&mut self.values.tags),
                        "source" => Some(&mut self.values.source),
                        "scope" => Some(&mut self.values.scope),
                        _ => None, // unknown fields are read past
                    };
                    match (f.text().await, slot) {
                        (Ok(t), Some(slot)) => *slot = t,
                        (Ok(_), None) => {}
                        (Err(multer::Error::FieldSizeExceeded { .. }), _) => {
                            errors.push(FieldError {
                                field: field_name(&name),
                                message: format!(
                                    "{} is too long (at most {}).",
                                    label(&name),
                                    human_size(TEXT_FIELD_LIMIT)
                                ),
                            })
                        }
                        (Err(e), _) => return Err(self.broken(e)),
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(self.broken(e)),
            }
        }
        let filename = file
            .as_ref()
            .and_then(|f| f.file_name())
            .map(clean_filename);
        let content_type = file
            .as_ref()
            .and_then(|f| f.content_type())
            .map(|m| m.essence_str().to_owned())
            .filter(|ct| ct != "application/octet-stream" && plausible_media_type(ct));
        let meta = self.validate(&mut errors, filename.as_deref());
        let (Some(file), Some(filename), true) = (file, filename, errors.is_empty()) else {
            if errors.is_empty() {
                errors.push(FieldError {
                    field: "file",
                    message: "Choose a file to publish.".into(),
                });
            }
            drain(mp).await;
            return Err(self.form_again(StatusCode::BAD_REQUEST, errors));
        };
        let Some(meta) = meta else {
            drain(mp).await;
            return Err(self.form_again(StatusCode::BAD_REQUEST, errors));
        };
        Ok(FileField {
            file,
            filename,
            content_type,
            meta,
        })
    }

    /// Streams the file to one primary and answers with what came of it.
    async fn send(&self, mp: &mut multer::Multipart<'static>, form: FileField) -> Response {
        let limit = self.st.config.max_upload_size;
        let primaries = &self.st.primaries;
        let Some(i) = primaries.pick_for_upload().await else {
            drain(mp).await;
            return self.form_again(
                StatusCode::SERVICE_UNAVAILABLE,
                vec![FieldError {
                    field: "",
                    message: format!(
                        "No primary answers right now ({}). Nothing was published; please retry \
                         in a moment.",
                        primaries.names().join(", ")
                    ),
                }],
            );
        };
        let FileField {
            mut file,
            filename,
            content_type,
            meta,
        } = form;
        let primary = primaries.get(i).name.clone();
        let mut query: Vec<(&str, String)> = vec![
            ("title", meta.title),
            ("description", meta.description),
            ("tags", meta.tags.join(",")),
            ("source", meta.source),
            ("scope", meta.scope),
            ("filename", filename.clone()),
            // Recorded with the version on every node, so the directory says who published it.
            ("author", self.s.author_name.clone()),
        ];
        if let Some(ct) = content_type {
            query.push(("content_type", ct));
        }
        let (method, path) = match &self.doc {
            None => (reqwest::Method::POST, "/v1/documents".to_owned()),
            Some(d) => (reqwest::Method::PUT, format!("/v1/documents/{}", d.doc_id)),
        };
        let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_CHUNKS);
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let send = async {
            let r = primaries.upload(i, method, &path, &query, body).await?;
            let status = r.status();
            if status.is_success() {
                Ok(Ok(r.json::<PublishResponse>().await?))
            } else {
                Ok(Err(refused(primary.clone(), r).await))
            }
        };
        let (pumped, sent): (
            Pumped,
            Result<Result<PublishResponse, NodeError>, reqwest::Error>,
        ) = tokio::join!(pump(&mut file, tx, limit), send);
        drop(file);
        tracing::debug!(primary, "upload finished");
        match (pumped, sent) {
            (Pumped::TooLarge, _) => {
                drain(mp).await;
                self.too_large()
            }
            (Pumped::BrowserFailed(e), _) => {
                // Nobody may be listening any more; answer anyway.
                tracing::info!(primary, error = %e, "browser upload broke off; the primary's request was aborted");
                PortalError::BadRequest(
                    "The upload broke off before the whole file arrived. Nothing was published; \
                     please retry."
                        .into(),
                )
                .into_response()
            }
            (Pumped::Complete { size, md5 }, Ok(Ok(done))) => {
                primaries.upload_outcome(i, Ok(()));
                if done.md5 != md5 || done.size != size {
                    // Cannot happen short of a bug: TCP, then the node's own MD5 check.
                    tracing::error!(primary, doc_id = %done.id, sent_md5 = %md5, stored_md5 = %done.md5,
                        "the primary stored other bytes than the portal sent");
                }
                drain(mp).await;
                self.published(i, done, &filename).await
            }
            (_, Ok(Err(refusal))) => {
                primaries.upload_outcome(i, Ok(()));
                drain(mp).await;
                self.refused(refusal)
            }
            (pumped, Err(e)) => {
                let error = transport_error(&e);
                primaries.upload_outcome(i, Err(error.clone()));
                tracing::warn!(primary, error, "primary failed during an upload");
                drain(mp).await;
                match pumped {
                    // A connection that failed to open carried nothing: no doubt there.
                    Pumped::Complete { size, md5 } if !e.is_connect() => {
                        self.failed_after_body(&primary, size, &md5, &filename)
                            .await
                    }
                    _ => self.form_again(
                        StatusCode::BAD_GATEWAY,
                        vec![FieldError {
                            field: "",
                            message: format!(
                                "Primary {primary} failed during the upload ({error}). Nothing \
                                 was published; please retry: the portal will use another \
                                 primary."
                            ),
                        }],
                    ),
                }
            }
            (Pumped::PrimaryStopped, Ok(Ok(done))) => {
                // A primary that confirms an upload it did not read to the end is broken.
                tracing::error!(primary, doc_id = %done.id, "primary confirmed an unfinished upload");
                drain(mp).await;
                self.form_again(
                    StatusCode::BAD_GATEWAY,
                    vec![FieldError {
                        field: "",
                        message: format!("Primary {primary} answered before the whole file reached it. Please retry."),
                    }],
                )
            }
        }
    }

    /// Checks the text fields, adding every problem to `errors`; the metadata to send if none.
    fn validate(&self, errors: &mut Vec<FieldError>, filename: Option<&str>) -> Option<Meta> {
        match validate_form(&self.values, &self.st.config.regions, filename) {
            Ok(meta) => errors.is_empty().then_some(meta),
            Err(mut found) => {
                errors.append(&mut found);
                None
            }
        }
    }

    /// The form again, with the author's values and what is wrong.
    fn form_again(&self, status: StatusCode, errors: Vec<FieldError>) -> Response {
        let ctx = self.st.ctx(
            Some(self.s),
            None,
            if self.doc.is_none() {
                views::Nav::Publish
            } else {
                views::Nav::None
            },
        );
        let page = match &self.doc {
            None => {
                views::publish_page(&ctx, &publish_form(self.st, self.s, &self.values, &errors))
            }
            Some(d) => {
                let heading = format!("New version of “{}”", d.title);
                let mut form = version_form(self.st, self.s, d, &self.values, &errors);
                form.heading = &heading;
                views::publish_page(&ctx, &form)
            }
        };
        (status, Html(page.into_string())).into_response()
    }

    fn too_large(&self) -> Response {
        let limit = self.st.config.max_upload_size;
        self.form_again(
            StatusCode::PAYLOAD_TOO_LARGE,
            vec![FieldError {
                field: "file",
                message: format!(
                    "The file is larger than the limit of {} ({limit} bytes). Nothing was published.",
                    human_size(limit)
                ),
            }],
        )
    }

    /// The multipart stream itself was malformed or broke off.
    fn broken(&self, e: multer::Error) -> Response {
        tracing::info!(error = %e, "unreadable upload form");
        PortalError::BadRequest(format!(
            "The upload could not be read ({e}). Nothing was published; please retry."
        ))
        .into_response()
    }

    /// A primary's refusal, shown in the form.
    fn refused(&self, e: NodeError) -> Response {
        let info = node_info(&e);
        let field = match &e {
            NodeError::Refused {
                code: ErrorCode::TooLarge,
                ..
            } => "file",
            _ => "",
        };
        let message = if info.message.contains("Nothing was published") {
            info.message
        } else {
            format!("{} Nothing was published.", info.message)
        };
        self.form_again(info.status, vec![FieldError { field, message }])
    }

    /// Records the new document (or version) and sends the author to its page.
    async fn published(&self, i: usize, done: PublishResponse, filename: &str) -> Response {
        let id = done.id.to_string();
        let row = match self
            .st
            .primaries
            .get_json_from::<DocumentMeta>(i, &format!("/v1/documents/{id}"))
            .await
        {
            Ok(meta) => DocRow::from_meta(&meta),
            Err(e) => {
                // Published all the same; the page refreshes the cache later.
                tracing::warn!(doc_id = %id, error = %e, "cannot read back a published document");
                self.row_from_form(&done, filename)
            }
        };
        let stored = match &self.doc {
            None => self.st.db.own_document(self.s.author_id, &row).await,
            Some(_) => self.st.db.update_document(&row).await,
        };
        if let Err(e) = stored {
            tracing::error!(doc_id = %id, error = %e, "published, but cannot record it");
            return PortalError::Db(e).into_response();
        }
        let done_kind = if self.doc.is_some() {
            "version"
        } else {
            "published"
        };
        tracing::info!(author = %self.s.author_name, doc_id = %id, version = done.version, size = done.size, "{done_kind}");
        Redirect::to(&format!("/documents/{id}?done={done_kind}")).into_response()
    }

    fn row_from_form(&self, done: &PublishResponse, filename: &str) -> DocRow {
        let now = now_ms();
        DocRow {
            doc_id: done.id.to_string(),
            title: self.values.title.trim().to_owned(),
            description: self.values.description.clone(),
            tags: self
                .values
                .tags
                .split(',')
                .map(|t| t.trim().to_lowercase())
                .filter(|t| !t.is_empty())
                .collect(),
            filename: filename.to_owned(),
            source: self.values.source.trim().to_owned(),
            scope: self.values.scope.trim().to_owned(),
            size: done.size,
            md5: done.md5.to_string(),
            version: done.version,
            deleted: false,
            published_at: self.doc.as_ref().map_or(now, |d| d.published_at),
            updated_at: now,
        }
    }

    /// The primary took the whole file, then failed before answering: it may have recorded the
    /// document. If another primary already knows a document with exactly these bytes and this
    /// title (replicated before the failure), it is adopted; otherwise the author is told.
    async fn failed_after_body(
        &self,
        primary: &str,
        size: u64,
        md5: &Md5Hex,
        filename: &str,
    ) -> Response {
        if self.doc.is_none() {
            let q = [
                ("q", self.values.title.trim()),
                ("deleted", "any"),
                ("limit", "50"),
            ];
            if let Ok((list, i)) = self
                .st
                .primaries
                .get_json::<docfed_shared::wire::DocumentList>("/v1/documents", &q)
                .await
            {
                let recent = now_ms() - 10 * 60 * 1000;
                for d in list.documents {
                    let c = &d.current;
                    let id = c.id.to_string();
                    if c.md5 == *md5
                        && c.size == size
                        && c.filename == filename
                        && d.published_at.millis() > recent
                        && matches!(self.st.db.owned_ids(self.s.author_id).await, Ok(ids) if !ids.contains(&id))
                    {
                        let done = PublishResponse {
                            id: c.id,
                            version: c.version,
                            md5: c.md5.clone(),
                            size,
                        };
                        tracing::warn!(doc_id = %id, "adopted a document whose primary failed before confirming it");
                        return self.published(i, done, filename).await;
                    }
                }
            }
        }
        self.form_again(
            StatusCode::BAD_GATEWAY,
            vec![FieldError {
                field: "",
                message: format!(
                    "Primary {primary} failed right after receiving the whole file, before \
                     confirming it. It may have recorded the document before failing; if so, the \
                     document appears in the directory once {primary} is back, but the portal \
                     cannot list it under your documents. Please retry: the portal will use \
                     another primary."
                ),
            }],
        )
    }
}

/// Forwards the file part into the channel feeding the primary's request, counting and hashing
/// it. The sender is dropped on return: after the last chunk that ends the request body
/// properly; after an `Err` item the HTTP client aborts the request instead.
async fn pump(
    field: &mut multer::Field<'static>,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    limit: u64,
) -> Pumped {
    let mut md5 = Md5Stream::new();
    loop {
        match field.chunk().await {
            Ok(Some(c)) => {
                if md5.len() + c.len() as u64 > limit {
                    let _ = tx
                        .send(Err(io::Error::other(
                            "upload larger than the portal's limit",
                        )))
                        .await;
                    return Pumped::TooLarge;
                }
                md5.update(&c);
                if tx.send(Ok(c)).await.is_err() {
                    return Pumped::PrimaryStopped;
                }
            }
            Ok(None) => {
                let (md5, size) = md5.finish();
                return Pumped::Complete { size, md5 };
            }
            Err(e) => {
                let _ = tx
                    .send(Err(io::Error::other("the browser's upload broke off")))
                    .await;
                return Pumped::BrowserFailed(e.to_string());
            }
        }
    }
}

/// Reads and discards the rest of the request body, so the browser, which is still sending,
/// reliably receives the answer. Bounded by the multipart stream limit (see [`DRAIN_CAP`]).
async fn drain(mp: &mut multer::Multipart<'static>) {
    while let Ok(Some(mut f)) = mp.next_field().await {
        while let Ok(Some(_)) = f.chunk().await {}
    }
}
