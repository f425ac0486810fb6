//! The run's report: a JSON document, a summary table and an SVG plot of publication→delivery
//! latency over the run with the faults marked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::check::{Delivery, Invariant, Quiescence};
use super::diskwatch::{OutOfDisk, Volume};
use super::faults::{Fault, Kind, Reconnect};
use super::retention::{FinalCollection, Mode, NodeDisk};
use super::workload::{OpStats, SizeCounts};
use crate::stats::percentile;

#[derive(Debug, Serialize)]
pub struct Report {
    pub profile: String,
    pub seed: u64,
    pub planted_bug: Option<String>,
    pub passed: bool,
    pub started_at: String,
    pub fault_phase_s: f64,
    pub total_s: f64,
    pub nodes: Vec<String>,
    pub brokers: Vec<String>,
    pub small_disk: Option<String>,
    /// The most content bytes the run could publish, and what its attempts took of it.
    pub byte_budget: u64,
    pub bytes_sent: u64,
    /// The file systems of the nodes' data, with their peak use outside disk-full faults.
    pub volumes: Vec<Volume>,
    /// Volumes that filled up on their own: the run fails for this reason first.
    pub out_of_disk: Vec<OutOfDisk>,
    pub faults: Vec<Fault>,
    pub reconnects: Vec<Reconnect>,
    pub reconnect_rate: Option<f64>,
    pub operations: BTreeMap<&'static str, OpStats>,
    pub failures: BTreeMap<String, u64>,
    pub documents: u64,
    pub versions: u64,
    pub bytes_published: u64,
    /// Acknowledged content by how it travels (inline or pulled).
    pub sizes: SizeCounts,
    pub bytes_verified: u64,
    pub pulls: u64,
    /// Pulls of content that a collection had removed since the previous pull of it.
    pub pulled_again_after_collection: u64,
    pub retention: Mode,
    /// The collection the harness asked every node for at the end.
    pub final_collections: Vec<FinalCollection>,
    /// Disk use of every node's data directory at the end.
    pub disk: Vec<NodeDisk>,
    pub bytes_flipped_in_flight: u64,
    pub quiescence: Quiescence,
    pub invariants: Vec<Invariant>,
    pub latency: Option<Latency>,
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_s: f64,
    pub p95_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
}

impl Latency {
    pub fn of(deliveries: &[Delivery]) -> Option<Latency> {
        let mut l: Vec<f64> = deliveries.iter().map(|d| d.latency_s.max(0.0)).collect();
        if l.is_empty() {
            return None;
        }
        l.sort_by(f64::total_cmp);
        let q = |p: f64| percentile(&l, p);
        Some(Latency {
            count: l.len(),
            p50_s: q(0.50),
            p95_s: q(0.95),
            p99_s: q(0.99),
            max_s: l[l.len() - 1],
        })
    }
}

impl Report {
    /// The summary table printed at the end of a run and written to `summary.txt`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "docfed endurance run: profile {}, seed {}{} — {}",
            self.profile,
            self.seed,
            self.planted_bug
                .as_deref()
                .map(|b| format!(", PLANTED BUG {b}"))
                .unwrap_or_default(),
            if self.passed { "PASSED" } else { "FAILED" }
        );
        // A full disk explains everything that follows: say it first, in one line.
        for o in &self.out_of_disk {
            let _ = writeln!(s, "{}", o.line());
        }
        let _ = writeln!(
            s,
            "{} nodes, brokers: {}; fault phase {:.0} s, total {:.0} s",
            self.nodes.len(),
            self.brokers.join(", "),
            self.fault_phase_s,
            self.total_s
        );
        let _ = writeln!(s, "\nFaults ({} injected)", self.faults.len());
        let mut by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
        for f in &self.faults {
            *by_kind.entry(f.kind).or_default() += 1;
        }
        for (k, n) in &by_kind {
            let _ = writeln!(s, "  {:<24} {n:>4}", k.name());
        }
        let _ = writeln!(s, "\nWorkload");
        for (op, st) in &self.operations {
            let _ = writeln!(s, "  {op:<24} {:>6} ok {:>5} failed", st.ok, st.failed);
        }
        let _ = writeln!(
            s,
            "  documents {}, versions {}, {} published, {} verified byte for byte, {} pulls, {} bytes flipped in flight",
            self.documents,
            self.versions,
            human(self.bytes_published),
            human(self.bytes_verified),
            self.pulls,
            self.bytes_flipped_in_flight
        );
        let z = &self.sizes;
        let _ = writeln!(
            s,
            "  content acknowledged: {} inline (at most inline_max, {} bytes), {} pulled; on the bound: {} of {} bytes, {} of {}, {} of {}",
            z.inline,
            z.inline_max,
            z.pulled,
            z.at_inline_bound[0],
            z.inline_max.saturating_sub(1),
            z.at_inline_bound[1],
            z.inline_max,
            z.at_inline_bound[2],
            z.inline_max + 1
        );
        let _ = writeln!(
            s,
            "  byte budget {}, {} taken by the attempts",
            human(self.byte_budget),
            human(self.bytes_sent)
        );
        for v in &self.volumes {
            let _ = writeln!(
                s,
                "  disk of {}: {} free at least, of {}, outside disk-full faults",
                v.nodes.join(", "),
                v.least_free.map_or("?".to_owned(), human),
                human(v.size),
            );
        }
        let _ = writeln!(
            s,
            "\nRetention {} ({} pulls of content collected since its previous pull)",
            match self.retention {
                Mode::On => "on",
                Mode::Off => "off",
            },
            self.pulled_again_after_collection
        );
        for (d, f) in self.disk.iter().zip(&self.final_collections) {
            let _ = writeln!(
                s,
                "  {:<22} {:<12} data dir {:>10} → {:>10} after the last collection ({} objects, {}, {} of them small objects in the database, {}; {} live, {} retained; {} collections logged, {} in the last)",
                d.node,
                d.tier,
                human(d.before_final_collection),
                human(d.after_final_collection),
                f.objects,
                human(f.object_bytes),
                f.small_objects,
                human(f.small_object_bytes),
                f.live_count,
                f.retained_count,
                f.collections_logged,
                f.collected_count
            );
        }
        let restarts = self.reconnects.len();
        let expected: usize = self.reconnects.iter().map(|r| r.nodes.len()).sum();
        let _ = writeln!(
            s,
            "\nBroker restarts {restarts}: nodes consuming again {}/{expected} ({})",
            self.reconnects
                .iter()
                .flat_map(|r| &r.nodes)
                .filter(|(_, t)| t.is_some())
                .count(),
            self.reconnect_rate
                .map(|r| format!("{:.0} %", r * 100.0))
                .unwrap_or_else(|| "no restarts".into())
        );
        if let Some(l) = &self.latency {
            let _ = writeln!(
                s,
                "Publication → regional delivery ({} deliveries): p50 {:.2} s, p95 {:.2} s, p99 {:.2} s, max {:.2} s",
                l.count, l.p50_s, l.p95_s, l.p99_s, l.max_s
            );
        }
        let _ = writeln!(
            s,
            "Quiescence {} after {:.1} s{}",
            if self.quiescence.reached {
                "reached"
            } else {
                "NOT reached"
            },
            self.quiescence.seconds,
            if self.quiescence.busy.is_empty() {
                String::new()
            } else {
                format!(": {}", self.quiescence.busy.join("; "))
            }
        );
        let _ = writeln!(s, "\nInvariants");
        for i in &self.invariants {
            let _ = writeln!(
                s,
                "  {:<4} {:<40} {:>8} checked {:>5} violations",
                if i.ok() { "ok" } else { "FAIL" },
                i.name,
                i.checked,
                i.violation_count
            );
        }
        // Violations at a node that ran out of disk are its consequences: counted, not listed.
        let full: Vec<&String> = self.out_of_disk.iter().flat_map(|o| &o.nodes).collect();
        for i in self.invariants.iter().filter(|i| !i.ok()) {
            let _ = writeln!(s, "\n{} — {}:", i.name, i.description);
            let (consequences, listed): (Vec<&String>, Vec<&String>) = i
                .violations
                .iter()
                .partition(|v| full.iter().any(|n| v.contains(n.as_str())));
            for v in listed {
                let _ = writeln!(s, "  - {v}");
            }
            if !consequences.is_empty() {
                let _ = writeln!(
                    s,
                    "  - {} at a node that ran out of disk (see above; listed in report.json)",
                    consequences.len()
                );
            }
            if i.violation_count as usize > i.violations.len() {
                let _ = writeln!(
                    s,
                    "  … and {} more (see report.json)",
                    i.violation_count as usize - i.violations.len()
                );
            }
        }
        s
    }

    /// Writes `report.json`, `summary.txt` and `latency.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("summary.txt"), self.summary())?;
        std::fs::write(dir.join("latency.svg"), self.svg())?;
        Ok(())
    }

    /// Latency of every regional delivery against its publication time, log scale, with a
    /// vertical band per fault coloured by kind.
    pub fn svg(&self) -> String {
        const W: f64 = 1000.0;
        const H: f64 = 520.0;
        const L: f64 = 70.0;
        const R: f64 = 200.0;
        const T: f64 = 40.0;
        const B: f64 = 50.0;
        let span = self.fault_phase_s.max(
            self.deliveries
                .iter()
                .map(|d| d.published_s)
                .fold(1.0, f64::max),
        );
        let lat_min = 0.01f64;
        let lat_max = self
            .deliveries
            .iter()
            .map(|d| d.latency_s)
            .fold(1.0, f64::max)
            .max(1.0);
        let (lo, hi) = (lat_min.log10(), (lat_max * 1.2).log10());
        let x = |t: f64| L + (t.max(0.0) / span) * (W - L - R);
        let y = |s: f64| {
            let v = s.max(lat_min).log10();
            H - B - (v - lo) / (hi - lo) * (H - T - B)
        };
        let mut o = String::new();
        let _ = writeln!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            o,
            r#"<text x="{L}" y="22" font-size="15">docfed endurance ({}, seed {}): publication → regional delivery latency{}</text>"#,
            self.profile,
            self.seed,
            if self.passed { "" } else { " — FAILED" }
        );
        for f in &self.faults {
            let (x0, x1) = (x(f.start_s), x(f.end_s).max(x(f.start_s) + 1.5));
            let _ = writeln!(
                o,
                r#"<rect x="{x0:.1}" y="{T}" width="{:.1}" height="{:.1}" fill="{}" opacity="0.18"><title>{}: {} ({})</title></rect>"#,
                x1 - x0,
                H - T - B,
                f.kind.colour(),
                f.kind.name(),
                xml(&f.target),
                xml(&f.detail)
            );
        }
        // Axes and grid.
        let _ = writeln!(
            o,
            r##"<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="#333"/>"##,
            H - B,
            W - R,
            H - B,
            H - B
        );
        let mut decade = lo.floor() as i32;
        while f64::from(decade) <= hi {
            let v = 10f64.powi(decade);
            if v >= lat_min {
                let yy = y(v);
                let _ = writeln!(
                    o,
                    r##"<line x1="{L}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                    W - R,
                    L - 6.0,
                    yy + 4.0,
                    if v < 1.0 {
                        format!("{v} s")
                    } else {
                        format!("{v:.0} s")
                    }
                );
            }
            decade += 1;
        }
        let step = nice_step(span);
        let mut t = 0.0;
        while t <= span {
            let xx = x(t);
            let _ = writeln!(
                o,
                r#"<text x="{xx:.1}" y="{}" text-anchor="middle">{t:.0}</text>"#,
                H - B + 18.0
            );
            t += step;
        }
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">publication time (s since start)</text>"#,
            (L + W - R) / 2.0,
            H - 10.0
        );
        let palette = ["#1f77b4", "#2ca02c", "#17becf", "#8c564b", "#393b79"];
        let mut nodes: Vec<&str> = self.deliveries.iter().map(|d| d.node.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        for d in &self.deliveries {
            let c = palette[nodes.iter().position(|n| *n == d.node).unwrap_or(0) % palette.len()];
            let _ = writeln!(
                o,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{c}" opacity="0.7"/>"#,
                x(d.published_s),
                y(d.latency_s)
            );
        }
        // Legend.
        let mut ly = T + 10.0;
        let lx = W - R + 15.0;
        for (i, n) in nodes.iter().enumerate() {
            let _ = writeln!(
                o,
                r#"<circle cx="{lx}" cy="{ly}" r="4" fill="{}"/><text x="{}" y="{}">{}</text>"#,
                palette[i % palette.len()],
                lx + 10.0,
                ly + 4.0,
                xml(n)
            );
            ly += 18.0;
        }
        ly += 10.0;
        let mut kinds: Vec<Kind> = self.faults.iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        for k in kinds {
            let _ = writeln!(
                o,
                r#"<rect x="{}" y="{}" width="12" height="12" fill="{}" opacity="0.5"/><text x="{}" y="{}">{}</text>"#,
                lx - 6.0,
                ly - 6.0,
                k.colour(),
                lx + 10.0,
                ly + 4.0,
                k.name()
            );
            ly += 18.0;
        }
        o.push_str("</svg>\n");
        o
    }
}

fn nice_step(span: f64) -> f64 {
    let raw = span / 10.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(raw)
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(node: &str, published_s: f64, latency_s: f64) -> Delivery {
        Delivery {
            node: node.to_owned(),
            published_s,
            latency_s,
        }
    }

    #[test]
    fn latency_quantiles() {
        let d: Vec<Delivery> = (1..=100)
            .map(|i| delivery("na", 0.0, f64::from(i) / 10.0))
            .collect();
        let l = Latency::of(&d).unwrap();
        assert_eq!((l.count, l.p50_s, l.p99_s, l.max_s), (100, 5.0, 9.9, 10.0));
        assert!(Latency::of(&[]).is_none());
    }

    #[test]
    fn summary_and_plot_show_faults_and_failures() {
        let mut broken = Invariant::new("content placed by scope", "where scope requires");
        broken.fail_with("document X not held at asia".into());
        let report = Report {
            profile: "ci".into(),
            seed: 42,
            planted_bug: None,
            passed: false,
            started_at: "2026-11-22T00:00:00Z".into(),
            fault_phase_s: 100.0,
            total_s: 120.0,
            nodes: vec!["na".into(), "asia".into()],
            brokers: vec!["regional (na asia)".into()],
            small_disk: None,
            byte_budget: 100,
            bytes_sent: 10,
            volumes: Vec::new(),
            out_of_disk: Vec::new(),
            faults: vec![Fault {
                kind: Kind::LinkCut,
                target: "na <-> asia".into(),
                start_s: 10.0,
                end_s: 14.0,
                detail: "black-holed <4 s>".into(),
            }],
            reconnects: Vec::new(),
            reconnect_rate: None,
            operations: BTreeMap::new(),
            failures: BTreeMap::new(),
            documents: 1,
            versions: 1,
            bytes_published: 10,
            sizes: SizeCounts::default(),
            bytes_verified: 10,
            pulls: 1,
            pulled_again_after_collection: 0,
            retention: Mode::On,
            final_collections: Vec::new(),
            disk: Vec::new(),
            bytes_flipped_in_flight: 0,
            quiescence: Quiescence {
                reached: true,
                seconds: 1.0,
                busy: Vec::new(),
            },
            invariants: vec![broken],
            latency: None,
            deliveries: vec![delivery("na", 5.0, 0.2), delivery("asia", 50.0, 30.0)],
        };
        let s = report.summary();
        assert!(s.contains("FAILED"), "{s}");
        assert!(s.contains("network cut"), "{s}");
        assert!(s.contains("document X not held at asia"), "{s}");
        let svg = report.svg();
        assert_eq!(
            svg.matches("<circle").count(),
            2 + 2,
            "two points, two legend marks"
        );
        assert!(
            svg.contains("black-holed &lt;4 s&gt;"),
            "titles are escaped"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn a_node_out_of_disk_leads_the_summary_and_its_consequences_are_not_listed() {
        let mut placed = Invariant::new("content placed by scope", "where scope requires");
        placed.fail_with("document X not held at e1-asia".into());
        placed.fail_with("document Y not held at e1-asia".into());
        placed.fail_with("document Z not held at e1-na".into());
        let mut v = Volume::new(vec!["e1-asia".into()], "nodes/e1-asia".into(), None);
        v.observe(131.5, 2 << 30, 0, false);
        let out = v.out_of_disk.clone().unwrap();
        let report = Report {
            profile: "ci".into(),
            seed: 729332260,
            planted_bug: None,
            passed: false,
            started_at: "2026-11-22T00:00:00Z".into(),
            fault_phase_s: 100.0,
            total_s: 120.0,
            nodes: vec!["e1-na".into(), "e1-asia".into()],
            brokers: Vec::new(),
            small_disk: Some("e1-asia on a 2.0 GiB tmpfs".into()),
            byte_budget: 2 << 30,
            bytes_sent: 2 << 30,
            volumes: vec![v],
            out_of_disk: vec![out],
            faults: Vec::new(),
            reconnects: Vec::new(),
            reconnect_rate: None,
            operations: BTreeMap::new(),
            failures: BTreeMap::new(),
            documents: 1,
            versions: 1,
            bytes_published: 10,
            sizes: SizeCounts::default(),
            bytes_verified: 10,
            pulls: 1,
            pulled_again_after_collection: 0,
            retention: Mode::On,
            final_collections: Vec::new(),
            disk: Vec::new(),
            bytes_flipped_in_flight: 0,
            quiescence: Quiescence {
                reached: false,
                seconds: 150.0,
                busy: vec!["e1-asia: 21 pulls pending".into()],
            },
            invariants: vec![placed],
            latency: None,
            deliveries: Vec::new(),
        };
        let s = report.summary();
        let second = s.lines().nth(1).unwrap();
        assert!(
            second.starts_with("OUT OF DISK: e1-asia — nodes/e1-asia")
                && second.contains("since 131.5 s"),
            "{s}"
        );
        assert!(!s.contains("document X"), "{s}");
        assert!(s.contains("document Z not held at e1-na"), "{s}");
        assert!(s.contains("2 at a node that ran out of disk"), "{s}");
    }
}
