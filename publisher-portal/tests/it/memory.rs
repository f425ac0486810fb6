//! The portal holds no upload or download in memory: its peak RSS while a large file streams
//! through it to a primary, and back from a primary to its author, stays far below the file's
//! size.
//!
//! 256 MiB by default; `PORTAL_RSS_TEST_BYTES=1073741824 cargo test -p publisher-portal --test
//! it constant_memory -- --nocapture` runs it with 1 GiB and prints the figure.

use std::time::Instant;

use bytes::Bytes;
use reqwest::StatusCode;

use crate::common::{Client, Env, TestResult};

const DEFAULT_BYTES: u64 = 256 << 20;
const LIMIT_KIB: u64 = 64 * 1024;

/// A field of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> TestResult<u64> {
    let field = field.trim_end_matches(':');
    docfed_test_kit::procfs::status_bytes(pid, field)
        .map(|b| b / 1024)
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status").into())
}

#[tokio::test]
async fn constant_memory_upload_and_download() -> TestResult {
    let size: u64 = std::env::var("PORTAL_RSS_TEST_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_BYTES);
    let env = Env::start(&[]).await?;
    let alice = env.author("alice").await?;
    let pid = env.portal.pid().ok_or("portal not running")?;
    // Logging in ran Argon2 (~19 MiB by design). Reset the high-water mark (clear_refs "5",
    // Linux 4.0+) so the figure is about the upload alone; both are printed.
    let after_login = status_kib(pid, "VmHWM:")?;
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();

    let token = alice.csrf().await?;
    let boundary = "----docfedrssboundaryQ2xW8";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{token}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nBig file\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"scope\"\r\n\r\nregion:na\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    const CHUNK: u64 = 1 << 20;
    let chunk = Bytes::from(crate::common::bytes(CHUNK as usize, 11));
    let n_chunks = size.div_ceil(CHUNK);
    let stream = futures::stream::iter((0..n_chunks + 2).map(move |i| {
        Ok::<_, std::io::Error>(if i == 0 {
            Bytes::from(head.clone())
        } else if i <= n_chunks {
            let len = (size - (i - 1) * CHUNK).min(CHUNK) as usize;
            chunk.slice(..len)
        } else {
            Bytes::from(tail.clone())
        })
    }));
    let started = Instant::now();
    let r = alice
        .http
        .post(format!("{}/publish", alice.base))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await?;
    let page = Client::read(r).await?;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let peak = status_kib(pid, "VmHWM:")?;
    let id = page.doc_id();
    let meta = env
        .node_doc("pa", &id)
        .await?
        .or(env.node_doc("pb", &id).await?)
        .ok_or("not on a primary")?;
    assert_eq!(meta["size"].as_u64(), Some(size));
    println!(
        "portal peak RSS (VmHWM) while streaming {size} bytes ({:.0} MiB) through it: {peak} KiB \
         ({:.1} MiB){}; after login (Argon2) {after_login} KiB; {:.1} s, {:.0} MiB/s",
        size as f64 / (1 << 20) as f64,
        peak as f64 / 1024.0,
        if reset {
            ""
        } else {
            " (high-water mark not reset: includes the login)"
        },
        secs,
        size as f64 / (1 << 20) as f64 / secs
    );
    assert!(
        peak < LIMIT_KIB,
        "portal peak RSS {peak} KiB ≥ {LIMIT_KIB} KiB"
    );

    // And back: the author downloads it through the portal, read as it arrives.
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let started = Instant::now();
    let r = alice
        .http
        .get(format!("{}/documents/{id}/download", alice.base))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.content_length(), Some(size));
    let mut body = r.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        got += chunk?.len() as u64;
    }
    assert_eq!(got, size);
    let peak = status_kib(pid, "VmHWM:")?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "portal peak RSS (VmHWM) while streaming {size} bytes back to the author: {peak} KiB \
         ({:.1} MiB){}; {secs:.1} s",
        peak as f64 / 1024.0,
        if reset {
            ""
        } else {
            " (high-water mark not reset)"
        },
    );
    assert!(
        peak < LIMIT_KIB,
        "portal peak RSS {peak} KiB ≥ {LIMIT_KIB} KiB while downloading"
    );
    Ok(())
}
