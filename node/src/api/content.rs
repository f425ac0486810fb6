//! `GET`/`HEAD /v1/documents/{id}/content`: the bytes, streamed from disk in bounded chunks, with
//! single-range requests (206/416), `ETag` = the MD5, `If-None-Match` and `If-Range`.
//!
//! A request with several ranges is answered with the whole document (RFC 9110 lets a server
//! ignore `Range`); clients of this API resume with one range.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use docfed_shared::wire::DocumentVersion;
use docfed_shared::Md5Hex;
use futures::StreamExt;
use serde::Deserialize;

use super::{parse_id, ApiQuery, AppState};
use crate::error::ApiError;
use crate::federation::ondemand::{self, Asker, Start};
use crate::federation::transfers::follow;
use crate::metrics::Metrics;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentParams {
    /// A specific version; the current one when absent.
    version: Option<i64>,
}

pub async fn content(
    State(node): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<ContentParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let v: DocumentVersion = match p.version {
        Some(n) => {
            let v = node
                .db
                .version(&id, n)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("version {n} of document {id}")))?;
            // Once a document is deleted its old versions are gone for readers too; its author
            // (the token) may still read them, e.g. before reactivating it.
            let deleted = node
                .db
                .document(&id)
                .await?
                .is_some_and(|d| d.current.deleted);
            if deleted && !super::carries_token(&headers, &node) {
                return Err(ApiError::Gone { id: id.to_string() });
            }
            v
        }
        None => {
            let doc = node
                .db
                .document(&id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("document {id}")))?;
            if doc.current.deleted {
                return Err(ApiError::Gone { id: id.to_string() });
            }
            doc.current
        }
    };
    serve(
        &node,
        &headers,
        ObjectRef {
            md5: v.md5.clone(),
            size: v.size,
            content_type: v.content_type.clone(),
            filename: v.filename.clone(),
            version: Some(v.version),
        },
        Some(&v),
        Asker::Other,
    )
    .await
}

/// Pulls between servers (ARCHITECTURE.md §2.10): over TLS in a federation, only a client whose
/// certificate names a node of the topology (or an operator with the node's token) is served,
/// and a node may not claim to be another in the pull's node header.
fn server_only(
    node: &AppState,
    tls_peer: Option<&docfed_http::tls::TlsPeer>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let (Some(fed), Some(peer)) = (node.federation(), tls_peer) else {
        return Ok(());
    };
    let claimed = headers
        .get(docfed_shared::keys::PULL_NODE_HEADER)
        .and_then(|v| v.to_str().ok());
    match &peer.node {
        Some(id) if fed.topology.node(id).is_some() => match claimed {
            Some(c) if c != id => Err(ApiError::Forbidden(format!(
                "the client certificate names `{id}`, the request claims `{c}`"
            ))),
            _ => Ok(()),
        },
        _ if super::carries_token(headers, node) => Ok(()),
        Some(id) => Err(ApiError::Forbidden(format!(
            "`{id}` is not a node of this federation"
        ))),
        None => Err(ApiError::Forbidden(
            "pulls need a client certificate of a node of this federation".to_owned(),
        )),
    }
}

/// `GET /v1/objects/{md5}`: content by address, for pulls between nodes. Serves what is held,
/// or what is still arriving (stream-through).
pub async fn object(
    State(node): State<AppState>,
    Path(md5): Path<String>,
    tls_peer: Option<axum::Extension<docfed_http::tls::TlsPeer>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let md5: Md5Hex = md5
        .parse()
        .map_err(|e: docfed_shared::ParseIdError| ApiError::invalid("md5", e.to_string()))?;
    server_only(&node, tls_peer.as_deref(), &headers)?;
    let peer = signing_peer(&node, &headers, &md5);
    // Nodes and token holders may pull withdrawn content: only others cost the lookup.
    let may_pull_withdrawn = super::carries_token(&headers, &node) || peer.is_some();
    if !may_pull_withdrawn && node.db.withdrawn(&md5).await? {
        return Err(ApiError::Withdrawn {
            md5: md5.to_string(),
        });
    }
    // Content of a lazy version (ARCHITECTURE.md §2.9) is fetched from above on this request.
    let mut lazy = None;
    let size = match node.db.object_size(&md5).await? {
        Some(size) => size,
        None => match node.transfers.get(&md5) {
            Some(t) => t.size,
            None if node.db.fetch_pending(&md5).await? => return Err(ApiError::NotYet),
            None => match node.db.lazy_version(&md5).await? {
                Some(v) => lazy.insert(v).size,
                None => return Err(ApiError::not_found(format!("object {md5}"))),
            },
        },
    };
    // The claim need not be verified: it only narrows where this node looks for a lazy item's
    // bytes, so a false one can only fail its own request.
    let claimed = headers
        .get(docfed_shared::keys::PULL_NODE_HEADER)
        .and_then(|v| v.to_str().ok());
    let asker = match (node.federation(), claimed) {
        (Some(fed), Some(id))
            if fed
                .topology
                .node(id)
                .is_some_and(|n| n.tier == docfed_shared::topology::Tier::Primary) =>
        {
            Asker::Primary
        }
        _ => Asker::Other,
    };
    serve(
        &node,
        &headers,
        ObjectRef {
            md5,
            size,
            content_type: "application/octet-stream".to_owned(),
            filename: String::new(),
            version: None,
        },
        lazy.as_ref(),
        asker,
    )
    .await
}

/// The node of this federation whose fresh signature the request carries (a pull), if any.
fn signing_peer(node: &AppState, headers: &HeaderMap, md5: &Md5Hex) -> Option<String> {
    use docfed_shared::keys::{
        pull_signing_input, PULL_FRESHNESS_SECS, PULL_NODE_HEADER, PULL_SIGNATURE_HEADER,
        PULL_TIME_HEADER,
    };
    let fed = node.federation()?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(from), Some(time), Some(signature)) = (
        header(PULL_NODE_HEADER),
        header(PULL_TIME_HEADER).and_then(|t| t.parse::<u64>().ok()),
        header(PULL_SIGNATURE_HEADER),
    ) else {
        return None;
    };
    let now = docfed_shared::wire::Timestamp::now().millis() as u64 / 1000;
    let fresh = now.abs_diff(time) <= PULL_FRESHNESS_SECS;
    let verified = fed
        .topology
        .public_key(from)
        .is_some_and(|key| key.verifies(&pull_signing_input(from, md5.as_str(), time), signature));
    (fresh && verified).then(|| from.to_owned())
}

pub struct ObjectRef {
    pub md5: Md5Hex,
    pub size: u64,
    pub content_type: String,
    pub filename: String,
    pub version: Option<i64>,
}

/// Answers a content request: conditional headers, one range, bytes from the store, from a pull
/// still in progress, or (for a document, `doc`) from another node through this one.
async fn serve(
    node: &AppState,
    headers: &HeaderMap,
    obj: ObjectRef,
    doc: Option<&DocumentVersion>,
    asker: Asker,
) -> Result<Response, ApiError> {
    let etag = format!("\"{}\"", obj.md5);
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|h| etag_list_matches(h, &etag))
    {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        resp.headers_mut().insert(header::ETAG, hv(&etag));
        return Ok(resp);
    }
    let size = obj.size;
    let range = requested_range(headers, &etag, size)?;
    let (status, start, len) = match &range {
        Some(r) => (
            StatusCode::PARTIAL_CONTENT,
            *r.start(),
            r.end() - r.start() + 1,
        ),
        None => (StatusCode::OK, 0, size),
    };

    let body = match stored_body(node, &obj.md5, size, start, start + len).await {
        Ok(body) => body,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut following = None;
            for _ in 0..2 {
                let transfer = match node.transfers.get(&obj.md5) {
                    Some(t) => t,
                    None => match doc {
                        Some(d) => match ondemand::start(node, d, asker).await {
                            Start::Follow(t) => t,
                            Start::Busy => return Err(ApiError::NotYet),
                            Start::NoSource => break,
                        },
                        None => break,
                    },
                };
                match follow(transfer, start, start + len, node.store.keys().cloned()).await {
                    Ok(stream) => {
                        following = Some(Body::from_stream(stream));
                        break;
                    }
                    // The transfer ended as we joined it and removed its file: the store may
                    // have kept it; otherwise a second round starts a new one.
                    Err(_) => {
                        if let Ok(body) =
                            stored_body(node, &obj.md5, size, start, start + len).await
                        {
                            following = Some(body);
                            break;
                        }
                    }
                }
            }
            match following {
                Some(body) => body,
                None if node.db.fetch_pending(&obj.md5).await? => return Err(ApiError::NotYet),
                None => {
                    return Err(ApiError::not_found(format!(
                        "content {} on this node",
                        obj.md5
                    )))
                }
            }
        }
        Err(e) => return Err(ApiError::Internal(e.into())),
    };

    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ETAG, hv(&etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&obj.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        hv(&content_disposition(&obj.filename)),
    );
    if let Some(v) = obj.version {
        h.insert("x-docfed-version", HeaderValue::from(v));
    }
    if let Some(r) = range {
        h.insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {}-{}/{}", r.start(), r.end(), size)),
        );
    }
    Ok(resp)
}

/// Bytes `start..end` of stored content, counted as served.
async fn stored_body(
    node: &AppState,
    md5: &Md5Hex,
    size: u64,
    start: u64,
    end: u64,
) -> std::io::Result<Body> {
    let stream = match crate::small_objects::read(node.db.reader(), node.store.keys(), md5).await {
        Ok(Some(content)) => {
            let (start, end) = (start.min(size) as usize, end.min(size) as usize);
            if content.len() as u64 != size {
                return Err(std::io::Error::other(format!(
                    "small object {md5} holds {} bytes, not {size}",
                    content.len()
                )));
            }
            futures::stream::once(std::future::ready(Ok(content.slice(start..end)))).boxed()
        }
        Ok(None) => node.store.read_range(md5, size, start, end).await?,
        Err(crate::small_objects::ReadError::Db(e)) => return Err(std::io::Error::other(e)),
        Err(crate::small_objects::ReadError::Sealed(e)) => return Err(e),
    };
    let metrics = node.clone();
    Ok(Body::from_stream(stream.inspect(move |c| {
        if let Ok(c) = c {
            Metrics::add(&metrics.metrics.bytes_served, c.len() as u64);
        }
    })))
}

/// The one range a request asks for and may have: `None` for the whole document (no `Range`,
/// an `If-Range` that no longer matches, a syntactically invalid or multi-range header), an
/// error when the range lies outside the document.
fn requested_range(
    headers: &HeaderMap,
    etag: &str,
    size: u64,
) -> Result<Option<std::ops::RangeInclusive<u64>>, ApiError> {
    // If-Range with a different validator means "the document changed: send all of it".
    let range_applies = headers
        .get(header::IF_RANGE)
        .is_none_or(|h| h.to_str().is_ok_and(|s| s.trim() == etag));
    Ok(
        match headers.get(header::RANGE).and_then(|h| h.to_str().ok()) {
            Some(r) if range_applies => match http_range_header::parse_range_header(r) {
                // Syntactically invalid ranges are ignored, as RFC 9110 asks.
                Err(_) => None,
                Ok(parsed) => match parsed.validate(size) {
                    Err(_) => return Err(ApiError::RangeNotSatisfiable { size }),
                    // Nothing of an empty document can be satisfied (the parser lets 0-0
                    // through).
                    Ok(ranges) if ranges.iter().any(|r| *r.end() >= size) => {
                        return Err(ApiError::RangeNotSatisfiable { size })
                    }
                    Ok(ranges) if ranges.len() == 1 => Some(ranges[0].clone()),
                    Ok(_) => None,
                },
            },
            _ => None,
        },
    )
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("built from ASCII")
}

fn etag_list_matches(h: &HeaderValue, etag: &str) -> bool {
    h.to_str().is_ok_and(|s| {
        s.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
    })
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266): the exact name percent-encoded
/// (RFC 8187) for clients that read `filename*` (browsers, wget), and before it a plain ASCII
/// fallback for those that read only `filename` (`curl -O -J`). Neither lets a byte of a
/// user-supplied name break the header or name a path.
fn content_disposition(filename: &str) -> String {
    if filename.is_empty() {
        return "attachment".to_owned();
    }
    let mut out = format!(
        "attachment; filename=\"{}\"; filename*=UTF-8''",
        ascii_fallback(filename)
    );
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The name's last path component with every character that is not printable ASCII, or that
/// is a quote, backslash or percent sign, replaced by `_`, and no leading dot (a client saving it
/// must not create a hidden file).
fn ascii_fallback(filename: &str) -> String {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut out: String = base
        .chars()
        .map(|c| match c {
            '"' | '\\' | '%' => '_',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    while out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    if out.trim().is_empty() {
        "download".to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_encodes_everything_unsafe() {
        assert_eq!(
            content_disposition("a b\"/../ü.txt"),
            "attachment; filename=\"_.txt\"; filename*=UTF-8''a%20b%22%2F..%2F%C3%BC.txt"
        );
    }

    #[test]
    fn the_ascii_fallback_keeps_plain_names_and_defuses_the_rest() {
        assert_eq!(
            ascii_fallback("Report 2026 (final).pdf"),
            "Report 2026 (final).pdf"
        );
        assert_eq!(ascii_fallback("Rapport d'été.pdf"), "Rapport d'_t_.pdf");
        assert_eq!(ascii_fallback("地震.csv"), "__.csv");
        assert_eq!(ascii_fallback("..\\..\\win.ini"), "win.ini");
        assert_eq!(ascii_fallback(".bashrc"), "_bashrc");
        assert_eq!(ascii_fallback("a\"b%c\r\n"), "a_b_c__");
        assert_eq!(ascii_fallback("dir/"), "download");
    }

    proptest::proptest! {
        /// Whatever `Range` a client sends, the answer is the whole document, one range inside
        /// it, or 416: never a panic, never a range past the end.
        #[test]
        fn any_range_header_yields_a_range_inside_the_document(
            range in "(bytes=)?[0-9, -]{0,24}|.{0,40}",
            size in 0u64..5_000,
        ) {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&range) {
                headers.insert(header::RANGE, v);
            }
            if let Ok(Some(r)) = requested_range(&headers, "\"e\"", size) {
                proptest::prop_assert!(r.start() <= r.end());
                proptest::prop_assert!(*r.end() < size);
            }
        }
    }

    #[test]
    fn etag_lists() {
        let e = "\"abc\"";
        assert!(etag_list_matches(&hv("\"x\", \"abc\""), e));
        assert!(etag_list_matches(&hv("W/\"abc\""), e));
        assert!(etag_list_matches(&hv("*"), e));
        assert!(!etag_list_matches(&hv("\"abd\""), e));
    }
}
