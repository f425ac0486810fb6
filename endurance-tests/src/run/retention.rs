//! Retention during a run (ARCHITECTURE.md §4.4, `node/src/retention.rs`): the policy each node
//! runs with, the collection the harness asks every node for once the federation is quiet, the
//! disk the nodes' data directories use, and the invariant "objects exactly the required set".
//!
//! A node holds content in one of two forms: a file `objects/<ab>/<md5>`, or, at most
//! `small_object_max` bytes, a row of its database's `small_objects` (migration 0013). Both
//! count as held; the `objects` row is the same for either.

use docfed_shared::wire::gc::{GcPreview, GcReport};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use docfed_shared::topology::{Tier, Topology};
use docfed_shared::Scope;
use serde::Serialize;

use super::check::{open, Invariant};
use super::cluster::Cluster;

/// Whether the nodes collect (`on`, the profiles' policy) or keep everything (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Intermediate and regional nodes collect every few seconds with short graces, so that
    /// collections happen many times during the run; primaries keep their defaults (everything).
    On,
    /// Every node keeps every version and deleted documents' content for ever, never collects
    /// on its own and never compacts its feed (for comparing disk use).
    Off,
}

/// The retention flags of a profile for intermediate and regional nodes.
#[derive(Debug, Clone)]
pub struct Settings {
    pub gc_interval: Duration,
    pub keep_versions: u32,
    pub version_grace: Duration,
    pub tombstone_grace: Duration,
    pub log_retention: Duration,
    pub feed_horizon: Duration,
}

/// The part of a node's policy that decides what content it must hold (`retention::Policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// `None`: all.
    pub keep_versions: Option<u32>,
    /// Milliseconds; `None`: for ever.
    pub version_grace_ms: Option<i64>,
    pub tombstone_grace_ms: Option<i64>,
}

impl Policy {
    const KEEP_ALL: Policy = Policy {
        keep_versions: None,
        version_grace_ms: None,
        tombstone_grace_ms: None,
    };

    fn keeps_everything(&self) -> bool {
        *self == Self::KEEP_ALL
    }
}

fn text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Settings {
    /// The flags a node of `tier` gets.
    pub fn node_args(&self, mode: Mode, tier: Tier) -> Vec<String> {
        let args: Vec<String> = match (mode, tier) {
            (Mode::Off, _) => [
                "--gc-interval",
                "off",
                "--keep-versions",
                "all",
                "--version-grace",
                "forever",
                "--tombstone-grace",
                "forever",
                "--feed-horizon",
                "forever",
            ]
            .map(str::to_owned)
            .to_vec(),
            // Primaries keep the publication record: their defaults.
            (Mode::On, Tier::Primary) => Vec::new(),
            (Mode::On, _) => vec![
                "--gc-interval".into(),
                text(self.gc_interval),
                "--keep-versions".into(),
                self.keep_versions.to_string(),
                "--version-grace".into(),
                text(self.version_grace),
                "--tombstone-grace".into(),
                text(self.tombstone_grace),
                "--log-retention".into(),
                text(self.log_retention),
                "--feed-horizon".into(),
                text(self.feed_horizon),
            ],
        };
        args
    }

    /// The policy those flags give a node of `tier` (the tier defaults of
    /// `retention::Policy::for_tier` for primaries).
    pub fn policy(&self, mode: Mode, tier: Tier) -> Policy {
        match (mode, tier) {
            (Mode::Off, _) | (Mode::On, Tier::Primary) => Policy::KEEP_ALL,
            (Mode::On, _) => Policy {
                keep_versions: Some(self.keep_versions),
                version_grace_ms: Some(self.version_grace.as_millis() as i64),
                tombstone_grace_ms: Some(self.tombstone_grace.as_millis() as i64),
            },
        }
    }
}

/// Whether node `id`'s routing keeps content of `scope`: mirrors `Federation::keeps_content`
/// (primaries everything; a regional node its region, the regions it backs up and global; an
/// intermediate what any regional node needs). A scope that does not parse is kept, as there.
fn keeps_content(topo: &Topology, id: &str, scope: &str) -> bool {
    let Ok(scope) = Scope::from_str(scope) else {
        return true;
    };
    let regional_needs = |node: &str| match &scope {
        Scope::Global => true,
        Scope::Region(r) => topo.holders_of_region(r).iter().any(|h| h.id == node),
    };
    match topo.node(id).map(|n| n.tier) {
        Some(Tier::Primary) => true,
        Some(Tier::Regional) => regional_needs(id),
        Some(Tier::Intermediate) => topo.regionals().any(|r| regional_needs(&r.id)),
        None => false,
    }
}

/// The required set, formulated independently of the node: the node decides per object with
/// index probes (`conditions` in `node/src/retention.rs`), this checker with window functions
/// over all versions (the node's first formulation). Both say the same in different ways, so the
/// invariant is also a cross-check of the node's SQL. `?1` JSON array of the kept scopes, `?2`
/// superseded versions kept, `?3` version cutoff (Unix ms), `?4` tombstone cutoff.
const REQUIRED_CTES: &str = "WITH docs AS ( \
       SELECT d.doc_id, d.version, d.origin, d.md5, d.deleted, d.created_at, \
              (d.scope IN (SELECT value FROM json_each(?1)) \
               OR EXISTS (SELECT 1 FROM device_flags f WHERE f.doc_id = d.doc_id)) AS kept \
       FROM documents d ), \
     hist AS ( \
       SELECT v.doc_id, v.md5, v.deleted AS v_deleted, v.version, v.origin, \
              (v.version = d.version AND v.origin = d.origin) AS is_current, \
              LAG(v.created_at) OVER (PARTITION BY v.doc_id \
                                      ORDER BY v.version DESC, v.origin DESC) AS superseded_at, \
              d.deleted AS doc_deleted, d.created_at AS doc_at, d.kept \
       FROM versions v JOIN docs d ON d.doc_id = v.doc_id), \
     old AS ( \
       SELECT md5, superseded_at, kept, \
              ROW_NUMBER() OVER (PARTITION BY doc_id ORDER BY version DESC, origin DESC) AS n \
       FROM hist WHERE is_current = 0 AND v_deleted = 0 AND doc_deleted = 0), \
     live(md5) AS ( \
       SELECT md5 FROM docs WHERE deleted = 0 AND kept \
       UNION SELECT md5 FROM pending_fetches ), \
     retained(md5) AS ( \
       SELECT md5 FROM old WHERE kept AND n <= ?2 AND superseded_at >= ?3 \
       UNION \
       SELECT md5 FROM hist WHERE doc_deleted = 1 AND v_deleted = 0 AND kept AND doc_at >= ?4) ";

/// What one node holds and requires at one instant.
#[derive(Debug, Default)]
struct Holdings {
    /// `objects` rows.
    rows: BTreeMap<String, i64>,
    /// Files `objects/<ab>/<md5>` (anything else there is listed too, as a name).
    files: BTreeSet<String>,
    /// `small_objects` rows: md5 → (bytes of `data` as stored, sealed or not; whether an
    /// `objects` row exists for it, read in the same statement).
    small: BTreeMap<String, (u64, bool)>,
    live: BTreeSet<String>,
    retained: BTreeSet<String>,
    /// Collections that removed the content of a current version this node keeps by scope,
    /// after that version had arrived here: (md5, document, collected at, arrived at, reason).
    live_collected: Vec<(String, String, i64, i64, String)>,
    /// Collections (md5, reason) a keep-everything policy must never make.
    history_collected: Vec<(String, String)>,
    /// What the collection at `at` removed (md5, reason): none of it may be required at `at`.
    collected_at: Vec<(String, String)>,
}

async fn holdings(
    dir: &Path,
    topo: &Topology,
    id: &str,
    policy: Policy,
    at: i64,
) -> Result<Holdings> {
    let db = open(&dir.join("node.sqlite")).await?;
    let scopes: Vec<String> = sqlx::query_scalar("SELECT DISTINCT scope FROM documents")
        .fetch_all(&db)
        .await?;
    let kept: Vec<&String> = scopes
        .iter()
        .filter(|s| keeps_content(topo, id, s))
        .collect();
    let kept = serde_json::to_string(&kept)?;
    let cutoff = |grace: Option<i64>| grace.map_or(i64::MIN, |g| at.saturating_sub(g));
    let classes = sqlx::query_as::<_, (i64, String)>(&format!(
        "{REQUIRED_CTES} SELECT 0, md5 FROM live UNION ALL SELECT 1, md5 FROM retained"
    ))
    .bind(&kept)
    .bind(policy.keep_versions.map_or(i64::MAX, i64::from))
    .bind(cutoff(policy.version_grace_ms))
    .bind(cutoff(policy.tombstone_grace_ms))
    .fetch_all(&db)
    .await?;
    let mut h = Holdings::default();
    for (class, md5) in classes {
        if class == 0 {
            h.live.insert(md5);
        } else {
            h.retained.insert(md5);
        }
    }
    h.rows = sqlx::query_as::<_, (String, i64)>("SELECT md5, size FROM objects")
        .fetch_all(&db)
        .await?
        .into_iter()
        .collect();
    h.small = sqlx::query_as::<_, (String, i64, bool)>(
        "SELECT s.md5, length(s.data), EXISTS (SELECT 1 FROM objects o WHERE o.md5 = s.md5) \
         FROM small_objects s",
    )
    .fetch_all(&db)
    .await?
    .into_iter()
    .map(|(md5, len, row)| (md5, (len.max(0) as u64, row)))
    .collect();
    // The current version of a non-deleted document never changes once it is current but by a
    // newer one, so a document whose current version arrived here (its change row: the latest
    // of the document, which feed compaction keeps) before a collection was current at that
    // collection: its content was live if this node keeps its scope.
    h.live_collected = sqlx::query_as::<_, (String, String, i64, i64, String)>(
        "SELECT c.md5, d.doc_id, c.at, ch.at, c.reason FROM collections c \
         JOIN documents d ON d.md5 = c.md5 AND d.deleted = 0 \
         JOIN changes ch ON ch.seq = d.last_seq \
         WHERE d.scope IN (SELECT value FROM json_each(?1)) AND ch.at < c.at",
    )
    .bind(&kept)
    .fetch_all(&db)
    .await?;
    h.collected_at =
        sqlx::query_as::<_, (String, String)>("SELECT md5, reason FROM collections WHERE at >= ?")
            .bind(at)
            .fetch_all(&db)
            .await?;
    if policy.keeps_everything() {
        h.history_collected = sqlx::query_as::<_, (String, String)>(
            "SELECT md5, reason FROM collections WHERE reason IN ('superseded', 'tombstoned')",
        )
        .fetch_all(&db)
        .await?;
    }
    db.close().await;
    let objects = dir.join("objects");
    h.files = tokio::task::spawn_blocking(move || list_objects(&objects)).await??;
    Ok(h)
}

/// Names of the files under `objects/<ab>/`: an address, or the relative path of anything that
/// is not one where it should be.
fn list_objects(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let prefixes = match std::fs::read_dir(dir) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for prefix in prefixes {
        let prefix = prefix?;
        let pname = prefix.file_name().to_string_lossy().into_owned();
        if !prefix.file_type()?.is_dir() {
            out.insert(pname);
            continue;
        }
        for f in std::fs::read_dir(prefix.path())? {
            let name = f?.file_name().to_string_lossy().into_owned();
            if name.len() == 32 && name.starts_with(&pname) {
                out.insert(name);
            } else {
                out.insert(format!("{pname}/{name}"));
            }
        }
    }
    Ok(out)
}

/// The collection the harness asked a node for at the end.
#[derive(Debug, Clone, Serialize)]
pub struct FinalCollection {
    pub node: String,
    pub policy: Policy,
    /// The report's `at` (Unix ms): the instant the required set was computed for.
    pub at: i64,
    /// Collections asked for until none other ran between it and the check (normally 1).
    pub attempts: u32,
    pub collected_count: u64,
    pub collected_bytes: u64,
    /// What the node held after it, by class (bytes and count from the checker's view).
    pub live_count: usize,
    pub retained_count: usize,
    /// Retained content (an old version within its grace) that this node does not hold: the
    /// policy keeps such content if it is there, it does not fetch it.
    pub retained_not_held: usize,
    pub objects: usize,
    /// Content bytes of those objects (their `objects` sizes, whatever their form).
    pub object_bytes: u64,
    /// Of those objects, the ones kept in the node's database (`small_objects`), and the bytes
    /// their rows hold there (sealed: a little more than their content). The rest are files.
    pub small_objects: usize,
    pub small_object_bytes: u64,
    /// Collections the node logged during the run (the `collections` table after the last).
    pub collections_logged: i64,
}

/// `POST /v1/admin/gc` (`post`: a collection now, answered with its report) or `GET` (a preview
/// and the last report).
async fn gc<T: serde::de::DeserializeOwned>(cluster: &Cluster, id: &str, post: bool) -> Result<T> {
    let url = format!("{}/v1/admin/gc", cluster.url(id));
    let req = if post {
        cluster.http.post(url)
    } else {
        cluster.http.get(url)
    };
    let resp = req
        .bearer_auth(&cluster.token)
        .timeout(Duration::from_secs(300))
        .send()
        .await?;
    Ok(resp.error_for_status()?.json().await?)
}

/// Asks every node for a collection, then checks that what each holds is exactly what its
/// policy requires at that collection's `at`. Between the collection and the reading of the
/// node's database and files, a periodic collection may run; the node's last report (read
/// after, through `GET /v1/admin/gc`, which waits for a running collection) says so, and the
/// harness then asks again.
pub async fn final_collections(
    cluster: &Cluster,
    settings: &Settings,
    mode: Mode,
) -> Result<(Invariant, Vec<FinalCollection>)> {
    let mut inv = Invariant::new(
        "objects exactly the required set",
        "after a last collection, every node's objects table and the content it stores (files \
         in objects/ and small objects in its database, each address in one form only, no small \
         object without its objects row) are both exactly the content its policy requires (live: current versions of kept or flagged \
         documents, pending pulls; retained: recent old versions and recently deleted documents' \
         versions, when held), live content is held at primaries and regional nodes, the last \
         collection removed nothing required and no collection removed content that was live, \
         and keep-everything nodes never collected history",
    );
    let mut finals = Vec::new();
    for n in &cluster.topo.nodes {
        let policy = settings.policy(mode, n.tier);
        let dir = cluster.data_dir(&n.id);
        let mut attempts = 0;
        let (report, h) = loop {
            attempts += 1;
            let report: GcReport = gc(cluster, &n.id, true)
                .await
                .with_context(|| format!("POST /v1/admin/gc at {}", n.id))?;
            let at = report.at;
            let h = holdings(&dir, &cluster.topo, &n.id, policy, at)
                .await
                .with_context(|| format!("reading {}'s store", n.id))?;
            let last: GcPreview = gc(cluster, &n.id, false).await?;
            let last_at = last.last.map(|r| r.at);
            if last_at == Some(at) || attempts >= 5 {
                if attempts >= 5 && last_at != Some(at) {
                    inv.fail(format!(
                        "{}: another collection ran between the harness's collection and its \
                         reading of the store, 5 times in a row",
                        n.id
                    ));
                }
                break (report, h);
            }
        };
        let at = report.at;
        let id = &n.id;
        for md5 in h.rows.keys() {
            inv.check(h.files.contains(md5) || h.small.contains_key(md5), || {
                format!("{id}: objects row {md5} without its content (no file, no small object)")
            });
            inv.check(h.live.contains(md5) || h.retained.contains(md5), || {
                format!("{id}: holds {md5}, neither live nor retained at {at} (policy {policy:?})")
            });
        }
        for f in &h.files {
            inv.check(h.rows.contains_key(f), || {
                format!("{id}: file objects/{f} without an objects row")
            });
        }
        for (md5, (_, has_row)) in &h.small {
            inv.check(*has_row, || {
                format!("{id}: small object {md5} without an objects row (an orphan)")
            });
            inv.check(!h.files.contains(md5), || {
                format!("{id}: {md5} stored twice, as a file and as a small object")
            });
        }
        if n.tier != Tier::Intermediate {
            // An intermediate keeps what it carried; it does not pull all it may keep.
            for md5 in &h.live {
                inv.check(h.rows.contains_key(md5), || {
                    format!("{id}: live content {md5} not held")
                });
            }
        }
        for (md5, doc, c_at, arrived, reason) in &h.live_collected {
            inv.fail(format!(
                "{id}: collected {md5} ({reason}) at {c_at}, the current content of document \
                 {doc} that it keeps by scope, {} ms after that version arrived",
                c_at - arrived
            ));
        }
        for (md5, reason) in &h.collected_at {
            inv.check(!h.live.contains(md5) && !h.retained.contains(md5), || {
                format!(
                    "{id}: the collection at {at} removed {md5} ({reason}), which is {} then",
                    if h.live.contains(md5) {
                        "live"
                    } else {
                        "retained"
                    }
                )
            });
        }
        for (md5, reason) in &h.history_collected {
            inv.fail(format!(
                "{id}: keeps every version for ever, yet collected {md5} as {reason}"
            ));
        }
        let collections_logged = report.tables.get("collections").copied().unwrap_or(-1);
        finals.push(FinalCollection {
            node: n.id.clone(),
            policy,
            at,
            attempts,
            collected_count: report.collected.count,
            collected_bytes: report.collected.bytes,
            live_count: h.live.len(),
            retained_count: h.retained.len(),
            retained_not_held: h
                .retained
                .iter()
                .filter(|m| !h.live.contains(*m) && !h.rows.contains_key(*m))
                .count(),
            objects: h.rows.len(),
            object_bytes: h.rows.values().map(|s| (*s).max(0) as u64).sum(),
            small_objects: h.small.len(),
            small_object_bytes: h.small.values().map(|(len, _)| len).sum(),
            collections_logged,
        });
    }
    Ok((inv, finals))
}

/// Disk a node's data directory uses at the end, before and after the last collection.
#[derive(Debug, Clone, Serialize)]
pub struct NodeDisk {
    pub node: String,
    pub tier: String,
    /// Allocated bytes (as `du`) of the whole data directory.
    pub before_final_collection: u64,
    pub after_final_collection: u64,
    /// Of which `objects/`, after: the content files. Small objects are in the database
    /// (`node.sqlite`, in the whole directory's count); their bytes are
    /// [`FinalCollection::small_object_bytes`].
    pub objects_after: u64,
}

/// Allocated bytes under `dir`, as `du -s` counts them (each inode once).
pub fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        let mut total = 0;
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(p) {
                for e in entries.flatten() {
                    total += walk(&e.path(), seen);
                }
            }
        }
        total
    }
    walk(dir, &mut std::collections::HashSet::new())
}

/// `du` of every node's data directory, and of its `objects/` (the content files; small objects
/// are inside the database).
pub async fn disk_use(cluster: &Cluster) -> Vec<(String, String, u64, u64)> {
    let dirs: Vec<(String, String, std::path::PathBuf)> = cluster
        .topo
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.tier.to_string(), cluster.data_dir(&n.id)))
        .collect();
    tokio::task::spawn_blocking(move || {
        dirs.into_iter()
            .map(|(id, tier, d)| {
                let all = du(&d);
                let objects = du(&d.join("objects"));
                (id, tier, all, objects)
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_keep_everything_and_off_keeps_everything_everywhere() {
        let s = Settings {
            gc_interval: Duration::from_secs(20),
            keep_versions: 1,
            version_grace: Duration::from_secs(30),
            tombstone_grace: Duration::from_secs(30),
            log_retention: Duration::from_secs(3600),
            feed_horizon: Duration::from_secs(60),
        };
        assert!(s.node_args(Mode::On, Tier::Primary).is_empty());
        assert!(s.policy(Mode::On, Tier::Primary).keeps_everything());
        let args = s.node_args(Mode::On, Tier::Regional).join(" ");
        assert_eq!(
            args,
            "--gc-interval 20s --keep-versions 1 --version-grace 30s --tombstone-grace 30s \
             --log-retention 1h --feed-horizon 1m"
        );
        assert_eq!(
            s.policy(Mode::On, Tier::Intermediate).version_grace_ms,
            Some(30_000)
        );
        for tier in [Tier::Primary, Tier::Intermediate, Tier::Regional] {
            assert!(s.policy(Mode::Off, tier).keeps_everything());
            assert!(s
                .node_args(Mode::Off, tier)
                .join(" ")
                .contains("--gc-interval off"));
        }
    }
}
