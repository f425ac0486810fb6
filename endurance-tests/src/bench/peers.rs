//! Scenario `peers`: docfed against Syncthing, which many operators would deploy instead, in the
//! same tree shape, on the same payloads, in the same run.
//!
//! Syncthing (Debian's package) runs one device per node of docfed's demo shape but the second
//! primary: a publisher, two relays that share the folder with it, and three regional devices
//! that share it with both relays. Each device listens on loopback only (no discovery, relays,
//! NAT or usage reports), talks TLS to its neighbours, fsyncs what it writes (`disableFsync` is
//! false) and is told to rescan at once, so neither its watcher delay nor its rescan interval is
//! measured. docfed runs its demo shape (two primaries, two intermediates, three regional nodes)
//! in clear, publishing at primary-a.
//!
//! Both are timed the same way: from the start of the ingest (docfed: the upload begins;
//! Syncthing: the file starts being written into the publisher's folder) until the content is
//! durably held at all three regional nodes (docfed: its `objects` row is visible in the node's
//! database, which happens only after the commit that made its bytes durable, whether a file in
//! `objects/` or a small object in the database; Syncthing: the file, renamed from its temporary
//! once its blocks are verified and fsynced), polled every 5 ms.
//!
//! Small documents (issue 40): a burst of [`BURST`] × 10 KB through [`BURST_PUBLISHERS`]
//! concurrent single-document publishers and through the bulk API (`POST /v1/documents/batch`),
//! against Syncthing's files/s for the same burst; 10 KB at [`RATE`]/s; the CPU each node spends
//! per small document (from `/proc/PID/stat`); and, outside `--quick`, a launch of
//! `DOCFED_BENCH_LAUNCH` (default 100,000) × 10 KB through the bulk API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use tokio::sync::mpsc;

use docfed_bench_kit::procfs;

use super::amqp;
use super::client::{payload, publish};
use crate::fedgen::{self, Bench};
use crate::stats::percentile;
use topology::demo::ROLES;

const REGIONALS: [&str; 3] = ["na", "eu", "asia"];
/// Syncthing's devices and the devices each shares the folder with upward.
const SYNCTHING_TREE: [(&str, &[&str]); 6] = [
    ("publisher", &[]),
    ("relay-1", &["publisher"]),
    ("relay-2", &["publisher"]),
    ("na", &["relay-1", "relay-2"]),
    ("eu", &["relay-1", "relay-2"]),
    ("asia", &["relay-1", "relay-2"]),
];
const SMALL: u64 = 10_000;
const RATE: f64 = 50.0;
/// Concurrent publishers of the burst (docfed's HTTP uploads).
const BURST_PUBLISHERS: usize = 8;
/// Documents of the burst (`--quick`: a quarter).
const BURST: usize = 2_000;
/// Documents per bulk request.
const BULK_REQUEST: usize = 1_000;
const DEADLINE: Duration = Duration::from_secs(900);

/// What one system did on the four workloads.
#[derive(Debug, Default)]
struct Figures {
    large_unpaced: f64,
    large_paced: f64,
    /// Latencies (ms) of the documents published at a fixed rate, sorted.
    steady: Vec<f64>,
    burst_per_s: f64,
    /// docfed only: the same burst through the bulk API.
    bulk_per_s: f64,
    /// docfed only: CPU ms per small document, per node, over the burst.
    cpu_ms_per_doc: Vec<(String, f64)>,
    /// docfed only: the launch, (documents, seconds, primaries' largest RSS before, after).
    launch: Option<(usize, f64, u64, u64)>,
    /// Largest resident set of one process, idle after the work and at its peak.
    rss: u64,
    peak_rss: u64,
}

impl Figures {
    /// Prints and keeps the time `t` (s) of the large document; true when paced (the paced
    /// federation does nothing else).
    fn record_large(&mut self, system: &str, paced: bool, size: u64, t: f64) -> bool {
        let how = if paced { "paced" } else { "unpaced" };
        println!(
            "{system} {how}: {} MiB to all three regionals {t:.2} s",
            size >> 20
        );
        if paced {
            self.large_paced = t;
        } else {
            self.large_unpaced = t;
        }
        paced
    }
}

pub async fn peers(dir: &Path, quick: bool) -> Result<()> {
    if topology::launch::find_program("syncthing").is_none() {
        bail!("syncthing not found: apt-get install syncthing (cargo xtask deps installs it)");
    }
    let large: u64 = if quick { 64 << 20 } else { 256 << 20 };
    let count = if quick { 100 } else { 300 };
    let burst = if quick { BURST / 4 } else { BURST };
    let launch = if quick {
        None
    } else {
        Some(
            std::env::var("DOCFED_BENCH_LAUNCH")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(100_000),
        )
    };
    let rate = super::link_rate();
    let rate_bytes = rate
        .parse::<bytesize::ByteSize>()
        .map_err(|e| anyhow::anyhow!("DOCFED_BENCH_LINK_RATE {rate:?}: {e}"))?
        .as_u64();
    let result = async {
        let d = docfed(dir, large, count, burst, launch, &rate).await?;
        let s = syncthing(dir, large, count, burst, rate_bytes).await?;
        report(&d, &s, large, count, burst, &rate);
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(dir);
    result
}

fn report(d: &Figures, s: &Figures, large: u64, count: usize, burst: usize, rate: &str) {
    let mib = large >> 20;
    println!("\ndocfed / Syncthing, same shape, same payloads, this run:");
    println!(
        "  {mib} MiB, links paced at {rate}/s, to all three regionals: docfed {:.2} s, Syncthing {:.2} s, ratio {:.2} (goal <= 0.55)",
        d.large_paced,
        s.large_paced,
        d.large_paced / s.large_paced
    );
    println!(
        "  {mib} MiB unpaced: docfed {:.2} s, Syncthing {:.2} s, ratio {:.2} (goal <= 1.0)",
        d.large_unpaced,
        s.large_unpaced,
        d.large_unpaced / s.large_unpaced
    );
    let p = |v: &[f64], q| percentile(v, q);
    println!(
        "  {count} x 10 KB at {RATE}/s, p50 / p99: docfed {:.0} / {:.0} ms, Syncthing {:.0} / {:.0} ms, p99 ratio {:.2} (goal <= 0.3 and under 150 ms)",
        p(&d.steady, 0.5),
        p(&d.steady, 0.99),
        p(&s.steady, 0.5),
        p(&s.steady, 0.99),
        p(&d.steady, 0.99) / p(&s.steady, 0.99)
    );
    println!(
        "  {burst} x 10 KB at once, {BURST_PUBLISHERS} publishers: docfed {:.0} docs/s, Syncthing {:.0} files/s, ratio {:.2} (goal >= 3 and >= 500 docs/s)",
        d.burst_per_s,
        s.burst_per_s,
        d.burst_per_s / s.burst_per_s
    );
    println!(
        "  {burst} x 10 KB at once, bulk API: docfed {:.0} docs/s, ratio to Syncthing {:.2} (goal >= 5 and >= 1,000 docs/s)",
        d.bulk_per_s,
        d.bulk_per_s / s.burst_per_s
    );
    let worst = d
        .cpu_ms_per_doc
        .iter()
        .map(|(_, ms)| *ms)
        .fold(0.0, f64::max);
    let per_node: Vec<String> = d
        .cpu_ms_per_doc
        .iter()
        .map(|(n, ms)| format!("{n} {ms:.2}"))
        .collect();
    println!(
        "  CPU per small document (8-publisher burst), ms: {} (worst {worst:.2}; goal <= 0.3)",
        per_node.join(", ")
    );
    if let Some((n, t, before, after)) = d.launch {
        println!(
            "  launch: {n} x 10 KB through the bulk API on all three regionals in {t:.1} s ({:.0} docs/s; goal <= 120 s at 100,000); primaries' RSS {} -> {} MiB",
            n as f64 / t,
            before >> 20,
            after >> 20
        );
    }
    println!(
        "  largest RSS of one process, idle after the work / peak: docfed {} / {} MiB, Syncthing {} / {} MiB",
        d.rss >> 20,
        d.peak_rss >> 20,
        s.rss >> 20,
        s.peak_rss >> 20
    );
}

/// A file expected at these paths, and when its clock started.
type Expected = (Vec<PathBuf>, Instant);

/// Waits for items (files expected at several paths) and returns, per item, the milliseconds
/// from its start to the moment the last of its paths existed. Items are sent while earlier
/// ones are awaited; the result comes once the sender is dropped and every item arrived.
fn arrivals() -> (
    mpsc::UnboundedSender<Expected>,
    tokio::task::JoinHandle<Result<Vec<f64>>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Expected>();
    let task = tokio::spawn(async move {
        let deadline = Instant::now() + DEADLINE;
        let mut pending: Vec<Expected> = Vec::new();
        let mut done = Vec::new();
        let mut open = true;
        loop {
            while open {
                match rx.try_recv() {
                    Ok(item) => pending.push(item),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            let now = Instant::now();
            pending.retain_mut(|(paths, start)| {
                paths.retain(|p| !p.exists());
                if paths.is_empty() {
                    done.push((now - *start).as_secs_f64() * 1000.0);
                }
                !paths.is_empty()
            });
            if !open && pending.is_empty() {
                done.sort_by(f64::total_cmp);
                return Ok(done);
            }
            if now > deadline {
                bail!(
                    "{} items still missing after {DEADLINE:?}, e.g. {:?}",
                    pending.len(),
                    pending.first().map(|p| &p.0)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (tx, task)
}

async fn docfed(
    dir: &Path,
    large: u64,
    count: usize,
    burst: usize,
    launch: Option<usize>,
    rate: &str,
) -> Result<Figures> {
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let mut f = Figures::default();
    for paced in [false, true] {
        let args: Vec<&str> = if paced {
            vec!["--pull-rate-limit", rate]
        } else {
            Vec::new()
        };
        let name = if paced { "docfed-paced" } else { "docfed" };
        let b = fedgen::start(&dir.join(name), amqp(), &args).await?;
        let work = async {
            let t = docfed_large(&http, &b, large).await?;
            if f.record_large("docfed", paced, large, t) {
                return Ok(());
            }
            f.steady = docfed_small(&http, &b, count, Some(RATE), 1_000).await?;
            println!(
                "docfed: {count} x 10 KB at {RATE}/s, p50 {:.0} ms, p99 {:.0} ms",
                percentile(&f.steady, 0.5),
                percentile(&f.steady, 0.99)
            );
            let cpu_before = cpu_times(&b);
            let started = Instant::now();
            let latencies = docfed_small(&http, &b, burst, None, 100_000).await?;
            let total = latencies.last().copied().unwrap_or_default() / 1000.0;
            let cpu_after = cpu_times(&b);
            f.burst_per_s = burst as f64 / total;
            f.cpu_ms_per_doc = cpu_before
                .iter()
                .zip(&cpu_after)
                .map(|((role, a), (_, z))| (role.clone(), (z - a) * 1000.0 / burst as f64))
                .collect();
            let per_node: Vec<String> = f
                .cpu_ms_per_doc
                .iter()
                .map(|(n, ms)| format!("{n} {ms:.2}"))
                .collect();
            println!("docfed: CPU per document over the burst, ms: {}", per_node.join(", "));
            println!(
                "docfed: {burst} x 10 KB at once ({BURST_PUBLISHERS} publishers), all at all three regionals after {total:.2} s ({:.0} docs/s; {:.2} s with the uploads)",
                f.burst_per_s,
                started.elapsed().as_secs_f64()
            );
            let latencies = docfed_bulk(&http, &b, burst, 1_000_000).await?;
            let total = latencies.last().copied().unwrap_or_default() / 1000.0;
            f.bulk_per_s = burst as f64 / total;
            println!(
                "docfed: {burst} x 10 KB at once through the bulk API, all at all three regionals after {total:.2} s ({:.0} docs/s)",
                f.bulk_per_s
            );
            tokio::time::sleep(super::memory::IDLE_SETTLE).await;
            for role in ROLES {
                if let Some(pid) = b.pid(role) {
                    f.rss = f.rss.max(procfs::rss(pid).unwrap_or(0));
                    f.peak_rss = f.peak_rss.max(procfs::peak_rss(pid).unwrap_or(0));
                }
            }
            if let Some(n) = launch {
                f.launch = Some(docfed_launch(&http, &b, n).await?);
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        let mut fed = b.fed;
        fed.shutdown().await?;
        // Benchmark federations on the shared broker leave no queues behind.
        fed.discard();
        work?;
    }
    Ok(f)
}

/// A node's database, read-only, for watching what it holds while it runs.
async fn open_db(path: &Path) -> Result<sqlx::SqlitePool> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10));
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .with_context(|| format!("cannot open {}", path.display()))
}

/// CPU seconds each node of `b` has used so far.
fn cpu_times(b: &Bench) -> Vec<(String, f64)> {
    ROLES
        .iter()
        .map(|r| {
            let cpu = b.pid(r).and_then(procfs::cpu_seconds).unwrap_or(0.0);
            (r.to_string(), cpu)
        })
        .collect()
}

/// Latencies (ms, sorted) once every awaited item arrived.
type Latencies = tokio::task::JoinHandle<Result<Vec<f64>>>;

/// Unix time now, in ms (the nodes' `objects.stored_at` clock).
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Waits for contents (by MD5) to be held at all three regional nodes of `b`, and returns, per
/// content, the milliseconds from its start until the last regional node's database showed it
/// held (its `objects` row, committed with its bytes). Contents are sent while earlier ones are
/// awaited; the result comes once the sender is dropped and every content arrived.
fn docfed_arrivals(b: &Bench) -> (mpsc::UnboundedSender<(String, Instant)>, Latencies) {
    let dbs: Vec<PathBuf> = REGIONALS
        .iter()
        .map(|r| {
            b.fed
                .node(&b.id(r))
                .expect("node of the demo shape")
                .data_dir()
                .join("node.sqlite")
        })
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let task = tokio::spawn(async move {
        let mut pools = Vec::new();
        for db in &dbs {
            pools.push(open_db(db).await?);
        }
        let deadline = Instant::now() + DEADLINE;
        // md5 -> (start, start in Unix ms, regional nodes still without it)
        let mut pending: HashMap<String, (Instant, i64, Vec<bool>)> = HashMap::new();
        let mut done = Vec::new();
        let mut open = true;
        loop {
            while open {
                match rx.try_recv() {
                    Ok((md5, start)) => {
                        let ms = unix_ms() - start.elapsed().as_millis() as i64;
                        pending.insert(md5, (start, ms, vec![true; dbs.len()]));
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            if let Some(since) = pending.values().map(|(_, ms, _)| *ms).min() {
                for (i, pool) in pools.iter().enumerate() {
                    // A row's `stored_at` is taken in its transaction, before the commit that
                    // shows it: a margin keeps rows of a long commit in the scan.
                    let held: Vec<String> =
                        sqlx::query_scalar("SELECT md5 FROM objects WHERE stored_at >= ?")
                            .bind(since - 10_000)
                            .fetch_all(pool)
                            .await?;
                    for md5 in held {
                        if let Some((_, _, missing)) = pending.get_mut(&md5) {
                            missing[i] = false;
                        }
                    }
                }
            }
            let now = Instant::now();
            pending.retain(|_, (start, _, missing)| {
                let arrived = missing.iter().all(|m| !m);
                if arrived {
                    done.push((now - *start).as_secs_f64() * 1000.0);
                }
                !arrived
            });
            if !open && pending.is_empty() {
                for pool in pools {
                    pool.close().await;
                }
                done.sort_by(f64::total_cmp);
                return Ok(done);
            }
            if now > deadline {
                bail!(
                    "{} contents still missing after {DEADLINE:?}",
                    pending.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (tx, task)
}

async fn docfed_large(http: &reqwest::Client, b: &Bench, size: u64) -> Result<f64> {
    let (tx, task) = docfed_arrivals(b);
    let started = Instant::now();
    let p = publish(
        http,
        &b.url("primary-a"),
        b.fed.token(),
        "title=large",
        size,
        1,
    )
    .await?;
    let md5 = p["md5"].as_str().context("md5")?;
    tx.send((md5.to_owned(), started))?;
    drop(tx);
    Ok(task.await??[0] / 1000.0)
}

/// `count` 10 KB documents published at primary-a, at `rate` per second or all at once by
/// [`BURST_PUBLISHERS`] publishers; returns their latencies (ms, sorted), each from its own
/// upload's start at a fixed rate, from the burst's start otherwise.
async fn docfed_small(
    http: &reqwest::Client,
    b: &Bench,
    count: usize,
    rate: Option<f64>,
    seed: u64,
) -> Result<Vec<f64>> {
    let (tx, task) = docfed_arrivals(b);
    let url = b.url("primary-a");
    let token = b.fed.token().to_owned();
    let started = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..count)
        .map(|i| {
            let (http, url, token, tx) = (http.clone(), url.clone(), token.clone(), tx.clone());
            async move {
                let mut t0 = started;
                if let Some(r) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / r);
                    tokio::time::sleep_until(due.into()).await;
                    t0 = Instant::now();
                }
                let q = format!("title=small%20{i}");
                let p = publish(&http, &url, &token, &q, SMALL, seed + i as u64).await?;
                let md5 = p["md5"].as_str().context("md5")?;
                tx.send((md5.to_owned(), t0))?;
                Ok(())
            }
        })
        .buffer_unordered(if rate.is_some() { 64 } else { BURST_PUBLISHERS })
        .collect()
        .await;
    drop(tx);
    for r in results {
        r?;
    }
    task.await?
}

/// A `multipart/form-data` body of `count` generated 10 KB documents (seeds from `seed`), one
/// `file` part each, for `POST /v1/documents/batch`.
fn bulk_body(count: usize, seed: u64) -> (String, Vec<u8>) {
    let boundary = format!("docfed-bench-{seed:x}");
    let mut body = Vec::with_capacity(count * (SMALL as usize + 200));
    for i in 0..count {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s{}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n",
                seed + i as u64
            )
            .as_bytes(),
        );
        for chunk in super::client::payload(SMALL, seed + i as u64) {
            body.extend_from_slice(&chunk);
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

/// `count` 10 KB documents through the bulk API at primary-a, [`BULK_REQUEST`] per request, two
/// requests at a time; returns their latencies (ms, sorted) from the start.
async fn docfed_bulk(
    http: &reqwest::Client,
    b: &Bench,
    count: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    let (tx, task) = docfed_arrivals(b);
    let started = Instant::now();
    bulk_publish(http, b, count, seed, |md5| {
        tx.send((md5, started)).map_err(anyhow::Error::from)
    })
    .await?;
    drop(tx);
    task.await?
}

/// Publishes `count` generated documents through the bulk API, calling `published` with each
/// one's MD5 as its request is answered.
async fn bulk_publish(
    http: &reqwest::Client,
    b: &Bench,
    count: usize,
    seed: u64,
    published: impl Fn(String) -> Result<()>,
) -> Result<()> {
    let url = format!("{}/v1/documents/batch", b.url("primary-a"));
    let token = b.fed.token().to_owned();
    let requests = (0..count).step_by(BULK_REQUEST).map(|first| {
        let n = BULK_REQUEST.min(count - first);
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let (boundary, body) = bulk_body(n, seed + first as u64);
            let resp = http
                .post(&url)
                .bearer_auth(&token)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body)
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!(
                    "bulk publish failed: {} {}",
                    resp.status(),
                    resp.text().await?
                );
            }
            let answer: serde_json::Value = resp.json().await?;
            let items = answer["items"].as_array().context("items")?.clone();
            Ok::<_, anyhow::Error>(items)
        }
    });
    let mut answers = futures::stream::iter(requests).buffered(2);
    while let Some(items) = answers.next().await {
        for item in items? {
            match item["md5"].as_str() {
                Some(md5) => published(md5.to_owned())?,
                None => bail!("a bulk item was refused: {item}"),
            }
        }
    }
    Ok(())
}

/// A launch: `n` 10 KB documents through the bulk API, timed until all three regional nodes
/// hold them all (counted, not awaited one by one); with the primaries' largest RSS before and
/// after.
async fn docfed_launch(
    http: &reqwest::Client,
    b: &Bench,
    n: usize,
) -> Result<(usize, f64, u64, u64)> {
    let primaries_rss = || {
        ["primary-a", "primary-b"]
            .iter()
            .filter_map(|r| b.pid(r).and_then(procfs::rss))
            .max()
            .unwrap_or(0)
    };
    let before = primaries_rss();
    let mut pools = Vec::new();
    for r in REGIONALS {
        let db = b
            .fed
            .node(&b.id(r))
            .context("regional")?
            .data_dir()
            .join("node.sqlite");
        pools.push(open_db(&db).await?);
    }
    let count_held = |pool: &sqlx::SqlitePool| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM objects")
                .fetch_one(&pool)
                .await
        }
    };
    let mut base = Vec::new();
    for p in &pools {
        base.push(count_held(p).await?);
    }
    let started = Instant::now();
    let peak = std::sync::atomic::AtomicU64::new(before);
    let published = std::sync::atomic::AtomicUsize::new(0);
    bulk_publish(http, b, n, 10_000_000, |_| {
        if published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(5_000)
        {
            peak.fetch_max(primaries_rss(), std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    })
    .await?;
    println!(
        "docfed launch: {n} published in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut all = true;
        for (p, b0) in pools.iter().zip(&base) {
            all &= count_held(p).await? - b0 >= n as i64;
        }
        if all {
            break;
        }
        if Instant::now() > deadline {
            bail!("the launch did not reach every regional node within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = started.elapsed().as_secs_f64();
    for p in pools {
        p.close().await;
    }
    let after = primaries_rss().max(peak.into_inner());
    println!("docfed launch: {n} x 10 KB on all three regionals after {t:.1} s");
    Ok((n, t, before, after))
}

async fn syncthing(
    dir: &Path,
    large: u64,
    count: usize,
    burst: usize,
    rate_bytes: u64,
) -> Result<Figures> {
    let mut f = Figures::default();
    for paced in [false, true] {
        let name = if paced {
            "syncthing-paced"
        } else {
            "syncthing"
        };
        let cluster = Cluster::start(&dir.join(name), paced.then_some(rate_bytes)).await?;
        let work = async {
            let t = cluster.large(large).await?;
            if f.record_large("Syncthing", paced, large, t) {
                return Ok(());
            }
            f.steady = cluster.small(count, Some(RATE)).await?;
            println!(
                "Syncthing: {count} x 10 KB at {RATE}/s, p50 {:.0} ms, p99 {:.0} ms",
                percentile(&f.steady, 0.5),
                percentile(&f.steady, 0.99)
            );
            let latencies = cluster.small(burst, None).await?;
            let total = latencies.last().copied().unwrap_or_default() / 1000.0;
            f.burst_per_s = burst as f64 / total;
            println!(
                "Syncthing: {burst} x 10 KB at once, all at all three regionals after {total:.2} s ({:.0} files/s)",
                f.burst_per_s
            );
            tokio::time::sleep(super::memory::IDLE_SETTLE).await;
            for d in &cluster.devices {
                if let Some(pid) = d.child.id() {
                    f.rss = f.rss.max(procfs::rss(pid).unwrap_or(0));
                    f.peak_rss = f.peak_rss.max(procfs::peak_rss(pid).unwrap_or(0));
                }
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        cluster.stop().await;
        work?;
    }
    Ok(f)
}

/// One Syncthing process.
struct Device {
    name: &'static str,
    id: String,
    folder: PathBuf,
    gui: String,
    child: tokio::process::Child,
}

/// Syncthing devices in [`SYNCTHING_TREE`], each with its own home, folder and ports.
struct Cluster {
    devices: Vec<Device>,
    http: reqwest::Client,
    key: String,
}

impl Cluster {
    /// Generates a key and certificate per device, writes each one's configuration (the
    /// folder `docs` shared along the tree's edges; every device's incoming traffic limited to
    /// `recv_limit` bytes/s when given, on loopback too), starts them and waits until every
    /// edge is connected.
    async fn start(dir: &Path, recv_limit: Option<u64>) -> Result<Cluster> {
        let key = format!("bench{:016x}", rand::random::<u64>());
        let ports = topology::demo::free_port_list(2 * SYNCTHING_TREE.len())?;
        let mut ids = HashMap::new();
        for (name, _) in SYNCTHING_TREE {
            let home = dir.join(name).join("home");
            let out = tokio::process::Command::new("syncthing")
                .args(["generate", "--no-default-folder", "--home"])
                .arg(&home)
                .output()
                .await
                .context("running syncthing generate")?;
            if !out.status.success() {
                bail!(
                    "syncthing generate: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let out = tokio::process::Command::new("syncthing")
                .args(["serve", "--device-id", "--home"])
                .arg(&home)
                .output()
                .await?;
            ids.insert(name, String::from_utf8(out.stdout)?.trim().to_owned());
        }
        let port = |name: &str, gui: bool| {
            let i = SYNCTHING_TREE
                .iter()
                .position(|(n, _)| *n == name)
                .expect("device of the tree");
            ports[2 * i + usize::from(gui)]
        };
        let neighbours = |name: &str| -> Vec<&'static str> {
            SYNCTHING_TREE
                .iter()
                .filter(|(n, ups)| *n == name || ups.contains(&name))
                .flat_map(|(n, ups)| if *n == name { ups.to_vec() } else { vec![*n] })
                .collect()
        };
        let mut devices = Vec::new();
        for (name, ups) in SYNCTHING_TREE {
            let home = dir.join(name).join("home");
            let folder = dir.join(name).join("docs");
            std::fs::create_dir_all(folder.join(".stfolder"))?;
            let mut devs = format!(
                "<device id=\"{}\" name=\"{name}\" compression=\"metadata\"><address>dynamic</address></device>\n",
                ids[name]
            );
            let mut shared = format!("<device id=\"{}\"></device>", ids[name]);
            for n in neighbours(name) {
                devs.push_str(&format!(
                    "<device id=\"{}\" name=\"{n}\" compression=\"metadata\"><address>tcp://127.0.0.1:{}</address></device>\n",
                    ids[n],
                    port(n, false)
                ));
                shared.push_str(&format!("<device id=\"{}\"></device>", ids[n]));
            }
            let kib = recv_limit.map_or(0, |b| b / 1024);
            let config = format!(
                r#"<configuration version="36">
<folder id="docs" label="docs" path="{folder}" type="{kind}" rescanIntervalS="3600" fsWatcherEnabled="false" fsWatcherDelayS="10" ignorePerms="false" autoNormalize="true">
<filesystemType>basic</filesystemType>{shared}<disableFsync>false</disableFsync><markerName>.stfolder</markerName>
</folder>
{devs}<gui enabled="true" tls="false"><address>127.0.0.1:{gui}</address><apikey>{key}</apikey></gui>
<options>
<listenAddress>tcp://127.0.0.1:{listen}</listenAddress>
<globalAnnounceEnabled>false</globalAnnounceEnabled>
<localAnnounceEnabled>false</localAnnounceEnabled>
<relaysEnabled>false</relaysEnabled>
<natEnabled>false</natEnabled>
<startBrowser>false</startBrowser>
<urAccepted>-1</urAccepted>
<autoUpgradeIntervalH>0</autoUpgradeIntervalH>
<crashReportingEnabled>false</crashReportingEnabled>
<reconnectionIntervalS>1</reconnectionIntervalS>
<setLowPriority>false</setLowPriority>
<limitBandwidthInLan>true</limitBandwidthInLan>
<maxRecvKbps>{kib}</maxRecvKbps>
</options>
</configuration>
"#,
                folder = folder.display(),
                kind = if ups.is_empty() {
                    "sendonly"
                } else {
                    "sendreceive"
                },
                gui = port(name, true),
                listen = port(name, false),
            );
            std::fs::write(home.join("config.xml"), config)?;
            let child = tokio::process::Command::new("syncthing")
                .args(["serve", "--no-browser", "--no-restart", "--no-upgrade"])
                .arg(format!("--home={}", home.display()))
                .arg(format!(
                    "--logfile={}",
                    home.join("syncthing.log").display()
                ))
                .env("STNOUPGRADE", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting syncthing")?;
            devices.push(Device {
                name,
                id: ids[name].clone(),
                folder,
                gui: format!("http://127.0.0.1:{}", port(name, true)),
                child,
            });
        }
        let cluster = Cluster {
            devices,
            http: reqwest::Client::new(),
            key,
        };
        cluster.await_connected(&neighbours).await?;
        Ok(cluster)
    }

    async fn get(&self, d: &Device, path: &str) -> Result<serde_json::Value> {
        Ok(self
            .http
            .get(format!("{}{path}", d.gui))
            .header("X-API-Key", &self.key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Every device sees each of its neighbours connected and its folder idle.
    async fn await_connected(&self, neighbours: &dyn Fn(&str) -> Vec<&'static str>) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        for d in &self.devices {
            loop {
                let ready = async {
                    let c = self.get(d, "/rest/system/connections").await?;
                    let connected = neighbours(d.name).iter().all(|n| {
                        let id = &self.device(n).id;
                        c["connections"][id]["connected"] == true
                    });
                    let s = self.get(d, "/rest/db/status?folder=docs").await?;
                    Ok::<_, anyhow::Error>(connected && s["state"] == "idle")
                }
                .await
                .unwrap_or(false);
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "Syncthing device {} not connected to {:?} after 120 s",
                        d.name,
                        neighbours(d.name)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    fn device(&self, name: &str) -> &Device {
        self.devices
            .iter()
            .find(|d| d.name == name)
            .expect("device of the tree")
    }

    fn publisher(&self) -> &Device {
        self.device("publisher")
    }

    fn at_regionals(&self, file: &str) -> Vec<PathBuf> {
        REGIONALS
            .iter()
            .map(|r| self.device(r).folder.join(file))
            .collect()
    }

    /// Asks the publisher to scan `sub` of its folder now (returns when the scan is done).
    async fn scan(&self, sub: Option<&str>) -> Result<()> {
        let mut url = format!("{}/rest/db/scan?folder=docs", self.publisher().gui);
        if let Some(s) = sub {
            url.push_str(&format!("&sub={s}"));
        }
        self.http
            .post(url)
            .header("X-API-Key", &self.key)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn large(&self, size: u64) -> Result<f64> {
        let (tx, task) = arrivals();
        let started = Instant::now();
        let folder = self.publisher().folder.clone();
        tokio::task::spawn_blocking(move || write_into(&folder, "large", size, 1)).await??;
        tx.send((self.at_regionals("large"), started))?;
        drop(tx);
        self.scan(Some("large")).await?;
        Ok(task.await??[0] / 1000.0)
    }

    /// `count` 10 KB files at `rate` per second (each written and scanned on its own) or all
    /// at once (written, then one scan); latencies as [`docfed_small`]'s.
    async fn small(&self, count: usize, rate: Option<f64>) -> Result<Vec<f64>> {
        let (tx, task) = arrivals();
        let started = Instant::now();
        let prefix = if rate.is_some() { "steady" } else { "burst" };
        let seed = if rate.is_some() { 1_000 } else { 100_000 };
        match rate {
            Some(r) => {
                let results: Vec<Result<()>> = futures::stream::iter(0..count)
                    .map(|i| {
                        let tx = tx.clone();
                        async move {
                            let due = started + Duration::from_secs_f64(i as f64 / r);
                            tokio::time::sleep_until(due.into()).await;
                            let t0 = Instant::now();
                            let name = format!("{prefix}-{i}");
                            write_into(&self.publisher().folder, &name, SMALL, seed + i as u64)?;
                            tx.send((self.at_regionals(&name), t0))?;
                            self.scan(Some(&name)).await
                        }
                    })
                    .buffer_unordered(64)
                    .collect()
                    .await;
                for r in results {
                    r?;
                }
            }
            None => {
                for i in 0..count {
                    let name = format!("{prefix}-{i}");
                    write_into(&self.publisher().folder, &name, SMALL, seed + i as u64)?;
                    tx.send((self.at_regionals(&name), started))?;
                }
                self.scan(None).await?;
            }
        }
        drop(tx);
        task.await?
    }

    /// Asks every device to shut down, and kills those that do not within 10 s.
    async fn stop(mut self) {
        for d in &self.devices {
            let _ = self
                .http
                .post(format!("{}/rest/system/shutdown", d.gui))
                .header("X-API-Key", &self.key)
                .send()
                .await;
        }
        for d in &mut self.devices {
            if tokio::time::timeout(Duration::from_secs(10), d.child.wait())
                .await
                .is_err()
            {
                let _ = d.child.kill().await;
            }
        }
    }
}

/// Writes `name` into `folder` through a temporary name beside it, so a scan never sees it
/// half-written.
fn write_into(folder: &Path, name: &str, size: u64, seed: u64) -> Result<()> {
    use std::io::Write;
    let tmp = folder.with_file_name(format!("{name}.writing"));
    let mut file = std::fs::File::create(&tmp)?;
    for chunk in payload(size, seed) {
        file.write_all(&chunk)?;
    }
    drop(file);
    std::fs::rename(&tmp, folder.join(name))?;
    Ok(())
}
