//! Scenario `fanout`: many small documents, and how long until all three regional directories
//! hold each.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures::StreamExt;

use super::amqp;
use super::client::publish;
use crate::fedgen;
use crate::stats::percentile;

/// Scenario 2: many small documents; latency until the directory of all three regional nodes
/// has each one, at a fixed rate and at full speed.
pub(super) async fn fanout(dir: &Path, quick: bool) -> Result<()> {
    let count = if quick { 300 } else { 2000 };
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    for (label, rate) in [("fixed 50/s", Some(50.0)), ("full speed", None)] {
        let b = fedgen::start(&dir.join(label.replace([' ', '/'], "-")), amqp(), &[]).await?;
        let token = b.fed.token().to_owned();
        let regionals: Vec<String> = ["na", "eu", "asia"].iter().map(|r| b.url(r)).collect();
        // Watch the three change feeds; record when each document shows up everywhere.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
        let mut watchers = Vec::new();
        for url in regionals.clone() {
            let (tx, http) = (tx.clone(), http.clone());
            watchers.push(tokio::spawn(async move {
                let mut since = 0i64;
                loop {
                    let feed: serde_json::Value = match http
                        .get(format!("{url}/v1/changes?since={since}&limit=10000"))
                        .send()
                        .await
                    {
                        Ok(r) => r.json().await.unwrap_or_default(),
                        Err(_) => serde_json::Value::Null,
                    };
                    let now = Instant::now();
                    for c in feed["changes"].as_array().into_iter().flatten() {
                        if let Some(id) = c["document"]["id"].as_str() {
                            let _ = tx.send((id.to_owned(), now));
                        }
                    }
                    since = feed["last_seq"].as_i64().unwrap_or(since);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
        drop(tx);
        let started = Instant::now();
        let publish_times =
            std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
                String,
                Instant,
            >::new()));
        let primaries = [b.url("primary-a"), b.url("primary-b")];
        let jobs = futures::stream::iter(0..count).map(|i| {
            let (http, token, times) = (http.clone(), token.clone(), publish_times.clone());
            let url = primaries[i % 2].clone();
            async move {
                if let Some(r) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / r);
                    tokio::time::sleep_until(due.into()).await;
                }
                let t = Instant::now();
                let p = publish(
                    &http,
                    &url,
                    &token,
                    &format!("title=small%20{i}"),
                    10_000,
                    i as u64 + 10,
                )
                .await?;
                times
                    .lock()
                    .unwrap()
                    .insert(p["id"].as_str().unwrap_or_default().to_owned(), t);
                Ok::<_, anyhow::Error>(())
            }
        });
        let results: Vec<Result<()>> = jobs
            .buffer_unordered(if rate.is_some() { 64 } else { 8 })
            .collect()
            .await;
        for r in results {
            r?;
        }
        let published = started.elapsed();
        let mut seen: std::collections::HashMap<String, (u8, Instant)> = Default::default();
        let mut latencies = Vec::with_capacity(count);
        let deadline = Instant::now() + Duration::from_secs(600);
        while latencies.len() < count {
            let Ok(Some((id, at))) = tokio::time::timeout_at(deadline.into(), rx.recv()).await
            else {
                bail!(
                    "only {} of {count} documents reached all three regional nodes",
                    latencies.len()
                );
            };
            let e = seen.entry(id.clone()).or_insert((0, at));
            e.0 += 1;
            e.1 = e.1.max(at);
            if e.0 == 3 {
                if let Some(t0) = publish_times.lock().unwrap().get(&id) {
                    latencies.push((e.1 - *t0).as_secs_f64() * 1000.0);
                }
            }
        }
        let total = started.elapsed();
        for w in watchers {
            w.abort();
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "{label}: {count} x 10 KB; publication -> in all three regional directories p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms; \
             published at {:.0}/s, everywhere at {:.0} docs/s",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.95),
            percentile(&latencies, 0.99),
            count as f64 / published.as_secs_f64(),
            count as f64 / total.as_secs_f64()
        );
        let mut fed = b.fed;
        fed.shutdown().await?;
        // Benchmark federations on the shared broker leave no queues behind.
        fed.discard();
    }
    Ok(())
}
