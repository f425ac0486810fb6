//! Watches the file systems that hold the nodes' data during a run, so that a node that
//! genuinely runs out of disk is reported as that, in one line, instead of as the dozens of
//! invariant violations that follow from it.
//!
//! A volume is "full" when its free space drops below [`full_threshold`]. The disk-full fault
//! fills the small disk on purpose: samples taken while it is active (from before it fills the
//! disk until its ballast's space is free again) do not count. Any other full volume fails the
//! run, first.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::report::human;

/// Free space below which a volume counts as full: 1 % of it, at least 8 MiB, at most 256 MiB.
pub fn full_threshold(size: u64) -> u64 {
    (size / 100).clamp(8 << 20, 256 << 20)
}

/// A time a volume was full outside a disk-full fault.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutOfDisk {
    /// The nodes whose data directories are on the volume.
    pub nodes: Vec<String>,
    pub path: PathBuf,
    pub size: u64,
    /// The least free space seen while full.
    pub least_free: u64,
    /// Seconds since the run started: first and last sample that found it full.
    pub since_s: f64,
    pub last_s: f64,
    /// Still full at the last sample.
    pub full_at_end: bool,
}

impl OutOfDisk {
    /// The one line the summary leads with.
    pub fn line(&self) -> String {
        let full =
            100.0 * (self.size - self.least_free.min(self.size)) as f64 / self.size.max(1) as f64;
        format!(
            "OUT OF DISK: {} — {} ({} volume) {full:.1} % full, {} free, since {:.1} s{}; no disk-full fault caused it",
            self.nodes.join(", "),
            self.path.display(),
            human(self.size),
            human(self.least_free),
            self.since_s,
            if self.full_at_end {
                " and still at the end".to_owned()
            } else {
                format!(" until {:.1} s", self.last_s)
            }
        )
    }
}

/// One file system and what was seen on it.
#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    pub nodes: Vec<String>,
    pub path: PathBuf,
    /// Set while the disk-full fault fills this volume.
    #[serde(skip)]
    fault_active: Option<Arc<AtomicBool>>,
    pub size: u64,
    /// The least free space seen outside a disk-full fault.
    pub least_free: Option<u64>,
    pub out_of_disk: Option<OutOfDisk>,
    #[serde(skip)]
    full_now: bool,
}

impl Volume {
    pub fn new(nodes: Vec<String>, path: PathBuf, fault_active: Option<Arc<AtomicBool>>) -> Volume {
        Volume {
            nodes,
            path,
            fault_active,
            size: 0,
            least_free: None,
            out_of_disk: None,
            full_now: false,
        }
    }

    /// Records one sample taken `t` seconds into the run; `fault` when the disk-full fault was
    /// filling the volume while it was taken.
    pub fn observe(&mut self, t: f64, size: u64, free: u64, fault: bool) {
        self.size = size;
        if fault {
            return;
        }
        self.least_free = Some(self.least_free.map_or(free, |f| f.min(free)));
        self.full_now = free < full_threshold(size);
        if !self.full_now {
            if let Some(o) = &mut self.out_of_disk {
                o.full_at_end = false;
            }
            return;
        }
        let o = self.out_of_disk.get_or_insert_with(|| OutOfDisk {
            nodes: self.nodes.clone(),
            path: self.path.clone(),
            size,
            least_free: free,
            since_s: t,
            last_s: t,
            full_at_end: true,
        });
        o.least_free = o.least_free.min(free);
        o.last_s = t;
        o.full_at_end = true;
    }

    fn sample(&mut self, t: f64) {
        let fault = || {
            self.fault_active
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst))
        };
        let before = fault();
        let Ok(st) = nix::sys::statvfs::statvfs(&self.path) else {
            // Unmounted or not there yet: nothing to learn.
            return;
        };
        let after = fault();
        let frag = st.fragment_size();
        self.observe(
            t,
            st.blocks() * frag,
            st.blocks_available() * frag,
            before || after,
        );
    }
}

/// Samples every volume twice a second until stopped.
pub struct DiskWatch {
    volumes: Arc<Mutex<Vec<Volume>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl DiskWatch {
    /// `dirs`: each node's data directory; `small_disk`: the disk-fault node's directory and
    /// the flag its fault sets.
    pub fn start(
        dirs: Vec<(String, PathBuf)>,
        small_disk: Option<(&Path, Arc<AtomicBool>)>,
        started: Instant,
    ) -> DiskWatch {
        let small_dev = small_disk
            .as_ref()
            .and_then(|(p, _)| std::fs::metadata(p).ok())
            .map(|m| m.dev());
        let mut by_dev: BTreeMap<u64, Volume> = BTreeMap::new();
        for (node, dir) in dirs {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let fault_active = small_disk
                .as_ref()
                .filter(|_| Some(meta.dev()) == small_dev)
                .map(|(_, f)| f.clone());
            by_dev
                .entry(meta.dev())
                .and_modify(|v| v.nodes.push(node.clone()))
                .or_insert_with(|| Volume::new(vec![node], dir, fault_active));
        }
        let volumes = Arc::new(Mutex::new(by_dev.into_values().collect::<Vec<_>>()));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let volumes = volumes.clone();
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = stop.cancelled() => break,
                    }
                    let t = started.elapsed().as_secs_f64();
                    for v in volumes.lock().expect("not poisoned").iter_mut() {
                        v.sample(t);
                    }
                }
            }
        });
        DiskWatch {
            volumes,
            stop,
            task,
        }
    }

    /// Stops sampling; what was seen on every volume.
    pub async fn finish(self) -> Vec<Volume> {
        self.stop.cancel();
        let _ = self.task.await;
        let volumes = self.volumes.lock().expect("not poisoned").clone();
        volumes
    }
}

/// The file the disk-full fault fills the small disk with.
pub const BALLAST: &str = "endurance-ballast";

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn volume() -> Volume {
        Volume::new(vec!["asia".into()], "nodes/asia".into(), None)
    }

    #[test]
    fn a_fault_filling_the_disk_is_not_out_of_disk() {
        let mut v = volume();
        v.observe(1.0, 2 * GIB, GIB, false);
        v.observe(2.0, 2 * GIB, 0, true);
        v.observe(3.0, 2 * GIB, GIB, false);
        assert_eq!(v.out_of_disk, None);
        assert_eq!(
            v.least_free,
            Some(GIB),
            "the fault's fullness is not counted"
        );
    }

    #[test]
    fn real_content_filling_the_disk_is_reported_with_since_and_how_full() {
        let mut v = volume();
        v.observe(1.0, 2 * GIB, GIB, false);
        v.observe(131.5, 2 * GIB, 4 << 20, false);
        v.observe(132.0, 2 * GIB, 1 << 20, false);
        v.observe(133.0, 2 * GIB, 0, true);
        let o = v.out_of_disk.clone().expect("reported");
        assert_eq!(o.since_s, 131.5);
        assert_eq!(o.least_free, 1 << 20);
        assert!(o.full_at_end);
        let line = o.line();
        assert!(line.starts_with("OUT OF DISK: asia — nodes/asia"), "{line}");
        assert!(line.contains("100.0 % full"), "{line}");
        assert!(
            line.contains("since 131.5 s and still at the end"),
            "{line}"
        );
        v.observe(140.0, 2 * GIB, GIB, false);
        let o = v.out_of_disk.expect("still reported after it recovered");
        assert!(!o.full_at_end);
        assert!(o.line().contains("until 132.0 s"), "{}", o.line());
    }

    #[test]
    fn the_threshold_scales_with_the_volume_within_bounds() {
        assert_eq!(full_threshold(100 << 20), 8 << 20);
        assert_eq!(full_threshold(2 * GIB), (2 * GIB) / 100);
        assert_eq!(full_threshold(250 * GIB), 256 << 20);
    }

    #[tokio::test]
    async fn the_watch_groups_nodes_by_file_system() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir_in(a.path()).unwrap();
        let watch = DiskWatch::start(
            vec![
                ("one".into(), a.path().to_owned()),
                ("two".into(), b.path().to_owned()),
            ],
            None,
            Instant::now(),
        );
        let volumes = watch.finish().await;
        assert_eq!(volumes.len(), 1);
        assert_eq!(volumes[0].nodes, ["one", "two"]);
    }
}
