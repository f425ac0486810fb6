//! `http` sources: a URL polled every `interval` with conditional requests (ARCHITECTURE.md
//! §2.9). The body is one document (`format = "document"`, streamed to the store whatever its
//! size), or a feed whose items become documents: Atom or RSS (`feed`, parsed by `feed-rs`) or
//! JSON with the items' array at a JSON pointer (`json`, e.g. GeoJSON's `/features`).
//!
//! Safe by construction: only the configured URL is requested and redirects are not followed
//! (a source cannot send the primary anywhere else), connections and reads time out, a feed's
//! body is bounded ([`MAX_FEED`]) and a document's by `max_item_size`, and a failing source is
//! retried with backoff, its error shown in its status.
//!
//! `ETag` and `Last-Modified` of the last complete answer are kept in the source's status row
//! and sent back (`If-None-Match`, `If-Modified-Since`): a 304 makes nothing. The primary that
//! takes the source over has no validators yet, reads the body once, and finds every item
//! unchanged in the directory.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use docfed_shared::sources::FeedFormat;
use futures::StreamExt;
use reqwest::header;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::items::{Item, Publisher};
use crate::supervisor::Backoff;

/// Largest feed body read into memory to be parsed.
pub const MAX_FEED: u64 = 16 * 1024 * 1024;
/// Longest a poll may take, body included, for feeds; documents have the idle limit instead.
const FEED_TIMEOUT: Duration = Duration::from_secs(60);

/// Retries of a failing source: from 1 s up to its interval.
const RETRY: Backoff = Backoff {
    first: Duration::from_secs(1),
    cap: Duration::from_secs(300),
};

/// The validators of the last complete answer, kept as the source's cursor.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

pub async fn run(p: Publisher, stop: CancellationToken) -> anyhow::Result<()> {
    let client = docfed_http::tls::client_builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "docfed-node/",
            env!("CARGO_PKG_VERSION"),
            " (reachback)"
        ))
        .build()?;
    let mut failures = 0u32;
    loop {
        let wait = match poll(&p, &client).await {
            Ok(seen) => {
                failures = 0;
                p.record_run(seen, None).await;
                p.spec.interval()
            }
            Err(e) => {
                failures += 1;
                let why = format!("{e:#}");
                tracing::warn!(source = %p.name(), error = %why, failures, "source poll failed");
                p.record_run(None, Some(&why)).await;
                RETRY.delay(failures).min(p.spec.interval())
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// One poll: `Some(items seen)` after a complete answer, `None` after a 304.
async fn poll(p: &Publisher, client: &reqwest::Client) -> anyhow::Result<Option<u64>> {
    let url = p
        .spec
        .url
        .as_deref()
        .expect("a validated http source has a url");
    let validators: Validators = p
        .node
        .db
        .source_cursor(p.name())
        .await?
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or_default();
    let mut req = client.get(url);
    if let Some(etag) = &validators.etag {
        req = req.header(header::IF_NONE_MATCH, etag);
    }
    if let Some(lm) = &validators.last_modified {
        req = req.header(header::IF_MODIFIED_SINCE, lm);
    }
    let format = p.spec.format.unwrap_or_default();
    if format != FeedFormat::Document {
        req = req.timeout(FEED_TIMEOUT);
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    if !status.is_success() {
        anyhow::bail!("GET {url} answered {status}");
    }
    let header_text = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let fresh = Validators {
        etag: header_text(header::ETAG),
        last_modified: header_text(header::LAST_MODIFIED),
    };
    let seen = match format {
        FeedFormat::Document => {
            let content_type = header_text(header::CONTENT_TYPE)
                .unwrap_or_else(|| "application/octet-stream".to_owned());
            let filename = url::Url::parse(url)
                .ok()
                .and_then(|u| u.path_segments()?.next_back().map(str::to_owned))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "document".to_owned());
            let item = Item {
                key: "document".to_owned(),
                title: filename.clone(),
                filename,
                tags: Vec::new(),
                description: format!("from {url}"),
                content_type,
                stamp: fresh.etag.clone().unwrap_or_default(),
            };
            let body = resp.bytes_stream();
            p.offer(item, body).await?;
            1
        }
        FeedFormat::Feed | FeedFormat::Json => {
            let body = read_bounded(resp, MAX_FEED).await?;
            let items = if format == FeedFormat::Feed {
                feed_items(&body)?
            } else {
                json_items(p, &body)?
            };
            let mut present = HashSet::new();
            for (item, bytes) in items {
                present.insert(item.key.clone());
                let key = item.key.clone();
                if let Err(e) = offer_bytes(p, item, bytes).await {
                    p.failed(&key, &e).await;
                }
            }
            p.sweep(&present).await?;
            present.len() as u64
        }
    };
    let cursor = serde_json::to_string(&fresh)?;
    p.node.db.set_source_cursor(p.name(), Some(&cursor)).await?;
    Ok(Some(seen))
}

async fn offer_bytes(p: &Publisher, item: Item, bytes: Vec<u8>) -> anyhow::Result<()> {
    if p.is_unchanged(&item.key, &item.stamp).await? {
        return Ok(());
    }
    let body = futures::stream::iter([Ok::<Bytes, std::convert::Infallible>(Bytes::from(bytes))]);
    p.offer(item, body).await?;
    Ok(())
}

/// The body, refused beyond `max` bytes (announced or actual).
async fn read_bounded(resp: reqwest::Response, max: u64) -> anyhow::Result<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n > max) {
        anyhow::bail!("the feed is larger than {max} bytes");
    }
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("reading the feed")?;
        if out.len() as u64 + chunk.len() as u64 > max {
            anyhow::bail!("the feed is larger than {max} bytes");
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Atom or RSS entries: key = the entry's id, content = its content, else its summary, else its
/// first link; the stamp is the MD5 of what makes the document, so any change is a version.
fn feed_items(body: &[u8]) -> anyhow::Result<Vec<(Item, Vec<u8>)>> {
    let feed = feed_rs::parser::parse(body).context("not an Atom or RSS feed")?;
    let mut out = Vec::new();
    for entry in feed.entries {
        let title = entry
            .title
            .as_ref()
            .map(|t| t.content.clone())
            .unwrap_or_else(|| entry.id.clone());
        let link = entry.links.first().map(|l| l.href.clone());
        let (bytes, content_type) = match (&entry.content, &entry.summary) {
            (Some(c), _) if c.body.is_some() => (
                c.body.clone().unwrap_or_default().into_bytes(),
                c.content_type.essence().to_string(),
            ),
            (_, Some(s)) => (
                s.content.clone().into_bytes(),
                s.content_type.essence().to_string(),
            ),
            _ => (
                link.clone().unwrap_or_default().into_bytes(),
                "text/uri-list".to_owned(),
            ),
        };
        let mut description = String::new();
        if let Some(l) = &link {
            description.push_str(&format!("link: {l}\n"));
        }
        if let Some(t) = entry.updated.or(entry.published) {
            description.push_str(&format!("updated: {}\n", t.to_rfc3339()));
        }
        let tags = entry.categories.iter().map(|c| c.term.clone()).collect();
        let stamp = stamp_of(&[&title, &description, &content_type], &bytes);
        out.push((
            Item {
                key: entry.id,
                filename: String::new(),
                title,
                tags,
                description,
                content_type,
                stamp,
            },
            bytes,
        ));
    }
    Ok(out)
}

/// JSON items: the array at `items` (the whole body when empty); key, title and fields by JSON
/// pointer; content = the item itself.
fn json_items(p: &Publisher, body: &[u8]) -> anyhow::Result<Vec<(Item, Vec<u8>)>> {
    let doc: Value = serde_json::from_slice(body).context("not JSON")?;
    let pointer = p.spec.items.as_deref().unwrap_or("");
    let array = doc
        .pointer(pointer)
        .and_then(Value::as_array)
        .with_context(|| format!("no array at {pointer:?}"))?;
    let key_at = p.spec.item_key.as_deref().unwrap_or("/id");
    let mut out = Vec::new();
    for (i, value) in array.iter().enumerate() {
        let Some(key) = value.pointer(key_at).and_then(scalar) else {
            tracing::warn!(source = %p.name(), index = i, pointer = key_at, "feed item without a key; skipped");
            continue;
        };
        let title = p
            .spec
            .item_title
            .as_deref()
            .and_then(|t| value.pointer(t))
            .and_then(scalar)
            .unwrap_or_else(|| key.clone());
        let mut description = String::new();
        for (name, at) in &p.spec.fields {
            if let Some(v) = value.pointer(at).and_then(scalar) {
                description.push_str(&format!("{name}: {v}\n"));
            }
        }
        let bytes = serde_json::to_vec_pretty(value)?;
        let stamp = stamp_of(&[&title, &description], &bytes);
        out.push((
            Item {
                filename: format!("{}.json", key.replace(['/', '\\'], "_")),
                key,
                title,
                tags: Vec::new(),
                description,
                content_type: "application/json".to_owned(),
                stamp,
            },
            bytes,
        ));
    }
    Ok(out)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn stamp_of(meta: &[&str], bytes: &[u8]) -> String {
    let mut ctx = md5::Context::new();
    for m in meta {
        ctx.consume((m.len() as u64).to_be_bytes());
        ctx.consume(m.as_bytes());
    }
    ctx.consume(bytes);
    format!("{:x}", ctx.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atom_entries_become_items_with_their_metadata() {
        let atom = br#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Bulletins</title><id>urn:feed</id><updated>2026-11-01T00:00:00Z</updated>
  <entry>
    <id>urn:bulletin:1</id><title>First bulletin</title>
    <updated>2026-11-01T10:00:00Z</updated>
    <link href="https://example.org/b/1"/>
    <category term="weather"/>
    <content type="text">Storm warning</content>
  </entry>
</feed>"#;
        let items = feed_items(atom).unwrap();
        assert_eq!(items.len(), 1);
        let (item, bytes) = &items[0];
        assert_eq!(item.key, "urn:bulletin:1");
        assert_eq!(item.title, "First bulletin");
        assert_eq!(item.tags, vec!["weather".to_owned()]);
        assert!(item.description.contains("link: https://example.org/b/1"));
        assert_eq!(bytes, b"Storm warning");
        assert!(feed_items(b"<html>not a feed</html>").is_err());
    }

    #[test]
    fn stamps_change_with_content_and_metadata() {
        assert_eq!(stamp_of(&["a"], b"x"), stamp_of(&["a"], b"x"));
        assert_ne!(stamp_of(&["a"], b"x"), stamp_of(&["a"], b"y"));
        assert_ne!(stamp_of(&["ab", ""], b"x"), stamp_of(&["a", "b"], b"x"));
    }
}
