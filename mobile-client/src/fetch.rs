//! `docfed fetch`: download a document to a file, resumably and verified.
//!
//! Bytes go to `PATH.docfed-part` next to the destination, with the expected MD5 in
//! `PATH.docfed-part.md5`, so an interrupted fetch resumes (HTTP `Range` + `If-Range`) only if
//! the partial file belongs to the same content. The MD5 is computed over the whole file (the
//! resumed prefix is re-read) and checked before the file is renamed into place; on a mismatch
//! nothing is left at the destination. The SHA-256 is checked too, when the version has one
//! (every version of a federation whose primaries' keys are pinned: `trust`).
//!
//! A destination the server named (no `-o`) is never overwritten unless asked (`--force`): the
//! file is linked into place, which fails if the name exists, instead of renamed over it.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use docfed_shared::hashing::StreamHash;
use docfed_shared::wire::DocumentMeta;
use docfed_shared::ContentHasher;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::Client;
use crate::error::CliError;

pub struct FetchOutcome {
    pub path: PathBuf,
    pub size: u64,
    pub md5: String,
    pub resumed_from: u64,
    pub bytes_downloaded: u64,
}

/// Where to write when `-o` is not given: the document's file name, reduced to its last
/// component (without control characters, dots or spaces at its ends) so a hostile name can
/// neither escape the current directory nor name it or its parent.
pub fn default_path(meta: &DocumentMeta) -> PathBuf {
    let name = meta
        .current
        .filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .trim_matches('.')
        .to_owned();
    if name.is_empty() {
        PathBuf::from(meta.current.id.to_string())
    } else {
        PathBuf::from(name)
    }
}

/// A download's progress bar on stderr: name, bar, bytes, speed, time left.
pub fn progress_bar(size: u64, name: &str) -> ProgressBar {
    let b = ProgressBar::new(size);
    b.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    b.set_message(name.to_owned());
    b
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub async fn fetch(
    client: &Client,
    meta: &DocumentMeta,
    dest: &Path,
    retries: u32,
    progress: bool,
    overwrite: bool,
) -> Result<FetchOutcome, CliError> {
    let v = &meta.current;
    if v.deleted {
        return Err(CliError::Refused(format!("document {} is deleted", v.id)));
    }
    let part = sidecar(dest, ".docfed-part");
    let part_md5 = sidecar(dest, ".docfed-part.md5");
    // A partial file of other content (an older version) is discarded, not resumed.
    if std::fs::read_to_string(&part_md5)
        .ok()
        .as_deref()
        .map(str::trim)
        != Some(v.md5.as_str())
    {
        let _ = std::fs::remove_file(&part);
        std::fs::write(&part_md5, v.md5.as_str())?;
    }
    let bar = progress.then(|| progress_bar(v.size, &v.filename));
    let mut resumed_from = None;
    let mut downloaded = 0u64;
    let mut attempt = 0u32;
    let hash = loop {
        match transfer(client, meta, &part, bar.as_ref(), &mut downloaded).await {
            Ok((hash, from)) => {
                resumed_from.get_or_insert(from);
                break hash;
            }
            Err((e, from)) => {
                resumed_from.get_or_insert(from);
                if attempt >= retries || !matches!(e, CliError::Network(_)) {
                    if let Some(b) = &bar {
                        b.abandon();
                    }
                    return Err(e);
                }
                attempt += 1;
                let wait = Duration::from_millis(500 << attempt.min(5));
                if let Some(b) = &bar {
                    b.set_message(format!(
                        "{} (retry {attempt}/{retries} in {wait:?})",
                        v.filename
                    ));
                }
                tokio::time::sleep(wait).await;
            }
        }
    };
    if let Some(b) = &bar {
        b.finish();
    }
    let d = hash.finish();
    let (md5, size) = (d.md5, d.size);
    let sha_ok = v.sha256.as_ref().is_none_or(|s| *s == d.sha256);
    if md5 != v.md5 || size != v.size || !sha_ok {
        let _ = std::fs::remove_file(&part);
        let _ = std::fs::remove_file(&part_md5);
        return Err(CliError::Verification(format!(
            "downloaded {size} bytes with MD5 {md5} (SHA-256 {}), expected {} bytes with MD5 {}{}; \
             nothing was written to {}",
            d.sha256,
            v.size,
            v.md5,
            v.sha256
                .as_ref()
                .map(|s| format!(" (SHA-256 {s})"))
                .unwrap_or_default(),
            dest.display()
        )));
    }
    std::fs::File::open(&part)?.sync_all()?;
    if overwrite {
        std::fs::rename(&part, dest)?;
    } else {
        place_new(&part, dest)?;
    }
    let _ = std::fs::remove_file(&part_md5);
    Ok(FetchOutcome {
        path: dest.to_owned(),
        size,
        md5: md5.to_string(),
        resumed_from: resumed_from.unwrap_or(0),
        bytes_downloaded: downloaded,
    })
}

/// Moves `part` to `dest` only if nothing is there: a hard link fails on an existing name
/// (a file, a link, a folder) where a rename would replace it. Where the file system has no
/// hard links, a check then a rename.
fn place_new(part: &Path, dest: &Path) -> Result<(), CliError> {
    match std::fs::hard_link(part, dest) {
        Ok(()) => {
            std::fs::remove_file(part)?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists(dest)),
        Err(_) if dest.symlink_metadata().is_ok() => Err(exists(dest)),
        Err(_) => Ok(std::fs::rename(part, dest)?),
    }
}

/// The refusal to overwrite `dest`, named by the server.
pub fn exists(dest: &Path) -> CliError {
    CliError::Local(format!(
        "{} already exists (the document's file name); pass --force to overwrite it, or -o PATH \
         to write elsewhere",
        dest.display()
    ))
}

/// One attempt: hashes what `part` holds, asks for the rest, appends it. Returns the hash of the
/// whole file and where this attempt started.
async fn transfer(
    client: &Client,
    meta: &DocumentMeta,
    part: &Path,
    bar: Option<&ProgressBar>,
    downloaded: &mut u64,
) -> Result<(ContentHasher, u64), (CliError, u64)> {
    let v = &meta.current;
    let (mut file, mut hash) =
        docfed_shared::hashing::open_for_resume::<ContentHasher>(part, v.size)
            .map_err(|e| (e.into(), 0))?;
    let from = hash.len();
    if let Some(b) = bar {
        b.set_position(from);
    }
    if from == v.size {
        return Ok((hash, from));
    }
    let resp = client
        .content_request(v, from)
        .send()
        .await
        .map_err(|e| (client.network(e), from))?;
    let resp = client.check(resp).await.map_err(|e| (e, from))?;
    if resp.status() == reqwest::StatusCode::OK && from > 0 {
        // The server sent everything: start the file over.
        file.set_len(0).map_err(|e| (e.into(), from))?;
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| (e.into(), from))?;
        hash = ContentHasher::new();
    }
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| (client.interrupted(&e), from))?;
        file.write_all(&chunk).map_err(|e| (e.into(), from))?;
        hash.update(&chunk);
        *downloaded += chunk.len() as u64;
        if let Some(b) = bar {
            b.set_position(hash.len());
        }
        if hash.len() > v.size {
            break;
        }
    }
    file.flush().map_err(|e| (e.into(), from))?;
    if hash.len() < v.size {
        return Err((
            CliError::Network(format!(
                "{}: transfer ended after {} of {} bytes",
                client.base,
                hash.len(),
                v.size
            )),
            from,
        ));
    }
    Ok((hash, from))
}
