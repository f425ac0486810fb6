//! Talking to a node as a benchmark does: publishing generated payloads, awaiting a document
//! where it should arrive, importing metadata.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;

/// A generated payload of `size` bytes, one MiB at a time: one random MiB, stamped with the
/// chunk number so no two chunks are equal, never holding the whole document.
pub(crate) fn payload(size: u64, seed: u64) -> impl Iterator<Item = Bytes> + Send + 'static {
    const CHUNK: u64 = 1 << 20;
    // No bigger than the document: a small document's generator must not cost the benchmark's
    // client (on the nodes' cores) more than the document costs the nodes.
    let mut block = vec![0u8; size.min(CHUNK) as usize];
    // Spread the seed first: `seed | 1` alone gave seeds 2k and 2k + 1 the same bytes, so half
    // of a burst's documents shared their content with another.
    let mut x = seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    let block = Bytes::from(block);
    (0..size.div_ceil(CHUNK)).map(move |i| {
        let len = (size - i * CHUNK).min(CHUNK) as usize;
        let mut c = block.slice(..len).to_vec();
        if len >= 8 {
            c[..8].copy_from_slice(&i.to_le_bytes());
        }
        Bytes::from(c)
    })
}

/// [`payload`] as a streamed request body.
fn body(size: u64, seed: u64) -> reqwest::Body {
    reqwest::Body::wrap_stream(futures::stream::iter(
        payload(size, seed).map(Ok::<_, std::io::Error>),
    ))
}

pub(crate) async fn publish(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    size: u64,
    seed: u64,
) -> Result<serde_json::Value> {
    let resp = http
        .post(format!("{url}/v1/documents?{query}"))
        .bearer_auth(token)
        .header("content-length", size)
        .body(body(size, seed))
        .send()
        .await?;
    if resp.status() != 201 {
        bail!("publish failed: {} {}", resp.status(), resp.text().await?);
    }
    Ok(resp.json().await?)
}

pub(crate) async fn await_available(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = http.get(format!("{url}/v1/documents/{id}")).send().await {
            if r.status().is_success() {
                let v: serde_json::Value = r.json().await?;
                if v["available_here"] == true {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("{id} not available at {url} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST /v1/admin/import` of JSON lines.
pub(crate) async fn import_body(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: reqwest::Body,
) -> Result<()> {
    let resp = http
        .post(format!("{url}/v1/admin/import"))
        .bearer_auth(token)
        .body(body)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("import failed: {}", resp.text().await?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every seed gives other bytes: a burst of documents is a burst of distinct contents.
    #[test]
    fn neighbouring_seeds_give_different_payloads() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..1_000u64 {
            let body: Vec<u8> = super::payload(10_000, seed)
                .flat_map(|c| c.to_vec())
                .collect();
            assert_eq!(body.len(), 10_000);
            assert!(seen.insert(body), "seed {seed} repeats an earlier payload");
        }
    }
}
