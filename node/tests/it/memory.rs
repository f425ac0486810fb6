//! Constant memory: the node's peak RSS while a large document is uploaded and downloaded stays
//! far below the document's size. The default size keeps CI quick; set DOCFED_RSS_TEST_BYTES
//! (e.g. 2147483648) to measure with a bigger one.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const CHUNK: usize = 1024 * 1024;
const RSS_LIMIT: u64 = 64 * 1024 * 1024;

#[tokio::test]
async fn large_upload_and_download_run_in_constant_memory() -> TestResult {
    let size: u64 = std::env::var("DOCFED_RSS_TEST_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(384 * 1024 * 1024);
    let node = TestNode::start().await?;
    let c = client();
    let chunks = size.div_ceil(CHUNK as u64);
    // Generated on the fly: the test holds one chunk at a time, too.
    let body = futures::stream::iter(0..chunks).map(move |i| {
        let len = (size - i * CHUNK as u64).min(CHUNK as u64) as usize;
        Ok::<_, std::io::Error>(pattern(i, len))
    });
    let mut expected = md5::Context::new();
    for i in 0..chunks {
        let len = (size - i * CHUNK as u64).min(CHUNK as u64) as usize;
        expected.consume(pattern(i, len));
    }
    let expected = format!("{:x}", expected.finalize());

    let started = std::time::Instant::now();
    let resp = auth(c.post(node.url("/v1/documents?title=large&filename=large.bin")))
        .header("content-length", size)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let upload = started.elapsed();
    let p: Value = resp.json().await?;
    assert_eq!(p["md5"], expected.as_str());
    let after_upload = node.peak_rss();

    let started = std::time::Instant::now();
    let resp = c
        .get(node.url(&format!(
            "/v1/documents/{}/content",
            p["id"].as_str().unwrap()
        )))
        .send()
        .await?;
    let mut stream = resp.bytes_stream();
    let mut got = md5::Context::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        got.consume(&chunk);
    }
    let download = started.elapsed();
    assert_eq!(n, size);
    assert_eq!(format!("{:x}", got.finalize()), expected);
    let peak = node.peak_rss();
    eprintln!(
        "constant memory: {} MiB document; node peak RSS {:.1} MiB after upload, {:.1} MiB after download; \
         upload {:.0} MB/s, download {:.0} MB/s",
        size >> 20,
        after_upload as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        size as f64 / 1e6 / upload.as_secs_f64(),
        size as f64 / 1e6 / download.as_secs_f64(),
    );
    assert!(peak > 0, "could not read the node's VmHWM");
    assert!(
        peak < RSS_LIMIT,
        "peak RSS {peak} bytes exceeds {RSS_LIMIT}"
    );
    Ok(())
}
