//! Presence: `GET /v1/peers`, the node's table of the other servers it sees (mDNS and HTTP
//! health probes), and for operators (with the token) its own queues and background tasks.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Consecutive failed health probes after which a node counts a peer as down. The portal and
/// the command line read the same rule off a node's table.
pub const DOWN_AFTER: u32 = 2;

/// One row of a node's presence table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerState {
    pub id: String,
    /// The peer's tier (`Tier`'s name).
    #[serde(default)]
    pub tier: String,
    #[serde(default)]
    pub region: Option<String>,
    /// The base URL of the peer's HTTP API.
    #[serde(default)]
    pub http: String,
    /// Advertised over mDNS right now.
    #[serde(default)]
    pub mdns: bool,
    /// In the answering node's topology file (probed over HTTP).
    #[serde(default)]
    pub in_topology: bool,
    /// The last health probe's outcome; `None` before the first one.
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default)]
    pub failed_probes: u32,
    /// Milliseconds since the peer was last seen answering or advertising.
    #[serde(default)]
    pub last_seen_ms_ago: Option<u64>,
    /// Why the last failed health probe failed; cleared by a good one.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl PeerState {
    /// Whether the answering node counts this peer as down ([`DOWN_AFTER`]).
    pub fn is_down(&self) -> bool {
        self.failed_probes >= DOWN_AFTER
    }
}

/// `GET /v1/peers`. Anyone gets the presence table (a device uses it to find other regional
/// nodes); the queue depths, the inbox's state and the task table only go to operators.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersView {
    /// The answering node.
    pub node: String,
    /// The regional node that holds this one's regional documents: where a device of this
    /// region fails over to first.
    #[serde(default)]
    pub backup: Option<String>,
    /// Operators only: the inbox consumer is connected to its broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox_connected: Option<bool>,
    /// Operators only: messages waiting in the outbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_depth: Option<i64>,
    /// Operators only: pulls queued or running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_fetches: Option<i64>,
    #[serde(default)]
    pub peers: Vec<PeerState>,
    /// Operators only: the background tasks (ARCHITECTURE.md §5.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskView>>,
}

/// What a long-lived task of a node is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Spawned; not yet at work (e.g. connecting for the first time).
    Starting,
    /// At work (connected, consuming, scheduling).
    Running,
    /// Failed and waiting to try again.
    Retrying,
    /// Ended at shutdown.
    Stopped,
    /// Ended before shutdown: the node is stopping because of it.
    Failed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Retrying => "retrying",
            TaskState::Stopped => "stopped",
            TaskState::Failed => "failed",
        }
    }
}

/// One row of a node's task table (`/v1/peers` `tasks`, `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub name: String,
    pub state: TaskState,
    /// Since when it is in this state.
    pub since: Timestamp,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_view_round_trips_and_hides_operator_fields_when_absent() {
        let peer = PeerState {
            id: "eu".into(),
            tier: "regional".into(),
            region: Some("eu".into()),
            http: "https://eu:7100".into(),
            mdns: true,
            in_topology: true,
            healthy: Some(false),
            failed_probes: DOWN_AFTER,
            last_seen_ms_ago: Some(1200),
            last_error: Some("connection refused".into()),
        };
        assert!(peer.is_down());
        let public = PeersView {
            node: "na".into(),
            backup: Some("sa".into()),
            peers: vec![peer.clone()],
            ..PeersView::default()
        };
        let json = serde_json::to_value(&public).unwrap();
        for hidden in [
            "inbox_connected",
            "outbox_depth",
            "pending_fetches",
            "tasks",
        ] {
            assert!(json.get(hidden).is_none(), "{hidden} in the public answer");
        }
        assert_eq!(serde_json::from_value::<PeersView>(json).unwrap(), public);

        let operator = PeersView {
            inbox_connected: Some(true),
            outbox_depth: Some(3),
            pending_fetches: Some(0),
            tasks: Some(vec![TaskView {
                name: "inbox".into(),
                state: TaskState::Retrying,
                since: Timestamp(1_763_768_000_123),
                errors: 2,
                last_error: Some("broker gone".into()),
                last_error_at: Some(Timestamp(1_763_768_000_000)),
            }]),
            ..public
        };
        let json = serde_json::to_string(&operator).unwrap();
        assert!(json.contains(r#""state":"retrying""#));
        assert_eq!(serde_json::from_str::<PeersView>(&json).unwrap(), operator);
    }

    #[test]
    fn a_sparse_peer_row_reads_with_defaults() {
        let p: PeerState = serde_json::from_str(r#"{"id":"x"}"#).unwrap();
        assert_eq!(p.healthy, None);
        assert!(!p.is_down());
    }
}
