//! Incremental hashes over a byte stream, with a byte count, for verifying pulls and uploads as
//! they pass through without holding them: MD5 alone (the content address, all clients need) or
//! MD5 and SHA-256 together (what a node checks a signed version's content against).

use std::io::{Read, Seek};
use std::path::Path;

use sha2::Digest;

use crate::{Md5Hex, Sha256Hex};

/// A hash fed chunk by chunk that counts what it saw.
pub trait StreamHash: Default {
    fn update(&mut self, chunk: &[u8]);
    /// Bytes seen so far.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Feeds chunks into MD5 and counts them.
pub struct Md5Stream {
    ctx: md5::Context,
    len: u64,
}

impl Md5Stream {
    pub fn new() -> Self {
        Self {
            ctx: md5::Context::new(),
            len: 0,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.ctx.consume(chunk);
        self.len += chunk.len() as u64;
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> (Md5Hex, u64) {
        (Md5Hex::from_digest(self.ctx.finalize().0), self.len)
    }
}

impl Default for Md5Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamHash for Md5Stream {
    fn update(&mut self, chunk: &[u8]) {
        Md5Stream::update(self, chunk);
    }
    fn len(&self) -> u64 {
        self.len
    }
}

/// What a node knows of content it hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub md5: Md5Hex,
    pub sha256: Sha256Hex,
    pub size: u64,
}

/// MD5 and SHA-256 in one pass.
#[derive(Default)]
pub struct ContentHasher {
    md5: Md5Stream,
    sha256: sha2::Sha256,
}

impl ContentHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn finish(self) -> Digests {
        let (md5, size) = self.md5.finish();
        Digests {
            md5,
            sha256: Sha256Hex::from_digest(self.sha256.finalize().into()),
            size,
        }
    }
}

impl StreamHash for ContentHasher {
    fn update(&mut self, chunk: &[u8]) {
        self.md5.update(chunk);
        self.sha256.update(chunk);
    }
    fn len(&self) -> u64 {
        self.md5.len()
    }
}

/// A [`ContentHasher`] whose SHA-256 runs on a thread of its own while MD5 stays on the
/// caller's: a pull's or an upload's writer thread then takes about the time of writing and MD5
/// instead of the sum of all three. Chunks go to the SHA-256 thread by reference count, not by
/// copy, through a bounded queue (memory stays bounded).
///
/// The thread starts only once the content passes [`PARALLEL_FROM`]: below it SHA-256 takes
/// less than starting, waking and joining a thread costs, and most documents are small.
pub struct ParallelHasher {
    md5: Md5Stream,
    sha256: Sha256Side,
}

/// Content bytes hashed on the caller's thread before SHA-256 moves to its own (about half a
/// millisecond of SHA-256 here).
pub const PARALLEL_FROM: u64 = 1 << 20;

enum Sha256Side {
    Here(sha2::Sha256),
    Thread {
        chunks: std::sync::mpsc::SyncSender<bytes::Bytes>,
        handle: std::thread::JoinHandle<sha2::Sha256>,
    },
}

impl ParallelHasher {
    /// Continues `from` (e.g. the hash of a resumed partial file).
    pub fn new(from: ContentHasher) -> Self {
        Self {
            md5: from.md5,
            sha256: Sha256Side::Here(from.sha256),
        }
    }

    /// Hashes `chunk`. Fails only when the SHA-256 thread cannot be started.
    pub fn update(&mut self, chunk: bytes::Bytes) -> std::io::Result<()> {
        self.md5.update(&chunk);
        if let Sha256Side::Here(sha) = &mut self.sha256 {
            if self.md5.len() <= PARALLEL_FROM {
                sha.update(&chunk);
                return Ok(());
            }
            let mut sha = std::mem::take(sha);
            let (chunks, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(16);
            let handle = std::thread::Builder::new()
                .name("sha256".into())
                .spawn(move || {
                    for chunk in rx {
                        sha.update(&chunk);
                    }
                    sha
                })?;
            self.sha256 = Sha256Side::Thread { chunks, handle };
        }
        if let Sha256Side::Thread { chunks, .. } = &self.sha256 {
            // The thread lives until `finish`: a send fails only if it panicked, which `finish`
            // reports.
            let _ = chunks.send(chunk);
        }
        Ok(())
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.md5.len()
    }

    pub fn is_empty(&self) -> bool {
        self.md5.is_empty()
    }

    /// Waits for the SHA-256 thread, if one started, and returns the combined state.
    pub fn finish(self) -> std::io::Result<ContentHasher> {
        let sha256 = match self.sha256 {
            Sha256Side::Here(sha) => sha,
            Sha256Side::Thread { chunks, handle } => {
                drop(chunks);
                handle
                    .join()
                    .map_err(|_| std::io::Error::other("the SHA-256 thread panicked"))?
            }
        };
        Ok(ContentHasher {
            md5: self.md5,
            sha256,
        })
    }
}

/// Hashes a whole file (for content stored before versions carried a SHA-256).
pub fn hash_file(path: &Path) -> std::io::Result<Digests> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = ContentHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hash.finish()),
            n => hash.update(&buf[..n]),
        }
    }
}

/// Opens (creating it if needed) the partial file of an interrupted download for resuming:
/// a file longer than `max` is not a prefix of the expected content and is emptied; what it
/// holds is hashed, so the finished download is verified end to end; the cursor is left at the
/// end for appending.
pub fn open_for_resume<H: StreamHash>(
    path: &Path,
    max: u64,
) -> std::io::Result<(std::fs::File, H)> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if file.metadata()?.len() > max {
        file.set_len(0)?;
    }
    let mut hash = H::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    file.seek(std::io::SeekFrom::End(0))?;
    Ok((file, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_digest_equals_whole_digest() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut s = Md5Stream::new();
        for c in data.chunks(4093) {
            s.update(c);
        }
        let (md5, len) = s.finish();
        assert_eq!(len, data.len() as u64);
        assert_eq!(md5, Md5Hex::from_digest(md5::compute(&data).0));
    }

    #[test]
    fn content_hasher_gives_both_digests_of_the_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let mut h = ContentHasher::new();
        for c in data.chunks(777) {
            h.update(c);
        }
        let d = h.finish();
        assert_eq!(d.size, data.len() as u64);
        assert_eq!(d.md5, Md5Hex::from_digest(md5::compute(&data).0));
        assert_eq!(
            d.sha256,
            Sha256Hex::from_digest(sha2::Sha256::digest(&data).into())
        );
        // The parallel hasher, continuing a state, agrees: on its caller's thread for small
        // content, and with SHA-256 on a thread of its own past `PARALLEL_FROM`.
        let (head, tail) = data.split_at(12_345);
        let mut h = ContentHasher::new();
        h.update(head);
        let mut p = ParallelHasher::new(h);
        for c in tail.chunks(1000) {
            p.update(bytes::Bytes::copy_from_slice(c)).unwrap();
        }
        assert!(matches!(p.sha256, Sha256Side::Here(_)));
        assert_eq!(p.finish().unwrap().finish(), d);
        let large: Vec<u8> = data.iter().cycle().take(3 << 20).copied().collect();
        let mut p = ParallelHasher::new(ContentHasher::new());
        for c in large.chunks(64 * 1024 + 3) {
            p.update(bytes::Bytes::copy_from_slice(c)).unwrap();
        }
        assert!(matches!(p.sha256, Sha256Side::Thread { .. }));
        let d = p.finish().unwrap().finish();
        assert_eq!(d.md5, Md5Hex::from_digest(md5::compute(&large).0));
        assert_eq!(
            d.sha256,
            Sha256Hex::from_digest(sha2::Sha256::digest(&large).into())
        );
        // A known answer: SHA-256 of "abc".
        let mut h = ContentHasher::new();
        h.update(b"abc");
        assert_eq!(
            h.finish().sha256.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
