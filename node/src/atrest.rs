//! Content encrypted at rest (ARCHITECTURE.md §4.5): the sealed-file format is
//! `docfed-atrest`'s, re-exported here; what is the node's own is below: which key a data
//! directory's content is sealed with, serving a sealed file's range, and sealing the store again
//! after a key rotation.
//!
//! The node's content key comes from a file or the environment and is never written under the
//! data directory; only its id is (`content-key.id`), so that a node started without the key
//! refuses to serve ciphertext as content.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

pub use docfed_atrest::*;

/// The file under the data directory naming the key its content is sealed with.
pub const KEY_ID_FILE: &str = "content-key.id";

/// Checks the data directory against `keys`: content sealed before can only be served with its
/// key, and plaintext content is never mistaken for sealed. Records the current key's id.
pub fn check_data_dir(data_dir: &Path, keys: Option<&Keys>) -> Result<(), String> {
    let path = data_dir.join(KEY_ID_FILE);
    let recorded = std::fs::read_to_string(&path).ok();
    match (keys, recorded) {
        (None, Some(id)) => Err(format!(
            "the content in {} is encrypted (key {}): start the node with its key \
             (--content-key-file or DOCFED_CONTENT_KEY)",
            data_dir.display(),
            id.trim()
        )),
        (None, None) => Ok(()),
        (Some(keys), recorded) => {
            if let Some(id) = recorded.as_deref().map(str::trim) {
                if keys.find(&hex::decode(id).unwrap_or_default()).is_none() {
                    return Err(format!(
                        "the content in {} is sealed with key {id}, which is neither the \
                         content key ({}) nor an --old-content-key-file",
                        data_dir.display(),
                        keys.current.id_hex()
                    ));
                }
            }
            std::fs::write(&path, keys.current.id_hex())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
    }
}

/// Content bytes `start..end` of the sealed file `opened` (of `size` bytes), chunk by chunk.
pub fn range_stream(
    opened: Opened,
    size: u64,
    start: u64,
    end: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let opened = Arc::new(opened);
    futures::stream::unfold(start, move |pos| {
        let opened = opened.clone();
        async move {
            if pos >= end {
                return None;
            }
            let index = pos / CHUNK;
            let read = tokio::task::spawn_blocking(move || opened.chunk(index, size)).await;
            let chunk = match read {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Some((Err(e), end)),
                Err(e) => return Some((Err(io::Error::other(e)), end)),
            };
            let from = (pos - index * CHUNK) as usize;
            let to = ((end - index * CHUNK) as usize).min(chunk.len());
            let piece = Bytes::copy_from_slice(&chunk[from..to]);
            Some((Ok(piece), index * CHUNK + to as u64))
        }
    })
}

/// Seals again, with the current key, every object in `objects` that is sealed with an old key
/// or still plain (a node that just turned encryption on). Each is written to `tmp`, fsynced
/// and renamed over the original, so a reader holds either file whole and a crash loses
/// nothing. Returns how many were sealed again.
pub fn rekey(objects: &Path, tmp: &Path, keys: &Keys) -> io::Result<u64> {
    let mut done = 0;
    for shard in std::fs::read_dir(objects)? {
        let shard = shard?.path();
        if !shard.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&shard)? {
            let path = entry?.path();
            if reseal(&path, tmp, keys)? {
                done += 1;
            }
        }
        if done > 0 {
            crate::store::sync_dir(&shard)?;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

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
    fn rekeying_seals_old_and_plain_objects_with_the_current_key() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        let shard = objects.join("ab");
        std::fs::create_dir_all(&shard).unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let (old, new) = (key(5), key(6));
        let data = content(2 * CHUNK as usize + 3);
        seal(&shard.join("old"), &data, &old, 7000);
        std::fs::write(shard.join("plain"), &data).unwrap();
        let keys = Keys {
            current: new.clone(),
            old: vec![old],
        };
        assert_eq!(rekey(&objects, &tmp, &keys).unwrap(), 2);
        assert_eq!(rekey(&objects, &tmp, &keys).unwrap(), 0);
        let only_new = Keys {
            current: new,
            old: vec![],
        };
        for name in ["old", "plain"] {
            let opened = Opened::open(&shard.join(name), &only_new).unwrap().unwrap();
            let size = data.len() as u64;
            let back: Vec<u8> = (0..size.div_ceil(CHUNK))
                .flat_map(|i| opened.chunk(i, size).unwrap())
                .collect();
            assert!(back == data, "{name}");
        }
    }
}
