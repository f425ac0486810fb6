//! Document bodies generated from `(seed, size)`. Any block can be regenerated on its own, so a
//! run keeps no copy of what it published, yet the checker can compare what every node stores
//! with what was published, byte for byte. The pair travels in the document's title, so even a
//! publication whose acknowledgement was lost to a fault can be verified.

use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use docfed_bench_kit::content::{block, block_len, BLOCK};
use futures::Stream;

const TITLE_PREFIX: &str = "endurance-";

/// The body as a stream of blocks: constant memory whatever the size.
pub fn stream(seed: u64, size: u64) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let blocks = size.div_ceil(BLOCK as u64);
    futures::stream::iter(0..blocks).map(move |i| {
        let mut b = block(seed, i);
        b.truncate(block_len(size, i));
        Ok(Bytes::from(b))
    })
}

use futures::StreamExt as _;

/// MD5 of the body, as hex.
#[cfg(test)]
pub fn md5_hex(seed: u64, size: u64) -> String {
    let mut ctx = md5::Context::new();
    for i in 0..size.div_ceil(BLOCK as u64) {
        let b = block(seed, i);
        ctx.consume(&b[..block_len(size, i)]);
    }
    format!("{:x}", ctx.finalize())
}

/// The title that names a generated body.
pub fn title(seed: u64, size: u64) -> String {
    format!("{TITLE_PREFIX}{seed:016x}-{size}")
}

/// `(seed, size)` from a title made by [`title`].
pub fn parse_title(title: &str) -> Option<(u64, u64)> {
    let rest = title.strip_prefix(TITLE_PREFIX)?;
    let (seed, size) = rest.split_once('-')?;
    Some((u64::from_str_radix(seed, 16).ok()?, size.parse().ok()?))
}

/// How a stored file differs from the body it should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    Missing(String),
    Length { expected: u64, actual: u64 },
    Byte { offset: u64 },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Missing(why) => write!(f, "file missing ({why})"),
            Difference::Length { expected, actual } => {
                write!(f, "{actual} bytes instead of {expected}")
            }
            Difference::Byte { offset } => write!(f, "bytes differ from offset {offset}"),
        }
    }
}

/// Compares the content of the object file at `path` (decrypted with `keys` when sealed) with
/// the body `(seed, size)`, block by block (blocking I/O).
pub fn compare_file(
    path: &Path,
    keys: Option<&docfed_atrest::Keys>,
    seed: u64,
    size: u64,
) -> Result<(), Difference> {
    let (file, actual) =
        docfed_atrest::open_content(path, keys).map_err(|e| Difference::Missing(e.to_string()))?;
    compare(file, actual, seed, size)
}

/// Compares a small object's content (already opened when it was sealed) with the body
/// `(seed, size)`, as [`compare_file`] compares a file.
pub fn compare_bytes(content: &[u8], seed: u64, size: u64) -> Result<(), Difference> {
    compare(content, content.len() as u64, seed, size)
}

/// Compares `actual` bytes read from `content` with the body `(seed, size)`, block by block.
fn compare(mut content: impl Read, actual: u64, seed: u64, size: u64) -> Result<(), Difference> {
    if actual != size {
        return Err(Difference::Length {
            expected: size,
            actual,
        });
    }
    let mut buf = vec![0u8; BLOCK];
    for i in 0..size.div_ceil(BLOCK as u64) {
        let len = block_len(size, i);
        content
            .read_exact(&mut buf[..len])
            .map_err(|e| Difference::Missing(e.to_string()))?;
        let expected = block(seed, i);
        if buf[..len] != expected[..len] {
            let at = buf[..len]
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(Difference::Byte {
                offset: i * BLOCK as u64 + at as u64,
            });
        }
    }
    Ok(())
}

/// MD5 of an object file's content (decrypted with `keys` when sealed), as hex (blocking I/O).
pub fn md5_of_file(path: &Path, keys: Option<&docfed_atrest::Keys>) -> std::io::Result<String> {
    let (mut file, _) = docfed_atrest::open_content(path, keys)?;
    let mut ctx = md5::Context::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.consume(&buf[..n]);
    }
    Ok(format!("{:x}", ctx.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_round_trip() {
        let t = title(0xdead_beef, 65_537);
        assert_eq!(parse_title(&t), Some((0xdead_beef, 65_537)));
        assert_eq!(parse_title("quarterly report"), None);
    }

    #[tokio::test]
    async fn stream_file_and_md5_agree() {
        for size in [0u64, 1, 65_535, 65_536, 65_537, 200_000] {
            let mut bytes = Vec::new();
            let mut s = Box::pin(stream(7, size));
            while let Some(chunk) = s.next().await {
                bytes.extend_from_slice(&chunk.unwrap());
            }
            assert_eq!(bytes.len() as u64, size);
            assert_eq!(format!("{:x}", md5::compute(&bytes)), md5_hex(7, size));
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(compare_file(&path, None, 7, size), Ok(()));
            assert_eq!(compare_bytes(&bytes, 7, size), Ok(()));
            assert_eq!(md5_of_file(&path, None).unwrap(), md5_hex(7, size));
            if size > 10 {
                bytes[size as usize / 2] ^= 1;
                std::fs::write(&path, &bytes).unwrap();
                assert_eq!(
                    compare_file(&path, None, 7, size),
                    Err(Difference::Byte { offset: size / 2 })
                );
                assert_eq!(
                    compare_bytes(&bytes, 7, size),
                    Err(Difference::Byte { offset: size / 2 })
                );
                assert_eq!(
                    compare_bytes(&bytes[1..], 7, size),
                    Err(Difference::Length {
                        expected: size,
                        actual: size - 1
                    })
                );
            }
        }
        assert_ne!(md5_hex(1, 1000), md5_hex(2, 1000));
    }
}
