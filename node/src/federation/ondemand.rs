//! Cross-region fetch: a regional node asked for content it does not hold pulls it from another
//! regional node that holds it (first, to spread load), else from a primary, and streams it to
//! the requester as it arrives. Concurrent requests for the same content follow one upstream
//! transfer (request collapsing, through the `transfers` registry). The bytes are kept only if
//! one of this node's devices flagged the document; otherwise they live in `tmp/` for the
//! transfer's duration.

use std::sync::Arc;

use docfed_shared::wire::DocumentVersion;
use docfed_shared::Md5Stream;

use super::fetch::{write_stream, PullError};
use super::transfers::{Progress, Transfer};
use crate::db::documents::{object_known, record_object};
use crate::Node;

/// Sources for content of `doc`, other regional holders first, then the primaries.
pub fn sources(node: &Node, doc: &DocumentVersion) -> Vec<String> {
    let Some(fed) = node.federation() else {
        return Vec::new();
    };
    node.holders(&doc.scope)
        .into_iter()
        .filter(|id| id != fed.id())
        .filter_map(|id| fed.url_of(&id))
        .filter(|url| !node.presence_says_down(url))
        .collect()
}

/// Returns the transfer to follow for `doc`'s content, starting one if none is in progress.
/// `None` when this node is not in a federation or nobody could serve it.
pub fn start(node: &Arc<Node>, doc: &DocumentVersion) -> Option<Arc<Transfer>> {
    let sources = sources(node, doc);
    if sources.is_empty() {
        return None;
    }
    let path = node
        .config
        .data_dir
        .join("tmp")
        .join(format!("ondemand-{}", doc.md5));
    let Some(t) = node
        .transfers
        .begin_if_absent(&doc.md5, path.clone(), doc.size)
    else {
        return node.transfers.get(&doc.md5);
    };
    // Created before anyone follows it; the pull below truncates the same inode.
    if let Err(e) = std::fs::File::create(&path) {
        tracing::warn!(error = %e, "cannot create cross-region fetch file");
        node.transfers.end(&doc.md5, Progress::Failed);
        return None;
    }
    let (node2, doc, t2) = (node.clone(), doc.clone(), t.clone());
    tokio::spawn(async move {
        let outcome = run(&node2, &doc, &t2, &sources).await;
        match outcome {
            Ok(kept) => {
                tracing::info!(doc_id = %doc.id, md5 = %doc.md5, kept, "cross-region fetch complete");
                node2.transfers.end(&doc.md5, Progress::Done);
            }
            Err(e) => {
                tracing::warn!(doc_id = %doc.id, md5 = %doc.md5, error = %e, "cross-region fetch failed");
                node2.transfers.end(&doc.md5, Progress::Failed);
            }
        }
        // Readers keep their open file; the name goes unless the store took it.
        let _ = std::fs::remove_file(&t2.path);
    });
    Some(t)
}

async fn run(
    node: &Arc<Node>,
    doc: &DocumentVersion,
    t: &Arc<Transfer>,
    sources: &[String],
) -> Result<bool, String> {
    let mut errors = Vec::new();
    for src in sources {
        match pull(node, doc, t, src).await {
            Ok(()) => {
                return keep_if_flagged(node, doc, t)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(errors.join("; "))
}

async fn pull(
    node: &Arc<Node>,
    doc: &DocumentVersion,
    t: &Arc<Transfer>,
    src: &str,
) -> Result<(), PullError> {
    let err = |reason: String| PullError::Source {
        source_url: src.to_owned(),
        reason,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&t.path)?;
    t.set(Progress::Written(0));
    let dial = node.federation().map_or(src, |f| f.dial(src));
    let resp = node
        .http
        .get(format!("{dial}/v1/objects/{}", doc.md5))
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let (file, hash) = write_stream(
        node,
        resp,
        file,
        Md5Stream::new(),
        doc.size,
        Some(t.clone()),
        src,
    )
    .await?;
    let (md5, len) = hash.finish();
    if md5 != doc.md5 || len != doc.size {
        return Err(PullError::Md5Mismatch {
            source_url: src.to_owned(),
            expected: doc.md5.clone(),
            actual: md5,
        });
    }
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(std::io::Error::other)??;
    Ok(())
}

/// Moves verified bytes into the store when a device of this node flagged the document.
async fn keep_if_flagged(
    node: &Arc<Node>,
    doc: &DocumentVersion,
    t: &Transfer,
) -> Result<bool, PullError> {
    if !node.db.flagged(&doc.id).await? {
        return Ok(false);
    }
    let mut tx = node.db.begin_write().await?;
    let held = object_known(&mut tx, &doc.md5).await?;
    let placed = node
        .store
        .place(&t.path, &doc.md5, held)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    record_object(&mut tx, &doc.md5, doc.size).await?;
    if let Err(e) = tx.commit().await {
        if placed {
            node.store.discard(&doc.md5).await;
        }
        return Err(e.into());
    }
    Ok(true)
}
