//! Opening and listing a source's files without following symbolic links, beneath a folder
//! only (issue 39): whoever may write into a watched folder must not make the primary publish a
//! file elsewhere on it (its signing key, its token) by a link, swapped in between a check and
//! an open or moved in with a folder.
//!
//! * An item is opened by its path relative to the folder with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)`; where the kernel has no `openat2` (before 5.6, or a sandbox that
//!   refuses it), one component at a time with `O_NOFOLLOW` relative to the folder above. The
//!   folder itself is the operator's and is opened as configured.
//! * What was opened is checked on the descriptor (`fstat`), not the path: a regular file, or
//!   refused. Callers compare its identity with what they checked before.
//! * The listing walks folders by descriptor, each opened with `O_NOFOLLOW`, so a folder
//!   swapped for a link while it is walked is not entered.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// Why an item was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("refused: a symbolic link on the way (links are never followed)")]
    Link,
    #[error("refused: {0:?} is not a plain path beneath the folder")]
    Outside(PathBuf),
    #[error("refused: not a regular file")]
    NotRegular,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl OpenError {
    fn of(errno: Errno) -> Self {
        match errno {
            Errno::ELOOP => OpenError::Link,
            // Only a link can lead out of the folder: its components are checked.
            Errno::EXDEV => OpenError::Link,
            e => OpenError::Io(e.into()),
        }
    }
}

/// What a file was when it was looked at: enough to tell it is the same file, unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
    Link,
    Other,
}

impl Seen {
    pub fn of_meta(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let t = meta.file_type();
        let kind = if t.is_symlink() {
            Kind::Link
        } else if t.is_file() {
            Kind::File
        } else if t.is_dir() {
            Kind::Folder
        } else {
            Kind::Other
        };
        Seen {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            kind,
        }
    }

    #[allow(clippy::unnecessary_cast)] // stat's field types differ between targets
    fn of_stat(st: &FileStat) -> Self {
        let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFDIR => Kind::Folder,
            SFlag::S_IFLNK => Kind::Link,
            _ => Kind::Other,
        };
        Seen {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as i64,
            kind,
        }
    }

    /// Whether `other` is the same file (not necessarily unchanged).
    pub fn same_file(&self, other: &Seen) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    pub fn modified(&self) -> Option<SystemTime> {
        let nanos = u32::try_from(self.mtime_nsec).ok()?;
        let secs = u64::try_from(self.mtime).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    }
}

/// Opens `rel`, a path relative to `root`, for reading: never through a symbolic link, never
/// outside `root`, a regular file only. The descriptor is checked, not the path.
pub fn open(root: &Path, rel: &Path) -> Result<(File, Seen), OpenError> {
    open_with(root, rel, Resolve::Kernel)
}

/// Opens an absolute path as [`open`] does beneath `/`: no component of it may be a link.
pub fn open_absolute(path: &Path) -> Result<(File, Seen), OpenError> {
    let rel = path
        .strip_prefix("/")
        .map_err(|_| OpenError::Outside(path.to_owned()))?;
    open(Path::new("/"), rel)
}

#[derive(Debug, Clone, Copy)]
enum Resolve {
    /// `openat2`, falling back to [`Resolve::PerComponent`] where the kernel lacks it.
    Kernel,
    // Taken by the kernel's absence only, which tests stand in for.
    #[cfg_attr(not(test), allow(dead_code))]
    PerComponent,
}

fn open_with(root: &Path, rel: &Path, how: Resolve) -> Result<(File, Seen), OpenError> {
    let names = plain_components(rel)?;
    let dir = open_folder(root)?;
    let fd = match how {
        Resolve::Kernel => match openat2(dir.as_fd(), rel) {
            // No openat2 here (an old kernel, a seccomp filter): as safe, one step at a time.
            Err(Errno::ENOSYS | Errno::EPERM | Errno::E2BIG) => per_component(dir, &names)?,
            r => r.map_err(OpenError::of)?,
        },
        Resolve::PerComponent => per_component(dir, &names)?,
    };
    checked(fd)
}

/// The components of a relative path, each an ordinary name (no `..`, `.`, root or empty).
fn plain_components(rel: &Path) -> Result<Vec<&OsStr>, OpenError> {
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => names.push(n),
            _ => return Err(OpenError::Outside(rel.to_owned())),
        }
    }
    if names.is_empty() {
        return Err(OpenError::Outside(rel.to_owned()));
    }
    Ok(names)
}

fn open_folder(root: &Path) -> std::io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Non-blocking so that a FIFO does not hang the open; it is refused by [`checked`].
fn file_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY
}

fn openat2(dir: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new().flags(file_flags()).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    nix::fcntl::openat2(dir, rel, how)
}

fn per_component(root: OwnedFd, names: &[&OsStr]) -> Result<OwnedFd, OpenError> {
    let (last, folders) = names.split_last().expect("at least one component");
    let mut dir = root;
    for name in folders {
        dir = nix::fcntl::openat(&dir, *name, folder_flags(), Mode::empty())
            .map_err(|e| refusal(&dir, name, e))?;
    }
    nix::fcntl::openat(&dir, *last, file_flags(), Mode::empty()).map_err(|e| refusal(&dir, last, e))
}

fn folder_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// A failed `O_NOFOLLOW` open: a link says so (`ELOOP`, or `ENOTDIR` for a folder's).
fn refusal(dir: &OwnedFd, name: &OsStr, e: Errno) -> OpenError {
    if e == Errno::ENOTDIR {
        let link = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| Seen::of_stat(&st).kind == Kind::Link);
        if link {
            return OpenError::Link;
        }
    }
    OpenError::of(e)
}

/// The opened descriptor as a file, if it is a regular one.
fn checked(fd: OwnedFd) -> Result<(File, Seen), OpenError> {
    let seen = Seen::of_stat(&nix::sys::stat::fstat(&fd).map_err(OpenError::of)?);
    if seen.kind != Kind::File {
        return Err(OpenError::NotRegular);
    }
    // Reads of a regular file ignore O_NONBLOCK; cleared all the same, as a plain open has it.
    let flags = OFlag::from_bits_truncate(
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).map_err(OpenError::of)?,
    );
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK),
    )
    .map_err(OpenError::of)?;
    Ok((File::from(fd), seen))
}

/// A folder's regular files and links, found without following any link.
#[derive(Debug, Default)]
pub struct Listing {
    /// Regular files: `root` joined with their relative path, and what they were.
    pub files: Vec<(PathBuf, Seen)>,
    /// Symbolic links found (not followed).
    pub links: Vec<PathBuf>,
}

/// Lists every regular file under `root`, entering folders by descriptor with `O_NOFOLLOW`;
/// the first error ends it (a listing with a hole must not delete the documents in the hole).
pub fn list(root: &Path) -> std::io::Result<Listing> {
    let mut out = Listing::default();
    // Folders still to list, opened only when their turn comes (a wide tree holds no more
    // descriptors than it is deep).
    let mut pending: Vec<(Rc<OwnedFd>, OsString, PathBuf)> = Vec::new();
    let mut next = Some((Rc::new(open_folder(root)?), root.to_owned()));
    loop {
        let (fd, path) = match next.take() {
            Some(open) => open,
            None => {
                let Some((parent, name, path)) = pending.pop() else {
                    break;
                };
                match nix::fcntl::openat(&*parent, name.as_os_str(), folder_flags(), Mode::empty())
                {
                    Ok(fd) => (Rc::new(fd), path),
                    // Swapped for a link since it was listed: not entered.
                    Err(Errno::ELOOP | Errno::ENOTDIR) => {
                        out.links.push(path);
                        continue;
                    }
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let mut dir = nix::dir::Dir::from_fd(fd.as_fd().try_clone_to_owned()?)?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name));
            }
        }
        for name in names {
            let child = path.join(&name);
            let st = match nix::sys::stat::fstatat(
                &*fd,
                name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => Seen::of_stat(&st),
                // Removed between the listing and now: not present.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            match st.kind {
                Kind::File => out.files.push((child, st)),
                Kind::Link => out.links.push(child),
                Kind::Folder => pending.push((fd.clone(), name, child)),
                Kind::Other => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::symlink;

    use super::*;

    const BOTH: [Resolve; 2] = [Resolve::Kernel, Resolve::PerComponent];

    /// A folder `inbox` with `sub/ok.txt`, and beside it `secret` (outside the folder).
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let inbox = t.path().join("inbox");
        std::fs::create_dir_all(inbox.join("sub")).unwrap();
        std::fs::write(inbox.join("sub/ok.txt"), b"ordinary").unwrap();
        let secret = t.path().join("secret");
        std::fs::write(&secret, b"the node's signing key").unwrap();
        (t, inbox, secret)
    }

    fn read(r: Result<(File, Seen), OpenError>) -> Vec<u8> {
        let (mut f, seen) = r.unwrap();
        assert_eq!(seen.kind, Kind::File);
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn a_regular_file_beneath_the_folder_opens() {
        let (_t, inbox, _) = tree();
        for how in BOTH {
            let got = read(open_with(&inbox, Path::new("sub/ok.txt"), how));
            assert_eq!(got, b"ordinary", "{how:?}");
        }
        let abs = inbox.join("sub/ok.txt");
        assert_eq!(read(open_absolute(&abs)), b"ordinary");
        let meta = std::fs::symlink_metadata(&abs).unwrap();
        let (_, seen) = open(&inbox, Path::new("sub/ok.txt")).unwrap();
        assert_eq!(seen, Seen::of_meta(&meta));
    }

    #[test]
    fn a_link_to_a_file_outside_is_refused() {
        let (_t, inbox, secret) = tree();
        symlink(&secret, inbox.join("key.txt")).unwrap();
        symlink("../../secret", inbox.join("sub/rel.txt")).unwrap();
        for how in BOTH {
            for rel in ["key.txt", "sub/rel.txt"] {
                let r = open_with(&inbox, Path::new(rel), how);
                assert!(matches!(r, Err(OpenError::Link)), "{how:?} {rel}: {r:?}");
            }
        }
        let r = open_absolute(&inbox.join("key.txt"));
        assert!(matches!(r, Err(OpenError::Link)), "{r:?}");
    }

    #[test]
    fn a_linked_folder_on_the_way_is_refused() {
        let (t, inbox, _) = tree();
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("ok.txt"), b"outside").unwrap();
        symlink(&elsewhere, inbox.join("linked")).unwrap();
        for how in BOTH {
            let r = open_with(&inbox, Path::new("linked/ok.txt"), how);
            assert!(matches!(r, Err(OpenError::Link)), "{how:?}: {r:?}");
        }
        let r = open_absolute(&inbox.join("linked/ok.txt"));
        assert!(matches!(r, Err(OpenError::Link)), "{r:?}");
    }

    #[test]
    fn paths_that_leave_the_folder_are_refused() {
        let (_t, inbox, _) = tree();
        for how in BOTH {
            for rel in [
                "../secret",
                "sub/../../secret",
                "/etc/passwd",
                "",
                "./sub/ok.txt",
            ] {
                let r = open_with(&inbox, Path::new(rel), how);
                assert!(
                    matches!(r, Err(OpenError::Outside(_))),
                    "{how:?} {rel}: {r:?}"
                );
            }
        }
        assert!(matches!(
            open_absolute(Path::new("relative/path")),
            Err(OpenError::Outside(_))
        ));
    }

    #[test]
    fn a_fifo_or_a_folder_is_refused_without_blocking() {
        let (_t, inbox, _) = tree();
        nix::unistd::mkfifo(&inbox.join("pipe"), Mode::S_IRWXU).unwrap();
        for how in BOTH {
            for rel in ["pipe", "sub"] {
                let r = open_with(&inbox, Path::new(rel), how);
                assert!(
                    matches!(r, Err(OpenError::NotRegular)),
                    "{how:?} {rel}: {r:?}"
                );
            }
            let r = open_with(&inbox, Path::new("missing.txt"), how);
            let missing =
                matches!(&r, Err(OpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound);
            assert!(missing, "{r:?}");
        }
    }

    #[test]
    fn the_listing_reports_links_and_never_enters_them() {
        let (t, inbox, secret) = tree();
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("far.txt"), b"outside").unwrap();
        symlink(&elsewhere, inbox.join("linked")).unwrap();
        symlink(&secret, inbox.join("sub/key.txt")).unwrap();
        let l = list(&inbox).unwrap();
        let files: Vec<_> = l.files.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(files, vec![inbox.join("sub/ok.txt")]);
        let mut links = l.links.clone();
        links.sort();
        assert_eq!(links, vec![inbox.join("linked"), inbox.join("sub/key.txt")]);
        assert!(list(&t.path().join("missing")).is_err());
    }
}
