//! `GET /v1/documents/{id}/propagation` (primaries): the newest version each node reported
//! holding (its content receipts), and the nodes that do not hold the current one yet.

use serde::{Deserialize, Serialize};

use super::Timestamp;
use crate::DocId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propagation {
    pub id: DocId,
    /// The current version at the answering primary.
    pub version: i64,
    #[serde(default)]
    pub origin: String,
    #[serde(default)]
    pub deleted: bool,
    /// One row per node that reported holding a version.
    #[serde(default)]
    pub nodes: Vec<Holding>,
    /// The topology's nodes that have not reported holding the current version.
    #[serde(default)]
    pub not_yet_current: Vec<String>,
}

/// The newest version one node reported holding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    pub node: String,
    pub version: i64,
    #[serde(default)]
    pub origin: String,
    #[serde(default)]
    pub md5: String,
    /// The node holds the bytes (not only the metadata).
    #[serde(default)]
    pub content: bool,
    /// When the node reported it.
    #[serde(default)]
    pub at: Option<Timestamp>,
    /// It is the document's current version.
    #[serde(default)]
    pub current: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_round_trips() {
        let p = Propagation {
            id: DocId::new(),
            version: 3,
            origin: "primary-a".into(),
            deleted: false,
            nodes: vec![Holding {
                node: "eu".into(),
                version: 3,
                origin: "primary-a".into(),
                md5: "0".repeat(32),
                content: true,
                at: Some(Timestamp(1_763_768_000_123)),
                current: true,
            }],
            not_yet_current: vec!["na".into()],
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""at":"2025-11-21T23:33:20.123Z""#));
        assert_eq!(serde_json::from_str::<Propagation>(&json).unwrap(), p);
    }
}
