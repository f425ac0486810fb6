//! One pull attempt from one source: resume a partial file with `Range` + `If-Range`, stream the
//! bytes to disk through a bounded queue while hashing them (MD5 and SHA-256), enforce the
//! declared size, a minimum rate and the disk reserve, and verify the result. `fetch` decides
//! which source to try and when; `ondemand` uses the same writer for readers' cross-region
//! transfers.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use docfed_shared::hashing::{Digests, ParallelHasher, StreamHash};
use docfed_shared::{ContentHasher, Md5Hex, Sha256Hex};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::transfers::{Progress, Transfer};
use crate::metrics::Metrics;
use crate::store::{SpaceReservation, StoreError, WriteBehind};
use crate::Node;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    #[error("{source_url}: {failure}")]
    Source {
        source_url: String,
        failure: SourceFailure,
    },
    #[error("MD5 mismatch from {source_url}: expected {expected}, got {actual}")]
    Md5Mismatch {
        source_url: String,
        expected: Md5Hex,
        actual: Md5Hex,
    },
    #[error("SHA-256 mismatch from {source_url}: the signed version says {expected}, the bytes hash to {actual}")]
    Sha256Mismatch {
        source_url: String,
        expected: Sha256Hex,
        actual: Sha256Hex,
    },
    #[error("{source_url} sent less than {MIN_PROGRESS} bytes ({received}) in {window:?}")]
    Stalled {
        source_url: String,
        received: u64,
        window: Duration,
    },
    #[error("{source_url} sent more than the declared {declared} bytes")]
    Oversized { source_url: String, declared: u64 },
    #[error(
        "waiting for disk space: {needed} bytes needed, {available} available above the reserve"
    )]
    NoSpace { needed: u64, available: u64 },
    #[error("local I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("storing: {0}")]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Why a source did not deliver content.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceFailure {
    #[error("{0}")]
    Request(#[source] reqwest::Error),
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("transfer interrupted after {received} bytes: {error}")]
    Interrupted {
        received: u64,
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A reachback source's item could not be opened (ARCHITECTURE.md §2.9).
    #[error("{0}")]
    Unreadable(String),
}

/// Pulls `md5` from `src` into `partial`, resuming what is already there, and verifies it: its
/// MD5 and size always, its SHA-256 when the version that asked for it carries one.
pub(crate) async fn pull(
    node: &Arc<Node>,
    want: Wanted<'_>,
    src: &str,
    partial: &Path,
    stream_through: bool,
) -> Result<(), PullError> {
    let Wanted { md5, sha256, size } = want;
    let source_err = |failure: SourceFailure| from_source(src, failure);
    std::fs::create_dir_all(partial.parent().expect("partial dir"))?;
    // A small pull with nothing on disk yet may take the short way (`pull_small`); if its body
    // does not arrive at once it goes on here, with what arrived so far.
    let mut begun = None;
    if size <= SMALL_PULL && !partial.exists() {
        // Readers may join before the file exists: `transfers::follow` waits for it.
        let transfer = stream_through
            .then(|| node.transfers.begin(md5, partial.to_owned(), size, 0))
            .flatten();
        let space = reserve_space(node, size)?;
        let resp = object_request(node, src, md5)
            .send()
            .await
            .map_err(|e| source_err(SourceFailure::Request(e)))?;
        if resp.status().as_u16() != 200 {
            return Err(source_err(SourceFailure::Status(resp.status())));
        }
        let mut body = resp.bytes_stream();
        let (held, ended) = hold(&mut body, size).await;
        if ended {
            return pull_small(node, want, src, partial, transfer, held, space).await;
        }
        begun = Some((held, body, space));
    }
    // Hash what a previous attempt left, so a resumed pull is verified end to end.
    let (file, mut hash) = {
        let path = partial.to_owned();
        let keys = node.store.keys().cloned();
        tokio::task::spawn_blocking(move || {
            crate::atrest::open_for_resume(&path, size, keys.as_ref())
        })
        .await
        .map_err(std::io::Error::other)??
    };
    let already = hash.len();
    // `None` when an on-demand transfer took the address meanwhile: pull without readers.
    let transfer = stream_through
        .then(|| node.transfers.begin(md5, partial.to_owned(), size, already))
        .flatten();
    let result = async {
        let (file, hash) = if already == size {
            (file, hash)
        } else {
            let (held, body, space, file) = match begun {
                Some((held, body, space)) => (held, body, space, file),
                None => {
                    let space = reserve_space(node, size - already)?;
                    let mut req = object_request(node, src, md5);
                    if already > 0 {
                        req = req
                            .header("Range", format!("bytes={already}-"))
                            .header("If-Range", format!("\"{md5}\""));
                    }
                    let resp = req
                        .send()
                        .await
                        .map_err(|e| source_err(SourceFailure::Request(e)))?;
                    let status = resp.status();
                    let file = match status.as_u16() {
                        206 => file,
                        200 => {
                            // The source ignored the range: start over.
                            let file = file.restart(node.store.keys())?;
                            hash = ContentHasher::new();
                            if let Some(t) = &transfer {
                                t.set(Progress::Written(0));
                            }
                            file
                        }
                        _ => return Err(source_err(SourceFailure::Status(status))),
                    };
                    (Vec::new(), resp.bytes_stream(), space, file)
                }
            };
            write_stream(
                node,
                futures::stream::iter(held).chain(body),
                file,
                hash,
                size,
                transfer.clone(),
                space,
                src,
            )
            .await?
        };
        if let Err(e) = verify(hash.finish(), md5, size, sha256, src) {
            let _ = std::fs::remove_file(partial);
            return Err(e);
        }
        tokio::task::spawn_blocking(move || file.finish()?.sync_all())
            .await
            .map_err(std::io::Error::other)??;
        Ok(())
    }
    .await;
    if matches!(
        result,
        Err(PullError::Md5Mismatch { .. } | PullError::Sha256Mismatch { .. })
    ) {
        // The partial file is gone: its readers may hold bytes that were not the content.
        node.transfers.end(md5, partial, Progress::Failed);
    }
    // Any other failure leaves the transfer registered: `fetch_one` resumes at once or tries the
    // next source, and ends the transfer only when this round gives up.
    result
}

/// The content a pull wants: its address, its size and, when the version carries one, its
/// SHA-256.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted<'a> {
    pub md5: &'a Md5Hex,
    pub sha256: Option<&'a Sha256Hex>,
    pub size: u64,
}

fn from_source(src: &str, failure: SourceFailure) -> PullError {
    PullError::Source {
        source_url: src.to_owned(),
        failure,
    }
}

/// `GET {src}/v1/objects/{md5}`, signed when this node has a key.
fn object_request(node: &Node, src: &str, md5: &Md5Hex) -> reqwest::RequestBuilder {
    let fed = node.federation().expect("pulls run in a federation");
    let dial = fed.dial(src);
    fed.pull_request(&node.http_for(src), format!("{dial}/v1/objects/{md5}"), md5)
}

/// Content at most this large, with nothing of it on disk yet, is pulled by [`pull_small`].
pub(crate) const SMALL_PULL: u64 = 256 * 1024;

/// How long a small pull holds what arrives in memory. A body that has not all arrived by then
/// is written as it comes ([`pull`]'s general path), so readers following a slow transfer see
/// its bytes at most this much later than they arrive.
const SMALL_HOLD: Duration = Duration::from_millis(25);

/// Takes what `body` delivers within [`SMALL_HOLD`], stopping once it has more than `size`
/// bytes. True when the body ended (completely, broken off or overrunning `size`) meanwhile.
async fn hold<S>(body: &mut S, size: u64) -> (Vec<reqwest::Result<Bytes>>, bool)
where
    S: futures::Stream<Item = reqwest::Result<Bytes>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + SMALL_HOLD;
    let (mut held, mut got) = (Vec::new(), 0u64);
    loop {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => return (held, false),
            Ok(None) => return (held, true),
            Ok(Some(Err(e))) => {
                held.push(Err(e));
                return (held, true);
            }
            Ok(Some(Ok(chunk))) => {
                got += chunk.len() as u64;
                held.push(Ok(chunk));
                if got > size {
                    return (held, true);
                }
            }
        }
    }
}

/// [`pull`] of small content whose whole body arrived within [`SMALL_HOLD`] (`held`): it is
/// checked, then created, written, hashed and fsynced in one blocking step. The general path
/// takes a blocking step to open the file, a writer thread fed chunk by chunk and another
/// blocking step to fsync: each a hand-off between threads, which cost more than the work for
/// a document of a few kilobytes.
async fn pull_small(
    node: &Arc<Node>,
    want: Wanted<'_>,
    src: &str,
    partial: &Path,
    transfer: Option<Arc<Transfer>>,
    held: Vec<reqwest::Result<Bytes>>,
    space: SpaceReservation,
) -> Result<(), PullError> {
    let Wanted { md5, sha256, size } = want;
    let mut chunks = Sink::Memory(Vec::new());
    let failure = receive(node, futures::stream::iter(held), size, 0, &mut chunks, src).await;
    let Sink::Memory(chunks) = chunks else {
        unreachable!("received into memory")
    };
    let path = partial.to_owned();
    let keys = node.store.keys().cloned();
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<Digests> {
        let (file, hash) = crate::atrest::open_for_resume(&path, size, keys.as_ref())?;
        let mut writer = ContentWriter::new(file, hash, space, transfer);
        for chunk in chunks {
            writer.append(chunk)?;
        }
        let (file, hash) = writer.finish()?;
        file.finish()?.sync_all()?;
        Ok(hash.finish())
    })
    .await
    .map_err(std::io::Error::other)??;
    // What arrived is on disk: a later attempt resumes it, as on the general path.
    if let Some(e) = failure {
        return Err(e);
    }
    if let Err(e) = verify(written, md5, size, sha256, src) {
        let _ = std::fs::remove_file(partial);
        node.transfers.end(md5, partial, Progress::Failed);
        return Err(e);
    }
    Ok(())
}

/// Checks received bytes against the content address (MD5 and size) and, when the version
/// carries one, its SHA-256.
pub(crate) fn verify(
    got: Digests,
    md5: &Md5Hex,
    size: u64,
    sha256: Option<&Sha256Hex>,
    src: &str,
) -> Result<(), PullError> {
    if got.size != size || got.md5 != *md5 {
        return Err(PullError::Md5Mismatch {
            source_url: src.to_owned(),
            expected: md5.clone(),
            actual: got.md5,
        });
    }
    if let Some(expected) = sha256.filter(|&h| *h != got.sha256) {
        // Same MD5, other bytes: a collision crafted to pass the content address.
        return Err(PullError::Sha256Mismatch {
            source_url: src.to_owned(),
            expected: expected.clone(),
            actual: got.sha256,
        });
    }
    Ok(())
}

/// Least a source must send per `pull_stall_timeout` to keep a pull slot: a source that trickles
/// a byte a minute would otherwise hold it for ever.
pub const MIN_PROGRESS: u64 = 64 * 1024;

/// Reserves the disk space a pull will still write, so that pulls never eat into the reserve.
pub(crate) fn reserve_space(node: &Node, needed: u64) -> Result<SpaceReservation, PullError> {
    node.store.reserve(needed).map_err(|e| match e {
        StoreError::DiskFull { needed, available } => PullError::NoSpace { needed, available },
        other => PullError::Store(other),
    })
}

/// Appends the response body to `file` on a blocking thread that hashes as it writes and
/// publishes progress to stream-through readers. Takes at most the declared `size` (counting
/// what `hash` already covers): a source that sends more is cut there, so it can never fill
/// the disk; a source that sends less than [`MIN_PROGRESS`] bytes per `pull_stall_timeout`
/// is abandoned.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_stream<S, E>(
    node: &Arc<Node>,
    body: S,
    file: crate::atrest::ContentFile,
    hash: ContentHasher,
    size: u64,
    transfer: Option<Arc<Transfer>>,
    space: SpaceReservation,
    src: &str,
) -> Result<(crate::atrest::ContentFile, ContentHasher), PullError>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let already = hash.len();
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let writer = tokio::task::spawn_blocking(
        move || -> std::io::Result<(crate::atrest::ContentFile, ContentHasher)> {
            let mut writer = ContentWriter::new(file, hash, space, transfer);
            while let Some(chunk) = rx.blocking_recv() {
                writer.append(chunk)?;
            }
            writer.finish()
        },
    );
    let mut sink = Sink::Writer(tx);
    let failure = receive(node, body, size, already, &mut sink, src).await;
    drop(sink);
    let (file, hash) = writer.await.map_err(std::io::Error::other)??;
    match failure {
        Some(e) => Err(e),
        None => Ok((file, hash)),
    }
}

/// Where received chunks go: a writer thread, or memory for a small pull.
enum Sink {
    Writer(mpsc::Sender<Bytes>),
    Memory(Vec<Bytes>),
}

impl Sink {
    /// Hands `chunk` on; false when the writer has stopped (it failed: its error is reported).
    async fn put(&mut self, chunk: Bytes) -> bool {
        match self {
            Sink::Writer(tx) => tx.send(chunk).await.is_ok(),
            Sink::Memory(chunks) => {
                chunks.push(chunk);
                true
            }
        }
    }
}

/// Takes the rest of content of `size` bytes, of which `already` are on disk, from `body` into
/// `sink`, paced to the node's pull rate limit. Returns why it stopped early: the source
/// stalled, sent more than `size` or broke off.
async fn receive<S, E>(
    node: &Node,
    mut body: S,
    size: u64,
    already: u64,
    sink: &mut Sink,
    src: &str,
) -> Option<PullError>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut remaining = size.saturating_sub(already);
    let mut received = 0u64;
    let started = Instant::now();
    let stall = node.config.pull_stall_timeout;
    let (mut window_start, mut window_bytes) = (tokio::time::Instant::now(), 0u64);
    let mut failure = None;
    loop {
        let next = match tokio::time::timeout_at(window_start + stall, body.next()).await {
            Ok(next) => next,
            Err(_) => {
                Metrics::inc(&node.metrics.pulls_stalled);
                failure = Some(PullError::Stalled {
                    source_url: src.to_owned(),
                    received: window_bytes,
                    window: stall,
                });
                break;
            }
        };
        let Some(chunk) = next else { break };
        match chunk {
            Ok(mut chunk) => {
                if chunk.len() as u64 > remaining {
                    Metrics::inc(&node.metrics.pulls_oversized);
                    failure = Some(PullError::Oversized {
                        source_url: src.to_owned(),
                        declared: size,
                    });
                    chunk.truncate(remaining as usize);
                }
                remaining -= chunk.len() as u64;
                received += chunk.len() as u64;
                window_bytes += chunk.len() as u64;
                if window_bytes >= MIN_PROGRESS {
                    (window_start, window_bytes) = (tokio::time::Instant::now(), 0);
                }
                Metrics::add(&node.metrics.bytes_pulled, chunk.len() as u64);
                if let Some(rate) = node.config.pull_rate_limit {
                    // Pace to the limit: never ahead of where `rate` would have got us.
                    let due = Duration::from_secs_f64(received as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                        // Our own pacing is not the source stalling.
                        window_start += wait;
                    }
                }
                if !chunk.is_empty() && !sink.put(chunk).await {
                    break;
                }
                if failure.is_some() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(PullError::Source {
                    source_url: src.to_owned(),
                    failure: SourceFailure::Interrupted {
                        received,
                        error: e.into(),
                    },
                });
                break;
            }
        }
    }
    failure
}

/// Writes received chunks on a blocking thread: to the file, its hash, the disk's writeback,
/// the space reserved and the progress readers follow.
struct ContentWriter {
    file: crate::atrest::ContentFile,
    hash: ParallelHasher,
    behind: WriteBehind,
    space: SpaceReservation,
    transfer: Option<Arc<Transfer>>,
}

impl ContentWriter {
    fn new(
        file: crate::atrest::ContentFile,
        hash: ContentHasher,
        space: SpaceReservation,
        transfer: Option<Arc<Transfer>>,
    ) -> Self {
        ContentWriter {
            file,
            hash: ParallelHasher::new(hash),
            behind: WriteBehind::default(),
            space,
            transfer,
        }
    }

    fn append(&mut self, chunk: Bytes) -> std::io::Result<()> {
        self.file.write_all(&chunk)?;
        self.behind.wrote(self.file.as_file(), chunk.len());
        self.space.written(chunk.len() as u64);
        self.hash.update(chunk)?;
        if let Some(t) = &self.transfer {
            // Sealed content is readable a whole chunk at a time.
            t.set(Progress::Written(self.file.readable(self.hash.len())));
        }
        Ok(())
    }

    /// The file, not yet synced, and the hash of all it holds.
    fn finish(self) -> std::io::Result<(crate::atrest::ContentFile, ContentHasher)> {
        Ok((self.file, self.hash.finish()?))
    }
}
