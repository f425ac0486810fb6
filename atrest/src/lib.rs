//! Content sealed at rest (ARCHITECTURE.md §4.5): AES-256-GCM in fixed-size chunks, so a
//! Range request decrypts only the chunks it touches and a stream-through reader follows a file
//! still being written chunk by chunk.
//!
//! A sealed file is a 32-byte header (`DFENC1`, two reserved bytes, the key's 8-byte id, a
//! 16-byte random salt) followed by chunks of [`CHUNK`] plaintext bytes (the last one shorter),
//! each followed by its 16-byte tag. Every file has its own key, HKDF-SHA256 of the node's
//! content key and the file's salt, so the chunk index can be the nonce without ever repeating
//! a (key, nonce) pair; the last chunk is sealed with a different associated datum than the
//! others, so a file cut at a chunk boundary does not pass for a shorter complete one.
//!
//! A crate of its own because the node writes and serves this format and the endurance harness
//! reads what a node stored (and times the cipher) without linking the node.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use docfed_shared::hashing::StreamHash;
use docfed_shared::ContentHasher;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;

/// Plaintext bytes per chunk.
pub const CHUNK: u64 = 64 * 1024;
/// The GCM tag after each chunk.
pub const TAG: u64 = 16;
/// The header before the first chunk.
pub const HEADER: u64 = 32;
const SEALED_CHUNK: u64 = CHUNK + TAG;
const MAGIC: &[u8; 6] = b"DFENC1";

/// A content key: 32 secret bytes, and the id (first 8 bytes of its SHA-256) files name it by.
#[derive(Clone)]
pub struct ContentKey {
    secret: [u8; 32],
    id: [u8; 8],
}

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentKey({})", self.id_hex())
    }
}

impl ContentKey {
    /// A key from 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<ContentKey, String> {
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or("a content key is 64 hex digits (32 bytes), e.g. `openssl rand -hex 32`")?;
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes);
        let digest = ring::digest::digest(&ring::digest::SHA256, &secret);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.as_ref()[..8]);
        Ok(ContentKey { secret, id })
    }

    /// A key from a file of 64 hex digits.
    pub fn load(path: &Path) -> Result<ContentKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read content key {}: {e}", path.display()))?;
        ContentKey::from_hex(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    fn file_key(&self, salt: &[u8]) -> LessSafeKey {
        struct Len;
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&self.secret);
        let mut key = [0u8; 32];
        prk.expand(&[b"docfed content v1"], Len)
            .and_then(|okm| okm.fill(&mut key))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("32-byte AES-256 key"))
    }
}

/// The keys of a node: the current one seals new files; old ones (after a rotation) still open
/// files until they are sealed again ([`reseal`]) with the current one.
#[derive(Debug, Clone)]
pub struct Keys {
    pub current: ContentKey,
    pub old: Vec<ContentKey>,
}

impl Keys {
    /// The key whose id is `id` (8 bytes), current or old.
    pub fn find(&self, id: &[u8]) -> Option<&ContentKey> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == id)
    }
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(last: bool) -> Aad<[u8; 1]> {
    Aad::from([u8::from(last)])
}

/// Bytes on disk of `size` bytes of content.
pub fn sealed_len(size: u64) -> u64 {
    HEADER + size.div_ceil(CHUNK) * TAG + size
}

/// Content bytes of a complete sealed file of `len` bytes on disk.
pub fn plain_len(len: u64) -> u64 {
    let body = len.saturating_sub(HEADER);
    body.saturating_sub(body.div_ceil(SEALED_CHUNK) * TAG)
}

/// Content bytes a file at `path` holds, and how many a reader may read while it is still being
/// written: the file's length when plain; when sealed, its content length (complete file) and
/// its complete chunks' content (partial file). `(0, 0)` when it does not exist.
pub fn content_lens(path: &Path, keys: Option<&Keys>) -> (u64, u64) {
    let Ok(file) = File::open(path) else {
        return (0, 0);
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let mut header = [0u8; HEADER as usize];
    if keys.is_none() || file.read_exact_at(&mut header, 0).is_err() || !is_sealed(&header) {
        return (len, len);
    }
    let body = len.saturating_sub(HEADER);
    (plain_len(len), body / SEALED_CHUNK * CHUNK)
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Writes content as sealed chunks. A full chunk is sealed only once more content follows it,
/// so that whichever chunk turns out to be last is sealed as the last.
pub struct Sealer {
    file: File,
    key: LessSafeKey,
    buf: Vec<u8>,
    index: u64,
    finished: bool,
}

impl Sealer {
    /// Starts a sealed file in `file` (emptied first).
    pub fn create(mut file: File, key: &ContentKey) -> io::Result<Sealer> {
        file.set_len(0)?;
        file.seek(io::SeekFrom::Start(0))?;
        let salt: [u8; 16] = rand::random();
        let mut header = Vec::with_capacity(HEADER as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&[0, 0]);
        header.extend_from_slice(&key.id);
        header.extend_from_slice(&salt);
        file.write_all(&header)?;
        Ok(Sealer {
            file,
            key: key.file_key(&salt),
            buf: Vec::with_capacity(CHUNK as usize),
            index: 0,
            finished: false,
        })
    }

    fn seal_buf(&mut self, last: bool) -> io::Result<()> {
        let mut data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK as usize));
        self.key
            .seal_in_place_append_tag(nonce(self.index), aad(last), &mut data)
            .map_err(|_| io::Error::other("sealing failed"))?;
        self.file.write_all(&data)?;
        self.index += 1;
        Ok(())
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.buf.len() as u64 == CHUNK {
                self.seal_buf(false)?;
            }
            let n = (CHUNK as usize - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        Ok(())
    }

    /// Content bytes sealed on disk so far: what a reader following the file may read.
    pub fn sealed(&self) -> u64 {
        if self.finished {
            u64::MAX
        } else {
            self.index * CHUNK
        }
    }

    /// Seals the last chunk; the file is complete (not yet fsynced).
    pub fn finish(mut self) -> io::Result<File> {
        if !self.finished && !self.buf.is_empty() {
            self.seal_buf(true)?;
        }
        Ok(self.file)
    }
}

/// Seals `plain` whole in memory, in the format of a sealed file: a small object the node keeps
/// in its database (a blob, not a file) is sealed with the same key and the same format, so one
/// reader ([`open_bytes`]) and one rotation apply to both.
pub fn seal_bytes(key: &ContentKey, plain: &[u8]) -> Vec<u8> {
    let salt: [u8; 16] = rand::random();
    let mut out = Vec::with_capacity(sealed_len(plain.len() as u64) as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&key.id);
    out.extend_from_slice(&salt);
    let file_key = key.file_key(&salt);
    let chunks = plain.len().div_ceil(CHUNK as usize);
    for (index, chunk) in plain.chunks(CHUNK as usize).enumerate() {
        let mut data = chunk.to_vec();
        file_key
            .seal_in_place_append_tag(nonce(index as u64), aad(index + 1 == chunks), &mut data)
            .expect("sealing in memory cannot fail");
        out.extend_from_slice(&data);
    }
    out
}

/// The id (hex) of the key `sealed` (a sealed file's first bytes, or a sealed small object) was
/// sealed with; `None` when it is not sealed.
pub fn sealed_with(sealed: &[u8]) -> Option<String> {
    is_sealed(sealed).then(|| hex::encode(&sealed[8..16]))
}

/// Opens what [`seal_bytes`] sealed, checking every chunk's tag and that nothing was cut off or
/// appended. An error when the key is unknown or the bytes were altered.
pub fn open_bytes(keys: &Keys, sealed: &[u8]) -> io::Result<Vec<u8>> {
    if !is_sealed(sealed) {
        return Err(corrupt("a sealed small object without its header"));
    }
    let key = header_key(sealed, keys).ok_or_else(|| unknown_key(sealed))?;
    let file_key = key.file_key(&sealed[16..32]);
    let body = &sealed[HEADER as usize..];
    let size = plain_len(sealed.len() as u64);
    if sealed_len(size) != sealed.len() as u64 {
        return Err(corrupt("a sealed small object of impossible length"));
    }
    let chunks = body.len().div_ceil(SEALED_CHUNK as usize);
    let mut plain = Vec::with_capacity(size as usize);
    for (index, chunk) in body.chunks(SEALED_CHUNK as usize).enumerate() {
        let mut data = chunk.to_vec();
        let opened = file_key
            .open_in_place(nonce(index as u64), aad(index + 1 == chunks), &mut data)
            .map_err(|_| {
                corrupt("stored content fails its authentication (wrong key, or altered)")
            })?;
        plain.extend_from_slice(opened);
    }
    Ok(plain)
}

/// A sealed file opened for reading.
pub struct Opened {
    file: File,
    key: LessSafeKey,
}

/// Whether `header` begins a file sealed with one of `keys`, and with which.
fn header_key<'k>(header: &[u8], keys: &'k Keys) -> Option<&'k ContentKey> {
    if !is_sealed(header) {
        return None;
    }
    keys.find(&header[8..16])
}

/// Whether `header` begins a sealed file (with whatever key).
fn is_sealed(header: &[u8]) -> bool {
    header.len() >= HEADER as usize && &header[..6] == MAGIC
}

fn unknown_key(header: &[u8]) -> io::Error {
    corrupt(&format!(
        "stored content is sealed with key {}, which this node was not given",
        hex::encode(&header[8..16])
    ))
}

impl Opened {
    /// Opens a sealed file; `Ok(None)` when it is not sealed at all (plaintext left from
    /// before encryption was turned on), an error when it is sealed with a key not in `keys`.
    pub fn open(path: &Path, keys: &Keys) -> io::Result<Option<Opened>> {
        Opened::from_file(File::open(path)?, keys)
    }

    /// [`Opened::open`] for a file already open (one being written may be renamed meanwhile).
    pub fn from_file(file: File, keys: &Keys) -> io::Result<Option<Opened>> {
        let mut header = [0u8; HEADER as usize];
        if file.read_exact_at(&mut header, 0).is_err() {
            return Ok(None);
        }
        if !is_sealed(&header) {
            return Ok(None);
        }
        let key = header_key(&header, keys).ok_or_else(|| unknown_key(&header))?;
        Ok(Some(Opened {
            key: key.file_key(&header[16..32]),
            file,
        }))
    }

    /// Content of chunk `index` of a file of `size` content bytes.
    pub fn chunk(&self, index: u64, size: u64) -> io::Result<Vec<u8>> {
        let last = size.saturating_sub(1) / CHUNK;
        if size == 0 || index > last {
            return Err(corrupt("chunk past the end of the content"));
        }
        let plain = if index == last {
            size - index * CHUNK
        } else {
            CHUNK
        };
        let mut buf = vec![0u8; (plain + TAG) as usize];
        self.file
            .read_exact_at(&mut buf, HEADER + index * SEALED_CHUNK)?;
        self.key
            .open_in_place(nonce(index), aad(index == last), &mut buf)
            .map_err(|_| {
                corrupt("stored content fails its authentication (wrong key, or altered)")
            })?;
        buf.truncate(plain as usize);
        Ok(buf)
    }
}

/// A file the node writes content into: plain, or sealed with the content key.
pub enum ContentFile {
    Plain(File),
    Sealed(Box<Sealer>),
}

impl ContentFile {
    /// Starts `file` (empty) as content sealed with `keys`' current key, or plain.
    pub fn start(file: File, keys: Option<&Keys>) -> io::Result<ContentFile> {
        Ok(match keys {
            Some(k) => ContentFile::Sealed(Box::new(Sealer::create(file, &k.current)?)),
            None => ContentFile::Plain(file),
        })
    }

    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            ContentFile::Plain(f) => f.write_all(data),
            ContentFile::Sealed(s) => s.write_all(data),
        }
    }

    /// The file written to.
    pub fn as_file(&self) -> &File {
        match self {
            ContentFile::Plain(f) => f,
            ContentFile::Sealed(s) => &s.file,
        }
    }

    /// Content bytes a reader following the file may read, of `written` written.
    pub fn readable(&self, written: u64) -> u64 {
        match self {
            ContentFile::Plain(_) => written,
            ContentFile::Sealed(s) => s.sealed().min(written),
        }
    }

    /// Empties the file to start the content over.
    pub fn restart(self, keys: Option<&Keys>) -> io::Result<ContentFile> {
        let file = match self {
            ContentFile::Plain(f) => f,
            ContentFile::Sealed(s) => s.file,
        };
        file.set_len(0)?;
        let mut file = file;
        file.seek(io::SeekFrom::Start(0))?;
        ContentFile::start(file, keys)
    }

    /// The complete file (the last chunk sealed), for fsync.
    pub fn finish(self) -> io::Result<File> {
        match self {
            ContentFile::Plain(f) => Ok(f),
            ContentFile::Sealed(s) => s.finish(),
        }
    }
}

/// Opens a partial pull at `path` to continue it, hashing the content it already holds: with
/// `keys`, the complete chunks of a file sealed with the current key (anything else starts
/// over); plain otherwise. A file with more than `size` bytes of content starts over.
pub fn open_for_resume(
    path: &Path,
    size: u64,
    keys: Option<&Keys>,
) -> io::Result<(ContentFile, ContentHasher)> {
    let Some(keys) = keys else {
        let (file, hash) = docfed_shared::hashing::open_for_resume::<ContentHasher>(path, size)?;
        return Ok((ContentFile::Plain(file), hash));
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let fresh = |file: File| -> io::Result<(ContentFile, ContentHasher)> {
        Ok((
            ContentFile::Sealed(Box::new(Sealer::create(file, &keys.current)?)),
            ContentHasher::new(),
        ))
    };
    let len = file.metadata()?.len();
    let mut header = [0u8; HEADER as usize];
    if len < HEADER || file.read_exact_at(&mut header, 0).is_err() {
        return fresh(file);
    }
    if header_key(&header, keys).is_none_or(|k| k.id != keys.current.id) {
        return fresh(file);
    }
    let opened = Opened {
        key: keys.current.file_key(&header[16..32]),
        file,
    };
    let mut hash = ContentHasher::new();
    // A complete file (all chunks, the last sealed as last) needs no more bytes.
    if size > 0 && len == sealed_len(size) {
        let chunks = size.div_ceil(CHUNK);
        let all = (0..chunks).try_for_each(|i| opened.chunk(i, size).map(|c| hash.update(&c)));
        if all.is_ok() {
            let Opened { file, key } = opened;
            return Ok((
                ContentFile::Sealed(Box::new(Sealer {
                    file,
                    key,
                    buf: Vec::new(),
                    index: chunks,
                    finished: true,
                })),
                hash,
            ));
        }
        return fresh(opened.file);
    }
    // Otherwise keep the complete chunks before the last (each sealed as not last).
    let full = ((len - HEADER) / SEALED_CHUNK).min(size / CHUNK);
    let mut kept = 0;
    for i in 0..full {
        let mut buf = vec![0u8; SEALED_CHUNK as usize];
        if opened
            .file
            .read_exact_at(&mut buf, HEADER + i * SEALED_CHUNK)
            .is_err()
            || opened
                .key
                .open_in_place(nonce(i), aad(false), &mut buf)
                .is_err()
        {
            break;
        }
        hash.update(&buf[..CHUNK as usize]);
        kept = i + 1;
    }
    let Opened { mut file, key } = opened;
    file.set_len(HEADER + kept * SEALED_CHUNK)?;
    file.seek(io::SeekFrom::End(0))?;
    Ok((
        ContentFile::Sealed(Box::new(Sealer {
            file,
            key,
            buf: Vec::with_capacity(CHUNK as usize),
            index: kept,
            finished: false,
        })),
        hash,
    ))
}

/// A stored object's content as a reader, decrypted when sealed, and its content length: for
/// tools that read a data directory (the endurance checker).
pub fn open_content(path: &Path, keys: Option<&Keys>) -> io::Result<(Box<dyn Read + Send>, u64)> {
    if let Some(keys) = keys {
        if let Some(opened) = Opened::open(path, keys)? {
            let size = plain_len(opened.file.metadata()?.len());
            return Ok((
                Box::new(ContentReader {
                    opened,
                    size,
                    next: 0,
                    buf: Vec::new(),
                    at: 0,
                }),
                size,
            ));
        }
    }
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    Ok((Box::new(file), size))
}

/// Reads a sealed file's content chunk by chunk.
struct ContentReader {
    opened: Opened,
    size: u64,
    /// The next chunk to decrypt.
    next: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Read for ContentReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buf.len() {
            if self.next * CHUNK >= self.size {
                return Ok(0);
            }
            self.buf = self.opened.chunk(self.next, self.size)?;
            self.next += 1;
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The digests of a stored object's content, decrypting it when sealed.
pub fn hash_object(
    path: &Path,
    keys: Option<&Keys>,
) -> io::Result<docfed_shared::hashing::Digests> {
    let (mut reader, _) = open_content(path, keys)?;
    let mut hash = ContentHasher::new();
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok(hash.finish()),
            n => hash.update(&buf[..n]),
        }
    }
}

/// Seals the object at `path` again with the current key when it is sealed with an old key or
/// still plain: written to `tmp`, fsynced and renamed over the original, so a reader holds
/// either file whole and a crash loses nothing. Returns whether it was sealed again; an object
/// gone meanwhile, or sealed with a key not in `keys` (logged, never taken for plaintext), is
/// left as it is.
pub fn reseal(path: &Path, tmp: &Path, keys: &Keys) -> io::Result<bool> {
    let mut header = [0u8; HEADER as usize];
    let file = match File::open(path) {
        Ok(f) => f,
        // Collected meanwhile.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let has_header = len >= HEADER && file.read_exact_at(&mut header, 0).is_ok();
    if has_header && is_sealed(&header) && header_key(&header, keys).is_none() {
        // Sealed with a key this node was not given: never mistake it for plaintext.
        tracing::error!(path = %path.display(), error = %unknown_key(&header), "object not sealed again");
        return Ok(false);
    }
    let sealed_with = has_header.then(|| header_key(&header, keys)).flatten();
    if sealed_with.is_some_and(|k| k.id == keys.current.id) {
        return Ok(false);
    }
    let out_path = tmp.join(format!(
        "rekey-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object")
    ));
    let out = File::create(&out_path)?;
    let result = (|| -> io::Result<()> {
        let mut sealer = Sealer::create(out, &keys.current)?;
        // Old key or plain: `open_content` reads either.
        let (mut reader, _) = open_content(path, Some(keys))?;
        let mut buf = vec![0u8; CHUNK as usize];
        loop {
            match reader.read(&mut buf)? {
                0 => break,
                n => sealer.write_all(&buf[..n])?,
            }
        }
        sealer.finish()?.sync_all()?;
        std::fs::rename(&out_path, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&out_path);
    }
    result.map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_sealed_in_memory_open_as_sealed_and_refuse_any_change() {
        let keys = Keys {
            current: key(1),
            old: vec![],
        };
        for size in [
            0usize,
            1,
            CHUNK as usize - 1,
            CHUNK as usize,
            CHUNK as usize + 1,
            200_000,
        ] {
            let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let sealed = seal_bytes(&keys.current, &plain);
            assert_eq!(sealed.len() as u64, sealed_len(size as u64));
            assert_eq!(open_bytes(&keys, &sealed).unwrap(), plain, "{size}");
            if size > 0 {
                if size >= 16 {
                    assert!(!sealed.windows(16).any(|w| w == &plain[..16]));
                }
                let mut altered = sealed.clone();
                altered[HEADER as usize] ^= 1;
                assert!(open_bytes(&keys, &altered).is_err());
            }
            if size > CHUNK as usize {
                // Cut at a chunk boundary: the first chunk was not sealed as the last.
                let cut = &sealed[..(HEADER + SEALED_CHUNK) as usize];
                assert!(open_bytes(&keys, cut).is_err());
            }
        }
        let other = Keys {
            current: key(2),
            old: vec![],
        };
        assert!(open_bytes(&other, &seal_bytes(&keys.current, b"x")).is_err());
        assert!(open_bytes(&keys, b"plain text").is_err());
    }

    fn key(b: u8) -> ContentKey {
        ContentKey::from_hex(&hex::encode([b; 32])).unwrap()
    }

    fn content(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn seal(path: &Path, data: &[u8], k: &ContentKey, piece: usize) {
        let mut s = Sealer::create(File::create(path).unwrap(), k).unwrap();
        for c in data.chunks(piece.max(1)) {
            s.write_all(c).unwrap();
        }
        s.finish().unwrap();
    }

    #[test]
    fn sealed_chunks_read_back_exactly_and_the_file_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys {
            current: key(1),
            old: vec![],
        };
        let c = CHUNK as usize;
        for size in [0, 1, c - 1, c, c + 1, 3 * c, 3 * c + 7] {
            let data = content(size);
            let path = dir.path().join(format!("f{size}"));
            seal(&path, &data, &keys.current, 1000);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                sealed_len(size as u64)
            );
            assert_eq!(plain_len(sealed_len(size as u64)), size as u64);
            let on_disk = std::fs::read(&path).unwrap();
            if size >= 64 {
                assert!(
                    !on_disk.windows(64).any(|w| w == &data[..64]),
                    "plaintext on disk"
                );
            }
            let opened = Opened::open(&path, &keys).unwrap().unwrap();
            let mut back = Vec::new();
            for i in 0..(size as u64).div_ceil(CHUNK) {
                back.extend(opened.chunk(i, size as u64).unwrap());
            }
            assert!(back == data, "size {size}");
            assert_eq!(hash_object(&path, Some(&keys)).unwrap().size, size as u64);
        }
    }

    #[test]
    fn a_cut_altered_or_foreign_file_fails_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(2);
        let keys = Keys {
            current: k.clone(),
            old: vec![],
        };
        let data = content(3 * CHUNK as usize);
        let path = dir.path().join("f");
        seal(&path, &data, &k, 4096);
        // Cut after two chunks: the second is not sealed as the last.
        let cut = dir.path().join("cut");
        std::fs::write(
            &cut,
            &std::fs::read(&path).unwrap()[..(HEADER + 2 * SEALED_CHUNK) as usize],
        )
        .unwrap();
        let opened = Opened::open(&cut, &keys).unwrap().unwrap();
        assert!(opened.chunk(1, 2 * CHUNK).is_err());
        // One flipped bit.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(HEADER + 10) as usize] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let opened = Opened::open(&path, &keys).unwrap().unwrap();
        assert!(opened.chunk(0, 3 * CHUNK).is_err());
        assert!(opened.chunk(1, 3 * CHUNK).is_ok());
        // Another key does not recognise the file as its own.
        let other = Keys {
            current: key(3),
            old: vec![],
        };
        assert!(
            Opened::open(&path, &other).is_err(),
            "never read as plaintext"
        );
        std::fs::write(&path, b"plain bytes").unwrap();
        assert!(Opened::open(&path, &other).unwrap().is_none());
    }

    #[test]
    fn a_partial_file_resumes_from_its_last_complete_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys {
            current: key(4),
            old: vec![],
        };
        let size = 3 * CHUNK + 100;
        let data = content(size as usize);
        let path = dir.path().join("partial");
        let mut s = Sealer::create(File::create(&path).unwrap(), &keys.current).unwrap();
        s.write_all(&data[..(2 * CHUNK) as usize]).unwrap();
        assert_eq!(s.sealed(), CHUNK, "a full chunk waits for what follows it");
        s.write_all(&data[(2 * CHUNK) as usize..(2 * CHUNK + 5) as usize])
            .unwrap();
        assert_eq!(s.sealed(), 2 * CHUNK);
        // Cut off (a crash): the 5 buffered bytes are lost, the sealed chunks are kept.
        drop(s);
        let (mut file, hash) = open_for_resume(&path, size, Some(&keys)).unwrap();
        assert_eq!(hash.len(), 2 * CHUNK);
        file.write_all(&data[(2 * CHUNK) as usize..]).unwrap();
        file.finish().unwrap();
        assert_eq!(hash_object(&path, Some(&keys)).unwrap().size, size);
        // Complete: nothing more to fetch, and it reads back whole.
        let (_, hash) = open_for_resume(&path, size, Some(&keys)).unwrap();
        assert_eq!(hash.len(), size);
        let mut h = ContentHasher::new();
        h.update(&data);
        assert_eq!(hash_object(&path, Some(&keys)).unwrap().md5, h.finish().md5);
    }
}
