//! Scenario `directory`: a directory of a million documents: bulk load, search latency, a new
//! client's catch-up through the change feed, and the incremental catch-up after 10,000 changes.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use docfed_bench_kit::content::Xorshift;

use super::client::import_body;
use super::docgen::{search_query, slowest_by_kind, DocGen};
use super::standalone::standalone;
use crate::stats::percentile;

/// Scenario 3: a directory of a million documents: bulk load, search latency, change-feed
/// catch-up of a new client, and incremental catch-up after 10,000 changes.
pub(super) async fn directory(dir: &Path, quick: bool) -> Result<()> {
    let n: u64 = if quick { 100_000 } else { 1_000_000 };
    let token = "bench-token-0123456789abcdef";
    let mut node = standalone(&dir.join("node"), token).await?;
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let mut rng = Xorshift::new(0x9e3779b97f4a7c15);
    let gen = DocGen::new(n, &mut rng);
    let (words, tags) = (gen.words.clone(), gen.tags.clone());
    let make = |i: u64, version: i64, rng: &mut Xorshift| gen.make(i, version, rng);
    let started = Instant::now();
    gen.import(&http, &node.url, token).await?;
    let load = started.elapsed();
    println!(
        "bulk load of {n} documents' metadata: {:.1} s ({:.0} docs/s)",
        load.as_secs_f64(),
        n as f64 / load.as_secs_f64()
    );

    // A mix of searches.
    let mut slowest = [0f64; 8];
    let mut lat = Vec::new();
    let mut hits = 0usize;
    for i in 0..200u64 {
        let q = search_query(i, &mut rng, &words, &tags);
        let t = Instant::now();
        let r: serde_json::Value = http
            .get(format!("{}/v1/documents", node.url))
            .query(&q)
            .query(&[("limit", "20")])
            .send()
            .await?
            .json()
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        lat.push(ms);
        let kind = (i % 8) as usize;
        slowest[kind] = slowest[kind].max(ms);
        hits += r["documents"].as_array().map_or(0, Vec::len);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "slowest query of each kind, ms: {}",
        slowest_by_kind(&slowest)
    );
    println!(
        "search over {n} documents, 200 mixed queries (full text, prefix, tag, region, author, date): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 < 50 ms); {:.1} hits per page",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        hits as f64 / 200.0
    );

    // A new client replays the whole change feed.
    let feed = |since: i64| {
        let (http, url) = (http.clone(), node.url.clone());
        async move {
            let (mut since, mut bytes, mut changes) = (since, 0u64, 0u64);
            loop {
                let body = http
                    .get(format!("{url}/v1/changes?since={since}&limit=10000"))
                    .send()
                    .await?
                    .bytes()
                    .await?;
                bytes += body.len() as u64;
                let v: serde_json::Value = serde_json::from_slice(&body)?;
                let got = v["changes"].as_array().map_or(0, Vec::len) as u64;
                if got == 0 {
                    return Ok::<_, anyhow::Error>((since, bytes, changes));
                }
                changes += got;
                since = v["last_seq"].as_i64().context("last_seq")?;
            }
        }
    };
    let t = Instant::now();
    let (last, bytes, changes) = feed(0).await?;
    println!(
        "full catch-up of a new client via the change feed: {changes} changes, {:.1} MB, {:.1} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    // 10,000 changes later.
    let mut lines = Vec::new();
    let mut rng2 = Xorshift::new(7);
    for i in 0..10_000u64 {
        serde_json::to_writer(&mut lines, &make(n + i, 1, &mut rng2))?;
        lines.push(b'\n');
    }
    import_body(&http, &node.url, token, lines.into()).await?;
    let t = Instant::now();
    let (_, bytes, changes) = feed(last).await?;
    println!(
        "incremental catch-up after 10,000 changes: {changes} changes, {:.1} MB, {:.2} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let _ = node.child.kill().await;
    Ok(())
}
