//! Incremental MD5 over a byte stream, with a byte count, for verifying pulls and uploads as they
//! pass through without holding them.

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
