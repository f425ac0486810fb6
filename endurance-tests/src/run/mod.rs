//! `docfed-endurance run`: a federation of real processes, a seeded workload, faults injected on
//! a schedule, then quiescence and an invariant check that names the documents and nodes
//! involved in any violation. See `--help` and README §Endurance.
//!
//! Over 600 lines on purpose: the run's phases in the order they happen (set-up, workload with
//! faults, quiescence, checks, report), so reading the file is following one run.

mod budget;
mod check;
mod cluster;
pub mod content;
mod diskwatch;
mod faults;
mod proxy;
mod report;
mod retention;
mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use docfed_shared::topology::Tier;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use cluster::BrokerLayout;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// At most 5 minutes: 24 faults of every kind under a steady workload (what CI runs).
    Ci,
    /// Runs for --duration: longer outages, larger documents, a fault every 5-30 s.
    Soak,
}

/// Defects that can be planted in every node to prove the checker catches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlantedBug {
    /// The inbox acknowledges messages a second before it records them.
    AckBeforeCommit,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// ci (≤ 5 minutes, run by .ci/run) or soak (hours to days, with --duration).
    #[arg(long, value_enum, default_value = "ci")]
    pub profile: Profile,
    /// How long the soak profile injects faults, e.g. `30m`, `12h`, `3days`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of the workload and fault schedule; printed by every run, so a failing run can be
    /// replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory for report.json, summary.txt and latency.svg [default: DIR/report].
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Topology file of the federation to run [default: the demo shape on free ports].
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Working directory: node data, broker data, logs.
    #[arg(long, default_value = "run/endurance")]
    pub dir: PathBuf,
    /// How nodes share private brokers [default: tier].
    #[arg(long, value_enum, default_value = "tier")]
    pub brokers: BrokerLayout,
    /// Number of faults (ci profile) [default: 24].
    #[arg(long)]
    pub faults: Option<usize>,
    /// Plant a defect in every node; the run must then fail.
    #[arg(long, value_enum)]
    pub plant_bug: Option<PlantedBug>,
    /// Do not put a node on a small tmpfs (no disk-full faults; for machines without root).
    #[arg(long)]
    pub no_disk_fault: bool,
    /// Content bytes the run may publish, all attempts counted [default: ci 2.1 GiB; soak
    /// 10 GiB per hour of --duration]. It bounds what any node can store, so the disk-fault
    /// node's tmpfs and the free space the run needs are derived from it.
    #[arg(long)]
    pub byte_budget: Option<bytesize::ByteSize>,
    /// Size of the tmpfs of the disk-fault node (RAM) [default: derived from the byte budget,
    /// so that real content cannot fill it]. A smaller size is allowed, with a warning: a node
    /// that then runs out of disk fails the run with that reason.
    #[arg(long)]
    pub disk_size: Option<bytesize::ByteSize>,
    /// Retention: `on` (intermediate and regional nodes collect every 20 s with 30 s graces,
    /// primaries keep everything, as by default) or `off` (every node keeps every version and
    /// deleted documents' content for ever and never collects on its own).
    #[arg(long, value_enum, default_value = "on")]
    pub retention: retention::Mode,
    /// Keep the nodes' content and the brokers' data after a passing run (a failing run
    /// always keeps them; logs and databases are always kept).
    #[arg(long)]
    pub keep_data: bool,
}

struct Settings {
    faults: Option<usize>,
    duration: Option<Duration>,
    timing: faults::Timing,
    workload: workload::Params,
    quiescence: Duration,
    /// The pools of the byte budget.
    budget: budget::Limits,
    /// What a node stores besides content: database, write-ahead log, log file.
    overhead: u64,
    /// The retention flags of intermediate and regional nodes (with `--retention on`).
    retention: retention::Settings,
}

impl Settings {
    /// The most bytes the run can place on one node's disk (see [`budget::disk_needed`]).
    fn disk_needed(&self) -> u64 {
        let w = &self.workload;
        budget::disk_needed(
            self.budget.total(),
            w.lanes,
            w.large.1.max(w.medium_max).max(w.fault_large.1),
            self.overhead,
        )
    }
}

const MIB: u64 = 1 << 20;

fn settings(args: &RunArgs) -> Settings {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let mut set = match args.profile {
        Profile::Ci => Settings {
            faults: Some(args.faults.unwrap_or(24)),
            duration: None,
            timing: faults::Timing {
                down: (ms(800), ms(2500)),
                hold: (s(2), s(5)),
                gap: (ms(300), ms(1200)),
            },
            workload: workload::Params {
                lanes: 3,
                pause: ms(150),
                medium_max: 4 * MIB,
                large: (16 * MIB, 128 * MIB),
                large_pause: s(8),
                fault_large: (16 * MIB, 128 * MIB),
            },
            quiescence: s(150),
            // About what the unbounded workload published in 150 s (2.0-2.3 GiB), now a bound.
            budget: budget::Limits {
                medium: 640 * MIB,
                large: 1024 * MIB,
                // Every mid-transfer kill and every corruption gets its document: at most
                // ⌈faults / 6 kinds⌉ of each (kinds come in shuffled rounds).
                faults: args.faults.unwrap_or(24).div_ceil(6) as u64 * (128 * MIB + 4 * MIB),
            },
            overhead: 256 * MIB,
            // Collections every 20 s with graces of 30 s: a CI run sees several per node, with
            // versions and deleted documents' content both retained and collected.
            retention: retention::Settings {
                gc_interval: s(20),
                keep_versions: 1,
                version_grace: s(30),
                tombstone_grace: s(30),
                log_retention: s(3600),
                feed_horizon: s(60),
            },
        },
        Profile::Soak => {
            let duration = args.duration.unwrap_or(s(30 * 60));
            let hours = duration.as_secs_f64() / 3600.0;
            let per_hour = |b: u64| (b as f64 * hours) as u64;
            Settings {
                faults: args.faults,
                duration: Some(duration),
                timing: faults::Timing {
                    down: (s(1), s(20)),
                    hold: (s(3), s(40)),
                    gap: (s(3), s(25)),
                },
                workload: workload::Params {
                    lanes: 2,
                    pause: ms(400),
                    medium_max: 8 * MIB,
                    large: (16 * MIB, 300_000_000),
                    large_pause: s(180),
                    fault_large: (16 * MIB, 128 * MIB),
                },
                quiescence: s(600),
                // 10 GiB per hour, paced over the duration: 5 GiB for the default half hour.
                budget: budget::Limits {
                    medium: per_hour(4 << 30),
                    large: per_hour(3 << 30),
                    faults: per_hour(3 << 30),
                },
                overhead: 256 * MIB + per_hour(256 * MIB),
                retention: retention::Settings {
                    gc_interval: s(20),
                    keep_versions: 1,
                    version_grace: s(30),
                    tombstone_grace: s(30),
                    log_retention: s(3600),
                    feed_horizon: s(60),
                },
            }
        }
    };
    if let Some(total) = args.byte_budget {
        set.budget = set.budget.scaled_to(total.as_u64());
    }
    set
}

/// Runs the profile; `Ok(true)` when every invariant held.
pub async fn run(args: RunArgs) -> Result<bool> {
    let set = settings(&args);
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            % 1_000_000_007
    });
    let profile = format!("{:?}", args.profile).to_lowercase();
    eprintln!(
        "endurance: profile {profile}, seed {seed} (replay with --seed {seed}){}",
        args.plant_bug
            .map(|b| format!(", planted bug {b:?}"))
            .unwrap_or_default()
    );
    let mut node_args = Vec::new();
    if let Some(PlantedBug::AckBeforeCommit) = args.plant_bug {
        node_args.extend(["--plant-bug".to_owned(), "ack-before-commit".to_owned()]);
    }
    let disk_size = (!args.no_disk_fault)
        .then(|| disk_size(&args, &set))
        .transpose()?;
    let total = Instant::now();
    let mut cluster = cluster::Cluster::start(cluster::Options {
        topology: args.topology.clone(),
        dir: args.dir.clone(),
        brokers: args.brokers,
        disk_size,
        node_args,
        tier_args: [Tier::Primary, Tier::Intermediate, Tier::Regional]
            .into_iter()
            .map(|t| (t, set.retention.node_args(args.retention, t)))
            .collect(),
    })
    .await?;
    eprintln!(
        "endurance: {} nodes up in {:.1} s ({} proxied links){}",
        cluster.topo.nodes.len(),
        total.elapsed().as_secs_f64(),
        cluster.http_links.len() + cluster.amqp_links.len(),
        cluster
            .disk_note
            .as_deref()
            .map(|n| format!("; no disk-full faults: {n}"))
            .unwrap_or_default()
    );
    let outcome = tokio::select! {
        r = drive(&args, &set, seed, &profile, &mut cluster) => r,
        () = interrupted() => Err(anyhow::anyhow!("interrupted; stopped the federation")),
    };
    cluster.shutdown().await;
    let report = outcome?;
    let dir = args
        .report
        .clone()
        .unwrap_or_else(|| args.dir.join("report"));
    report.write(&dir)?;
    if report.passed && !args.keep_data {
        // Tens of gigabytes of generated content: nothing to inspect after a pass.
        remove_content(&args.dir);
    }
    println!("{}", report.summary());
    println!(
        "report: {} (report.json, summary.txt, latency.svg); node logs under {}",
        dir.display(),
        args.dir.join("nodes").display()
    );
    Ok(report.passed)
}

/// The tmpfs size of the disk-fault node: what the byte budget can place on it, unless the
/// operator asked for another size. Refuses a size the machine's memory cannot back.
fn disk_size(args: &RunArgs, set: &Settings) -> Result<u64> {
    let needed = set.disk_needed();
    let size = match args.disk_size {
        None => needed,
        Some(b) => {
            if b.as_u64() < needed {
                eprintln!(
                    "endurance: warning: --disk-size {} is below the {} this run can store on \
                     one node (byte budget {}); real content may fill it, and the run then fails \
                     as out of disk",
                    report::human(b.as_u64()),
                    report::human(needed),
                    report::human(set.budget.total())
                );
            }
            b.as_u64()
        }
    };
    // tmpfs lives in memory; the nodes, brokers and the checker need some too.
    let spare = 2u64 << 30;
    if let Some(available) = mem_available() {
        if size + spare > available {
            anyhow::bail!(
                "the disk-fault node's tmpfs would need {} of memory (byte budget {}), but only {} \
                 is available; publish less with --byte-budget, or pass --no-disk-fault",
                report::human(size),
                report::human(set.budget.total()),
                report::human(available)
            );
        }
    }
    Ok(size)
}

/// `MemAvailable` from `/proc/meminfo`.
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses to run on a file system that cannot hold what the byte budget may place on the
/// nodes whose data it holds (every node but the one on the tmpfs).
fn check_free_space(
    cluster: &cluster::Cluster,
    set: &Settings,
    dir: &std::path::Path,
) -> Result<()> {
    let nodes = cluster.topo.nodes.len() as u64;
    let on_disk = nodes - u64::from(cluster.disk.is_some());
    let needed = on_disk * set.budget.total() + nodes * set.overhead;
    let st = nix::sys::statvfs::statvfs(dir)?;
    let free = st.blocks_available() * st.fragment_size();
    if free < needed {
        anyhow::bail!(
            "{} has {} free, but the run may store up to {} there ({on_disk} nodes × byte budget \
             {}, plus databases and logs); free some space, or publish less with --byte-budget",
            dir.display(),
            report::human(free),
            report::human(needed),
            report::human(set.budget.total())
        );
    }
    Ok(())
}

/// Removes the nodes' content files and the brokers' data under `dir`, keeping logs and
/// databases (and with them the small objects, content of at most `inline_max`: a few MiB per
/// node in a CI run).
fn remove_content(dir: &std::path::Path) {
    if let Ok(nodes) = std::fs::read_dir(dir.join("nodes")) {
        for node in nodes.flatten() {
            for sub in ["objects", "partial", "tmp"] {
                let _ = std::fs::remove_dir_all(node.path().join(sub));
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir.join("brokers"));
}

/// Ctrl-C or SIGTERM: the run stops its nodes and brokers before exiting.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn drive(
    args: &RunArgs,
    set: &Settings,
    seed: u64,
    profile: &str,
    cluster: &mut cluster::Cluster,
) -> Result<report::Report> {
    check_free_space(cluster, set, &args.dir)?;
    let started = Instant::now();
    let run_start_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let disks = diskwatch::DiskWatch::start(
        cluster
            .all_ids()
            .into_iter()
            .map(|id| {
                let dir = cluster.data_dir(&id);
                (id, dir)
            })
            .collect(),
        cluster
            .disk
            .as_ref()
            .map(|d| (d.dir.as_path(), d.fault_active.clone())),
        started,
    );
    let holders: HashMap<String, Vec<String>> = cluster
        .topo
        .nodes
        .iter()
        .filter_map(|n| n.region.clone())
        .map(|r| {
            let ids = cluster
                .topo
                .holders_of_region(&r)
                .iter()
                .map(|h| h.id.clone())
                .collect();
            (r, ids)
        })
        .collect();
    let ctx = Arc::new(workload::Ctx {
        http: cluster.http.clone(),
        token: cluster.token.clone(),
        seed,
        primaries: cluster
            .ids(Tier::Primary)
            .into_iter()
            .map(|id| (id.clone(), cluster.url(&id)))
            .collect(),
        regionals: cluster
            .topo
            .nodes
            .iter()
            .filter(|n| n.tier == Tier::Regional)
            .map(|n| {
                (
                    n.id.clone(),
                    cluster.url(&n.id),
                    n.region.clone().unwrap_or_default(),
                )
            })
            .collect(),
        holders,
        params: set.workload.clone(),
        inline_max: cluster.topo.inline_max.as_u64(),
        budget: budget::Budget::new(set.budget, set.duration, started),
        started,
        model: Mutex::new(workload::Model::new(cluster.topo.inline_max.as_u64())),
        devices: Mutex::default(),
    });
    let stop = CancellationToken::new();
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..set.workload.lanes {
        lanes.spawn(workload::lane(ctx.clone(), lane, stop.clone()));
    }
    lanes.spawn(workload::large_lane(ctx.clone(), stop.clone()));

    let mut injector = faults::Injector::new(seed, set.timing.clone(), cluster, started);
    // Let the workload get going before the first fault.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut harness_error = None;
    loop {
        let enough = match (set.faults, set.duration) {
            (Some(n), _) if injector.faults.len() >= n => true,
            (_, Some(d)) if started.elapsed() >= d => true,
            _ => false,
        };
        if enough {
            break;
        }
        if let Err(e) = injector.inject_next(cluster, &ctx).await {
            eprintln!("endurance: fault injection failed: {e:#}");
            harness_error = Some(format!("{e:#}"));
            break;
        }
        injector.gap().await;
    }
    let fault_phase_s = started.elapsed().as_secs_f64();
    eprintln!(
        "endurance: [{fault_phase_s:>6.1} s] fault phase over ({} faults); stopping the workload",
        injector.faults.len()
    );
    stop.cancel();
    while lanes.join_next().await.is_some() {}
    // Heal anything a failed injection may have left broken.
    for l in cluster
        .http_links
        .values()
        .chain(cluster.amqp_links.values())
    {
        l.set_cut(false);
        l.set_rate(None);
        l.set_corrupt(false);
    }
    if let Some(d) = &cluster.disk {
        faults::free_ballast(&d.dir.join(diskwatch::BALLAST)).await;
        d.fault_active
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
    for n in cluster.all_ids() {
        if !cluster.fed.node(&n).is_some_and(|p| p.is_running()) {
            let _ = cluster.fed.start_node(&n).await;
        }
    }
    injector.restart_crashed(cluster).await?;

    eprintln!(
        "endurance: waiting for quiescence (at most {:?})",
        set.quiescence
    );
    let quiescence = check::await_quiescence(cluster, set.quiescence).await;
    eprintln!(
        "endurance: [{:>6.1} s] quiescence {} after {:.1} s; checking invariants",
        started.elapsed().as_secs_f64(),
        if quiescence.reached {
            "reached"
        } else {
            "NOT reached"
        },
        quiescence.seconds
    );
    // Retention: the disk used now, one last collection at every node (whose required set the
    // checker recomputes), and the disk used after it.
    let before = retention::disk_use(cluster).await;
    let (retention_invariant, final_collections) =
        retention::final_collections(cluster, &set.retention, args.retention).await?;
    let after = retention::disk_use(cluster).await;
    let disk: Vec<retention::NodeDisk> = before
        .into_iter()
        .zip(after)
        .map(
            |((node, tier, before, _), (_, _, after, objects))| retention::NodeDisk {
                node,
                tier,
                before_final_collection: before,
                after_final_collection: after,
                objects_after: objects,
            },
        )
        .collect();
    eprintln!(
        "endurance: [{:>6.1} s] last collection at every node done ({} collected)",
        started.elapsed().as_secs_f64(),
        final_collections
            .iter()
            .map(|f| f.collected_count)
            .sum::<u64>()
    );
    let final_at: HashMap<String, i64> = final_collections
        .iter()
        .map(|f| (f.node.clone(), f.at))
        .collect();
    let model = std::mem::take(&mut *ctx.model.lock().expect("not poisoned"));
    let outcome = check::check(
        cluster,
        &model,
        &injector,
        run_start_ms,
        retention_invariant,
        &final_at,
    )
    .await?;
    let volumes = disks.finish().await;
    let out_of_disk: Vec<diskwatch::OutOfDisk> = volumes
        .iter()
        .filter_map(|v| v.out_of_disk.clone())
        .collect();

    let expected: usize = injector.reconnects.iter().map(|r| r.nodes.len()).sum();
    let reconnected = injector
        .reconnects
        .iter()
        .flat_map(|r| &r.nodes)
        .filter(|(_, t)| t.is_some())
        .count();
    let mut kinds: Vec<faults::Kind> = injector.faults.iter().map(|f| f.kind).collect();
    kinds.sort();
    kinds.dedup();
    let mut invariants = outcome.invariants;
    if let Some(n) = set.faults {
        let enough =
            injector.faults.len() >= n.min(20) && kinds.len() >= 4.min(injector.kinds().len());
        invariants.push(check_faults(
            injector.faults.len(),
            kinds.len(),
            enough,
            harness_error,
        ));
    } else if let Some(e) = harness_error {
        invariants.push(check_faults(
            injector.faults.len(),
            kinds.len(),
            false,
            Some(e),
        ));
    }
    let passed = out_of_disk.is_empty() && quiescence.reached && invariants.iter().all(|i| i.ok());
    let latency = report::Latency::of(&outcome.deliveries);
    Ok(report::Report {
        profile: profile.to_owned(),
        seed,
        planted_bug: args.plant_bug.map(|b| format!("{b:?}")),
        passed,
        started_at: humantime::format_rfc3339_seconds(
            UNIX_EPOCH + Duration::from_millis(run_start_ms as u64),
        )
        .to_string(),
        fault_phase_s,
        total_s: started.elapsed().as_secs_f64(),
        nodes: cluster.all_ids(),
        brokers: cluster
            .brokers
            .iter()
            .map(|b| format!("{} ({})", b.name, b.nodes.join(" ")))
            .collect(),
        small_disk: cluster
            .disk
            .as_ref()
            .map(|d| format!("{} on a {} tmpfs", d.node, report::human(d.size))),
        byte_budget: set.budget.total(),
        bytes_sent: ctx.budget.taken(),
        volumes,
        out_of_disk,
        faults: injector.faults.clone(),
        reconnect_rate: (expected > 0).then(|| reconnected as f64 / expected as f64),
        reconnects: injector.reconnects.clone(),
        operations: model.ops.clone(),
        failures: model.failures.clone(),
        documents: outcome.documents,
        versions: outcome.versions,
        bytes_published: model.bytes_published,
        sizes: model.sizes.clone(),
        bytes_verified: outcome.bytes_verified,
        pulls: outcome.pulls,
        pulled_again_after_collection: outcome.pulled_again_after_collection,
        retention: args.retention,
        final_collections,
        disk,
        bytes_flipped_in_flight: cluster.http_links.values().map(|l| l.flipped()).sum(),
        quiescence,
        invariants,
        latency,
        deliveries: outcome.deliveries,
    })
}

fn check_faults(
    count: usize,
    kinds: usize,
    enough: bool,
    harness_error: Option<String>,
) -> check::Invariant {
    let mut i = check::Invariant::new(
        "faults injected as scheduled",
        "the profile's faults were all injected (ci: at least 20 of at least 4 kinds)",
    );
    i.checked = count as u64;
    if !enough {
        i.fail_with(format!(
            "only {count} faults of {kinds} kinds were injected"
        ));
    }
    if let Some(e) = harness_error {
        i.fail_with(format!("the harness could not inject a fault: {e}"));
    }
    i
}
