//! Scenarios `large` and `deep`: a large document through the tiers, stream-through against
//! store-and-forward, unpaced and with paced links, and a single verifying pull against curl.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::client::{await_available, publish};
use super::{amqp, link_rate, mb_s};
use crate::fedgen::{self, Bench};

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
pub(super) async fn large(dir: &Path, quick: bool) -> Result<()> {
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

/// Scenario 1b: the same on the four-tier shape (`topology/four-tier.toml`), where na is three
/// pulls below the primary: store-and-forward takes three link times, stream-through about one.
pub(super) async fn deep(dir: &Path, quick: bool) -> Result<()> {
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
pub(super) async fn single_hop(
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
