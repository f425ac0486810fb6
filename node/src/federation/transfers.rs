//! Stream-through: the registry of pulls in progress, and a reader that serves the bytes of a
//! document while they are still arriving.
//!
//! The fetch task appends to `partial/<md5>` and publishes how many bytes are on disk through a
//! `watch` channel. A reader opens the same file and follows the writer: it sends what is
//! there, waits for more, and ends at the expected size. The last byte is held back until the
//! content is verified and stored. If the pull fails (MD5 mismatch, source gone for good) the
//! reader's stream ends with an error, so the connection is cut and the reader (a downstream
//! node, a device, curl) sees an incomplete body, never a complete unverified one; a node
//! verifies the MD5 itself as well, so unverified bytes never get stored anywhere.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use docfed_shared::Md5Hex;
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bytes present in the partial file.
    Written(u64),
    /// Complete and verified; the file now lives in the object store (same inode).
    Done,
    Failed,
}

#[derive(Debug)]
pub struct Transfer {
    pub path: PathBuf,
    pub size: u64,
    progress: watch::Sender<Progress>,
}

impl Transfer {
    pub fn set(&self, p: Progress) {
        self.progress.send_replace(p);
    }

    /// Readers following this transfer right now.
    pub fn readers(&self) -> usize {
        self.progress.receiver_count()
    }
}

#[derive(Debug, Default)]
pub struct Transfers {
    active: Mutex<HashMap<Md5Hex, Arc<Transfer>>>,
}

impl Transfers {
    /// Registers a pull into `path`, or updates the one already registered there (readers that
    /// follow it keep following); `already` bytes are on disk (a resumed partial file). `None`
    /// when another transfer, into another file, holds this content address: there is one
    /// transfer per address, and the caller must wait for that one to end.
    pub fn begin(
        &self,
        md5: &Md5Hex,
        path: PathBuf,
        size: u64,
        already: u64,
    ) -> Option<Arc<Transfer>> {
        let mut active = self.active.lock().expect("not poisoned");
        let t = active
            .entry(md5.clone())
            .or_insert_with(|| {
                let (tx, _) = watch::channel(Progress::Written(already));
                Arc::new(Transfer {
                    path: path.clone(),
                    size,
                    progress: tx,
                })
            })
            .clone();
        if t.path != path {
            return None;
        }
        t.set(Progress::Written(already));
        Some(t)
    }

    /// Registers a pull only if none is in progress for this content: `Some` means the caller
    /// must run it; `None` means another one already does (follow that one instead).
    pub fn begin_if_absent(&self, md5: &Md5Hex, path: PathBuf, size: u64) -> Option<Arc<Transfer>> {
        let mut active = self.active.lock().expect("not poisoned");
        if active.contains_key(md5) {
            return None;
        }
        let (tx, _) = watch::channel(Progress::Written(0));
        let t = Arc::new(Transfer {
            path,
            size,
            progress: tx,
        });
        active.insert(md5.clone(), t.clone());
        Some(t)
    }

    /// Ends the transfer of `md5` into `path`, telling its readers how it ended. A transfer
    /// into another file (someone else's) is left alone.
    pub fn end(&self, md5: &Md5Hex, path: &std::path::Path, outcome: Progress) {
        let mut active = self.active.lock().expect("not poisoned");
        if active.get(md5).is_some_and(|t| t.path == path) {
            if let Some(t) = active.remove(md5) {
                t.set(outcome);
            }
        }
    }

    pub fn get(&self, md5: &Md5Hex) -> Option<Arc<Transfer>> {
        self.active.lock().expect("not poisoned").get(md5).cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("the upstream pull failed")]
    Failed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Streams bytes `start..end` of a transfer in progress, waiting for the writer as needed. With
/// `keys`, the file is sealed (`atrest`): it is read a whole chunk at a time, once the writer
/// sealed it.
pub async fn follow(
    t: Arc<Transfer>,
    start: u64,
    end: u64,
    keys: Option<crate::atrest::Keys>,
) -> std::io::Result<std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, FollowError>> + Send>>> {
    let file = open_when_created(&t).await?;
    if let Some(keys) = keys {
        // Opened now, like a plain one: the file is renamed into the store when the transfer
        // ends, and a reader that joins too late must learn it here, not halfway.
        let file = file.into_std().await;
        return Ok(Box::pin(follow_sealed(t, file, start, end, keys)));
    }
    let mut file = file;
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let rx = t.progress.subscribe();
    let state = (file, start, rx, t);
    Ok(Box::pin(futures::stream::unfold(
        Some(state),
        move |state| async move {
            let (mut file, pos, mut rx, t) = state?;
            if pos >= end {
                return None;
            }
            loop {
                let available = match *rx.borrow_and_update() {
                    // The last byte waits for verification: a reader must never see a complete
                    // body of content that then fails its MD5.
                    Progress::Written(n) => n.min(t.size.saturating_sub(1)),
                    Progress::Done => t.size,
                    Progress::Failed => return Some((Err(FollowError::Failed), None)),
                };
                if available > pos {
                    let want = (available.min(end) - pos).min(CHUNK as u64) as usize;
                    let mut buf = BytesMut::zeroed(want);
                    return match file.read_exact(&mut buf).await {
                        Ok(_) => Some((Ok(buf.freeze()), Some((file, pos + want as u64, rx, t)))),
                        Err(e) => Some((Err(FollowError::Io(e)), None)),
                    };
                }
                if rx.changed().await.is_err() {
                    // The registry dropped the transfer without a final state: treat as failed.
                    return Some((Err(FollowError::Failed), None));
                }
            }
        },
    )))
}

/// Opens the transfer's file, waiting while the transfer has begun but not yet created it (a
/// small pull creates it once its body has arrived). Fails with `NotFound` when the transfer
/// ended meanwhile: its file is in the store, or gone.
async fn open_when_created(t: &Transfer) -> std::io::Result<tokio::fs::File> {
    let mut rx = t.progress.subscribe();
    loop {
        match tokio::fs::File::open(&t.path).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && *rx.borrow_and_update() == Progress::Written(0) =>
            {
                // A change after the failed open is seen here, not missed: `borrow_and_update`
                // marked the value read, so `changed` waits only for a newer one.
                if rx.changed().await.is_err() {
                    return Err(e);
                }
            }
            opened => return opened,
        }
    }
}

/// [`follow`] for a sealed file: chunk `i` is read once the writer reports it sealed (the last
/// one once the transfer is done, i.e. verified).
fn follow_sealed(
    t: Arc<Transfer>,
    file: std::fs::File,
    start: u64,
    end: u64,
    keys: crate::atrest::Keys,
) -> impl Stream<Item = Result<Bytes, FollowError>> + Send {
    use crate::atrest::{Opened, CHUNK as SEALED};
    let rx = t.progress.subscribe();
    let keys = Arc::new(keys);
    // The header is read at the first chunk: by then it is written.
    let unread: Option<std::fs::File> = Some(file);
    let opened: Option<Arc<Opened>> = None;
    futures::stream::unfold(Some((unread, opened, start, rx, t)), move |state| {
        let keys = keys.clone();
        async move {
            let (mut unread, mut opened, pos, mut rx, t) = state?;
            if pos >= end {
                return None;
            }
            let index = pos / SEALED;
            let chunk_end = ((index + 1) * SEALED).min(t.size);
            loop {
                let ready = match *rx.borrow_and_update() {
                    Progress::Written(n) => n >= chunk_end && chunk_end < t.size,
                    Progress::Done => true,
                    Progress::Failed => return Some((Err(FollowError::Failed), None)),
                };
                if ready {
                    break;
                }
                if rx.changed().await.is_err() {
                    return Some((Err(FollowError::Failed), None));
                }
            }
            if let Some(f) = unread.take() {
                let keys = keys.clone();
                let o = tokio::task::spawn_blocking(move || Opened::from_file(f, &keys))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r);
                match o {
                    Ok(Some(o)) => opened = Some(Arc::new(o)),
                    Ok(None) => {
                        tracing::warn!(path = %t.path.display(), "a transfer's file is not sealed");
                        return Some((
                            Err(FollowError::Io(std::io::Error::other(
                                "the transfer's file is not sealed",
                            ))),
                            None,
                        ));
                    }
                    Err(e) => return Some((Err(FollowError::Io(e)), None)),
                }
            }
            let o = opened.clone().expect("opened above");
            let size = t.size;
            let chunk = match tokio::task::spawn_blocking(move || o.chunk(index, size)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!(path = %t.path.display(), chunk = index, error = %e, "cannot read a sealed chunk of a transfer");
                    return Some((Err(FollowError::Io(e)), None));
                }
                Err(e) => return Some((Err(FollowError::Io(std::io::Error::other(e))), None)),
            };
            let from = (pos - index * SEALED) as usize;
            let to = (end.min(chunk_end) - index * SEALED) as usize;
            let piece = Bytes::copy_from_slice(&chunk[from..to]);
            Some((
                Ok(piece),
                Some((unread, opened, index * SEALED + to as u64, rx, t)),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn md5() -> Md5Hex {
        "0123456789abcdef0123456789abcdef".parse().unwrap()
    }

    #[test]
    fn one_transfer_per_content_address() {
        let transfers = Transfers::default();
        let (scheduled, ondemand) = (PathBuf::from("partial/x"), PathBuf::from("tmp/ondemand-x"));
        let t = transfers
            .begin_if_absent(&md5(), ondemand.clone(), 10)
            .unwrap();
        // A scheduled pull into another file may not take over the on-demand one's record...
        assert!(transfers.begin(&md5(), scheduled.clone(), 10, 0).is_none());
        assert!(transfers
            .begin_if_absent(&md5(), scheduled.clone(), 10)
            .is_none());
        // ...nor end it.
        transfers.end(&md5(), &scheduled, Progress::Failed);
        assert_eq!(*t.progress.borrow(), Progress::Written(0));
        assert!(transfers.get(&md5()).is_some());
        transfers.end(&md5(), &ondemand, Progress::Done);
        assert!(transfers.get(&md5()).is_none());
        assert!(transfers.begin(&md5(), scheduled, 10, 3).is_some());
    }

    #[tokio::test]
    async fn the_last_byte_waits_for_verification() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, b"0123456789").unwrap();
        let transfers = Transfers::default();
        let t = transfers.begin(&md5(), path.clone(), 10, 10).unwrap();
        let mut reader = Box::pin(follow(t.clone(), 0, 10, None).await.unwrap());
        let first = reader.next().await.unwrap().unwrap();
        assert_eq!(&first[..], b"012345678");
        // Nothing more until the pull ends; a failed one cuts the reader.
        let next = tokio::time::timeout(std::time::Duration::from_millis(100), reader.next()).await;
        assert!(next.is_err(), "the last byte was sent before verification");
        transfers.end(&md5(), &path, Progress::Failed);
        assert!(matches!(
            reader.next().await,
            Some(Err(FollowError::Failed))
        ));
        // A verified one gets it.
        let t = transfers.begin(&md5(), path.clone(), 10, 10).unwrap();
        let mut reader = Box::pin(follow(t, 0, 10, None).await.unwrap());
        let _ = reader.next().await.unwrap().unwrap();
        transfers.end(&md5(), &path, Progress::Done);
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"9");
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn a_sealed_transfer_is_followed_chunk_by_chunk() {
        use crate::atrest::{ContentFile, ContentKey, Keys, CHUNK};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::File::create(&path).unwrap();
        let keys = Keys {
            current: ContentKey::from_hex(&"ab".repeat(32)).unwrap(),
            old: vec![],
        };
        let size = 3 * CHUNK + 10;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let transfers = Transfers::default();
        let t = transfers
            .begin_if_absent(&md5(), path.clone(), size)
            .unwrap();
        let reader = follow(t.clone(), 5, size, Some(keys.clone()))
            .await
            .unwrap();
        let (writer_t, writer_data) = (t.clone(), data.clone());
        let writer = tokio::task::spawn_blocking(move || {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut f = ContentFile::start(f, Some(&keys)).unwrap();
            for (i, piece) in writer_data.chunks(10_000).enumerate() {
                f.write_all(piece).unwrap();
                let written = ((i + 1) * 10_000).min(writer_data.len()) as u64;
                writer_t.set(Progress::Written(f.readable(written)));
            }
            f.finish().unwrap().sync_all().unwrap();
            writer_t.set(Progress::Done);
        });
        let got: Vec<u8> = reader
            .map(|r| r.unwrap().to_vec())
            .collect::<Vec<_>>()
            .await
            .concat();
        writer.await.unwrap();
        assert_eq!(got.len() as u64, size - 5);
        assert!(got == data[5..]);
    }
}
