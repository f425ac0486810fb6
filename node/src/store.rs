//! The content-addressed store: `objects/<ab>/<md5>` under the data dir.
//!
//! Bytes arrive as a stream and are written to a temporary file in `tmp/` by a blocking worker
//! thread that hashes as it writes, so receiving from the socket, hashing and writing to disk
//! overlap and only a bounded number of chunks is ever in memory. A finished file is fsynced,
//! then renamed into place and its directory fsynced; the caller records it in SQLite in the
//! same writer transaction (see `db`), so an object row never exists without its file. A
//! temporary file is deleted when its guard is dropped, whatever the reason (error, client gone,
//! task cancelled), and `tmp/` is emptied at start-up for the crash case.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use docfed_shared::hashing::ParallelHasher;
use docfed_shared::{ContentHasher, Md5Hex, Sha256Hex};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Chunks queued between the socket and the writer thread.
const WRITE_QUEUE: usize = 16;
const WRITE_BUFFER: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("upload exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(
        "not enough disk space (need {needed} bytes, {available} available after the reserve)"
    )]
    DiskFull { needed: u64, available: u64 },
    /// The file system ran out of space during a write (ENOSPC), which the reserve should
    /// prevent but cannot when something else fills the disk.
    #[error("the disk filled up while writing: {0}")]
    NoSpace(#[source] io::Error),
    #[error("the client stopped sending: {0}")]
    BodyAborted(String),
    #[error("the client sent nothing for {0:?}")]
    IdleTimeout(Duration),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
}

impl StoreError {
    /// ENOSPC anywhere in a write means a full disk, which the API reports as 507.
    fn from_io(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(nix::libc::ENOSPC) {
            StoreError::NoSpace(e)
        } else {
            StoreError::Io(e)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    objects: PathBuf,
    tmp: PathBuf,
    reserved_space: u64,
    /// Bytes that pulls in progress have yet to write: free space they will take.
    promised: Arc<AtomicU64>,
    /// The content keys, when content is sealed at rest.
    keys: Option<Arc<crate::atrest::Keys>>,
    /// Uploads at most this large stay in memory for the small-object store.
    small_max: u64,
}

/// Space a pull will still write, counted against the free space until released (as bytes are
/// written, or on drop), so concurrent pulls cannot each count the same free bytes.
#[derive(Debug)]
pub struct SpaceReservation {
    promised: Arc<AtomicU64>,
    left: AtomicU64,
}

impl SpaceReservation {
    /// `n` bytes of the reservation were written: they now show in the file system.
    pub fn written(&self, n: u64) {
        let n = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some(l.saturating_sub(n))
            })
            .map_or(0, |before| before.min(n));
        self.promised.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Drop for SpaceReservation {
    fn drop(&mut self) {
        self.promised
            .fetch_sub(*self.left.get_mut(), Ordering::Relaxed);
    }
}

/// A temporary file that is removed on drop unless it was moved into the store.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A complete upload waiting to be committed into the store.
#[derive(Debug)]
pub struct Ingested {
    pub body: IngestedBody,
    pub md5: Md5Hex,
    pub sha256: Sha256Hex,
    pub size: u64,
}

/// Where an upload's bytes wait: small content in memory, for the small-object store
/// (`small_objects`), where the commit that records it makes it durable; anything larger in an
/// fsynced temporary file, to be renamed into `objects/`.
#[derive(Debug)]
pub enum IngestedBody {
    Memory(Bytes),
    File(TempFile),
}

impl Ingested {
    /// The bytes, when they are small enough to be kept in memory.
    pub fn small(&self) -> Option<&Bytes> {
        match &self.body {
            IngestedBody::Memory(b) => Some(b),
            IngestedBody::File(_) => None,
        }
    }
}

/// Creates the node's data directory, where the store, the database and the token live, at
/// start-up before anything is written into it.
pub fn create_data_dir(data_dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(data_dir)
}

impl Store {
    /// Opens the store under `data_dir`, removing temporary files left by a crash. With
    /// `keys`, content is sealed at rest (`atrest`).
    pub fn open(
        data_dir: &Path,
        reserved_space: u64,
        keys: Option<Arc<crate::atrest::Keys>>,
    ) -> io::Result<Self> {
        let objects = data_dir.join("objects");
        let tmp = data_dir.join("tmp");
        std::fs::create_dir_all(&objects)?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Self {
            objects,
            tmp,
            reserved_space,
            promised: Arc::default(),
            keys,
            small_max: 0,
        })
    }

    /// Keeps uploads of at most `n` bytes in memory, for the small-object store, instead of
    /// writing and fsyncing a file each.
    pub fn with_small_max(mut self, n: u64) -> Self {
        self.small_max = n;
        self
    }

    pub fn object_path(&self, md5: &Md5Hex) -> PathBuf {
        let s = md5.as_str();
        self.objects.join(&s[..2]).join(s)
    }

    /// Bytes that may still be written before the reserve is reached, less what pulls in
    /// progress have yet to write.
    pub fn available_space(&self) -> io::Result<u64> {
        let st = nix::sys::statvfs::statvfs(&self.objects).map_err(io::Error::from)?;
        let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
        Ok(free
            .saturating_sub(self.reserved_space)
            .saturating_sub(self.promised.load(Ordering::Relaxed)))
    }

    /// Reserves `needed` bytes for a pull, or says how much is available.
    pub fn reserve(&self, needed: u64) -> Result<SpaceReservation, StoreError> {
        self.check_space(needed)?;
        self.promised.fetch_add(needed, Ordering::Relaxed);
        Ok(SpaceReservation {
            promised: self.promised.clone(),
            left: AtomicU64::new(needed),
        })
    }

    /// Refuses up front an upload whose announced size cannot fit.
    pub fn check_space(&self, needed: u64) -> Result<(), StoreError> {
        let available = self.available_space()?;
        if needed > available {
            return Err(StoreError::DiskFull { needed, available });
        }
        Ok(())
    }

    /// Streams `body` into a temporary file, hashing as it goes, and fsyncs it; a body of at most
    /// [`small_max`](Self::small_max) bytes stays in memory instead (no file, no fsync: the
    /// small-object store's commit makes it durable). At most `limit` bytes are accepted; a
    /// pause longer than `idle` abandons the upload.
    pub async fn ingest<S, E>(
        &self,
        mut body: S,
        limit: u64,
        idle: Duration,
    ) -> Result<Ingested, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        // The first `small_max` bytes are read into memory; only a body that goes past them
        // is written to a file, starting with them.
        let mut head: Vec<Bytes> = Vec::new();
        let mut held = 0u64;
        let overflow = loop {
            let chunk = match next_chunk(&mut body, idle).await? {
                None => break None,
                Some(chunk) => chunk,
            };
            if held + chunk.len() as u64 > limit {
                return Err(StoreError::TooLarge { limit });
            }
            if held + chunk.len() as u64 > self.small_max {
                break Some(chunk);
            }
            held += chunk.len() as u64;
            head.push(chunk);
        };
        let Some(overflow) = overflow else {
            let bytes = match head.len() {
                0 => Bytes::new(),
                1 => head.pop().expect("one chunk"),
                _ => Bytes::from(head.concat()),
            };
            let mut hasher = ContentHasher::new();
            docfed_shared::hashing::StreamHash::update(&mut hasher, &bytes);
            let d = hasher.finish();
            return Ok(Ingested {
                body: IngestedBody::Memory(bytes),
                md5: d.md5,
                sha256: d.sha256,
                size: d.size,
            });
        };
        let path = self.tmp.join(format!("upload-{}", uuid_like()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(StoreError::from_io)?;
        let temp = TempFile { path, armed: true };
        let (tx, rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let keys = self.keys.clone();
        let writer = tokio::task::spawn_blocking(move || write_chunks(file, keys.as_deref(), rx));
        let read_so_far = head
            .into_iter()
            .chain(std::iter::once(overflow))
            .map(Ok::<_, E>);
        let body = futures::stream::iter(read_so_far).chain(body);
        let outcome = pump(body, &tx, limit, idle).await;
        drop(tx);
        let written = writer
            .await
            .map_err(|e| StoreError::Io(io::Error::other(e)))?;
        // The writer's error (e.g. ENOSPC) explains a failed send better than the send does.
        let hash = written.map_err(StoreError::from_io)?;
        outcome?;
        let d = hash.finish();
        Ok(Ingested {
            body: IngestedBody::File(temp),
            md5: d.md5,
            sha256: d.sha256,
            size: d.size,
        })
    }

    /// Moves an ingested file to its content address and makes the rename durable. Returns
    /// whether a new file was placed (false when the content was already held).
    /// Content in memory ([`IngestedBody::Memory`]) has no file to place: `false`.
    pub async fn commit(&self, ingested: Ingested, already_held: bool) -> Result<bool, StoreError> {
        let Ingested { body, md5, .. } = ingested;
        let IngestedBody::File(mut temp) = body else {
            return Ok(false);
        };
        let placed = self.place(&temp.path, &md5, already_held).await?;
        temp.armed = !placed;
        Ok(placed)
    }

    /// [`commit`](Self::commit) for many ingested files, none of them held yet and each of
    /// another content, with one round of directory fsyncs ([`place_all`](Self::place_all)).
    /// Returns, in order, whether each was placed; one that was not is removed.
    /// Every one must be a file ([`IngestedBody::File`]).
    pub async fn commit_all(&self, ingested: Vec<Ingested>) -> Vec<Result<(), StoreError>> {
        let (mut temps, files): (Vec<TempFile>, Vec<(PathBuf, Md5Hex)>) = ingested
            .into_iter()
            .map(|i| match i.body {
                IngestedBody::File(temp) => {
                    let file = (temp.path.clone(), i.md5);
                    (temp, file)
                }
                IngestedBody::Memory(_) => unreachable!("commit_all places files only"),
            })
            .unzip();
        let placed = self.place_all(files).await;
        for (temp, result) in temps.iter_mut().zip(&placed) {
            temp.armed = result.is_err();
        }
        placed
    }

    /// Renames a complete, fsynced file (an upload or a verified pull) to its content address
    /// and fsyncs the directory. When the content is already held the file is left where it is
    /// for the caller to drop.
    pub async fn place(
        &self,
        src: &Path,
        md5: &Md5Hex,
        already_held: bool,
    ) -> Result<bool, StoreError> {
        if already_held {
            if !src.starts_with(&self.tmp) {
                let _ = std::fs::remove_file(src);
            }
            return Ok(false);
        }
        let dest = self.object_path(md5);
        let src = src.to_owned();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let dir = dest.parent().expect("object paths have a parent");
            if !dir.exists() {
                std::fs::create_dir_all(dir)?;
                sync_dir(dir.parent().expect("objects dir"))?;
            }
            std::fs::rename(&src, &dest)?;
            sync_dir(dir)
        })
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e)))?
        .map_err(StoreError::from_io)?;
        Ok(true)
    }

    /// [`place`](Self::place) for many verified files at once, `(file, md5)`, none of them held
    /// yet: every rename first, then each directory they entered fsynced once. On ext4 the
    /// first of those fsyncs commits the journal with all the renames, so a group costs about
    /// one directory fsync instead of one per file. Returns, in order, whether each file was
    /// placed; an error for one file leaves it where it was.
    pub async fn place_all(&self, files: Vec<(PathBuf, Md5Hex)>) -> Vec<Result<(), StoreError>> {
        let moves: Vec<(PathBuf, PathBuf)> = files
            .into_iter()
            .map(|(src, md5)| {
                let dest = self.object_path(&md5);
                (src, dest)
            })
            .collect();
        let count = moves.len();
        let joined = tokio::task::spawn_blocking(move || -> Vec<io::Result<()>> {
            let mut results = Vec::with_capacity(moves.len());
            let mut dirs: Vec<&Path> = Vec::new();
            for (src, dest) in &moves {
                let dir = dest.parent().expect("object paths have a parent");
                let moved = (|| {
                    if !dir.exists() {
                        std::fs::create_dir_all(dir)?;
                        sync_dir(dir.parent().expect("objects dir"))?;
                    }
                    std::fs::rename(src, dest)
                })();
                if moved.is_ok() && !dirs.contains(&dir) {
                    dirs.push(dir);
                }
                results.push(moved);
            }
            // A directory that cannot be synced fails every file renamed into it: its rename
            // may not survive a crash, so nobody may record it as held.
            for dir in dirs {
                if let Err(e) = sync_dir(dir) {
                    for ((_, dest), r) in moves.iter().zip(results.iter_mut()) {
                        if r.is_ok() && dest.parent() == Some(dir) {
                            *r = Err(io::Error::new(e.kind(), e.to_string()));
                        }
                    }
                }
            }
            results
        })
        .await;
        match joined {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(StoreError::from_io))
                .collect(),
            Err(e) => (0..count)
                .map(|_| Err(StoreError::Io(io::Error::other(e.to_string()))))
                .collect(),
        }
    }

    /// Removes an object placed by `commit` whose database record could not be written.
    pub async fn discard(&self, md5: &Md5Hex) {
        let path = self.object_path(md5);
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::warn!(path = %path.display(), error = %e, "could not remove unrecorded object");
        }
    }

    /// Removes a stored object whose row was deleted (content released). Readers that opened
    /// it keep reading their open file; a file already gone is not an error.
    pub async fn remove(&self, md5: &Md5Hex) {
        let path = self.object_path(md5);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a released object")
            }
        }
    }

    /// The content keys when content is sealed at rest.
    pub fn keys(&self) -> Option<&crate::atrest::Keys> {
        self.keys.as_deref()
    }

    /// Where the store keeps files being written.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Seals again every object not sealed with the current key (after a key rotation, or when
    /// encryption was just turned on). Returns how many.
    pub async fn rekey(&self) -> io::Result<u64> {
        let Some(keys) = self.keys.clone() else {
            return Ok(0);
        };
        let (objects, tmp) = (self.objects.clone(), self.tmp.clone());
        tokio::task::spawn_blocking(move || crate::atrest::rekey(&objects, &tmp, &keys))
            .await
            .map_err(io::Error::other)?
    }

    /// Content bytes `start..end` of the stored object `md5` of `size` bytes, decrypted when
    /// sealed. `NotFound` when the store does not hold it.
    pub async fn read_range(
        &self,
        md5: &Md5Hex,
        size: u64,
        start: u64,
        end: u64,
    ) -> io::Result<futures::stream::BoxStream<'static, io::Result<Bytes>>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let path = self.object_path(md5);
        if let Some(keys) = self.keys.clone() {
            let opened =
                tokio::task::spawn_blocking(move || crate::atrest::Opened::open(&path, &keys))
                    .await
                    .map_err(io::Error::other)??;
            if let Some(opened) = opened {
                return Ok(crate::atrest::range_stream(opened, size, start, end).boxed());
            }
        }
        // Plain: no key, or an object from before encryption was turned on (until `rekey`).
        let mut file = tokio::fs::File::open(self.object_path(md5)).await?;
        if start > 0 {
            file.seek(io::SeekFrom::Start(start)).await?;
        }
        Ok(tokio_util::io::ReaderStream::with_capacity(
            file.take(end.saturating_sub(start)),
            crate::atrest::CHUNK as usize,
        )
        .boxed())
    }
}

/// The next chunk of an upload, `None` at its end; a pause longer than `idle` abandons it.
async fn next_chunk<S, E>(body: &mut S, idle: Duration) -> Result<Option<Bytes>, StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    match tokio::time::timeout(idle, body.next()).await {
        Err(_) => Err(StoreError::IdleTimeout(idle)),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(StoreError::BodyAborted(e.to_string())),
        Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
    }
}

async fn pump<S, E>(
    mut body: S,
    tx: &mpsc::Sender<Bytes>,
    limit: u64,
    idle: Duration,
) -> Result<(), StoreError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut total: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(idle, body.next()).await {
            Err(_) => return Err(StoreError::IdleTimeout(idle)),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(StoreError::BodyAborted(e.to_string())),
            Ok(Some(Ok(chunk))) => chunk,
        };
        total += chunk.len() as u64;
        if total > limit {
            return Err(StoreError::TooLarge { limit });
        }
        if tx.send(chunk).await.is_err() {
            // The writer stopped: its own error is reported by the caller.
            return Ok(());
        }
    }
}

fn write_chunks(
    file: std::fs::File,
    keys: Option<&crate::atrest::Keys>,
    mut rx: mpsc::Receiver<Bytes>,
) -> io::Result<ContentHasher> {
    let mut hash = ParallelHasher::new(ContentHasher::new());
    let mut behind = WriteBehind::default();
    if let Some(keys) = keys {
        let mut out = crate::atrest::ContentFile::start(file, Some(keys))?;
        while let Some(chunk) = rx.blocking_recv() {
            out.write_all(&chunk)?;
            behind.wrote(out.as_file(), chunk.len());
            hash.update(chunk)?;
        }
        out.finish()?.sync_all()?;
        return hash.finish();
    }
    let mut out = io::BufWriter::with_capacity(WRITE_BUFFER, file);
    while let Some(chunk) = rx.blocking_recv() {
        out.write_all(&chunk)?;
        behind.wrote(out.get_ref(), chunk.len());
        hash.update(chunk)?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    hash.finish()
}

/// Has the disk write a file's bytes while more arrive: every [`WRITE_BEHIND_STEP`] bytes it
/// starts the writeback of the file's dirty pages without waiting for it. Otherwise the kernel
/// writes nothing back until a tenth of the memory is dirty or 30 s have passed, so a large
/// file's fsync at its end waited for all of it (about a second for 256 MiB here) after the last
/// byte arrived; now it waits for the last step. Durability is unchanged: the fsync decides it.
#[derive(Debug, Default)]
pub(crate) struct WriteBehind {
    unsubmitted: u64,
}

/// Bytes written between two writeback starts.
const WRITE_BEHIND_STEP: u64 = 8 << 20;

impl WriteBehind {
    /// `n` more bytes were written to `file`.
    pub(crate) fn wrote(&mut self, file: &std::fs::File, n: usize) {
        use std::os::fd::AsRawFd;
        self.unsubmitted += n as u64;
        if self.unsubmitted < WRITE_BEHIND_STEP {
            return;
        }
        self.unsubmitted = 0;
        // SAFETY: a plain system call on an open descriptor that `file` owns for the call's
        // duration; no memory is passed. The whole file (0, 0) is named because a sealed file's
        // offsets are not content offsets; pages already written back or under writeback are
        // skipped by the kernel. A failure is left to the fsync at the end, which reports it.
        unsafe {
            nix::libc::sync_file_range(file.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE);
        }
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn uuid_like() -> String {
    use rand::Rng;
    format!("{:032x}", rand::rng().random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(data: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin {
        let v: Vec<_> = data
            .chunks(size.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(v)
    }

    #[tokio::test]
    async fn place_all_places_each_file_and_reports_the_one_that_cannot_move() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, None).unwrap();
        let partial = dir.path().join("partial");
        std::fs::create_dir_all(&partial).unwrap();
        let contents: [&[u8]; 3] = [b"first", b"second", b"third"];
        let mut files = Vec::new();
        for (i, data) in contents.iter().enumerate() {
            let md5 = Md5Hex::from_digest(md5::compute(data).0);
            let path = partial.join(md5.as_str());
            // The second one's file is missing: its rename fails, the others do not.
            if i != 1 {
                std::fs::write(&path, data).unwrap();
            }
            files.push((path, md5));
        }
        let results = store.place_all(files.clone()).await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(results[1].is_err());
        for i in [0, 2] {
            assert_eq!(
                std::fs::read(store.object_path(&files[i].1)).unwrap(),
                contents[i]
            );
            assert!(!files[i].0.exists(), "moved, not copied");
        }
        assert!(!store.object_path(&files[1].1).exists());
    }

    #[tokio::test]
    async fn ingest_then_commit_places_file_at_its_md5() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, None).unwrap();
        let data = vec![7u8; 300_000];
        let ing = store
            .ingest(chunks(&data, 65_536), u64::MAX, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(ing.size, 300_000);
        let md5 = ing.md5.clone();
        assert!(store.commit(ing, false).await.unwrap());
        assert_eq!(std::fs::read(store.object_path(&md5)).unwrap(), data);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn oversized_or_aborted_upload_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, None).unwrap();
        let err = store
            .ingest(chunks(&[1u8; 1000], 100), 999, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { limit: 999 }), "{err}");
        let aborted = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(io::Error::other("connection reset")),
        ]);
        let err = store
            .ingest(aborted, u64::MAX, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::BodyAborted(_)), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("objects"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn already_held_content_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0, None).unwrap();
        let ing = store
            .ingest(chunks(b"same", 2), u64::MAX, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(!store.commit(ing, true).await.unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
