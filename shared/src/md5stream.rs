//! Incremental MD5 over a byte stream, with a byte count, for verifying pulls and uploads as they
//! pass through without holding them.

use std::io::{Read, Seek};
use std::path::Path;

use crate::Md5Hex;

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

/// Opens (creating it if needed) the partial file of an interrupted download for resuming:
/// a file longer than `max` is not a prefix of the expected content and is emptied; what it
/// holds is hashed, so the finished download is verified end to end; the cursor is left at the
/// end for appending.
pub fn open_for_resume(path: &Path, max: u64) -> std::io::Result<(std::fs::File, Md5Stream)> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if file.metadata()?.len() > max {
        file.set_len(0)?;
    }
    let mut hash = Md5Stream::new();
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
}
