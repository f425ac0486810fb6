//! `exec` sources: an operator's program, in any language, run every `interval`
//! (ARCHITECTURE.md §2.9). It prints the source's current items on stdout, one JSON object per
//! line, and exits 0 when the listing is complete:
//!
//! ```json
//! {"key": "station-42/2026-11-23", "title": "Station 42, 23 Nov", "path": "/var/feeds/42.csv",
//!  "description": "daily readings", "tags": ["station-42"], "content_type": "text/csv"}
//! ```
//!
//! * `key` (required): unique within the source; the same key is the same document.
//! * the content: `path` (an absolute path of a regular file, with no symbolic link on the way:
//!   links are not followed), `url` (http or https, fetched without following redirects) or `text` (the content itself, UTF-8).
//! * `title` (default: the key), `description`, `tags`, `content_type`, `filename`: optional.
//! * `stamp`: optional change marker; an item with the stamp of last time is not read again.
//! * `lazy` (default: the source's `lazy`): the bytes stay at `path` or `url` until a node is
//!   first asked for them. `size`, `md5` and `sha256` (hex) declare them; without them the node
//!   reads the item once to hash it, and keeps nothing. A node that later reads other bytes
//!   there refuses them.
//!
//! Items of the last complete listing that are missing now are removed (`on_remove`). A program
//! that exits non-zero, is killed or runs past its time only publishes what it printed: no
//! removals. Its stderr goes to the node's log; lines beyond [`MAX_LINE`] bytes are refused.
//! `examples/reachback-exec.py` is an example.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::items::{path_locator, Item, Publisher};
use crate::edits::Content;

/// Longest line of the program's output.
pub const MAX_LINE: usize = 1024 * 1024;
/// Longest a run may take before the program is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// One line of the protocol.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    stamp: Option<String>,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    lazy: Option<bool>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    md5: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

pub async fn run(p: Publisher, stop: CancellationToken) -> anyhow::Result<()> {
    let client = docfed_http::tls::client_builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    loop {
        let outcome = tokio::select! {
            r = tokio::time::timeout(RUN_TIMEOUT, run_once(&p, &client)) => {
                r.unwrap_or_else(|_| Err(anyhow::anyhow!("the program ran longer than {RUN_TIMEOUT:?}; killed")))
            }
            () = stop.cancelled() => return Ok(()),
        };
        match outcome {
            Ok(seen) => p.record_run(Some(seen), None).await,
            Err(e) => {
                let why = format!("{e:#}");
                tracing::warn!(source = %p.name(), error = %why, "source program failed");
                p.record_run(None, Some(&why)).await;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(p.spec.interval()) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// Runs the program once; the number of items after a complete listing.
async fn run_once(p: &Publisher, client: &reqwest::Client) -> anyhow::Result<u64> {
    let argv = &p.spec.command;
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {:?}", argv[0]))?;
    let stderr = child.stderr.take().expect("piped");
    let name = p.name().to_owned();
    let logger = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr.take(MAX_LINE as u64 * 16)).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(source = %name, "program: {line}");
        }
    });
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut present = HashSet::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut out)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            break;
        }
        if line.len() > MAX_LINE {
            anyhow::bail!("an output line is longer than {MAX_LINE} bytes");
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let parsed: Line = match serde_json::from_str(text.trim()) {
            Ok(l) => l,
            Err(e) => {
                p.failed("(output)", &anyhow::anyhow!("not an item line: {e}"))
                    .await;
                continue;
            }
        };
        let key = parsed.key.clone();
        present.insert(key.clone());
        if let Err(e) = take(p, client, parsed).await {
            p.failed(&key, &e).await;
        }
    }
    let status = child.wait().await?;
    let _ = logger.await;
    if !status.success() {
        anyhow::bail!("the program exited with {status}; its listing is incomplete");
    }
    p.sweep(&present).await?;
    Ok(present.len() as u64)
}

async fn take(p: &Publisher, client: &reqwest::Client, l: Line) -> anyhow::Result<()> {
    let stamp = l.stamp.clone().unwrap_or_default();
    let lazy = l.lazy.unwrap_or_else(|| p.lazy());
    let declared = declared_content(&l)?;
    if declared.is_some() && !lazy {
        anyhow::bail!("`size`, `md5` and `sha256` describe the bytes of a lazy item only");
    }
    if !stamp.is_empty() && p.is_unchanged(&l.key, &stamp).await? {
        return Ok(());
    }
    let filename = l.filename.clone().unwrap_or_else(|| {
        l.path
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let content_type = l.content_type.clone().unwrap_or_else(|| {
        mime_guess::from_path(&filename)
            .first_or_octet_stream()
            .essence_str()
            .to_owned()
    });
    let item = Item {
        title: l.title.clone().unwrap_or_else(|| l.key.clone()),
        key: l.key,
        filename,
        tags: l.tags,
        description: l.description,
        content_type,
        stamp,
    };
    match (l.path, l.url, l.text) {
        (Some(path), None, None) => {
            let locator = path_locator(&path)?;
            let file = open_item_file(&path).await?;
            if lazy {
                let content = match declared {
                    Some(c) => c,
                    None => {
                        p.learn(&item, tokio_util::io::ReaderStream::new(file))
                            .await?
                    }
                };
                p.commit_lazy(item, content, locator).await?;
            } else {
                p.offer(item, tokio_util::io::ReaderStream::new(file))
                    .await?;
            }
        }
        (None, Some(url), None) => {
            let parsed = item_url(&url)?;
            if let (true, Some(content)) = (lazy, declared) {
                p.commit_lazy(item, content, url).await?;
                return Ok(());
            }
            let resp = client.get(parsed).send().await?;
            if !resp.status().is_success() {
                anyhow::bail!("GET {url} answered {}", resp.status());
            }
            if lazy {
                let content = p.learn(&item, resp.bytes_stream().boxed()).await?;
                p.commit_lazy(item, content, url).await?;
            } else {
                p.offer(item, resp.bytes_stream().boxed()).await?;
            }
        }
        (None, None, Some(_)) if lazy => {
            anyhow::bail!("a lazy item's bytes are at a `path` or a `url`, not in `text`")
        }
        (None, None, Some(text)) => {
            let body =
                futures::stream::iter([Ok::<Bytes, std::convert::Infallible>(Bytes::from(text))]);
            p.offer(item, body).await?;
        }
        _ => anyhow::bail!("an item needs exactly one of `path`, `url` and `text`"),
    }
    Ok(())
}

/// The digests a lazy item's line declares: `size`, `md5` and `sha256` together, or none of
/// them. The SHA-256 is not optional: a version's strong hash is what every node checks the
/// bytes against (an MD5 alone can be matched by crafted bytes).
fn declared_content(l: &Line) -> anyhow::Result<Option<Content>> {
    match (&l.md5, &l.sha256, l.size) {
        (None, None, None) => Ok(None),
        (Some(md5), Some(sha256), Some(size)) => Ok(Some(Content {
            md5: md5
                .parse()
                .map_err(|e| anyhow::anyhow!("md5 {md5:?}: {e}"))?,
            sha256: Some(
                sha256
                    .parse()
                    .map_err(|e| anyhow::anyhow!("sha256 {sha256:?}: {e}"))?,
            ),
            size,
            lazy: true,
        })),
        _ => anyhow::bail!("declare a lazy item's `size`, `md5` and `sha256` together, or none"),
    }
}

/// An item's file: an absolute path of a regular file, opened without following any link on
/// the way (a link swapped in by whoever may write where the file is would otherwise publish
/// any file the node can read).
pub async fn open_item_file(path: &std::path::Path) -> anyhow::Result<tokio::fs::File> {
    if !path.is_absolute() {
        anyhow::bail!("path {} is not absolute", path.display());
    }
    let owned = path.to_owned();
    let (file, _) = tokio::task::spawn_blocking(move || super::beneath::open_absolute(&owned))
        .await?
        .with_context(|| format!("{}", path.display()))?;
    Ok(tokio::fs::File::from_std(file))
}

/// An item's URL: http or https.
pub fn item_url(url: &str) -> anyhow::Result<url::Url> {
    let parsed = url::Url::parse(url).with_context(|| format!("url {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("url {url:?} is not http(s)");
    }
    Ok(parsed)
}
