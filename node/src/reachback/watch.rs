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
//! * **Only what is inside.** Symbolic links are never followed (a link could point anywhere on
//!   the primary, its signing key included): not by the watcher, not by the rescan, and a file
//!   is opened beneath the folder with no link on the way ([`super::beneath`]), then checked to
//!   be the file that was looked at. Links found are logged and left alone. The folder itself
//!   is resolved once, at start, as the operator configured it. Hidden files and folders and
//!   editors' temporary names (`~`, `.tmp`, `.part`, `.swp`, `.crdownload`) are skipped.

use std::collections::{HashMap, HashSet};
use std::fs::File;
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

use super::beneath::{self, Kind, Seen};
use super::items::{path_locator, truncate, Item, ItemBytes, Offered, Publisher};

/// Events buffered between the watcher's thread and the source; beyond, a rescan catches up.
const EVENT_QUEUE: usize = 4096;
/// How long a missing folder waits before it is looked for again.
const MISSING_FOLDER_RETRY: Duration = Duration::from_secs(5);
/// A folder event asks for a rescan this soon, so a burst of them makes one.
const RESCAN_SOON: Duration = Duration::from_millis(200);

/// Runs the source until `stop` fires.
pub async fn run(p: Publisher, stop: CancellationToken) -> anyhow::Result<()> {
    let configured = p
        .spec
        .path
        .clone()
        .expect("a validated watch source has a path");
    let (tx, mut events) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let flag = overflowed.clone();
    // notify follows links into the folders they name by default.
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = notify::RecommendedWatcher::new(
        move |ev: notify::Result<notify::Event>| {
            if tx.try_send(ev).is_err() {
                flag.store(true, Ordering::Relaxed);
            }
        },
        config,
    )?;
    let root = loop {
        // Canonical, so that a lazy item's locator (an absolute path) holds no link either.
        let watched = std::fs::canonicalize(&configured).and_then(|root| {
            watcher
                .watch(&root, RecursiveMode::Recursive)
                .map_err(std::io::Error::other)?;
            Ok(root)
        });
        match watched {
            Ok(root) => break root,
            Err(e) => {
                let why = format!("cannot watch {}: {e}", configured.display());
                p.record_run(None, Some(&why)).await;
                tokio::select! {
                    () = tokio::time::sleep(MISSING_FOLDER_RETRY) => {}
                    () = stop.cancelled() => return Ok(()),
                }
            }
        }
    };
    tracing::info!(source = %p.name(), folder = %root.display(), "watching folder");

    let settle = p.spec.settle();
    let mut w = Watch {
        p,
        root,
        settle,
        due: HashMap::new(),
        next_rescan: Instant::now(),
        links: HashSet::new(),
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
    /// Links found and logged, so that each is logged once while it stays.
    links: HashSet<PathBuf>,
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
                let folder = |p: &PathBuf| p.symlink_metadata().is_ok_and(|m| m.is_dir());
                if ev.paths.iter().any(folder) || mode == RenameMode::Any {
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
        let seen = Seen::of_meta(&meta);
        match seen.kind {
            Kind::File => self.take(path, key, &seen).await,
            Kind::Folder => {
                self.rescan_soon(Instant::now());
                Ok(Look::Done)
            }
            Kind::Link => {
                self.link_found(path);
                Ok(Look::Done)
            }
            Kind::Other => Ok(Look::Done),
        }
    }

    /// Logs a link found in the folder, once while it stays.
    fn link_found(&mut self, path: &Path) {
        if self.links.insert(path.to_owned()) {
            let rel = path.strip_prefix(&self.root).unwrap_or(path);
            tracing::warn!(source = %self.p.name(), path = %rel.display(),
                "symbolic link in the watched folder not followed; not published");
        }
    }

    /// Reads and publishes a file that was `seen` a regular file at `path`, unless it is not
    /// that file any more (looked at again later) or cannot be opened without following a link
    /// (refused).
    async fn take(&self, path: &Path, key: String, seen: &Seen) -> anyhow::Result<Look> {
        let before = stamp(seen);
        if self.p.is_unchanged(&key, &before).await? {
            return Ok(Look::Done);
        }
        let (root, rel) = (self.root.clone(), path.strip_prefix(&self.root)?.to_owned());
        let opened = tokio::task::spawn_blocking(move || {
            let (file, opened) = beneath::open(&root, &rel)?;
            let busy = being_written(&file);
            anyhow::Ok((file, opened, busy))
        })
        .await??;
        let (file, opened, busy) = opened;
        if !opened.same_file(seen) || busy {
            // Replaced since it was looked at, or still being written.
            return Ok(Look::Later);
        }
        let item = self.item(path, key, before.clone())?;
        let file = tokio::fs::File::from_std(file);
        let body = tokio_util::io::ReaderStream::new(file.try_clone().await?);
        // A lazy source's file is hashed in place; its bytes are read again only when a node is
        // first asked for them.
        let bytes = if self.p.lazy() {
            ItemBytes::AtSource(self.p.learn(&item, body).await?, path_locator(path)?)
        } else {
            ItemBytes::Read(self.p.read(&item, body).await?)
        };
        let after = Seen::of_meta(&file.metadata().await?);
        let now_there = Seen::of_meta(&tokio::fs::symlink_metadata(path).await?);
        if stamp(&after) != before || stamp(&now_there) != before {
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
        let listing = tokio::task::spawn_blocking(move || beneath::list(&root)).await;
        let beneath::Listing { files, links } = match listing {
            Ok(Ok(listing)) => listing,
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
        let still: HashSet<&PathBuf> = links.iter().collect();
        self.links.retain(|l| still.contains(l));
        for link in &links {
            if !self.skipped(link) {
                self.link_found(link);
            }
        }
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
fn stamp(seen: &Seen) -> String {
    format!(
        "{}:{}.{}:{}",
        seen.size, seen.mtime, seen.mtime_nsec, seen.ino
    )
}

/// Whether another process has the file open for writing, as far as the kernel tells: a read
/// lease is granted only when no one does. Where leases are not available (another owner
/// without `CAP_LEASE`, a file system without them) the answer is no, and the close event and
/// settle time decide alone.
fn being_written(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller owns; the lease is dropped before it returns.
    let granted = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
    if granted == 0 {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        return false;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
}
