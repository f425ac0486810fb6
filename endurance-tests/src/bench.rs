//! `docfed-endurance bench`: measurements of a real federation on this machine. Every figure
//! is printed next to a baseline measured in the same run (curl, MD5 speed, the other mode), so
//! ratios stay meaningful from one machine to the next.
//!
//! Over 600 lines on purpose: one function per scenario with its baseline and printout, sharing the
//! helpers at the top; the device scenario, which has its own processes, is in `bench/device.rs`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use topology::broker::{free_broker_port, PrivateBroker};
use topology::launch::BrokerChoice;

use crate::fedgen::{self, Bench};
use crate::stats::percentile;
use docfed_bench_kit::content::Xorshift;
use docfed_bench_kit::process::await_ready;
use docfed_bench_kit::procfs;
use docfed_shared::ready::Ready;

pub struct Options {
    pub only: Option<String>,
    pub quick: bool,
    pub dir: PathBuf,
}

mod device;
mod peers;

pub const SCENARIOS: [&str; 9] = [
    "large",
    "secure",
    "deep",
    "fanout",
    "directory",
    "memory",
    "broker",
    "device",
    "peers",
];

pub async fn run(opts: Options) -> Result<()> {
    if let Some(only) = &opts.only {
        if !SCENARIOS.contains(&only.as_str()) {
            bail!("unknown scenario {only:?}; one of {}", SCENARIOS.join(", "));
        }
    }
    std::fs::create_dir_all(&opts.dir)?;
    for name in SCENARIOS {
        if opts.only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        println!("\n=== {name} ===");
        let dir = opts.dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        match name {
            "large" => large(&dir, opts.quick).await?,
            "secure" => secure(&dir, opts.quick).await?,
            "deep" => deep(&dir, opts.quick).await?,
            "fanout" => fanout(&dir, opts.quick).await?,
            "directory" => directory(&dir, opts.quick).await?,
            "memory" => memory(&dir, opts.quick).await?,
            "broker" => broker(&dir, opts.quick).await?,
            "device" => device::device(&dir, opts.quick).await?,
            "peers" => peers::peers(&dir, opts.quick).await?,
            _ => unreachable!(),
        }
    }
    Ok(())
}

pub(crate) fn amqp() -> BrokerChoice {
    BrokerChoice::Auto(
        std::env::var("DOCFED_AMQP_URL")
            .unwrap_or_else(|_| docfed_shared::topology::DEFAULT_AMQP_URL.into()),
    )
}

/// The pace of the "paced" runs' links: `DOCFED_BENCH_LINK_RATE`, default `50MB` (per second).
pub(crate) fn link_rate() -> String {
    std::env::var("DOCFED_BENCH_LINK_RATE").unwrap_or_else(|_| "50MB".into())
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// A generated payload of `size` bytes, one MiB at a time: one random MiB, stamped with the
/// chunk number so no two chunks are equal, never holding the whole document.
pub(crate) fn payload(size: u64, seed: u64) -> impl Iterator<Item = Bytes> + Send + 'static {
    const CHUNK: u64 = 1 << 20;
    let mut block = vec![0u8; CHUNK as usize];
    let mut x = seed | 1;
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

/// One core's speed at MD5 alone and at MD5 + SHA-256 (what a node computes on every pull).
fn hash_speeds() -> (f64, f64) {
    use docfed_shared::hashing::StreamHash;
    let buf = vec![0x5au8; 256 << 20];
    let started = Instant::now();
    let mut ctx = md5::Context::new();
    ctx.consume(&buf);
    let _ = ctx.finalize();
    let md5 = mb_s(buf.len() as u64, started.elapsed());
    let started = Instant::now();
    let mut both = docfed_shared::ContentHasher::new();
    for chunk in buf.chunks(256 << 10) {
        both.update(chunk);
    }
    let _ = both.finish();
    (md5, mb_s(buf.len() as u64, started.elapsed()))
}

/// Scenario 1: a large document through the tiers, stream-through vs store-and-forward, and a
/// single verifying pull vs curl.
async fn large(dir: &Path, quick: bool) -> Result<()> {
    let (md5, both) = hash_speeds();
    println!(
        "on one core: MD5 {md5:.0} MB/s; MD5 + SHA-256 {both:.0} MB/s (the ceiling of a verifying pull)"
    );
    let shape = Depth {
        shape: &topology::demo::SHAPE,
        label: "2 tiers below",
        paced_goal: "goal <= 0.45",
    };
    modes(dir, quick, shape, true).await
}

/// Scenario 1c: what security costs. The CPU time of sealing and opening content at rest
/// (AES-256-GCM, one core) against MD5 over the same bytes; then, on a federation whose every
/// link is TLS (and whose broker is TLS only), a single verifying pull against curl over TLS to
/// the same disk, and paced stream-through against store-and-forward.
async fn secure(dir: &Path, quick: bool) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let gib: u64 = if quick { 1 } else { 4 };
    let scratch = dir.to_owned();
    let (seal, open, md5) =
        tokio::task::spawn_blocking(move || aes_gcm_cpu(&scratch, gib << 30)).await??;
    let per_gb = |d: Duration| d.as_secs_f64() * 1e9 / (gib << 30) as f64;
    println!(
        "AES-256-GCM on one core, {gib} GiB: seal {:.2} CPU-s per GB ({:.0} MB/s), open {:.2} \
         CPU-s per GB ({:.0} MB/s); MD5 over the same bytes {:.2} CPU-s per GB (ratio seal / MD5 {:.2})",
        per_gb(seal),
        mb_s(gib << 30, seal),
        per_gb(open),
        mb_s(gib << 30, open),
        per_gb(md5),
        seal.as_secs_f64() / md5.as_secs_f64()
    );

    let size: u64 = if quick { 256 << 20 } else { 1 << 30 };
    let shape = &topology::demo::SHAPE;
    let mut times = Vec::new();
    for stream_through in [true, false] {
        let mode = if stream_through {
            "stream-through"
        } else {
            "store-and-forward"
        };
        let rate = link_rate();
        let mut args = vec!["--pull-rate-limit", rate.as_str()];
        if !stream_through {
            args.push("--no-stream-through");
        }
        let b = fedgen::start_shape_as(&dir.join(mode), amqp(), &args, shape, true).await?;
        let (_, http) = b.tls_client()?;
        let token = b.fed.token().to_owned();
        let started = Instant::now();
        let p = publish(&http, &b.url("primary-a"), &token, "title=large", size, 1).await?;
        let published = started.elapsed();
        let id = p["id"].as_str().context("id")?;
        await_available(&http, &b.url("na"), id, Duration::from_secs(3600)).await?;
        let t = started.elapsed() - published;
        println!(
            "{mode:>17} over TLS (links paced at {rate}/s): {} MiB; publication -> verified at na {:.2} s",
            size >> 20,
            t.as_secs_f64()
        );
        times.push(t.as_secs_f64());
        let mut fed = b.fed;
        fed.shutdown().await?;
    }
    println!(
        "over TLS, ratio stream-through / store-and-forward paced: {:.2} (goal <= 0.45, as in clear)",
        times[0] / times[1]
    );

    // The single hop, unpaced, in clear and then over TLS: na pulls from eu (over mutual TLS,
    // the second time); curl downloads the same object from eu to the same disk (over TLS with
    // na's certificate, as pulls need a node's).
    let b = fedgen::start_shape_as(&dir.join("hop-clear"), amqp(), &[], shape, false).await?;
    let http = docfed_http::tls::client_builder().build()?;
    let clear = single_hop(&http, &b, b.fed.token(), dir, size, None).await;
    let mut fed = b.fed;
    fed.shutdown().await?;
    fed.discard();
    let clear = clear?;
    let b = fedgen::start_shape_as(&dir.join("hop"), amqp(), &[], shape, true).await?;
    let (ca, http) = b.tls_client()?;
    let certs = ca.parent().context("the CA's folder")?.to_owned();
    let identity = topology::certs::CertDir(certs).node(&b.id("na"));
    let over_tls = single_hop(&http, &b, b.fed.token(), dir, size, Some((&ca, identity))).await;
    let mut fed = b.fed;
    fed.shutdown().await?;
    let over_tls = over_tls?;
    println!(
        "single hop over TLS / in clear, same run: {:.2} (what TLS costs a pull)",
        over_tls / clear
    );
    Ok(())
}

/// CPU time (user + system, this thread) to seal `size` bytes, to open them again, and to MD5
/// them: the cost content at rest adds per byte. The sealed file is in memory (`/dev/shm` when
/// there is one, else `dir`), so that the figure is the cipher's rather than the disk's.
fn aes_gcm_cpu(dir: &Path, size: u64) -> Result<(Duration, Duration, Duration)> {
    use docfed_atrest::{ContentKey, Keys, Sealer};
    use std::io::Read;
    let key = ContentKey::from_hex(&"5a".repeat(32)).map_err(anyhow::Error::msg)?;
    let keys = Keys {
        current: key,
        old: Vec::new(),
    };
    let shm = Path::new("/dev/shm");
    let path = if shm.is_dir() { shm } else { dir }
        .join(format!("docfed-bench-sealed-{}.bin", std::process::id()));
    // Removes the (large) sealed file whatever happens below.
    struct Scratch<'a>(&'a Path);
    impl Drop for Scratch<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _scratch = Scratch(&path);
    let block = vec![0xa5u8; 1 << 20];
    let cpu = thread_cpu_time;
    let t0 = cpu()?;
    let mut sealer = Sealer::create(std::fs::File::create(&path)?, &keys.current)?;
    for _ in 0..size >> 20 {
        sealer.write_all(&block)?;
    }
    drop(sealer.finish()?);
    let seal = cpu()? - t0;
    let t0 = cpu()?;
    let (mut reader, len) = docfed_atrest::open_content(&path, Some(&keys))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let open = cpu()? - t0;
    if read != size || len != size {
        bail!("read back {read} of {size} bytes");
    }
    let t0 = cpu()?;
    let mut ctx = md5::Context::new();
    for _ in 0..size >> 20 {
        ctx.consume(&block);
    }
    let _ = ctx.finalize();
    Ok((seal, open, cpu()? - t0))
}

/// CPU time (user + system) the calling thread has used.
fn thread_cpu_time() -> Result<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_THREAD is Linux's, for this thread.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        bail!("getrusage: {}", std::io::Error::last_os_error());
    }
    // SAFETY: filled by the successful call above.
    let u = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(tv(u.ru_utime) + tv(u.ru_stime))
}

/// Scenario 1b: the same on the four-tier shape (`topology/four-tier.toml`), where na is three
/// pulls below the primary: store-and-forward takes three link times, stream-through about one.
async fn deep(dir: &Path, quick: bool) -> Result<()> {
    let shape = Depth {
        shape: &topology::demo::four_tier(),
        label: "3 tiers below",
        paced_goal: "goal <= 0.38; the limit is 1/3",
    };
    modes(dir, quick, shape, false).await
}

/// A shape, how deep `na` lies in it, and the goal of its paced ratio.
struct Depth<'a> {
    shape: &'a [topology::demo::Row],
    label: &'a str,
    paced_goal: &'a str,
}

/// Stream-through against store-and-forward on `d.shape`, unpaced and paced; with a single hop
/// against curl on the unpaced stream-through federation when `single`.
async fn modes(dir: &Path, quick: bool, d: Depth<'_>, single: bool) -> Result<()> {
    let size: u64 = if quick { 256 << 20 } else { 1 << 30 };
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    for paced in [false, true] {
        let mut times = Vec::new();
        for stream_through in [true, false] {
            let (b, t) =
                through_tiers(&http, dir, d.shape, d.label, stream_through, paced, size).await?;
            times.push(t.as_secs_f64());
            if single && stream_through && !paced {
                single_hop(&http, &b, b.fed.token(), dir, size, None).await?;
            }
            let mut fed = b.fed;
            fed.shutdown().await?;
            // Benchmark federations on the shared broker leave no queues behind.
            fed.discard();
        }
        println!(
            "{}, ratio stream-through / store-and-forward {}: {:.2}{}",
            d.label,
            if paced { "paced" } else { "unpaced" },
            times[0] / times[1],
            if paced {
                format!(" ({})", d.paced_goal)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Starts a federation of `shape` (links paced at `DOCFED_BENCH_LINK_RATE`, default 50 MB/s,
/// when `paced`), publishes `size` bytes at primary-a and returns the running federation with the
/// time from the end of the upload to the document verified at na.
async fn through_tiers(
    http: &reqwest::Client,
    dir: &Path,
    shape: &[topology::demo::Row],
    depth: &str,
    stream_through: bool,
    paced: bool,
    size: u64,
) -> Result<(fedgen::Bench, Duration)> {
    let rate = link_rate();
    let mode = if stream_through {
        "stream-through"
    } else {
        "store-and-forward"
    };
    let mut args: Vec<&str> = Vec::new();
    if !stream_through {
        args.push("--no-stream-through");
    }
    if paced {
        args.extend(["--pull-rate-limit", rate.as_str()]);
    }
    let b = fedgen::start_shape(&dir.join(format!("{mode}-{paced}")), amqp(), &args, shape).await?;
    let token = b.fed.token().to_owned();
    let started = Instant::now();
    let p = publish(http, &b.url("primary-a"), &token, "title=large", size, 1).await?;
    let published = started.elapsed();
    let id = p["id"].as_str().context("id")?;
    await_available(http, &b.url("na"), id, Duration::from_secs(3600)).await?;
    let t = started.elapsed() - published;
    println!(
        "{mode:>17} {}: {} MiB upload {:.1} s; publication -> verified at na ({depth}) {:.2} s",
        if paced {
            format!("(links paced at {rate}/s)")
        } else {
            "(unpaced)".into()
        },
        size >> 20,
        published.as_secs_f64(),
        t.as_secs_f64()
    );
    Ok((b, t))
}

/// A single pull (na flags a region:eu document it does not hold and pulls it from eu) against
/// curl downloading the same object from the same node to the same disk; over TLS when given the
/// CA and the certificate and key curl presents. Returns the pull's MB/s.
async fn single_hop(
    http: &reqwest::Client,
    b: &Bench,
    token: &str,
    dir: &Path,
    size: u64,
    tls: Option<(&Path, (PathBuf, PathBuf))>,
) -> Result<f64> {
    let p = publish(
        http,
        &b.url("primary-a"),
        token,
        "title=hop&scope=region:eu",
        size,
        2,
    )
    .await?;
    let id = p["id"].as_str().context("id")?.to_owned();
    let md5 = p["md5"].as_str().context("md5")?.to_owned();
    await_available(http, &b.url("eu"), &id, Duration::from_secs(3600)).await?;
    await_available(http, &b.url("asia"), &id, Duration::from_secs(3600)).await?;
    let out = dir.join("curl.bin");
    let started = Instant::now();
    let mut curl = tokio::process::Command::new("curl");
    curl.args(["-sf", "-o"]).arg(&out);
    if let Some((ca, (cert, key))) = &tls {
        curl.arg("--cacert")
            .arg(ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key);
    }
    let ok = curl
        .arg(format!("{}/v1/objects/{md5}", b.url("eu")))
        .status()
        .await?
        .success();
    let curl = started.elapsed();
    let _ = std::fs::remove_file(&out);
    if !ok {
        bail!("curl failed");
    }
    let device = crate::device::register(http, &b.url("na"), token, "bench").await?;
    let started = Instant::now();
    let r = http
        .put(format!(
            "{}/v1/devices/{}/flags/{id}",
            b.url("na"),
            device.device
        ))
        .bearer_auth(&device.secret)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("flag failed: {}", r.status());
    }
    await_available(http, &b.url("na"), &id, Duration::from_secs(3600)).await?;
    let pull = started.elapsed();
    println!(
        "single hop{} ({} MiB, eu -> na, verified and fsynced): {:.0} MB/s; curl to disk from eu: {:.0} MB/s; ratio {:.2} (goal >= 0.9)",
        if tls.is_some() { " over TLS" } else { "" },
        size >> 20,
        mb_s(size, pull),
        mb_s(size, curl),
        curl.as_secs_f64() / pull.as_secs_f64()
    );
    Ok(mb_s(size, pull))
}

/// Scenario 2: many small documents; latency until the directory of all three regional nodes
/// has each one, at a fixed rate and at full speed.
async fn fanout(dir: &Path, quick: bool) -> Result<()> {
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

/// How long the memory scenario lets a started federation run before reading its idle RSS.
pub(super) const IDLE_SETTLE: Duration = Duration::from_secs(10);

/// Scenario 4: RSS of each tier when idle, and its peak while a very large document is
/// published and propagated.
async fn memory(dir: &Path, quick: bool) -> Result<()> {
    let size: u64 = if quick { 1 << 30 } else { 4 << 30 };
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let b = fedgen::start(dir, amqp(), &[]).await?;
    let token = b.fed.token().to_owned();
    // Idle: every node connected, probed its peers and ran its first background rounds.
    tokio::time::sleep(IDLE_SETTLE).await;
    for role in ["primary-a", "mid-1", "na"] {
        let rss = b.pid(role).and_then(procfs::rss).unwrap_or(0);
        println!(
            "{role:>10}: idle RSS {:.1} MiB after {IDLE_SETTLE:?} (goal < 40 MiB)",
            rss as f64 / 1048576.0
        );
    }
    let p = publish(&http, &b.url("primary-a"), &token, "title=huge", size, 3).await?;
    let id = p["id"].as_str().context("id")?;
    for r in ["na", "eu", "asia"] {
        await_available(&http, &b.url(r), id, Duration::from_secs(7200)).await?;
    }
    for role in ["primary-a", "primary-b", "mid-1", "na"] {
        let peak = b.pid(role).and_then(procfs::peak_rss).unwrap_or(0);
        println!(
            "{role:>10}: peak RSS {:.1} MiB with a {} MiB document (goal < 40 MiB)",
            peak as f64 / 1048576.0,
            size >> 20
        );
    }
    let mut fed = b.fed;
    fed.shutdown().await?;
    // Benchmark federations on the shared broker leave no queues behind.
    fed.discard();
    Ok(())
}

/// Scenario 5: time from a broker restart until every node consumes its inbox again.
async fn broker(dir: &Path, quick: bool) -> Result<()> {
    let rounds = if quick { 2 } else { 5 };
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let name = format!("bench-{:x}", std::process::id());
    let mut rmq = PrivateBroker::start(dir, &name, free_broker_port()?).await?;
    let b = fedgen::start(&dir.join("fed"), BrokerChoice::External(rmq.url()), &[]).await?;
    let urls: Vec<String> = b.fed.nodes().iter().map(|n| n.url()).collect();
    let token = b.fed.token().to_owned();
    let states = |want: bool| {
        let (http, urls, token) = (http.clone(), urls.clone(), token.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let mut all = true;
                for u in &urls {
                    let v: serde_json::Value = match http
                        .get(format!("{u}/v1/peers"))
                        .bearer_auth(&token)
                        .send()
                        .await
                    {
                        Ok(r) => r.json().await.unwrap_or_default(),
                        Err(_) => serde_json::Value::Null,
                    };
                    all &= v["inbox_connected"] == want;
                }
                if all {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("nodes did not reach inbox_connected = {want}");
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };
    states(true).await?;
    let mut times = Vec::new();
    for _ in 0..rounds {
        rmq.kill().await?;
        states(false).await?;
        rmq.restart().await?;
        let up = Instant::now();
        states(true).await?;
        times.push(up.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "broker restart -> all 7 nodes consuming again: p50 {:.2} s, max {:.2} s over {rounds} restarts (reconnect rate 100 %)",
        percentile(&times, 0.5),
        times.last().copied().unwrap_or(f64::NAN)
    );
    let mut fed = b.fed;
    fed.shutdown().await?;
    // Benchmark federations on the shared broker leave no queues behind.
    fed.discard();
    rmq.stop().await?;
    Ok(())
}

fn vocabulary(n: usize, rng: &mut Xorshift) -> Vec<String> {
    const SYL: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ber", "dan", "fel", "gor", "hal", "jin",
        "kor", "lum", "mar", "nor", "pel", "quin", "ros", "sul", "tar", "wen",
    ];
    let mut words = std::collections::BTreeSet::new();
    while words.len() < n {
        let k = 2 + rng.next_u64() % 3;
        let w: String = (0..k)
            .map(|_| SYL[(rng.next_u64() % SYL.len() as u64) as usize])
            .collect();
        words.insert(w);
    }
    words.into_iter().collect()
}

pub(crate) struct Standalone {
    pub child: tokio::process::Child,
    pub url: String,
}

pub(crate) async fn standalone(dir: &Path, token: &str) -> Result<Standalone> {
    let bin = topology::launch::find_program("docfed-node")
        .context("docfed-node not found: cargo build --release -p docfed-node")?;
    std::fs::create_dir_all(dir)?;
    Ready::remove(dir);
    let log_path = dir.join("node.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = tokio::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--http",
            "127.0.0.1:0",
            "--token",
            token,
            "--reserved-space",
            "0",
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("docfed-node exited at once")?;
    let ready = await_ready(dir, pid, &log_path, || child.try_wait())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Standalone {
        child,
        url: ready.http,
    })
}

/// Realistic directory metadata: 4-word titles and 12-word descriptions from a 3,000-word
/// vocabulary, 1-2 of 50 tags, 20 sources, 100 authors, 4 scopes; document `i` of `n` is
/// created `n - i` seconds ago.
#[derive(Clone)]
pub(crate) struct DocGen {
    pub words: std::sync::Arc<Vec<String>>,
    pub tags: std::sync::Arc<Vec<String>>,
    n: u64,
    now: i64,
}

impl DocGen {
    pub fn new(n: u64, rng: &mut Xorshift) -> Self {
        Self {
            words: std::sync::Arc::new(vocabulary(3000, rng)),
            tags: std::sync::Arc::new((0..50).map(|i| format!("tag{i}")).collect()),
            n,
            now: docfed_shared::wire::Timestamp::now().millis(),
        }
    }

    pub fn make(
        &self,
        i: u64,
        version: i64,
        rng: &mut Xorshift,
    ) -> docfed_shared::wire::DocumentVersion {
        use docfed_shared::wire::{DocumentVersion, Timestamp};
        use docfed_shared::{DocId, Md5Hex, Scope};
        const SCOPES: [&str; 4] = ["global", "region:na", "region:eu", "region:asia"];
        let mut phrase = |k: usize| {
            (0..k)
                .map(|_| rng.pick(&self.words).clone())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let title = phrase(4);
        let description = phrase(12);
        let filename = format!("{}.pdf", phrase(1));
        let t1 = rng.pick(&self.tags).clone();
        let t2 = rng.pick(&self.tags).clone();
        let mut digest = [0u8; 16];
        digest[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        digest[8..].copy_from_slice(&i.to_le_bytes());
        DocumentVersion {
            id: DocId::new(),
            version,
            origin: "bench".into(),
            title,
            description,
            tags: if t1 == t2 { vec![t1] } else { vec![t1, t2] },
            filename,
            source: format!("source-{}", i % 20),
            scope: SCOPES[(i % 4) as usize].parse::<Scope>().expect("valid"),
            content_type: "application/pdf".into(),
            md5: Md5Hex::from_digest(digest),
            size: 10_000 + i % 1_000_000,
            deleted: false,
            created_at: Timestamp(self.now - (self.n as i64 - i as i64) * 1000),
            author: format!("author-{}", i % 100),
            sha256: None,
            signature: None,
            lazy: false,
        }
    }

    /// Loads documents `0..n` into the node at `url` through `POST /v1/admin/import`, as JSON
    /// lines generated while they are sent (1,000 per chunk).
    pub async fn import(&self, http: &reqwest::Client, url: &str, token: &str) -> Result<()> {
        let (gen, n) = (self.clone(), self.n);
        let stream = futures::stream::unfold((0u64, Xorshift::new(42)), move |(i, mut rng)| {
            let gen = gen.clone();
            async move {
                if i >= n {
                    return None;
                }
                let end = (i + 1000).min(n);
                let mut chunk = Vec::with_capacity(1000 * 400);
                for j in i..end {
                    serde_json::to_writer(&mut chunk, &gen.make(j, 1, &mut rng))
                        .expect("serialises");
                    chunk.push(b'\n');
                }
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (end, rng)))
            }
        });
        import_body(http, url, token, reqwest::Body::wrap_stream(stream)).await
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

/// The kinds of query in the directory's search mix, in the order they cycle.
pub(crate) const SEARCH_KINDS: [&str; 8] = [
    "word",
    "two words",
    "prefix",
    "word + tag",
    "word + region",
    "tag",
    "region + author",
    "date + source",
];

/// "word 12, two words 3, …": the slowest query of each kind of the mix, in ms.
pub(crate) fn slowest_by_kind(slowest: &[f64; 8]) -> String {
    SEARCH_KINDS
        .iter()
        .zip(slowest)
        .map(|(k, ms)| format!("{k} {ms:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Query `i` of the search mix (kind `i % 8` of [`SEARCH_KINDS`]) as `GET /v1/documents`
/// parameters, words and tags drawn from `rng`.
pub(crate) fn search_query(
    i: u64,
    rng: &mut Xorshift,
    words: &[String],
    tags: &[String],
) -> Vec<(&'static str, String)> {
    let w1 = rng.pick(words).clone();
    let w2 = rng.pick(words).clone();
    let tag = rng.pick(tags).clone();
    match i % 8 {
        0 => vec![("q", w1)],
        1 => vec![("q", format!("{w1} {w2}"))],
        2 => vec![("q", format!("{}*", &w1[..w1.len().min(4)]))],
        3 => vec![("q", w1), ("tag", tag)],
        4 => vec![("q", w1), ("region", "eu".into())],
        5 => vec![("tag", tag)],
        6 => vec![
            ("region", "asia".into()),
            ("author", format!("author-{}", i % 100)),
        ],
        _ => vec![
            ("since", "2026-01-01".into()),
            ("source", format!("source-{}", i % 20)),
        ],
    }
}

/// Scenario 3: a directory of a million documents: bulk load, search latency, change-feed
/// catch-up of a new client, and incremental catch-up after 10,000 changes.
async fn directory(dir: &Path, quick: bool) -> Result<()> {
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
