//! `watch` sources: a folder watched in real time with inotify (through `notify`), each regular
//! file an item keyed by its path relative to the folder (ARCHITECTURE.md §2.9).
//!
//! * **Never half-written.** A file is taken when its writer closes it (`IN_CLOSE_WRITE`) or when
//!   it is renamed into the folder; a file modified without a close seen is taken once it was
//!   quiet for `settle`. Before reading, a read lease (`F_SETLEASE`) asks the kernel whether any
//!   process still has the file open for writing; if so it waits another `settle`. After
//!   reading, a changed size, mtime or inode means it changed while read: the bytes are dropped
//!   and it is taken again later.
//! * **Nothing missed.** A full rescan runs at start, every `rescan`, after the kernel's event
//!   queue overflowed and when folders appear or vanish (files moved in with a folder raise no
//!   event of their own). Only a complete rescan deletes documents of files that are gone; a
//!   folder that cannot be read stops the sweep, so an unreadable share never deletes anything.
//! * **Only what is inside.** Symbolic links are not followed (a link could point anywhere on
//!   the primary); hidden files and folders and editors' temporary names (`~`, `.tmp`, `.part`,
//!   `.swp`, `.crdownload`) are skipped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use docfed_shared::limits;
use docfed_shared::sources::Subfolders;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::items::{path_locator, truncate, Item, ItemBytes, Offered, Publisher};

/// Events buffered between the watcher's thread and the source; beyond, a rescan catches up.
const EVENT_QUEUE: usize = 4096;
/// How long a missing folder waits before it is looked for again.
const MISSING_FOLDER_RETRY: Duration = Duration::from_secs(5);
/// A folder event asks for a rescan this soon, so a burst of them makes one.
const RESCAN_SOON: Duration = Duration::from_millis(200);

/// Runs the source until `stop` fires.
pub async fn run(p: Publisher, stop: CancellationToken) -> anyhow::Result<()> {
    let root = p
        .spec
        .path
        .clone()
        .expect("a validated watch source has a path");
    let (tx, mut events) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let flag = overflowed.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if tx.try_send(ev).is_err() {
            flag.store(true, Ordering::Relaxed);
        }
    })?;
    loop {
        match watcher.watch(&root, RecursiveMode::Recursive) {
            Ok(()) => break,
            Err(e) => {
                let why = format!("cannot watch {}: {e}", root.display());
                p.record_run(None, Some(&why)).await;
                tokio::select! {
                    () = tokio::time::sleep(MISSING_FOLDER_RETRY) => {}
                    () = stop.cancelled() => return Ok(()),
                }
            }
        }
    }
    tracing::info!(source = %p.name(), folder = %root.display(), "watching folder");

    let settle = p.spec.settle();
    let mut w = Watch {
        p,
        root,
        settle,
        due: HashMap::new(),
        next_rescan: Instant::now(),
    };
    loop {
        if overflowed.swap(false, Ordering::Relaxed) {
            tracing::warn!(source = %w.p.name(), "file events overflowed; rescanning the folder");
            w.next_rescan = Instant::now();
        }
        let now = Instant::now();
        if now >= w.next_rescan {
            w.rescan().await;
            w.next_rescan = Instant::now() + w.p.spec.rescan();
        }
        w.take_due().await;
        let wake = w
            .due
            .values()
            .copied()
            .min()
            .unwrap_or(w.next_rescan)
            .min(w.next_rescan);
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Ok(ev)) => w.on_event(ev),
                Some(Err(e)) => {
                    tracing::warn!(source = %w.p.name(), error = %e, "file watch error; rescanning");
                    w.next_rescan = Instant::now();
                }
                None => anyhow::bail!("the folder watcher stopped"),
            },
            () = tokio::time::sleep_until(wake) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

struct Watch {
    p: Publisher,
    root: PathBuf,
    settle: Duration,
    /// Files to look at, and when.
    due: HashMap<PathBuf, Instant>,
    next_rescan: Instant,
}

impl Watch {
    fn on_event(&mut self, ev: notify::Event) {
        if ev.need_rescan() {
            self.next_rescan = Instant::now();
            return;
        }
        let now = Instant::now();
        let quiet = now + self.settle;
        let at = |w: &mut Self, path: &PathBuf, when: Instant| {
            if !w.skipped(path) {
                w.due.insert(path.clone(), when);
            }
        };
        match ev.kind {
            // Our own reads open and close files too.
            EventKind::Access(AccessKind::Open(_))
            | EventKind::Access(AccessKind::Close(AccessMode::Read)) => {}
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for path in &ev.paths {
                    at(self, path, now);
                }
            }
            EventKind::Create(CreateKind::Folder) | EventKind::Remove(RemoveKind::Folder) => {
                self.rescan_soon(now);
            }
            EventKind::Modify(ModifyKind::Name(mode)) => {
                // A renamed folder moves every file in it; a renamed file is complete.
                if ev.paths.iter().any(|p| p.is_dir()) || mode == RenameMode::Any {
                    self.rescan_soon(now);
                }
                for path in &ev.paths {
                    at(self, path, now);
                }
            }
            EventKind::Remove(_) => {
                for path in &ev.paths {
                    at(self, path, now);
                }
            }
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any | EventKind::Other => {
                for path in &ev.paths {
                    at(self, path, quiet);
                }
            }
            EventKind::Access(_) => {}
        }
    }

    fn rescan_soon(&mut self, now: Instant) {
        self.next_rescan = self.next_rescan.min(now + RESCAN_SOON);
    }

    fn skipped(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return true;
        };
        rel.components().any(|c| {
            let name = c.as_os_str().to_string_lossy();
            name.starts_with('.')
                || name.ends_with('~')
                || [".tmp", ".part", ".swp", ".crdownload"]
                    .iter()
                    .any(|s| name.ends_with(s))
        })
    }

    /// Looks at every file whose time has come.
    async fn take_due(&mut self) {
        let now = Instant::now();
        let ready: Vec<PathBuf> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for path in ready {
            self.due.remove(&path);
            match self.look_at(&path).await {
                Ok(Look::Done) => {}
                Ok(Look::Later) => {
                    self.due.insert(path, Instant::now() + self.settle);
                }
                Err(e) => {
                    let key = self
                        .key(&path)
                        .unwrap_or_else(|_| path.display().to_string());
                    self.p.failed(&key, &e).await;
                }
            }
        }
    }

    /// One file, now: taken, removed, or left for later.
    async fn look_at(&mut self, path: &Path) -> anyhow::Result<Look> {
        let key = self.key(path)?;
        let meta = match tokio::fs::symlink_metadata(path).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.p.remove(&key).await?;
                return Ok(Look::Done);
            }
            Err(e) => return Err(e.into()),
        };
        if meta.is_dir() {
            self.rescan_soon(Instant::now());
            return Ok(Look::Done);
        }
        if !meta.is_file() {
            return Ok(Look::Done);
        }
        self.take(path, key, &meta).await
    }

    async fn take(
        &self,
        path: &Path,
        key: String,
        meta: &std::fs::Metadata,
    ) -> anyhow::Result<Look> {
        let before = stamp(meta);
        if self.p.is_unchanged(&key, &before).await? {
            return Ok(Look::Done);
        }
        let owned = path.to_owned();
        if tokio::task::spawn_blocking(move || being_written(&owned)).await? {
            return Ok(Look::Later);
        }
        let item = self.item(path, key, before.clone())?;
        let body = tokio_util::io::ReaderStream::new(tokio::fs::File::open(path).await?);
        // A lazy source's file is hashed in place; its bytes are read again only when a node is
        // first asked for them.
        let bytes = if self.p.lazy() {
            ItemBytes::AtSource(self.p.learn(&item, body).await?, path_locator(path)?)
        } else {
            ItemBytes::Read(self.p.read(&item, body).await?)
        };
        let after = tokio::fs::symlink_metadata(path).await?;
        if stamp(&after) != before {
            // Changed while read: these bytes may mix two states of the file.
            return Ok(Look::Later);
        }
        if let Offered::Published(v) = self.p.make_current(item, bytes).await? {
            tracing::debug!(doc_id = %v.id, "watched file published");
        }
        Ok(Look::Done)
    }

    fn item(&self, path: &Path, key: String, stamp: String) -> anyhow::Result<Item> {
        let filename = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tags = match self.p.spec.subfolders.unwrap_or_default() {
            Subfolders::Ignore => Vec::new(),
            Subfolders::Tags => {
                let mut folders: Vec<&str> = key.split('/').collect();
                folders.pop();
                folders
                    .into_iter()
                    .filter(|f| !f.is_empty())
                    .map(|f| truncate(f, limits::MAX_TAG, false))
                    .collect()
            }
        };
        Ok(Item {
            title: filename.clone(),
            content_type: mime_guess::from_path(path)
                .first_or_octet_stream()
                .essence_str()
                .to_owned(),
            filename,
            tags,
            description: String::new(),
            key,
            stamp,
        })
    }

    /// The item key of a path: relative to the folder, `/`-separated, UTF-8.
    fn key(&self, path: &Path) -> anyhow::Result<String> {
        let rel = path.strip_prefix(&self.root)?;
        let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
        match parts {
            Some(p) if !p.is_empty() => Ok(p.join("/")),
            _ => anyhow::bail!("{} is not a UTF-8 file name", rel.display()),
        }
    }

    /// Lists the folder and takes what changed; after a complete listing, deletes the documents
    /// of files that are gone.
    async fn rescan(&mut self) {
        let root = self.root.clone();
        let listing = tokio::task::spawn_blocking(move || list(&root)).await;
        let files = match listing {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                let why = format!("cannot list {}: {e}", self.root.display());
                tracing::warn!(source = %self.p.name(), error = %why, "rescan incomplete; nothing deleted");
                self.p.record_run(None, Some(&why)).await;
                return;
            }
            Err(e) => {
                self.p.record_run(None, Some(&e.to_string())).await;
                return;
            }
        };
        let mut present = HashSet::new();
        let now = SystemTime::now();
        for (path, meta) in files {
            if self.skipped(&path) {
                continue;
            }
            let key = match self.key(&path) {
                Ok(k) => k,
                Err(e) => {
                    self.p.failed(&path.display().to_string(), &e).await;
                    continue;
                }
            };
            present.insert(key.clone());
            let recent = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_none_or(|age| age < self.settle);
            if recent || self.due.contains_key(&path) {
                // Perhaps still being written: its close event, or the settle time, decides.
                self.due
                    .entry(path)
                    .or_insert_with(|| Instant::now() + self.settle);
                continue;
            }
            match self.take(&path, key.clone(), &meta).await {
                Ok(Look::Done) => {}
                Ok(Look::Later) => {
                    self.due.insert(path, Instant::now() + self.settle);
                }
                Err(e) => self.p.failed(&key, &e).await,
            }
        }
        let seen = present.len() as u64;
        match self.p.sweep(&present).await {
            Ok(_) => self.p.record_run(Some(seen), None).await,
            Err(e) => self.p.record_run(None, Some(&format!("{e:#}"))).await,
        }
    }
}

enum Look {
    Done,
    Later,
}

/// A file's change marker: size, mtime (ns) and inode, so a replacement by rename counts as a
/// change even with the same size and time.
fn stamp(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{}:{}.{}:{}",
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino()
    )
}

/// Every regular file under `root` (symbolic links not followed), or the first error: a
/// listing with a hole must not delete the documents of the files in the hole.
fn list(root: &Path) -> std::io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
    let mut out = Vec::new();
    let mut folders = vec![root.to_owned()];
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.file_type()?;
            if meta.is_dir() {
                folders.push(entry.path());
            } else if meta.is_file() {
                let path = entry.path();
                match std::fs::symlink_metadata(&path) {
                    Ok(m) => out.push((path, m)),
                    // Removed between the listing and now: not present.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(out)
}

/// Whether another process has the file open for writing, as far as the kernel tells: a read
/// lease is granted only when no one does. Where leases are not available (another owner
/// without `CAP_LEASE`, a file system without them) the answer is no, and the close event and
/// settle time decide alone.
fn being_written(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns; the lease is dropped before it closes.
    let granted = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
    if granted == 0 {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        return false;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
}
