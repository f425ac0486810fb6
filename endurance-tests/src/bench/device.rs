//! Scenario `device`: the device side (ARCHITECTURE.md §2.8) with the real `docfed` binary.
//!
//! 1. Push latency: a federation of the demo shape, a device registered with `na` that flags a
//!    few small documents and runs `docfed daemon`; each sample publishes a new version of one
//!    of them at primary-a and times until `HOME/files/<name>` holds the new bytes, and, in the
//!    same sample, until `na` holds the version (`available_here`), the baseline.
//! 2. A new device's first `docfed sync` of a large directory (a standalone node filled through
//!    `POST /v1/admin/import`), with the device's peak RSS; the change feed alone, fetched and
//!    parsed as the device does, is the baseline.
//! 3. The same device's next `docfed sync` after 10,000 changes (new documents, new versions,
//!    deletions).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use docfed_shared::wire::{ChangeFeed, DocumentVersion};

use docfed_bench_kit::content::Xorshift;
use docfed_bench_kit::procfs;

use super::amqp;
use super::client::{await_available, import_body, publish};
use super::docgen::{search_query, slowest_by_kind, DocGen};
use super::standalone::standalone;
use crate::fedgen::{self, Bench};
use crate::stats::percentile;

/// Small documents the device flags in the push-latency part.
const FLAGGED: usize = 5;
/// Size of each of their versions.
const SMALL: usize = 4096;

pub async fn device(dir: &Path, quick: bool) -> Result<()> {
    let result = async {
        push_latency(&dir.join("push"), if quick { 20 } else { 100 }).await?;
        first_sync(&dir.join("sync"), if quick { 100_000 } else { 1_000_000 }).await
    }
    .await;
    // The data (a million-document node and replica are gigabytes) goes whatever happened.
    let _ = std::fs::remove_dir_all(dir);
    result
}

/// A device: the `docfed` binary with its own configuration (registrations) and replica.
struct Device {
    bin: PathBuf,
    server: String,
    home: PathBuf,
    config: PathBuf,
    data: PathBuf,
    log: PathBuf,
}

impl Device {
    fn new(dir: &Path, server: &str) -> Result<Self> {
        let bin = topology::launch::find_program("docfed")
            .context("docfed not found: cargo build --release -p mobile-client")?;
        let d = Self {
            bin,
            server: server.to_owned(),
            home: dir.join("home"),
            config: dir.join("config"),
            data: dir.join("data"),
            log: dir.join("docfed.log"),
        };
        for p in [&d.config, &d.data] {
            std::fs::create_dir_all(p)?;
        }
        Ok(d)
    }

    fn command(&self, args: &[&str]) -> Result<tokio::process::Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut c = tokio::process::Command::new(&self.bin);
        c.env("XDG_CONFIG_HOME", &self.config)
            .env("XDG_DATA_HOME", &self.data)
            .env("DOCFED_HOME", &self.home)
            .env("DOCFED_NO_MDNS", "true")
            .env("DOCFED_FALLBACK_SERVERS", &self.server)
            .env_remove("DOCFED_SERVER")
            .env_remove("DOCFED_TOKEN")
            .env("RUST_LOG", "warn")
            .arg("--server")
            .arg(&self.server)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        Ok(c)
    }

    /// Runs `docfed ARGS` to the end; fails on a non-zero exit.
    async fn run(&self, args: &[&str]) -> Result<()> {
        let status = self.command(args)?.status().await?;
        if !status.success() {
            bail!(
                "docfed {} failed ({status}); see {}",
                args.join(" "),
                self.log.display()
            );
        }
        Ok(())
    }

    /// Runs `docfed sync --quiet --json`, polling the process's VmHWM. Returns the wall time,
    /// the peak RSS in bytes and the sync's report.
    async fn timed_sync(&self) -> Result<(Duration, u64, serde_json::Value)> {
        let mut cmd = self.command(&["--json", "sync", "--quiet"])?;
        cmd.stdout(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        let pid = child.id().context("pid")?;
        let mut stdout = child.stdout.take().context("stdout")?;
        let reader = tokio::spawn(async move {
            let mut s = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut s)
                .await
                .map(|_| s)
        });
        let mut peak = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let status = loop {
            tokio::select! {
                s = child.wait() => break s?,
                _ = tick.tick() => peak = peak.max(procfs::peak_rss(pid).unwrap_or(0)),
            }
        };
        let elapsed = started.elapsed();
        if !status.success() {
            bail!("docfed sync failed ({status}); see {}", self.log.display());
        }
        let out = reader.await??;
        let report = serde_json::from_str(&out).context("docfed sync --json report")?;
        Ok((elapsed, peak, report))
    }
}

// --- 1. push latency ------------------------------------------------------------------------

async fn push_latency(dir: &Path, samples: usize) -> Result<()> {
    let b = fedgen::start(&dir.join("fed"), amqp(), &[]).await?;
    let result = push_latency_in(&b, dir, samples).await;
    let mut fed = b.fed;
    let stopped = fed.shutdown().await;
    // Benchmark federations on the shared broker leave no queues behind.
    fed.discard();
    result?;
    stopped?;
    Ok(())
}

/// The bytes of version `n` of a flagged document: distinct for every sample.
fn small_body(n: u64) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut b: Vec<u8> = (0..SMALL)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    b[..8].copy_from_slice(&n.to_le_bytes());
    b
}

async fn push_latency_in(b: &Bench, dir: &Path, samples: usize) -> Result<()> {
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let token = b.fed.token().to_owned();
    let (primary, na) = (b.url("primary-a"), b.url("na"));
    let mut ids = Vec::new();
    for k in 0..FLAGGED {
        let p = publish(
            &http,
            &primary,
            &token,
            &format!("title=device%20bench%20{k}&filename=device-{k}.bin"),
            SMALL as u64,
            1000 + 2 * k as u64,
        )
        .await?;
        ids.push(p["id"].as_str().context("id")?.to_owned());
    }
    for id in &ids {
        await_available(&http, &na, id, Duration::from_secs(120)).await?;
    }

    let dev = Device::new(&dir.join("device"), &na)?;
    dev.run(&["register", "--name", "bench", "--token", &token])
        .await?;
    for id in &ids {
        dev.run(&["flag", id]).await?;
    }
    dev.run(&["sync", "--quiet"]).await?;
    let files: Vec<PathBuf> = (0..FLAGGED)
        .map(|k| dev.home.join("files").join(format!("device-{k}.bin")))
        .collect();
    for f in &files {
        if std::fs::metadata(f).map(|m| m.len()).ok() != Some(SMALL as u64) {
            bail!("{} missing after the first sync", f.display());
        }
    }
    let daemon_log = dir.join("daemon.log");
    let mut daemon = dev.command(&["daemon", "--catch-up-interval", "600s"])?;
    daemon.stdout(std::fs::File::create(&daemon_log)?);
    let mut daemon = daemon.spawn()?;

    // Two warm-up rounds (the event stream connects, connections open), then the samples.
    let warmup = 2;
    let (mut to_na, mut to_device) = (Vec::new(), Vec::new());
    let mut syncs_before = 0;
    for s in 0..warmup + samples {
        if s == warmup {
            syncs_before = count_lines(&daemon_log);
        }
        let k = s % FLAGGED;
        let bytes = small_body(s as u64 + 1);
        let started = Instant::now();
        let resp = http
            .put(format!("{primary}/v1/documents/{}", ids[k]))
            .bearer_auth(&token)
            .header("content-type", "application/octet-stream")
            .body(bytes.clone())
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!(
                "new version refused: {} {}",
                resp.status(),
                resp.text().await?
            );
        }
        let version = resp.json::<serde_json::Value>().await?["version"]
            .as_i64()
            .context("version")?;
        let (at_na, on_device) = tokio::join!(
            held_at(&http, &na, &ids[k], version, started),
            file_holds(&files[k], &bytes, started)
        );
        if let Ok(Some(status)) = daemon.try_wait() {
            bail!("docfed daemon exited ({status}); see {}", dev.log.display());
        }
        let (at_na, on_device) = (at_na?, on_device?);
        if s >= warmup {
            to_na.push(at_na.as_secs_f64() * 1000.0);
            to_device.push(on_device.as_secs_f64() * 1000.0);
        }
        // Publications some time apart, as a person publishes: the daemon's follow-up catch-up
        // (content available at na) ends before the next one.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let catch_ups = count_lines(&daemon_log).saturating_sub(syncs_before);
    if let Some(pid) = daemon.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), daemon.wait())
        .await
        .is_err()
    {
        let _ = daemon.kill().await;
    }
    // The device's own share, per sample: from na holding the version to the file in place.
    let mut share: Vec<f64> = to_device.iter().zip(&to_na).map(|(d, n)| d - n).collect();
    share.sort_by(f64::total_cmp);
    to_na.sort_by(f64::total_cmp);
    to_device.sort_by(f64::total_cmp);
    println!(
        "publish ({SMALL} B new version at primary-a) -> held by na (baseline): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&to_na, 0.5),
        percentile(&to_na, 0.99),
        to_na.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "publish -> new bytes in the device's files/ (docfed daemon, pushed by na): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {samples} samples; {catch_ups} catch-ups run",
        percentile(&to_device, 0.5),
        percentile(&to_device, 0.99),
        to_device.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "the device's share (file in place minus held by na, per sample): p50 {:.0} ms, p99 {:.0} ms",
        percentile(&share, 0.5),
        percentile(&share, 0.99)
    );
    Ok(())
}

fn count_lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |s| s.lines().count())
}

/// Time from `started` until `url` shows `version` of `id` as current with its content held.
async fn held_at(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    version: i64,
    started: Instant,
) -> Result<Duration> {
    loop {
        if let Ok(r) = http.get(format!("{url}/v1/documents/{id}")).send().await {
            if r.status().is_success() {
                let v: serde_json::Value = r.json().await?;
                // `DocumentMeta` flattens the current version into the object.
                if v["version"].as_i64() >= Some(version) && v["available_here"] == true {
                    return Ok(started.elapsed());
                }
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("version {version} of {id} not held at {url} after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Time from `started` until `path` holds `bytes` (size first, then content; every 5 ms).
async fn file_holds(path: &Path, bytes: &[u8], started: Instant) -> Result<Duration> {
    loop {
        if std::fs::metadata(path).is_ok_and(|m| m.len() == bytes.len() as u64)
            && std::fs::read(path).is_ok_and(|b| b == bytes)
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{} did not get the new version in 60 s", path.display());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// --- 2 and 3. first sync of a large directory, catch-up after 10,000 changes ------------------

async fn first_sync(dir: &Path, n: u64) -> Result<()> {
    let token = "bench-token-0123456789abcdef";
    let mut node = standalone(&dir.join("node"), token).await?;
    let result = first_sync_in(&node.url, token, dir, n).await;
    let _ = node.child.kill().await;
    result
}

/// Reads the feed from `since` in pages of `page`, parsed into the wire types as the device
/// does, without storing anything. Returns the position reached, the entries and the bytes.
async fn read_feed(
    http: &reqwest::Client,
    url: &str,
    mut since: i64,
    page: usize,
) -> Result<(i64, u64, u64)> {
    let (mut changes, mut bytes) = (0u64, 0u64);
    loop {
        let body = http
            .get(format!("{url}/v1/changes?since={since}&limit={page}"))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        bytes += body.len() as u64;
        let feed: ChangeFeed = serde_json::from_slice(&body)?;
        let got = feed.changes.len();
        changes += got as u64;
        since = since.max(feed.last_seq);
        if got < page {
            return Ok((since, changes, bytes));
        }
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}

async fn first_sync_in(url: &str, token: &str, dir: &Path, n: u64) -> Result<()> {
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let gen = DocGen::new(n, &mut Xorshift::new(0x9e3779b97f4a7c15));
    let started = Instant::now();
    gen.import(&http, url, token).await?;
    println!(
        "directory of {n} documents loaded at a standalone node (admin import): {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Baseline: the feed alone, in the device's pages of 2,000, parsed but not stored.
    let t = Instant::now();
    let (_, changes, bytes) = read_feed(&http, url, 0, 2000).await?;
    let feed_alone = t.elapsed();
    let dev = Device::new(&dir.join("device"), url)?;
    let (took, peak, report) = dev.timed_sync().await?;
    if report["changes"].as_u64() != Some(changes) {
        bail!(
            "docfed sync read {} changes, the feed has {changes}",
            report["changes"]
        );
    }
    println!(
        "new device's first sync of {n} documents: {:.1} s (goal < 60 s), peak RSS {:.1} MiB, replica {:.0} MB; \
         the feed alone ({changes} changes, {:.0} MB, pages of 2,000, parsed, not stored): {:.1} s",
        took.as_secs_f64(),
        peak as f64 / 1048576.0,
        dir_size(&dev.home) as f64 / 1e6,
        bytes as f64 / 1e6,
        feed_alone.as_secs_f64()
    );

    offline_search(&dev, &gen, n).await?;

    // 10,000 changes: 4,000 new documents, 4,000 new versions, 2,000 deletions.
    let first: ChangeFeed = http
        .get(format!("{url}/v1/changes?since=0&limit=6000"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let existing: Vec<DocumentVersion> = first.changes.into_iter().map(|c| c.document).collect();
    if existing.len() < 6000 {
        bail!("the feed has only {} documents", existing.len());
    }
    let mut rng = Xorshift::new(11);
    let mut lines = Vec::new();
    for i in 0..4000u64 {
        serde_json::to_writer(&mut lines, &gen.make(n + i, 1, &mut rng))?;
        lines.push(b'\n');
    }
    for (i, old) in existing.iter().enumerate() {
        let mut v = old.clone();
        v.version = 2;
        if i < 4000 {
            let fresh = gen.make(n + 4000 + i as u64, 2, &mut rng);
            v.title = fresh.title;
            v.description = fresh.description;
            v.md5 = fresh.md5;
        } else {
            v.deleted = true;
        }
        serde_json::to_writer(&mut lines, &v)?;
        lines.push(b'\n');
    }
    import_body(&http, url, token, lines.into()).await?;
    let (took, peak, report) = dev.timed_sync().await?;
    let d = &report["documents"];
    println!(
        "its next sync after 10,000 changes ({} new, {} updated, {} deleted): {:.2} s, peak RSS {:.1} MiB",
        d["new"], d["updated"], d["deleted"],
        took.as_secs_f64(),
        peak as f64 / 1048576.0
    );
    Ok(())
}

/// The directory scenario's search mix against the device's replica, as a user runs it offline:
/// `docfed --offline --json search`, one process per query, its start included. The CLI has no
/// date filter, so "date + source" searches by source alone. A query that matches nothing,
/// repeated, gives the process's own share.
async fn offline_search(dev: &Device, gen: &DocGen, n: u64) -> Result<()> {
    let search = |args: Vec<String>| async move {
        let mut all = vec![
            "--offline".to_owned(),
            "--json".to_owned(),
            "search".to_owned(),
        ];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let t = Instant::now();
        dev.run(&all).await?;
        Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
    };
    let mut start = Vec::new();
    for _ in 0..20 {
        start.push(search(vec!["zzqxjv".to_owned()]).await?);
    }
    start.sort_by(f64::total_cmp);
    let mut rng = Xorshift::new(0x5eed_0ff1);
    let (mut lat, mut slowest) = (Vec::new(), [0f64; 8]);
    for i in 0..200u64 {
        let mut args = Vec::new();
        for (key, value) in search_query(i, &mut rng, &gen.words, &gen.tags) {
            match key {
                "q" => args.extend(value.split(' ').map(str::to_owned)),
                "since" => {}
                flag => args.extend([format!("--{flag}"), value]),
            }
        }
        let ms = search(args).await?;
        lat.push(ms);
        let kind = (i % 8) as usize;
        slowest[kind] = slowest[kind].max(ms);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "offline search of the replica ({n} documents), 200 mixed queries through `docfed --offline --json search`: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; a query that matches nothing (process start, replica opened): p50 {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        percentile(&start, 0.5)
    );
    println!(
        "slowest offline query of each kind, ms: {}",
        slowest_by_kind(&slowest)
    );
    Ok(())
}
