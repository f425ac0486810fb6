//! The federation page's model: every node of the topology with what the portal and the
//! primaries know about it.
//!
//! The portal talks to the primaries only, so everything here comes from them: each primary's
//! health is the portal's own probe; every other node's is what the primaries' presence tables
//! (`GET /v1/peers`: mDNS and their health probes) say. Queue depths (outbox, pending fetches)
//! and the inbox's broker connection are reported by each primary for itself.

use std::collections::HashSet;

use crate::config::Config;
use docfed_shared::wire::peers::PeerState;

use crate::primaries::{Presence, Primaries};

/// One node as the federation page shows it.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: String,
    pub tier: String,
    pub region: Option<String>,
    pub url: String,
    pub health: Health,
    /// Who says so, e.g. "probed by pa and pb" or "pb cannot reach it".
    pub detail: String,
    /// When a primary last saw it answer or advertise (Unix ms).
    pub last_seen_ms: Option<i64>,
    pub outbox: Option<i64>,
    pub pending_fetches: Option<i64>,
    pub inbox_connected: Option<bool>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    /// Up, but something is wrong (a primary cannot reach it, its inbox is disconnected).
    Degraded,
    Down,
    /// Nobody has said yet.
    Unknown,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Degraded => "degraded",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
    }
}

/// Every node: the topology's in file order, then any other node of the primaries' topology
/// their presence tables list (when the portal runs without one). Nodes seen over mDNS only
/// are left out: another federation on the same network is none of this one's business.
pub fn nodes(config: &Config, primaries: &Primaries, presence: &Presence) -> Vec<NodeRow> {
    let mut known: Vec<(String, String, Option<String>, String)> = config
        .nodes
        .iter()
        .map(|n| {
            (
                n.id.clone(),
                n.tier.clone(),
                n.region.clone(),
                n.url.clone(),
            )
        })
        .collect();
    if known.is_empty() {
        known.extend(
            primaries
                .all()
                .iter()
                .map(|p| (p.name.clone(), "primary".into(), None, p.url.clone())),
        );
    }
    let mut seen: HashSet<String> = known.iter().map(|k| k.0.clone()).collect();
    // A primary's own id is the `node` of its answer (without a topology, the portal names
    // primaries by URL).
    let own_ids: HashSet<&str> = presence
        .answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|a| a.node.as_str())
        .collect();
    for a in presence.answers.iter().filter_map(|a| a.as_ref().ok()) {
        for p in a.peers.iter().filter(|p| p.in_topology) {
            // Without a topology the portal names primaries by URL; the other primary is
            // listed already.
            let a_primary = primaries.all().iter().any(|q| q.url == p.http);
            if !a_primary && !own_ids.contains(p.id.as_str()) && seen.insert(p.id.clone()) {
                known.push((
                    p.id.clone(),
                    p.tier.clone(),
                    p.region.clone(),
                    p.http.clone(),
                ));
            }
        }
    }
    known
        .into_iter()
        .map(|(id, tier, region, url)| {
            let mut row = NodeRow {
                id,
                tier,
                region,
                url,
                health: Health::Unknown,
                detail: String::new(),
                last_seen_ms: None,
                outbox: None,
                pending_fetches: None,
                inbox_connected: None,
                error: None,
            };
            match primaries
                .all()
                .iter()
                .position(|p| p.name == row.id || p.url == row.url)
            {
                Some(i) => primary_row(&mut row, primaries, presence, i),
                None => peer_row(&mut row, primaries, presence),
            }
            row
        })
        .collect()
}

/// A primary: the portal's own probe, its `/v1/peers` answer for its queues.
fn primary_row(row: &mut NodeRow, primaries: &Primaries, presence: &Presence, i: usize) {
    let status = primaries.get(i).status();
    row.health = match status.up {
        Some(true) => Health::Up,
        Some(false) => Health::Down,
        None => Health::Unknown,
    };
    row.detail = "probed by the portal".into();
    if status.up == Some(true) {
        row.last_seen_ms = Some(presence.at_ms);
    }
    row.error = status.error;
    match presence.answers.get(i) {
        Some(Ok(a)) => {
            row.outbox = a.outbox_depth;
            row.pending_fetches = a.pending_fetches;
            row.inbox_connected = a.inbox_connected;
            if a.inbox_connected == Some(false) {
                row.health = Health::Degraded;
                row.error
                    .get_or_insert_with(|| "its inbox is not connected to the broker".into());
            }
        }
        Some(Err(e)) if row.health != Health::Down => {
            row.error.get_or_insert_with(|| e.clone());
        }
        _ => {}
    }
}

/// Any other node: what the primaries' presence tables say.
fn peer_row(row: &mut NodeRow, primaries: &Primaries, presence: &Presence) {
    let views: Vec<(&str, &PeerState)> = presence
        .answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| Some((primaries.get(i).name.as_str(), a.as_ref().ok()?)))
        .filter_map(|(name, a)| Some((name, a.peers.iter().find(|p| p.id == row.id)?)))
        .collect();
    let up: Vec<&str> = views
        .iter()
        .filter(|(_, p)| p.healthy == Some(true))
        .map(|(n, _)| *n)
        .collect();
    let down: Vec<&(&str, &PeerState)> = views.iter().filter(|(_, p)| p.is_down()).collect();
    row.last_seen_ms = views
        .iter()
        .filter_map(|(_, p)| p.last_seen_ms_ago)
        .min()
        .map(|ago| presence.at_ms - ago as i64);
    let names = |v: &[&str]| v.join(" and ");
    let down_names: Vec<&str> = down.iter().map(|(n, _)| *n).collect();
    let reason = down.first().map(|(n, p)| {
        format!(
            "{n}: {}",
            p.last_error
                .clone()
                .unwrap_or_else(|| format!("{} health probes failed in a row", p.failed_probes))
        )
    });
    (row.health, row.detail) = match (up.is_empty(), down.is_empty()) {
        _ if views.is_empty() => (Health::Unknown, "no primary reports on it".into()),
        (false, true) => (Health::Up, format!("answers {}", names(&up))),
        (false, false) => (
            Health::Degraded,
            format!(
                "answers {}; {} cannot reach it",
                names(&up),
                names(&down_names)
            ),
        ),
        (true, false) if down.len() == views.len() => (
            Health::Down,
            format!("not answering {}", names(&down_names)),
        ),
        _ => (Health::Unknown, "being probed".into()),
    };
    if row.health != Health::Up {
        row.error = reason;
    }
    // A node killed without a goodbye stays advertised until its record expires: only worth
    // saying of a node that answers.
    if row.health != Health::Down && views.iter().any(|(_, p)| p.mdns) {
        row.detail += "; advertised over mDNS";
    }
}

/// "5 nodes: 4 up, 1 down".
pub fn summary(rows: &[NodeRow]) -> String {
    let count = |h: Health| rows.iter().filter(|r| r.health == h).count();
    let mut parts = vec![format!("{} up", count(Health::Up))];
    for h in [Health::Degraded, Health::Down, Health::Unknown] {
        let n = count(h);
        if n > 0 {
            parts.push(format!("{n} {}", h.as_str()));
        }
    }
    format!(
        "{} node{}: {}.",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use docfed_shared::wire::peers::PeersView;

    fn peer(id: &str, http: &str, healthy: Option<bool>, failed: u32) -> PeerState {
        PeerState {
            id: id.into(),
            tier: "regional".into(),
            region: Some(id.into()),
            http: http.into(),
            mdns: false,
            in_topology: true,
            healthy,
            failed_probes: failed,
            last_seen_ms_ago: Some(1000),
            last_error: (failed > 0).then(|| "connection refused".into()),
        }
    }

    #[test]
    fn health_comes_from_the_portal_for_primaries_and_from_their_presence_for_the_rest() {
        let (config, primaries) = Primaries::two_unreachable();
        primaries.mark_down(1, "connection refused".into());
        let presence = Presence {
            answers: vec![
                Ok(PeersView {
                    node: "pa".into(),
                    backup: None,
                    tasks: None,
                    inbox_connected: Some(true),
                    outbox_depth: Some(7),
                    pending_fetches: Some(2),
                    peers: vec![
                        peer("pb", "http://127.0.0.1:10", Some(false), 3),
                        peer("na", "http://127.0.0.1:11", Some(true), 0),
                        peer("eu", "http://127.0.0.1:12", Some(false), 2),
                        peer("asia", "http://127.0.0.1:13", Some(false), 1),
                        PeerState {
                            in_topology: false,
                            ..peer("stranger", "http://127.0.0.1:14", None, 0)
                        },
                    ],
                }),
                Err("connection refused".into()),
            ],
            at_ms: 1_000_000,
        };
        let rows = nodes(&config, &primaries, &presence);
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            ["127.0.0.1:9", "127.0.0.1:10", "na", "eu", "asia"],
            "the primaries once each, no mDNS-only stranger"
        );
        let health: Vec<Health> = rows.iter().map(|r| r.health).collect();
        assert_eq!(
            health,
            [
                Health::Unknown, // never probed in this test
                Health::Down,
                Health::Up,
                Health::Down,
                Health::Unknown, // one failed probe is not down yet
            ]
        );
        assert_eq!(
            (rows[0].outbox, rows[0].pending_fetches),
            (Some(7), Some(2))
        );
        assert_eq!(rows[1].error.as_deref(), Some("connection refused"));
        assert_eq!(
            rows[3].error.as_deref(),
            Some("127.0.0.1:9: connection refused")
        );
        assert_eq!(rows[2].last_seen_ms, Some(999_000));
        assert_eq!(summary(&rows), "5 nodes: 1 up, 2 down, 2 unknown.");
        assert!(presence.is_down(&primaries, "eu"));
        assert!(!presence.is_down(&primaries, "asia"));
        assert!(presence.is_down(&primaries, "127.0.0.1:10"));
    }
}
