//! Deterministic content: the same seed gives the same bytes in every run and every process, so
//! a test or a benchmark regenerates what it published instead of keeping it.

/// Marsaglia's xorshift64 (shifts 13, 7, 17): fast, deterministic, good enough for test data
/// and workload choices (not for anything secret).
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    /// A generator from any seed (zero included: the state is never zero).
    pub fn new(seed: u64) -> Self {
        Xorshift(
            seed.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407)
                | 1,
        )
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// One of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// `len` deterministic bytes that neither compress nor repeat in short cycles.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Xorshift::new(seed);
    (0..len).map(|_| (rng.next_u64() >> 24) as u8).collect()
}

/// Granularity of [`block`]; a multiple of 8.
pub const BLOCK: usize = 64 * 1024;

/// Block `index` of the body `seed`, full length: any block of any body is generated on its own
/// (seekable), so gigabytes are produced, streamed and compared in constant memory.
pub fn block(seed: u64, index: u64) -> Vec<u8> {
    let mut x = splitmix(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out = Vec::with_capacity(BLOCK);
    for _ in 0..BLOCK / 8 {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out
}

/// Length of block `index` of a body of `size` bytes (the last one is cut short).
pub fn block_len(size: u64, index: u64) -> usize {
    (size - index * BLOCK as u64).min(BLOCK as u64) as usize
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_seeds_differ() {
        assert_eq!(pattern(7, 1000), pattern(7, 1000));
        assert_ne!(pattern(7, 1000), pattern(8, 1000));
        assert_eq!(pattern(7, 10)[..], pattern(7, 1000)[..10]);
        assert_eq!(block(3, 5), block(3, 5));
        assert_ne!(block(3, 5), block(3, 6));
        assert_eq!(block(3, 5).len(), BLOCK);
        assert_eq!(block_len(BLOCK as u64 + 10, 1), 10);
        let mut a = Xorshift::new(0);
        assert_ne!(a.next_u64(), 0);
        assert!(a.below(10) < 10);
    }
}
