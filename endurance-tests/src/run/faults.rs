//! Fault injection: one fault at a time, kinds in shuffled rounds so every kind comes up,
//! targets and durations drawn from the run's seed.
//!
//! Over 600 lines on purpose: each fault kind's choice, injection and healing sit together, so
//! adding a kind touches one place.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use docfed_broker::BrokerTls;
use docfed_shared::topology::Tier;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::{sleep, Instant};

use super::cluster::Cluster;
use super::workload::{self, Ctx};

/// Longest a fault may take, restarts included, before the run is declared broken.
const FAULT_LIMIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    NodeKill,
    KillMidTransfer,
    BrokerKill,
    LinkCut,
    Throttle,
    Corrupt,
    DiskFull,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::NodeKill => "node kill -9",
            Kind::KillMidTransfer => "kill -9 mid-transfer",
            Kind::BrokerKill => "broker kill -9",
            Kind::LinkCut => "network cut",
            Kind::Throttle => "bandwidth limit",
            Kind::Corrupt => "corruption in flight",
            Kind::DiskFull => "disk full",
        }
    }

    /// Colour of the kind's marks in the latency plot.
    pub fn colour(self) -> &'static str {
        match self {
            Kind::NodeKill => "#d62728",
            Kind::KillMidTransfer => "#8c1515",
            Kind::BrokerKill => "#9467bd",
            Kind::LinkCut => "#ff7f0e",
            Kind::Throttle => "#bcbd22",
            Kind::Corrupt => "#e377c2",
            Kind::DiskFull => "#7f7f7f",
        }
    }
}

/// Durations of the faults of a profile.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long a killed node or broker stays down.
    pub down: (Duration, Duration),
    /// How long a cut, a throttle, corruption or a full disk lasts.
    pub hold: (Duration, Duration),
    /// Pause between two faults.
    pub gap: (Duration, Duration),
}

#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub kind: Kind,
    pub target: String,
    /// Seconds since the run started.
    pub start_s: f64,
    pub end_s: f64,
    pub detail: String,
}

/// How the nodes of one broker came back after it was killed and restarted.
#[derive(Debug, Clone, Serialize)]
pub struct Reconnect {
    pub broker: String,
    pub restarted_at_s: f64,
    /// Node → seconds from the broker answering again to the node consuming its inbox again,
    /// `None` if it never did within the deadline.
    pub nodes: Vec<(String, Option<f64>)>,
}

pub struct Injector {
    rng: StdRng,
    timing: Timing,
    kinds: Vec<Kind>,
    round: Vec<Kind>,
    started: Instant,
    pub faults: Vec<Fault>,
    pub reconnects: Vec<Reconnect>,
    /// Nodes that exited although nobody killed them: (node, exit status, seconds).
    pub unexpected_exits: Vec<(String, String, f64)>,
}

impl Injector {
    pub fn new(seed: u64, timing: Timing, cluster: &Cluster, started: Instant) -> Injector {
        let mut kinds = vec![
            Kind::NodeKill,
            Kind::KillMidTransfer,
            Kind::BrokerKill,
            Kind::LinkCut,
            Kind::Throttle,
            Kind::Corrupt,
        ];
        if cluster.disk.is_some() {
            kinds.push(Kind::DiskFull);
        }
        Injector {
            rng: StdRng::seed_from_u64(seed ^ 0xFA17),
            timing,
            kinds,
            round: Vec::new(),
            started,
            faults: Vec::new(),
            reconnects: Vec::new(),
            unexpected_exits: Vec::new(),
        }
    }

    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn pick(&mut self, r: (Duration, Duration)) -> Duration {
        if r.1 <= r.0 {
            return r.0;
        }
        Duration::from_millis(self.rng.random_range(r.0.as_millis()..=r.1.as_millis()) as u64)
    }

    /// Pause before the next fault.
    pub async fn gap(&mut self) {
        let d = self.pick(self.timing.gap);
        sleep(d).await;
    }

    /// Injects the next fault and waits until it is over (the node or broker is back, the link
    /// healed, the disk freed).
    pub async fn inject_next(&mut self, cluster: &mut Cluster, ctx: &Arc<Ctx>) -> Result<()> {
        if self.round.is_empty() {
            self.round = self.kinds.clone();
            self.round.shuffle(&mut self.rng);
        }
        let kind = self.round.pop().expect("refilled");
        let start_s = self.now();
        let injected = async {
            Ok::<_, anyhow::Error>(match kind {
                Kind::NodeKill => self.node_kill(cluster).await?,
                Kind::KillMidTransfer => self.kill_mid_transfer(cluster, ctx).await?,
                Kind::BrokerKill => self.broker_kill(cluster).await?,
                Kind::LinkCut => self.link_cut(cluster).await,
                Kind::Throttle => self.throttle(cluster).await,
                Kind::Corrupt => self.corrupt(cluster, ctx).await,
                Kind::DiskFull => self.disk_full(cluster).await?,
            })
        };
        let (target, detail) =
            tokio::time::timeout(FAULT_LIMIT, injected)
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{} (started at {start_s:.1} s) did not finish within {FAULT_LIMIT:?}",
                        kind.name()
                    )
                })??;
        let fault = Fault {
            kind,
            target,
            start_s,
            end_s: self.now(),
            detail,
        };
        eprintln!(
            "endurance: [{:>6.1} s] fault {:>2}: {:<22} {:<28} {}",
            fault.start_s,
            self.faults.len() + 1,
            kind.name(),
            fault.target,
            fault.detail
        );
        self.faults.push(fault);
        self.restart_crashed(cluster).await
    }

    /// Restarts nodes that exited on their own, recording each as a violation.
    pub async fn restart_crashed(&mut self, cluster: &mut Cluster) -> Result<()> {
        for exit in cluster.fed.poll_exits() {
            let at = self.now();
            let Some(id) = exit
                .what
                .strip_prefix("node `")
                .and_then(|s| s.strip_suffix('`'))
            else {
                continue;
            };
            eprintln!("endurance: [{at:>6.1} s] UNEXPECTED EXIT: {exit}\nrestarting it");
            self.unexpected_exits
                .push((id.to_owned(), exit.status.to_string(), at));
            cluster.fed.start_node(id).await?;
        }
        Ok(())
    }

    async fn node_kill(&mut self, cluster: &mut Cluster) -> Result<(String, String)> {
        let ids = cluster.all_ids();
        let id = ids[self.rng.random_range(0..ids.len())].clone();
        let down = self.pick(self.timing.down);
        cluster.fed.kill_node(&id).await?;
        sleep(down).await;
        let t = Instant::now();
        cluster.fed.start_node(&id).await?;
        Ok((
            id,
            format!(
                "down {:.1} s, healthy {:.1} s after restart",
                down.as_secs_f64(),
                t.elapsed().as_secs_f64()
            ),
        ))
    }

    /// Publishes a large document and kills a node while it pulls it (a partial file growing).
    async fn kill_mid_transfer(
        &mut self,
        cluster: &mut Cluster,
        ctx: &Arc<Ctx>,
    ) -> Result<(String, String)> {
        let size = workload::large_size(&mut self.rng, ctx.params.fault_large);
        // The fault pool is sized for the profile's faults; a soak that outruns it kills a node
        // without a large publication (the fallback below).
        let size = ctx.budget.faults.take(size).then_some(size);
        let scope = "global".to_owned();
        let c = ctx.clone();
        let seed: u64 = self.rng.random();
        let publish = tokio::spawn(async move {
            let Some(size) = size else { return };
            let mut rng = StdRng::seed_from_u64(seed);
            let r = c
                .publish(&mut rng, &c.budget.faults, size, &scope)
                .await
                .map(|_| ());
            c.record_outcome("publish-large", &r);
        });
        // Below the primaries first (their pulls are the tiered ones), in random order.
        let mut below: Vec<String> = cluster
            .ids(Tier::Intermediate)
            .into_iter()
            .chain(cluster.ids(Tier::Regional))
            .collect();
        below.shuffle(&mut self.rng);
        let mut primaries = cluster.ids(Tier::Primary);
        primaries.shuffle(&mut self.rng);
        let primaries_count = primaries.len();
        let candidates: Vec<String> = below.into_iter().chain(primaries).collect();
        let polling = Instant::now();
        let deadline = polling
            + if size.is_some() {
                Duration::from_secs(30)
            } else {
                Duration::ZERO
            };
        let mut victim = None;
        while victim.is_none() && Instant::now() < deadline {
            // A primary only if nobody below has started within 5 s.
            let eligible = if polling.elapsed() < Duration::from_secs(5) {
                candidates.len() - primaries_count
            } else {
                candidates.len()
            };
            for id in &candidates[..eligible] {
                if let Some(bytes) = growing_partial(&cluster.data_dir(id)) {
                    victim = Some((id.clone(), bytes));
                    break;
                }
            }
            if victim.is_none() {
                sleep(Duration::from_millis(50)).await;
            }
        }
        let down = self.pick(self.timing.down);
        let (id, detail) = match victim {
            Some((id, bytes)) => (
                id,
                format!(
                    "killed with a pull at {} MiB (publishing a {} MiB document); down {:.1} s",
                    bytes >> 20,
                    size.unwrap_or(0) >> 20,
                    down.as_secs_f64()
                ),
            ),
            None => {
                let ids = cluster.ids(Tier::Regional);
                (
                    ids[self.rng.random_range(0..ids.len())].clone(),
                    if size.is_some() {
                        "no pull seen in progress within 30 s; killed anyway".to_owned()
                    } else {
                        "the run's byte budget for faults is spent: no large publication; killed anyway"
                            .to_owned()
                    },
                )
            }
        };
        cluster.fed.kill_node(&id).await?;
        sleep(down).await;
        cluster.fed.start_node(&id).await?;
        // The publication goes on in the background; the workload records its outcome.
        drop(publish);
        Ok((id, detail))
    }

    async fn broker_kill(&mut self, cluster: &mut Cluster) -> Result<(String, String)> {
        let i = self.rng.random_range(0..cluster.brokers.len());
        let down = self.pick(self.timing.down);
        let slot = &mut cluster.brokers[i];
        slot.broker.kill().await?;
        sleep(down).await;
        let t = Instant::now();
        slot.broker
            .restart()
            .await
            .with_context(|| format!("restarting broker {}", slot.name))?;
        let boot = t.elapsed().as_secs_f64();
        let restarted_at_s = self.now();
        let url = slot.broker.url();
        let back = Instant::now();
        let mut nodes: Vec<(String, Option<f64>)> =
            slot.nodes.iter().map(|n| (n.clone(), None)).collect();
        let deadline = back + Duration::from_secs(60);
        while nodes.iter().any(|(_, t)| t.is_none()) && Instant::now() < deadline {
            for (id, t) in nodes.iter_mut().filter(|(_, t)| t.is_none()) {
                if let Ok((_, consumers)) = inbox_state(&url, &cluster.broker_admin, id).await {
                    if consumers > 0 {
                        *t = Some(back.elapsed().as_secs_f64());
                    }
                }
            }
            sleep(Duration::from_millis(100)).await;
        }
        let worst = nodes
            .iter()
            .map(|(_, t)| t.unwrap_or(f64::INFINITY))
            .fold(0.0, f64::max);
        let ok = nodes.iter().filter(|(_, t)| t.is_some()).count();
        let detail = format!(
            "down {:.1} s, boot {boot:.1} s; {ok}/{} nodes consuming again (slowest {:.1} s)",
            down.as_secs_f64(),
            nodes.len(),
            worst
        );
        let name = slot.name.clone();
        self.reconnects.push(Reconnect {
            broker: name.clone(),
            restarted_at_s,
            nodes,
        });
        Ok((format!("broker {name}"), detail))
    }

    /// Two nodes that talk to each other: a node and one of its parents, or two regional nodes.
    fn pick_pair(&mut self, cluster: &Cluster) -> (String, String) {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for n in &cluster.topo.nodes {
            for p in &n.parents {
                pairs.push((n.id.clone(), p.clone()));
            }
        }
        let regionals = cluster.ids(Tier::Regional);
        for (i, a) in regionals.iter().enumerate() {
            for b in &regionals[i + 1..] {
                pairs.push((a.clone(), b.clone()));
            }
        }
        let primaries = cluster.ids(Tier::Primary);
        if primaries.len() == 2 {
            pairs.push((primaries[0].clone(), primaries[1].clone()));
        }
        pairs[self.rng.random_range(0..pairs.len())].clone()
    }

    async fn link_cut(&mut self, cluster: &mut Cluster) -> (String, String) {
        let (a, b) = self.pick_pair(cluster);
        let hold = self.pick(self.timing.hold);
        for l in cluster.links_between(&a, &b) {
            l.set_cut(true);
        }
        sleep(hold).await;
        for l in cluster.links_between(&a, &b) {
            l.set_cut(false);
        }
        (
            format!("{a} <-> {b}"),
            format!("HTTP and AMQP black-holed {:.1} s", hold.as_secs_f64()),
        )
    }

    /// Throttles a node's link to one of its parents (the direction content flows).
    async fn throttle(&mut self, cluster: &mut Cluster) -> (String, String) {
        let (child, parent) = self.pick_parent_link(cluster);
        let rate = self.rng.random_range(200_000..2_000_000u64);
        let hold = self.pick(self.timing.hold);
        let link = &cluster.http_links[&(child.clone(), parent.clone())];
        link.set_rate(Some(rate));
        sleep(hold).await;
        link.set_rate(None);
        (
            format!("{child} -> {parent}"),
            format!("{} kB/s for {:.1} s", rate / 1000, hold.as_secs_f64()),
        )
    }

    fn pick_parent_link(&mut self, cluster: &Cluster) -> (String, String) {
        let pairs: Vec<(String, String)> = cluster
            .topo
            .nodes
            .iter()
            .flat_map(|n| n.parents.iter().map(|p| (n.id.clone(), p.clone())))
            .collect();
        pairs[self.rng.random_range(0..pairs.len())].clone()
    }

    /// Corrupts content flowing to a node from one of its parents, while a document it needs is
    /// published.
    async fn corrupt(&mut self, cluster: &mut Cluster, ctx: &Arc<Ctx>) -> (String, String) {
        let (child, parent) = self.pick_parent_link(cluster);
        let hold = self.pick(self.timing.hold);
        let link = &cluster.http_links[&(child.clone(), parent.clone())];
        let before = link.flipped();
        link.set_corrupt(true);
        let c = ctx.clone();
        let seed: u64 = self.rng.random();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let size = c
                .budget
                .faults
                .take_up_to(rng.random_range(1 << 20..4 << 20));
            let r = c
                .publish(&mut rng, &c.budget.faults, size, "global")
                .await
                .map(|_| ());
            c.record_outcome("publish", &r);
        });
        sleep(hold).await;
        link.set_corrupt(false);
        (
            format!("{parent} -> {child} (content)"),
            format!(
                "{} bytes flipped in {:.1} s",
                link.flipped() - before,
                hold.as_secs_f64()
            ),
        )
    }

    /// Fills the small disk to the last byte, holds, then frees it.
    async fn disk_full(&mut self, cluster: &mut Cluster) -> Result<(String, String)> {
        let disk = cluster
            .disk
            .as_ref()
            .expect("only chosen with a small disk");
        let hold = self.pick(self.timing.hold);
        let ballast = disk.dir.join(super::diskwatch::BALLAST);
        let path = ballast.clone();
        disk.fault_active.store(true, Ordering::SeqCst);
        // Shrink the tmpfs to what is in use, then write the last bytes: full at once, whatever
        // the tmpfs's size (writing gigabytes of ballast takes tens of seconds on a loaded
        // machine), and the nodes' own writes race the ballast for the last block as before.
        let dir = disk.dir.clone();
        let filled = tokio::task::spawn_blocking(move || {
            let shrunk = shrink_to_used(&dir)?;
            Ok::<_, anyhow::Error>((shrunk, fill(&path)?))
        })
        .await
        .context("filling the disk")
        .and_then(|r| r);
        let (shrunk, filled) = match filled {
            Ok(r) => r,
            Err(e) => {
                free_ballast(&ballast).await;
                let _ = crate::run::cluster::resize_tmpfs(&disk.dir, disk.size);
                disk.fault_active.store(false, Ordering::SeqCst);
                return Err(e);
            }
        };
        sleep(hold).await;
        free_ballast(&ballast).await;
        let restored = crate::run::cluster::resize_tmpfs(&disk.dir, disk.size);
        disk.fault_active.store(false, Ordering::SeqCst);
        restored.context("restoring the small disk's size")?;
        Ok((
            disk.node.clone(),
            format!(
                "the {} MiB tmpfs shrunk to its {} MiB in use and filled ({} KiB ballast) for {:.1} s",
                disk.size >> 20,
                shrunk >> 20,
                filled >> 10,
                hold.as_secs_f64()
            ),
        ))
    }
}

impl Ctx {
    /// Counts an operation started outside the lanes (by a fault).
    pub fn record_outcome(&self, op: &'static str, r: &Result<()>) {
        let mut m = self.model.lock().expect("not poisoned");
        let s = m.ops.entry(op).or_default();
        match r {
            Ok(()) => s.ok += 1,
            Err(_) => s.failed += 1,
        }
    }
}

/// Size of a partial pull file that is growing right now, if any.
fn growing_partial(data_dir: &std::path::Path) -> Option<u64> {
    let dir = std::fs::read_dir(data_dir.join("partial")).ok()?;
    dir.flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .find(|&len| len > 1 << 20)
}

/// Resizes the tmpfs at `dir` to the bytes it holds plus some slack, as the nodes keep writing;
/// returns that size. The ballast then fills the slack.
fn shrink_to_used(dir: &std::path::Path) -> Result<u64> {
    let mut last = None;
    // The slack doubles with each attempt (64 KiB to 128 MiB): a pull writing at full speed
    // outgrows a small slack between the measurement and the remount (CI saw ten attempts at
    // 64 KiB all fail under load), and a larger slack only means more ballast to write.
    for attempt in 0..12u32 {
        let st = nix::sys::statvfs::statvfs(dir)?;
        let frag = st.fragment_size();
        let used = (st.blocks() - st.blocks_free()) * frag;
        let size = used + ((64 * 1024) << attempt);
        // Fails when the nodes wrote more in between: measure again.
        match crate::run::cluster::resize_tmpfs(dir, size) {
            Ok(()) => return Ok(size),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried").context("shrinking the small disk"))
}

/// Removes the ballast; returns once its space is free again.
pub async fn free_ballast(path: &std::path::Path) {
    let path = path.to_owned();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
}

/// Writes zeros until the file system is full (after [`shrink_to_used`], a few KiB); returns
/// the bytes written.
fn fill(path: &std::path::Path) -> Result<u64> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let mut written = 0u64;
    let block = vec![0u8; 1 << 20];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Fill the last partial page too.
    loop {
        match f.write(&block[..4096]) {
            Ok(n) if n > 0 => written += n as u64,
            _ => break,
        }
    }
    Ok(written)
}

/// Ready messages and consumers of node `id`'s inbox queue on the broker at `url`, logged in
/// as `admin`.
pub async fn inbox_state(url: &str, admin: &BrokerTls, id: &str) -> Result<(u32, u32)> {
    queue_state(url, admin, &docfed_shared::topology::inbox_queue(id)).await
}

/// Ready messages and consumers of queue `name` (which must exist) on the broker at `url`,
/// logged in as `admin`.
pub async fn queue_state(url: &str, admin: &BrokerTls, name: &str) -> Result<(u32, u32)> {
    tokio::time::timeout(Duration::from_secs(10), queue_state_now(url, admin, name))
        .await
        .context("broker did not answer within 10 s")?
}

async fn queue_state_now(url: &str, admin: &BrokerTls, name: &str) -> Result<(u32, u32)> {
    let uri = docfed_broker::broker_uri(url).map_err(anyhow::Error::msg)?;
    let conn = tokio::time::timeout(
        Duration::from_secs(3),
        docfed_broker::open(uri, lapin::ConnectionProperties::default(), Some(admin)),
    )
    .await
    .context("broker connection timed out")??;
    let result = async {
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((q.message_count(), q.consumer_count()))
    }
    .await;
    let _ = conn.close(200, "bye".into()).await;
    Ok(result?)
}
