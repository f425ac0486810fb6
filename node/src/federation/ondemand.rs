//! Cross-region fetch: a regional node asked for content it does not hold pulls it from another
//! regional node that holds it (first, to spread load), else from a primary, and streams it to
//! the requester as it arrives. Concurrent requests for the same content follow one upstream
//! transfer (request collapsing, through the `transfers` registry). The bytes are kept only if
//! one of this node's devices flagged the document; otherwise they live in `tmp/` for the
//! transfer's duration.
//!
//! A lazy version (ARCHITECTURE.md §2.9) is fetched the same way, but only upward: a node asks
//! its parents, then the primaries, and a primary reads the bytes from the reachback source
//! running on it (else from the other primary, unless that one is who asks). Every node on the
//! way follows its own transfer (stream-through end to end) and keeps the verified bytes where
//! its scope would have kept them; the primary that read the source then publishes the same
//! content as an ordinary version.

use std::sync::Arc;

use docfed_shared::wire::{DocumentVersion, Timestamp};
use docfed_shared::ContentHasher;
use futures::StreamExt;

use super::pull::{reserve_space, verify, write_stream, PullError, SourceFailure};
use super::transfers::{Progress, Transfer};
use crate::db::devices::flagged_by_any;
use crate::db::documents::{object_known, record_object};
use crate::db::fetches;
use crate::db::sources::LazyItem;
use crate::metrics::Metrics;
use crate::Node;

/// Sources for content of `doc`, other regional holders first, then the primaries. For a lazy
/// version: the parents, then the primaries (up only: a node asked sideways could be asking
/// us in turn).
pub fn sources(node: &Node, doc: &DocumentVersion) -> Vec<String> {
    candidates(node, doc, true)
}

/// Where a queued pull of `doc`'s content (a device's flag) may come from: [`sources`], or, when
/// presence reports every one of them down, all of them regardless. A queued pull skips the
/// peers that are down at each attempt and retries until one answers, so a flag made while
/// every holder is unreachable still gets its content, and its receipt, once one returns.
pub fn queue_sources(node: &Node, doc: &DocumentVersion) -> Vec<String> {
    let up = candidates(node, doc, true);
    if up.is_empty() {
        candidates(node, doc, false)
    } else {
        up
    }
}

/// [`sources`], without the peers presence reports down when `up_only`.
fn candidates(node: &Node, doc: &DocumentVersion, up_only: bool) -> Vec<String> {
    let Some(fed) = node.federation() else {
        return Vec::new();
    };
    let usable = |url: &String| !(up_only && node.presence_says_down(url));
    if doc.lazy {
        let primaries = fed.topology.primaries().map(|p| p.id.clone());
        let mut out: Vec<String> = Vec::new();
        for id in fed.me.parents.iter().cloned().chain(primaries) {
            if id == fed.id() {
                continue;
            }
            if let Some(url) = fed.url_of(&id).filter(usable) {
                if !out.contains(&url) {
                    out.push(url);
                }
            }
        }
        return out;
    }
    node.holders(&doc.scope)
        .into_iter()
        .filter(|id| id != fed.id())
        .filter_map(|id| fed.url_of(&id))
        .filter(usable)
        .collect()
}

/// Where one attempt of an on-demand transfer reads from.
#[derive(Debug, Clone)]
enum Upstream {
    /// Another node's `/v1/objects/{md5}`, by base URL.
    Node(String),
    /// A lazy item of a reachback source running on this primary.
    Source(LazyItem),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Node(url) => f.write_str(url),
            Upstream::Source(i) => write!(f, "source {} item {:?}", i.source, i.key),
        }
    }
}

/// Who asks for content: a primary's request for a lazy version is answered from this
/// node's own source only, never passed back to a primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    Primary,
    Other,
}

async fn upstreams(node: &Node, doc: &DocumentVersion, asker: Asker) -> Vec<Upstream> {
    let mut out = Vec::new();
    let primary = node.federation().is_some_and(|f| f.is_primary());
    if doc.lazy && primary {
        match node.db.lazy_item(&doc.md5).await {
            Ok(Some(item)) => out.push(Upstream::Source(item)),
            Ok(None) => {}
            Err(e) => tracing::warn!(md5 = %doc.md5, error = %e, "cannot look up a lazy item"),
        }
        if asker == Asker::Primary {
            return out;
        }
    }
    out.extend(sources(node, doc).into_iter().map(Upstream::Node));
    out
}

/// A transfer nobody follows any more is abandoned after this long (unless a device flagged
/// the document): an anonymous `GET` that went away must not keep a pull going.
const ABANDON_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// What a request for content this node does not hold can follow.
pub enum Start {
    Follow(Arc<Transfer>),
    /// Every on-demand slot is taken: try again shortly (503).
    Busy,
    /// Not in a federation, or nobody could serve it.
    NoSource,
}

/// Returns the transfer to follow for `doc`'s content, starting one if none is in progress and
/// an on-demand slot is free.
pub async fn start(node: &Arc<Node>, doc: &DocumentVersion, asker: Asker) -> Start {
    if let Some(t) = node.transfers.get(&doc.md5) {
        return Start::Follow(t);
    }
    let sources = upstreams(node, doc, asker).await;
    if sources.is_empty() {
        return Start::NoSource;
    }
    let Ok(slot) = node.ondemand_slots.clone().try_acquire_owned() else {
        return Start::Busy;
    };
    let Some(t) = begin(node, doc) else {
        return node
            .transfers
            .get(&doc.md5)
            .map_or(Start::NoSource, Start::Follow);
    };
    let supervisor = node.supervisor.clone();
    let (node, doc, first) = (node.clone(), doc.clone(), t.clone());
    let stop = supervisor.stopping();
    supervisor.spawn(async move {
        let _slot = slot;
        let outcome = tokio::select! {
            r = run(&node, &doc, first, &sources) => r,
            // Its readers are gone with the HTTP server; its temporary file with the future.
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(kept) => {
                tracing::info!(doc_id = %doc.id, md5 = %doc.md5, kept, "cross-region fetch complete")
            }
            Err(e) => {
                tracing::warn!(doc_id = %doc.id, md5 = %doc.md5, error = %e, "cross-region fetch failed")
            }
        }
    });
    Start::Follow(t)
}

/// Registers a transfer of `doc`'s content into a file of its own (a name never used before,
/// so no earlier transfer's readers can see it truncated). `None` if one is in progress.
fn begin(node: &Node, doc: &DocumentVersion) -> Option<Arc<Transfer>> {
    let path = node.config.data_dir.join("tmp").join(format!(
        "ondemand-{}-{:016x}",
        doc.md5,
        rand::random::<u64>()
    ));
    // Created before the transfer is registered: a request on another thread may find the
    // transfer the moment it is, and must be able to open its file then.
    if let Err(e) = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        tracing::warn!(error = %e, "cannot create cross-region fetch file");
        return None;
    }
    let t = node
        .transfers
        .begin_if_absent(&doc.md5, path.clone(), doc.size);
    if t.is_none() {
        let _ = std::fs::remove_file(&path);
    }
    t
}

/// Tries each source in turn. An attempt that fails ends its transfer as failed (its readers'
/// connections are cut: they may have been sent bad bytes) and the next source gets a transfer
/// of its own. Returns whether the bytes were kept.
async fn run(
    node: &Arc<Node>,
    doc: &DocumentVersion,
    first: Arc<Transfer>,
    sources: &[Upstream],
) -> Result<bool, OnDemandError> {
    let mut errors = Vec::new();
    let mut next = Some(first);
    for src in sources {
        let Some(t) = next.take().or_else(|| begin(node, doc)) else {
            // Someone else's transfer of the same content runs now; its readers follow it.
            break;
        };
        let started_at = Timestamp::now().millis();
        let outcome = tokio::select! {
            r = pull(node, doc, &t, src) => match r {
                Ok(()) => keep_if_wanted(node, doc, &t, &src.to_string(), started_at).await,
                Err(e) => Err(e),
            },
            () = unfollowed(node, doc, &t) => {
                Metrics::inc(&node.metrics.ondemand_abandoned);
                node.transfers.end(&doc.md5, &t.path, Progress::Failed);
                let _ = std::fs::remove_file(&t.path);
                return Err(OnDemandError::Abandoned);
            }
        };
        let done = outcome.is_ok();
        node.transfers.end(
            &doc.md5,
            &t.path,
            if done {
                Progress::Done
            } else {
                Progress::Failed
            },
        );
        // Readers keep their open file; the name goes unless the store took it.
        let _ = std::fs::remove_file(&t.path);
        match outcome {
            Ok(kept) => {
                if let (Upstream::Source(item), true) = (src, kept) {
                    materialise(node, doc, item).await;
                }
                return Ok(kept);
            }
            Err(e) => {
                tracing::warn!(md5 = %doc.md5, source = %src, error = %e, "on-demand transfer attempt failed; its readers are cut");
                if let Upstream::Source(item) = src {
                    crate::reachback::lazy::failed(node, item, &e.to_string()).await;
                }
                errors.push(e)
            }
        }
    }
    Err(OnDemandError::Failed(errors))
}

/// How an on-demand transfer ended without the content.
#[derive(Debug, thiserror::Error)]
enum OnDemandError {
    #[error("abandoned: nobody followed it for {ABANDON_AFTER:?}")]
    Abandoned,
    /// Every source tried failed (none when another transfer took the address first).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Failed(Vec<PullError>),
}

/// Resolves once nobody has followed `t` for [`ABANDON_AFTER`] and no device of this node
/// flagged the document; never while either holds.
async fn unfollowed(node: &Node, doc: &DocumentVersion, t: &Transfer) {
    let mut idle_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if t.readers() > 0 || node.db.flagged(&doc.id).await.unwrap_or(true) {
            idle_since = None;
            continue;
        }
        let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= ABANDON_AFTER {
            return;
        }
    }
}

async fn pull(
    node: &Arc<Node>,
    doc: &DocumentVersion,
    t: &Arc<Transfer>,
    up: &Upstream,
) -> Result<(), PullError> {
    let src = &up.to_string();
    let err = |failure: SourceFailure| PullError::Source {
        source_url: src.to_owned(),
        failure,
    };
    let file = crate::atrest::ContentFile::start(
        std::fs::OpenOptions::new().write(true).open(&t.path)?,
        node.store.keys(),
    )?;
    let space = reserve_space(node, doc.size)?;
    let body = match up {
        Upstream::Node(url) => {
            let fed = node
                .federation()
                .expect("on-demand pulls run in a federation");
            let resp = fed
                .pull_request(
                    &node.http_for(url),
                    format!("{}/v1/objects/{}", fed.dial(url), doc.md5),
                    &doc.md5,
                )
                .send()
                .await
                .map_err(|e| err(SourceFailure::Request(e)))?;
            if resp.status() != reqwest::StatusCode::OK {
                return Err(err(SourceFailure::Status(resp.status())));
            }
            resp.bytes_stream().map(|r| r.map_err(Into::into)).boxed()
        }
        Upstream::Source(item) => crate::reachback::lazy::open(item)
            .await
            .map_err(|e| err(SourceFailure::Unreadable(e)))?,
    };
    let (file, hash) = write_stream(
        node,
        body,
        file,
        ContentHasher::new(),
        doc.size,
        Some(t.clone()),
        space,
        src,
    )
    .await?;
    let verified = verify(hash.finish(), &doc.md5, doc.size, doc.sha256.as_ref(), src);
    match &verified {
        Err(PullError::Md5Mismatch { .. }) => Metrics::inc(&node.metrics.md5_mismatches),
        Err(PullError::Sha256Mismatch { .. }) => Metrics::inc(&node.metrics.sha256_mismatches),
        _ => {}
    }
    verified?;
    tokio::task::spawn_blocking(move || file.finish()?.sync_all())
        .await
        .map_err(std::io::Error::other)??;
    Ok(())
}

/// Moves verified bytes into the store when a device of this node flagged the document, or
/// when they are a lazy version's that this node's scope keeps (a lazy document, once read,
/// becomes an ordinary one). A pull of the same bytes that a flag or a notification queued is
/// settled in the same transaction, as if it had just finished (its waiters' forwards and
/// content receipts go out): otherwise it would pull the bytes again, and until then nobody
/// above would hear that this node holds them.
async fn keep_if_wanted(
    node: &Arc<Node>,
    doc: &DocumentVersion,
    t: &Transfer,
    source: &str,
    started_at: i64,
) -> Result<bool, PullError> {
    let keeps = doc.lazy
        && node
            .federation()
            .is_some_and(|f| f.keeps_content(&doc.scope));
    let mut tx = node.db.begin_write().await?;
    // Asked in the writer transaction: an unflag committed just before must not see its
    // released content come back.
    if !keeps && !flagged_by_any(&mut *tx, &doc.id).await? {
        return Ok(false);
    }
    let held = object_known(&mut tx, &doc.md5).await?;
    let placed = node.store.place(&t.path, &doc.md5, held).await?;
    let recorded: Result<bool, sqlx::Error> = async {
        record_object(&mut tx, &doc.md5, doc.size).await?;
        let mut settled = false;
        if let Some(fed) = node.federation() {
            if fetches::pending_of(&mut tx, &[&doc.md5])
                .await?
                .contains_key(doc.md5.as_str())
            {
                let done = fetches::Completed {
                    md5: &doc.md5,
                    source,
                    bytes: doc.size,
                    attempts: 1,
                    started_at,
                };
                super::fetch::settle(&mut tx, fed, &[done]).await?;
                settled = true;
            }
        }
        tx.commit().await?;
        Ok(settled)
    }
    .await;
    match recorded {
        Ok(settled) => {
            if settled {
                node.pulls.settled_elsewhere(&doc.md5);
                tracing::info!(doc_id = %doc.id, md5 = %doc.md5, "a pending pull of the same bytes was settled by this transfer");
                node.wake_outbox();
            }
        }
        Err(e) => {
            if placed {
                node.store.discard(&doc.md5).await;
            }
            return Err(e.into());
        }
    }
    node.content_available(doc.id, doc.version).await;
    Ok(true)
}

/// This primary read a lazy version's bytes from its source and holds them now: the same
/// content becomes an ordinary version, replicated like any other.
async fn materialise(node: &Arc<Node>, doc: &DocumentVersion, item: &LazyItem) {
    match node.materialise(doc.id, &doc.md5).await {
        Ok(Some(v)) => {
            tracing::info!(doc_id = %doc.id, version = v.version, source = %item.source,
                key = %item.key, "lazy item read from its source; published as an ordinary version")
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(doc_id = %doc.id, error = %e, "cannot publish a fetched lazy item")
        }
    }
}
