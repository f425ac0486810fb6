//! The workload: publications, new versions, deletes, reactivations, annotations, device flags
//! and cross-region fetches, driven by seeded random number generators (one per lane, so
//! `--seed` replays the same sequence of operations; timing under faults still varies).
//!
//! Content sizes cover both ways content travels (ARCHITECTURE.md §2a): small documents (at most
//! the topology's `inline_max`) ride inside their notifications and are kept in the nodes'
//! databases, larger ones are pulled and kept as files; every few medium sizes of a lane is one
//! of `inline_max − 1`, `inline_max` and `inline_max + 1`, in turn, so both sides of that bound
//! are published all through a run.
//!
//! Every acknowledged operation is recorded in the [`Model`]: it is what the checker holds the
//! federation to. An operation that fails (its node was killed, its link cut) may or may not have
//! happened; the checker then judges by what the primaries hold.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::budget::{Budget, Pool};
use super::content;

/// Sizes on the boundaries of the buffers bytes pass through (8 KiB, 64 KiB, 1 MiB).
pub const BOUNDARY_SIZES: [u64; 11] = [
    0, 1, 8191, 8192, 8193, 65535, 65536, 65537, 1_048_575, 1_048_576, 1_048_577,
];

/// Every this many medium sizes a lane draws, one is on the inline bound ([`inline_bound`]).
const INLINE_BOUND_EVERY: u64 = 6;

/// The sizes on either side of the topology's `inline_max`: the largest content that travels
/// inline, one byte under it, and the smallest that is pulled. None when nothing travels inline
/// (`inline_max` 0).
pub fn inline_bound(inline_max: u64) -> Option<[u64; 3]> {
    (inline_max > 0).then(|| [inline_max - 1, inline_max, inline_max + 1])
}

#[derive(Debug, Clone)]
pub struct Params {
    /// Concurrent lanes of small and medium operations.
    pub lanes: u64,
    /// Pause between two operations of a lane.
    pub pause: Duration,
    /// Largest medium document.
    pub medium_max: u64,
    /// Size range of the large documents, published one at a time by their own lane.
    pub large: (u64, u64),
    /// Pause between two large publications.
    pub large_pause: Duration,
    /// Size range of the document a mid-transfer kill publishes.
    pub fault_large: (u64, u64),
}

/// An acknowledged edit: the federation must keep it (as current or in history).
#[derive(Debug, Clone, Serialize)]
pub struct Acked {
    pub doc: String,
    pub version: i64,
    pub origin: String,
    pub deleted: bool,
    pub md5: String,
    pub kind: &'static str,
    /// Milliseconds since the run started, when the acknowledgement arrived.
    pub at_ms: u64,
}

#[derive(Debug, Clone)]
pub struct DocState {
    pub scope: String,
    pub deleted: bool,
}

/// Acknowledged content (publications and new versions) by how it travels.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SizeCounts {
    /// The topology's `inline_max` the run used.
    pub inline_max: u64,
    /// At most `inline_max`: inside the notifications, kept in the nodes' databases.
    pub inline: u64,
    /// Larger: pulled, kept as files.
    pub pulled: u64,
    /// Of those, exactly `inline_max − 1`, `inline_max` and `inline_max + 1` bytes.
    pub at_inline_bound: [u64; 3],
}

impl SizeCounts {
    fn count(&mut self, size: u64) {
        if size <= self.inline_max {
            self.inline += 1;
        } else {
            self.pulled += 1;
        }
        if let Some(bound) = inline_bound(self.inline_max) {
            if let Some(i) = bound.iter().position(|b| *b == size) {
                self.at_inline_bound[i] += 1;
            }
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OpStats {
    pub ok: u64,
    pub failed: u64,
}

#[derive(Debug, Default)]
pub struct Model {
    pub docs: BTreeMap<String, DocState>,
    pub acked: Vec<Acked>,
    /// Acknowledged annotations: (annotation id, document, node it was written at).
    pub annotations: Vec<(String, String, String)>,
    /// Acknowledged device flags: (node, device, document).
    pub flags: Vec<(String, String, String)>,
    pub ops: BTreeMap<&'static str, OpStats>,
    /// Why operations failed, counted by reason.
    pub failures: BTreeMap<String, u64>,
    /// Cross-region fetches that returned bytes not matching their ETag.
    pub served_corrupt: Vec<String>,
    pub bytes_published: u64,
    pub sizes: SizeCounts,
}

impl Model {
    /// An empty model for a federation whose topology has `inline_max`.
    pub fn new(inline_max: u64) -> Model {
        Model {
            sizes: SizeCounts {
                inline_max,
                ..SizeCounts::default()
            },
            ..Model::default()
        }
    }
}

/// What the workload needs to know about the federation.
pub struct Ctx {
    pub http: reqwest::Client,
    pub token: String,
    pub seed: u64,
    pub primaries: Vec<(String, String)>,
    /// (id, url, region)
    pub regionals: Vec<(String, String, String)>,
    /// Region → ids of the regional nodes that hold its content.
    pub holders: HashMap<String, Vec<String>>,
    pub params: Params,
    /// The topology's `inline_max`: content at most this large travels inline.
    pub inline_max: u64,
    /// Bounds the content bytes sent: every attempt takes its size from a pool first.
    pub budget: Budget,
    pub started: tokio::time::Instant,
    pub model: Mutex<Model>,
    /// Devices registered so far, one per (regional node, lane): flags need a registered
    /// device and its secret.
    pub devices: Mutex<HashMap<(String, u64), docfed_shared::wire::DeviceRegistration>>,
}

impl Ctx {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn record(&self, op: &'static str, outcome: &Result<()>) {
        let mut m = self.model.lock().expect("not poisoned");
        let s = m.ops.entry(op).or_default();
        match outcome {
            Ok(()) => s.ok += 1,
            Err(e) => {
                s.failed += 1;
                let reason = format!("{op}: {}", short_reason(e));
                *m.failures.entry(reason).or_default() += 1;
            }
        }
    }

    /// A random live document (per the model), with its scope.
    fn pick_doc(&self, rng: &mut StdRng, deleted: bool) -> Option<(String, String)> {
        let m = self.model.lock().expect("not poisoned");
        let candidates: Vec<(&String, &DocState)> = m
            .docs
            .iter()
            .filter(|(_, d)| d.deleted == deleted)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let (id, d) = candidates[rng.random_range(0..candidates.len())];
        Some((id.clone(), d.scope.clone()))
    }

    /// Publishes a generated body of `size` bytes, already taken from `pool`, at a primary (the
    /// other one if the first fails and `pool` can pay for a second attempt).
    pub async fn publish(
        &self,
        rng: &mut StdRng,
        pool: &Pool,
        size: u64,
        scope: &str,
    ) -> Result<String> {
        let first = rng.random_range(0..self.primaries.len());
        let mut last = anyhow!("no primary");
        for k in 0..self.primaries.len() {
            // The failed attempt may have stored its bytes before its answer was lost.
            if k > 0 && !pool.take(size) {
                break;
            }
            let (pid, url) = &self.primaries[(first + k) % self.primaries.len()];
            let seed: u64 = rng.random();
            let query = serde_urlencoded::to_string([
                ("title", content::title(seed, size).as_str()),
                ("scope", scope),
                ("author", "endurance"),
                ("content_type", "application/octet-stream"),
            ])?;
            let sent = self
                .http
                .post(format!("{url}/v1/documents?{query}"))
                .bearer_auth(&self.token)
                .header("content-length", size)
                .body(reqwest::Body::wrap_stream(content::stream(seed, size)))
                .send()
                .await;
            match accepted(sent).await {
                Ok(v) => {
                    let id = v["id"].as_str().unwrap_or_default().to_owned();
                    let mut m = self.model.lock().expect("not poisoned");
                    m.docs.insert(
                        id.clone(),
                        DocState {
                            scope: scope.to_owned(),
                            deleted: false,
                        },
                    );
                    m.bytes_published += size;
                    m.sizes.count(size);
                    m.acked.push(Acked {
                        doc: id.clone(),
                        version: v["version"].as_i64().unwrap_or(0),
                        origin: pid.clone(),
                        deleted: false,
                        md5: v["md5"].as_str().unwrap_or_default().to_owned(),
                        kind: "publish",
                        at_ms: self.now_ms(),
                    });
                    return Ok(id);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn scope(&self, rng: &mut StdRng) -> String {
        if rng.random_bool(0.6) || self.regionals.is_empty() {
            "global".to_owned()
        } else {
            let r = &self.regionals[rng.random_range(0..self.regionals.len())].2;
            format!("region:{r}")
        }
    }

    /// A medium size ([`medium_want`]), taken from the medium pool (smaller, down to empty,
    /// when it runs short). `drawn` counts the lane's draws.
    fn medium_size(&self, rng: &mut StdRng, drawn: &mut u64) -> u64 {
        *drawn += 1;
        let want = medium_want(rng, *drawn, self.inline_max, self.params.medium_max);
        self.budget.medium.take_up_to(want)
    }

    /// An edit at a primary: a new version (`Some(size)`), a tombstone or a reactivation.
    async fn edit(
        &self,
        rng: &mut StdRng,
        kind: &'static str,
        doc: &str,
        size: Option<u64>,
    ) -> Result<()> {
        let (pid, url) = &self.primaries[rng.random_range(0..self.primaries.len())];
        let req = match kind {
            "new-version" => {
                let size = size.unwrap_or(0);
                let seed: u64 = rng.random();
                let query = serde_urlencoded::to_string([("title", content::title(seed, size))])?;
                self.model.lock().expect("not poisoned").bytes_published += size;
                self.http
                    .put(format!("{url}/v1/documents/{doc}?{query}"))
                    .header("content-length", size)
                    .body(reqwest::Body::wrap_stream(content::stream(seed, size)))
            }
            "delete" => self.http.delete(format!("{url}/v1/documents/{doc}")),
            _ => self
                .http
                .post(format!("{url}/v1/documents/{doc}/reactivate")),
        };
        let v = accepted(req.bearer_auth(&self.token).send().await).await?;
        let mut m = self.model.lock().expect("not poisoned");
        if let Some(size) = size.filter(|_| kind == "new-version") {
            m.sizes.count(size);
        }
        if let Some(d) = m.docs.get_mut(doc) {
            d.deleted = kind == "delete";
        }
        m.acked.push(Acked {
            doc: doc.to_owned(),
            version: v["version"].as_i64().unwrap_or(0),
            origin: pid.clone(),
            deleted: kind == "delete",
            md5: v["md5"].as_str().unwrap_or_default().to_owned(),
            kind,
            at_ms: self.now_ms(),
        });
        Ok(())
    }

    async fn annotate(&self, rng: &mut StdRng, doc: &str) -> Result<()> {
        let (nid, url, _) = &self.regionals[rng.random_range(0..self.regionals.len())];
        let n: u32 = rng.random();
        let v = accepted(
            self.http
                .post(format!("{url}/v1/documents/{doc}/annotations"))
                .json(&serde_json::json!({"text": format!("note {n:08x}"), "author": "endurance"}))
                .send()
                .await,
        )
        .await?;
        let id = v["id"]
            .as_str()
            .ok_or_else(|| anyhow!("annotation answer without id: {v}"))?;
        self.model.lock().expect("not poisoned").annotations.push((
            id.to_owned(),
            doc.to_owned(),
            nid.clone(),
        ));
        Ok(())
    }

    async fn flag(&self, rng: &mut StdRng, lane: u64, doc: &str) -> Result<()> {
        let (nid, url, _) = &self.regionals[rng.random_range(0..self.regionals.len())];
        let device = self.device(nid, url, lane).await?;
        accepted(
            self.http
                .put(format!("{url}/v1/devices/{}/flags/{doc}", device.device))
                .bearer_auth(&device.secret)
                .send()
                .await,
        )
        .await?;
        self.model.lock().expect("not poisoned").flags.push((
            nid.clone(),
            device.device,
            doc.to_owned(),
        ));
        Ok(())
    }

    /// This lane's device at regional node `nid`, registered (with the operator token) the
    /// first time it is needed. A registration whose answer was lost leaves an unused device
    /// behind; the next attempt registers another.
    async fn device(
        &self,
        nid: &str,
        url: &str,
        lane: u64,
    ) -> Result<docfed_shared::wire::DeviceRegistration> {
        let key = (nid.to_owned(), lane);
        if let Some(d) = self.devices.lock().expect("not poisoned").get(&key) {
            return Ok(d.clone());
        }
        let d =
            crate::device::register(&self.http, url, &self.token, &format!("lane-{lane}")).await?;
        self.devices
            .lock()
            .expect("not poisoned")
            .insert(key, d.clone());
        Ok(d)
    }

    /// Fetches a regional document from a regional node outside its region: the bytes must
    /// match the ETag when the node serves them.
    async fn cross_region_fetch(&self, rng: &mut StdRng) -> Result<()> {
        let Some((doc, scope)) = (0..20).find_map(|_| {
            self.pick_doc(rng, false)
                .filter(|(_, s)| s.starts_with("region:"))
        }) else {
            return Ok(());
        };
        let region = scope.trim_start_matches("region:");
        let holders = self.holders.get(region).cloned().unwrap_or_default();
        let outside: Vec<&(String, String, String)> = self
            .regionals
            .iter()
            .filter(|(id, _, _)| !holders.contains(id))
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        let (_, url, _) = outside[rng.random_range(0..outside.len())];
        let resp = self
            .http
            .get(format!("{url}/v1/documents/{doc}/content"))
            .timeout(Duration::from_secs(60))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("HTTP {}", resp.status());
        }
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned();
        let mut ctx = md5::Context::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            ctx.consume(&chunk?);
        }
        let got = format!("{:x}", ctx.finalize());
        if got != etag {
            self.model
                .lock()
                .expect("not poisoned")
                .served_corrupt
                .push(format!(
                    "{url}: document {doc} served with MD5 {got}, ETag {etag}"
                ));
        }
        Ok(())
    }
}

/// A lane of small and medium operations until `stop`.
pub async fn lane(ctx: Arc<Ctx>, lane: u64, stop: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (lane + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut drawn = 0;
    while !stop.is_cancelled() {
        let roll = rng.random_range(0..100);
        let (op, outcome) = match roll {
            0..35 => {
                let size = ctx.medium_size(&mut rng, &mut drawn);
                let scope = ctx.scope(&mut rng);
                (
                    "publish",
                    ctx.publish(&mut rng, &ctx.budget.medium, size, &scope)
                        .await
                        .map(|_| ()),
                )
            }
            35..50 => match ctx.pick_doc(&mut rng, false) {
                Some((doc, _)) => {
                    let size = ctx.medium_size(&mut rng, &mut drawn);
                    let r = ctx.edit(&mut rng, "new-version", &doc, Some(size)).await;
                    ("new-version", r)
                }
                None => continue_after(&stop, ctx.params.pause).await,
            },
            50..57 => match ctx.pick_doc(&mut rng, false) {
                Some((doc, _)) => ("delete", ctx.edit(&mut rng, "delete", &doc, None).await),
                None => continue_after(&stop, ctx.params.pause).await,
            },
            57..62 => match ctx.pick_doc(&mut rng, true) {
                Some((doc, _)) => (
                    "reactivate",
                    ctx.edit(&mut rng, "reactivate", &doc, None).await,
                ),
                None => continue_after(&stop, ctx.params.pause).await,
            },
            62..77 => match ctx.pick_doc(&mut rng, false) {
                Some((doc, _)) => ("annotate", ctx.annotate(&mut rng, &doc).await),
                None => continue_after(&stop, ctx.params.pause).await,
            },
            77..85 => match ctx.pick_doc(&mut rng, false) {
                Some((doc, _)) => ("flag", ctx.flag(&mut rng, lane, &doc).await),
                None => continue_after(&stop, ctx.params.pause).await,
            },
            _ => ("cross-region-fetch", ctx.cross_region_fetch(&mut rng).await),
        };
        if op != "skip" {
            ctx.record(op, &outcome);
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.params.pause) => {}
            () = stop.cancelled() => {}
        }
    }
}

async fn continue_after(stop: &CancellationToken, pause: Duration) -> (&'static str, Result<()>) {
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        () = stop.cancelled() => {}
    }
    ("skip", Ok(()))
}

/// The size a lane's `drawn`th medium draw asks for: every [`INLINE_BOUND_EVERY`]th the next
/// size of [`inline_bound`], the others random, half of them small enough to travel inline
/// (at most `inline_max`), the rest pulled, up to `medium_max`.
pub fn medium_want(rng: &mut StdRng, drawn: u64, inline_max: u64, medium_max: u64) -> u64 {
    // Without inline content (inline_max 0), "small" is below the 64 KiB buffers.
    let small_max = if inline_max > 0 {
        inline_max
    } else {
        64 * 1024 - 1
    };
    match inline_bound(inline_max) {
        Some(bound) if drawn.is_multiple_of(INLINE_BOUND_EVERY) => {
            bound[(drawn / INLINE_BOUND_EVERY % 3) as usize]
        }
        _ => match rng.random_range(0..100) {
            0..10 => BOUNDARY_SIZES[rng.random_range(0..BOUNDARY_SIZES.len())],
            10..60 => rng.random_range(0..=small_max),
            60..90 => rng.random_range(small_max + 1..(1 << 20).max(small_max + 2)),
            _ => rng.random_range(1 << 20..=medium_max.max(1 << 20)),
        },
    }
}

/// The lane of large documents, one at a time, until `stop`.
pub async fn large_lane(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x1A56_E000);
    while !stop.is_cancelled() {
        let size = large_size(&mut rng, ctx.params.large);
        let scope = ctx.scope(&mut rng);
        // All or nothing: a clipped large document would be a medium one.
        if ctx.budget.large.take(size) {
            let r = tokio::select! {
                r = ctx.publish(&mut rng, &ctx.budget.large, size, &scope) => r.map(|_| ()),
                () = stop.cancelled() => break,
            };
            ctx.record("publish-large", &r);
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.params.large_pause) => {}
            () = stop.cancelled() => {}
        }
    }
}

/// A large size, sometimes exactly on a MiB boundary or one byte off it.
pub fn large_size(rng: &mut StdRng, (lo, hi): (u64, u64)) -> u64 {
    let size = rng.random_range(lo..=hi.max(lo));
    match rng.random_range(0..4) {
        0 => size & !0xFFFFF,
        1 => (size & !0xFFFFF) + 1,
        2 => (size & !0xFFFFF).saturating_sub(1),
        _ => size,
    }
}

/// The JSON answer of a request that must succeed.
async fn accepted(sent: reqwest::Result<reqwest::Response>) -> Result<serde_json::Value> {
    let resp = sent?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        );
    }
    Ok(resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// A failure reason without the parts that differ every time (ids, addresses).
fn short_reason(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    if let Some(rest) = text.strip_prefix("HTTP ") {
        return format!("HTTP {}", rest.split(':').next().unwrap_or(rest));
    }
    if let Some(re) = e.downcast_ref::<reqwest::Error>() {
        if re.is_connect() {
            return "connection refused".to_owned();
        }
        if re.is_timeout() {
            return "timed out".to_owned();
        }
        if re.is_body() || re.is_request() {
            return "connection lost".to_owned();
        }
    }
    text.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_counted_by_how_they_travel() {
        let mut z = Model::new(65_536).sizes;
        for size in [0, 10_000, 65_535, 65_536, 65_537, 65_537, 1 << 20] {
            z.count(size);
        }
        assert_eq!((z.inline, z.pulled), (4, 3));
        assert_eq!(z.at_inline_bound, [1, 1, 2]);
        assert_eq!(inline_bound(0), None);
        let mut off = Model::new(0).sizes;
        off.count(0);
        off.count(1);
        assert_eq!(
            (off.inline, off.pulled, off.at_inline_bound),
            (1, 1, [0; 3])
        );
    }

    #[test]
    fn every_lane_publishes_both_sides_of_the_inline_bound_throughout() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut z = Model::new(65_536).sizes;
        for drawn in 1..=600 {
            let size = medium_want(&mut rng, drawn, 65_536, 4 << 20);
            assert!(size <= 4 << 20);
            if drawn % INLINE_BOUND_EVERY == 0 {
                let expected = [65_535, 65_536, 65_537][(drawn / INLINE_BOUND_EVERY % 3) as usize];
                assert_eq!(size, expected, "draw {drawn}");
            }
            z.count(size);
        }
        // 100 forced onto the bound, a third each, plus the random boundary sizes.
        assert!(
            z.at_inline_bound.iter().all(|n| (33..50).contains(n)),
            "{z:?}"
        );
        assert!(z.inline > 200 && z.pulled > 200, "{z:?}");
        // Without inline content no size is forced onto a bound.
        let mut rng = StdRng::seed_from_u64(3);
        let sizes: Vec<u64> = (1..=60)
            .map(|d| medium_want(&mut rng, d, 0, 4 << 20))
            .collect();
        assert!(sizes.iter().filter(|s| **s == 1).count() < 10, "{sizes:?}");
    }
}
