//! Retention: the policy a node collects by, and what a collection found and did
//! (`GET /v1/admin/gc` previews and shows the last report, `POST /v1/admin/gc` collects).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::topology::Tier;

/// How much history a node keeps (node flags `--keep-versions` … `--gc-interval`, the
/// topology's `[retention]`). Durations read and write as human durations (`"1day"`); `null`
/// means for ever (or, for `interval`, only when an operator asks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Superseded versions kept per live document (`None`: all).
    pub keep_versions: Option<u32>,
    /// How long a superseded version is kept after the version that replaced it (`None`: for
    /// ever).
    #[serde(with = "humantime_serde")]
    pub version_grace: Option<Duration>,
    /// How long a deleted document's content is kept after the tombstone (`None`: for ever).
    #[serde(with = "humantime_serde")]
    pub tombstone_grace: Option<Duration>,
    /// Age past which the change feed keeps only each document's latest change (`None`: never
    /// compacted).
    #[serde(with = "humantime_serde")]
    pub feed_horizon: Option<Duration>,
    /// Age past which `fetch_log` and `collections` rows go.
    #[serde(with = "humantime_serde")]
    pub log_retention: Duration,
    /// How long a message stays in the dead-letter queue before the broker drops it.
    #[serde(with = "humantime_serde")]
    pub dead_letter_retention: Duration,
    /// Time between collections (`None`: only when an operator asks, `POST /v1/admin/gc`).
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Policy {
    /// The defaults of a tier: primaries and standalone nodes keep the whole publication
    /// record; intermediate and regional nodes keep one superseded version for a day and a
    /// deleted document's content for a day. `None` is a standalone node (no federation).
    pub fn for_tier(tier: Option<Tier>) -> Self {
        let record = matches!(tier, None | Some(Tier::Primary));
        Policy {
            keep_versions: if record { None } else { Some(1) },
            version_grace: if record { None } else { Some(DAY) },
            tombstone_grace: if record { None } else { Some(DAY) },
            feed_horizon: Some(30 * DAY),
            log_retention: 7 * DAY,
            dead_letter_retention: 14 * DAY,
            interval: Some(Duration::from_secs(600)),
        }
    }
}

/// Count and bytes of a class of objects or files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub count: u64,
    pub bytes: u64,
}

impl Usage {
    pub fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

/// What a collection found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// When it ran (Unix ms): the instant the policy's graces were measured from.
    pub at: i64,
    pub dry_run: bool,
    pub policy: Option<Policy>,
    /// Objects held, by class, before this collection.
    pub live: Usage,
    pub retained: Usage,
    pub collectable: Usage,
    /// Collectable objects by reason.
    #[serde(default)]
    pub collectable_by_reason: BTreeMap<String, Usage>,
    /// What was removed (nothing on a dry run).
    pub collected: Usage,
    /// Files in `objects/` without a row (a crash between rename and commit).
    pub orphan_files: Usage,
    /// Partial files of pulls that no longer exist.
    pub stale_partials: Usage,
    /// Candidates that turned out to be needed again, or in use, when their batch was decided.
    pub spared: u64,
    /// Rows of operational tables that went (or would go): fetch_log, receipts, collections,
    /// changes (feed compaction).
    #[serde(default)]
    pub rows_pruned: BTreeMap<String, u64>,
    /// The change feed's horizon after this collection.
    pub feed_horizon: i64,
    /// Rows per table after this collection.
    #[serde(default)]
    pub tables: BTreeMap<String, i64>,
    pub duration_ms: u64,
}

/// `GET /v1/admin/gc`: what a collection now would do, and the last one's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcPreview {
    pub preview: GcReport,
    #[serde(default)]
    pub last: Option<GcReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_durations_are_human_and_null_means_for_ever() {
        let p = Policy::for_tier(Some(Tier::Regional));
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(json["version_grace"], "1day");
        assert_eq!(json["log_retention"], "7days");
        assert_eq!(json["interval"], "10m");
        assert_eq!(serde_json::from_value::<Policy>(json).unwrap(), p);
        let record = serde_json::to_value(Policy::for_tier(Some(Tier::Primary))).unwrap();
        assert!(record["keep_versions"].is_null() && record["version_grace"].is_null());
    }

    #[test]
    fn reports_round_trip() {
        let mut r = GcReport {
            at: 1_000,
            dry_run: true,
            policy: Some(Policy::for_tier(None)),
            spared: 2,
            feed_horizon: 5,
            duration_ms: 12,
            ..GcReport::default()
        };
        r.live.add(10);
        r.collectable_by_reason.insert("superseded".into(), r.live);
        r.rows_pruned.insert("fetch_log".into(), 4);
        r.tables.insert("objects".into(), 1);
        let preview = GcPreview {
            preview: r.clone(),
            last: Some(r),
        };
        let json = serde_json::to_string(&preview).unwrap();
        assert_eq!(serde_json::from_str::<GcPreview>(&json).unwrap(), preview);
    }
}
